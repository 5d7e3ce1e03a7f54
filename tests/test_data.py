"""lib.data: corpora, the train/validation split, tokenizers and next-token batches."""

import json
import sys

import numpy as np
import pytest
import torch

from lib.data import (
    CORPORA,
    ByteTokenizer,
    CharTokenizer,
    eval_batches,
    load_corpus,
    random_batches,
    tokenizer_from_dict,
    train_val_split,
)
from lib.data import corpora

# ---- corpora --------------------------------------------------------------------------------------


def test_pydoc_corpus_is_the_help_topics_in_key_order():
    from pydoc_data.topics import topics

    text = load_corpus("pydoc")
    assert 300_000 < len(text) < 800_000, len(text)
    assert text.startswith(topics[min(topics)])
    assert text.endswith(topics[max(topics)])
    assert corpora._pydoc_text() == text  # rebuilt from scratch: the same string


def test_stdlib_corpus_is_capped_whole_files_with_a_separator_each():
    text = load_corpus("stdlib")
    assert 1_000_000 < len(text) <= corpora.STDLIB_CAP, len(text)
    assert text.startswith("# ==== ")
    separators = [line for line in text.splitlines() if line.startswith("# ==== ")]
    names = [line.removeprefix("# ==== ").removesuffix(" ====") for line in separators]
    assert names == sorted(names) and len(names) > 50
    skipped = [name for name in names if set(name.split("/")[:-1]) & corpora.STDLIB_SKIPPED_DIRS]
    assert not skipped
    if sys.version_info[:2] == (3, 11):
        assert "argparse.py" in names
    assert corpora._stdlib_text() == text  # rebuilt from scratch: the same string


def test_unknown_corpus_names_the_known_ones():
    assert set(CORPORA) == {"pydoc", "stdlib"}
    with pytest.raises(ValueError, match=r"corpus: expected one of pydoc, stdlib, got 'wiki'"):
        load_corpus("wiki")


# ---- split ----------------------------------------------------------------------------------------


def test_split_is_the_last_fraction_and_deterministic():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, val = train_val_split(text, 0.1)
    assert (len(train), len(val)) == (900, 100)
    assert train + val == text
    assert train_val_split(text, 0.1) == (train, val)
    assert train_val_split(text) == (train, val)  # 0.1 is the default
    assert [len(part) for part in train_val_split("abcdefg", 0.3)] == [5, 2]


@pytest.mark.parametrize(
    ("text", "fraction", "message"),
    [
        ("abcdef", 0.0, r"val_fraction: expected a number strictly between 0 and 1, got 0.0"),
        ("abcdef", 1.5, r"val_fraction: expected .*, got 1.5"),
        ("ab", 0.1, r"text: expected enough characters for both parts with val_fraction=0.1, got 2"),
    ],
)
def test_split_rejects_bad_input(text, fraction, message):
    with pytest.raises(ValueError, match=message):
        train_val_split(text, fraction)


def test_split_rejects_non_text():
    with pytest.raises(TypeError, match=r"text: expected a str, got list"):
        train_val_split([1, 2, 3])


# ---- tokenizers -----------------------------------------------------------------------------------


def test_char_tokenizer_round_trips_the_pydoc_corpus():
    text = load_corpus("pydoc")
    tok = CharTokenizer.from_text(text)
    assert tok.chars == "".join(sorted(set(text))) and tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert tok.decode(ids) == text
    assert tok.decode(torch.from_numpy(ids[:50])) == text[:50]  # tensors decode too
    assert tok.decode(list(ids[:50])) == text[:50]


def test_char_tokenizer_ids_are_ranks_in_the_sorted_vocabulary():
    tok = CharTokenizer.from_text("hello, wörld")
    assert tok.chars == " ,dehlorwö"
    assert tok.encode("wörld").tolist() == [8, 9, 7, 5, 2]
    assert tok.encode("").shape == (0,) and tok.decode([]) == ""


def test_char_tokenizer_names_an_unknown_character():
    tok = CharTokenizer.from_text("abc")
    unknown = r"s: expected characters of .*3-character vocabulary, got 'é' \(U\+00E9\) at index 2"
    with pytest.raises(ValueError, match=unknown):
        tok.encode("abéc")
    with pytest.raises(ValueError, match=r"ids: expected token ids in \[0, 2\], got 3 at index 1"):
        tok.decode([0, 3])
    with pytest.raises(TypeError, match=r"ids: expected integer token ids, got dtype float64"):
        tok.decode([0.0, 1.0])
    with pytest.raises(ValueError, match=r"text: expected at least one character"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match=r"chars: expected distinct characters in sorted order, got 'ba'"):
        CharTokenizer("ba")


def test_tokenizers_save_to_a_json_dict_and_back():
    char = CharTokenizer.from_text("some text\n")
    for tok in (char, ByteTokenizer()):
        saved = json.loads(json.dumps(tok.to_dict()))
        assert type(tok).from_dict(saved) == tok
        assert tokenizer_from_dict(saved) == tok
    with pytest.raises(ValueError, match=r"tokenizer dict: expected kind 'char', got 'byte'"):
        CharTokenizer.from_dict({"kind": "byte"})
    with pytest.raises(ValueError, match=r"tokenizer dict: expected kind one of byte, char, got 'bpe'"):
        tokenizer_from_dict({"kind": "bpe"})


def test_byte_tokenizer_round_trips_any_unicode():
    tok = ByteTokenizer()
    text = "ascii, ünïcödé, 中文, emoji 🧪, control \x00\x7f, combining e\u0301, RTL עברית"
    ids = tok.encode(text)
    assert tok.vocab_size == 256 and ids.dtype == np.int64
    assert ids.tolist() == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    rng = np.random.default_rng(0)
    random_text = "".join(chr(c) for c in rng.integers(0, 0xD800, size=500))  # below the surrogates
    assert tok.decode(tok.encode(random_text)) == random_text


def test_byte_tokenizer_replaces_a_cut_character():
    tok = ByteTokenizer()
    ids = tok.encode("é")  # two bytes
    assert tok.decode(ids[:1]) == "\ufffd"
    with pytest.raises(ValueError, match=r"ids: expected token ids in \[0, 255\], got 256 at index 0"):
        tok.decode([256])


# ---- batches --------------------------------------------------------------------------------------

IDS = np.random.default_rng(0).permutation(1000)  # distinct values: a token's value tells its position


def test_random_batches_are_windows_with_targets_shifted_by_one():
    batches = random_batches(IDS, 4, 16, seed=0)
    for _ in range(5):
        x, y = next(batches)
        assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.long
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row_x, row_y in zip(x.tolist(), y.tolist()):
            start = IDS.tolist().index(row_x[0])
            assert row_x == IDS[start : start + 16].tolist()
            assert row_y == IDS[start + 1 : start + 17].tolist()


def test_random_batches_are_reproducible_from_the_seed():
    def first(seed, k=3):
        stream = random_batches(torch.from_numpy(IDS), 8, 10, seed=seed)
        return [next(stream) for _ in range(k)]

    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first(1), first(1)))
    assert not torch.equal(first(1)[0][0], first(2)[0][0])


def test_random_batches_reach_both_ends():
    ids = np.arange(12)
    x, y = next(random_batches(ids, 2000, 4, seed=0))
    assert set(x[:, 0].tolist()) == set(range(8))  # every start 0 .. len - T - 1
    assert y.max().item() == 11


def test_eval_batches_cover_each_window_once_in_order():
    ids = np.arange(103)
    batches = list(eval_batches(ids, 4, 10))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 10), (4, 10), (2, 10)]  # 10 windows, last batch partial
    x = torch.cat([x for x, _ in batches]).flatten()
    y = torch.cat([y for _, y in batches]).flatten()
    assert x.tolist() == list(range(100))
    assert y.tolist() == list(range(1, 101))
    assert len(list(eval_batches(np.arange(11), 3, 10))) == 1  # exactly one window fits


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: random_batches(IDS, 0, 8, seed=0), ValueError, r"batch_size: expected a positive int, got 0"),
        (lambda: random_batches(IDS, 4, 2.5, seed=0), ValueError, r"seq_len: expected a positive int, got 2.5"),
        (lambda: random_batches(IDS, 4, 8, seed=-1), ValueError, r"seed: expected a non-negative int, got -1"),
        (lambda: random_batches(IDS[:8], 4, 8, seed=0), ValueError, r"ids: expected at least seq_len \+ 1 = 9 tokens"),
        (lambda: eval_batches(IDS.reshape(10, 100), 4, 8), ValueError, r"ids: expected a 1-d array \(n\), got shape"),
        (lambda: eval_batches(IDS.astype(float), 4, 8), TypeError, r"ids: expected integer token ids, got torch.float"),
    ],
)
def test_batches_reject_bad_input_at_the_call(call, error, message):
    with pytest.raises(error, match=message):
        call()  # raised when the iterator is made, before the first batch
