"""Section 07.5: hybrid decoding — CTC references, verify-and-correct, the seq2seq model, the zoo entry, the exercise."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.data.acoustics import acoustic_splits, pad_frames, synthesize, text_lines
from lib.decoding.hybrid import (
    HybridStats,
    char_error_rate,
    ctc_collapse_ref,
    ctc_greedy,
    ctc_greedy_ref,
    edit_distance,
    first_mismatch,
    first_mismatch_ref,
    greedy_ar_decode,
    greedy_ar_ref,
    hybrid_decode,
    hybrid_decode_ref,
    oracle_verify_fn,
    resync,
    uncached_verify_fn,
)
from lib.exercises.ch07_decoding.hybrid import check_ctc_collapse
from lib.exercises.generate import master_function
from lib.exercises.registry import CheckFailed
from lib.models.seq2seq import Seq2Seq, Seq2SeqConfig
from lib.zoo import load, zoo_data
from lib.zoo.registry import read_records

ROOT = Path(__file__).resolve().parents[1]


def _solution():
    """The exercise's solution, from the chapter's master."""
    return master_function(ROOT, "07", "ctc_collapse")


def _ids(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64)


def _text(ids: np.ndarray) -> str:
    return bytes(ids.astype(np.uint8)).decode()


# ----------------------------------------------------------------------------- CTC references


def test_ctc_collapse_by_hand():
    assert ctc_collapse_ref(np.array([1, 1, 0, 1, 2, 2, 0]), 0).tolist() == [1, 1, 2]
    assert ctc_collapse_ref(np.array([0, 0, 0]), 0).tolist() == []
    assert ctc_collapse_ref(np.array([], dtype=np.int64), 3).tolist() == []
    assert ctc_collapse_ref(np.array([3, 1, 3, 3, 2]), 3).tolist() == [1, 2]


def test_ctc_greedy_torch_equals_reference():
    rng = np.random.default_rng(0)
    for _ in range(200):
        frames, labels = int(rng.integers(1, 40)), int(rng.integers(2, 9))
        logits = rng.standard_normal((frames, labels)) * 3
        logits[:, 0] += rng.uniform(0, 3)                       # blank-heavy paths, as a trained head gives
        blank = int(rng.integers(0, labels))
        expected = ctc_greedy_ref(logits, blank)
        # integers: exact. float32 argmax ties would need equal logits, probability 0 here
        assert torch.equal(ctc_greedy(torch.tensor(logits, dtype=torch.float32), blank), torch.as_tensor(expected))


def test_first_mismatch_torch_equals_reference():
    rng = np.random.default_rng(1)
    for _ in range(300):
        k = int(rng.integers(0, 8))
        draft = rng.integers(0, 3, k)
        greedy = np.append(draft.copy(), rng.integers(0, 3))
        flips = rng.random(k) < 0.3
        greedy[:k][flips] = (greedy[:k][flips] + 1) % 3
        n = first_mismatch_ref(draft, greedy)
        assert n == first_mismatch(torch.as_tensor(draft), torch.as_tensor(greedy))
        assert n == (int(np.argmax(flips)) if flips.any() else k)


def test_edit_distance_and_cer_by_hand():
    assert edit_distance(_ids("kitten"), _ids("sitting")) == 3
    assert edit_distance(_ids(""), _ids("abc")) == 3 and edit_distance(_ids("abc"), _ids("abc")) == 0
    assert char_error_rate([_ids("the cat"), _ids("sat")], [_ids("the hat"), _ids("sad")]) == pytest.approx(2 / 10)


# ----------------------------------------------------------------------------- verify and correct (toys)


def test_resync_absorbs_insertion_and_skips_a_substitution():
    hyp = _ids("te caat sat")
    assert resync(hyp, _ids("the cat").tolist(), 6, window=2, k_sync=2) == 7      # extra 'a' in hyp skipped
    assert resync(hyp, _ids("th").tolist(), 2, window=2, k_sync=2) == 2           # no match: substitution
    assert resync(hyp, _ids("the").tolist(), 3, window=2, k_sync=2) == 2          # 'e' found one back
    assert resync(hyp, _ids("the cat").tolist(), 6, window=2, k_sync=0) == 6      # k_sync = 0: never search


def test_hand_traced_example():
    # target "the cat sat"; the fast pass dropped 'h' and doubled 'a' (traced in the notebook)
    stats = HybridStats()
    out = hybrid_decode_ref(_ids("te caat sat"), oracle_verify_fn(_ids("the cat sat"), eos=0), 0, 40, stats=stats)
    assert _text(out) == "the cat sat"
    assert (stats.calls, stats.accepted, stats.corrected, stats.bonus) == (4, 9, 3, 0)
    assert stats.emitted == len("the cat sat") + 1                                 # every character and eos


def test_a_perfect_hypothesis_costs_one_call():
    stats = HybridStats()
    out = hybrid_decode_ref(_ids("exact"), oracle_verify_fn(_ids("exact"), eos=0), 0, 40, stats=stats)
    assert _text(out) == "exact" and stats.calls == 1 and stats.accepted == 6


def _markov_verify_fn(table: np.ndarray, start: int):
    """A toy decoder: the greedy choice after a prefix depends on its last token only (start if empty)."""
    def verify(prefix, draft):
        context = np.concatenate([[start], prefix, draft]).astype(np.int64)
        return table[context[len(prefix):]]
    return verify


def _edit(seq: np.ndarray, rng: np.random.Generator, vocab: int) -> np.ndarray:
    """A noisy copy: random substitutions, insertions and deletions, as a fast decoder makes them."""
    out = []
    for token in seq.tolist():
        r = rng.random()
        if r < 0.1:
            continue                                               # deletion
        out.append(int(rng.integers(1, vocab)) if r < 0.2 else token)
        if rng.random() < 0.1:
            out.append(int(rng.integers(1, vocab)))                # insertion
    return np.array(out, dtype=np.int64)


def test_hybrid_ref_equals_greedy_for_any_hypothesis():
    rng = np.random.default_rng(2)
    for case in range(300):
        vocab = int(rng.integers(3, 12))
        table = rng.integers(0, vocab, vocab)                      # token 0 is eos
        verify = _markov_verify_fn(table, start=int(rng.integers(1, vocab)))
        max_len = int(rng.integers(1, 30))
        expected, ar_calls = greedy_ar_ref(verify, 0, max_len)
        hyp = _edit(expected, rng, vocab) if case % 3 else rng.integers(0, vocab, int(rng.integers(0, 12)))
        stats = HybridStats()
        got = hybrid_decode_ref(hyp, verify, 0, max_len, window=int(rng.integers(0, 4)),
                                k_sync=int(rng.integers(0, 4)), stats=stats)
        assert np.array_equal(got, expected), case
        assert 1 <= stats.calls <= ar_calls and stats.emitted == ar_calls  # never more calls than AR


def test_reference_bad_inputs():
    verify = oracle_verify_fn(_ids("ab"), eos=0)
    with pytest.raises(ValueError, match="fast_hyp"):
        hybrid_decode_ref(np.zeros((2, 2), dtype=np.int64), verify, 0, 5)
    with pytest.raises(ValueError, match="max_len"):
        hybrid_decode_ref(_ids("ab"), verify, 0, 0)
    with pytest.raises(ValueError, match="k_sync"):
        hybrid_decode_ref(_ids("ab"), verify, 0, 5, k_sync=-1)
    with pytest.raises(ValueError, match="logprobs"):
        ctc_greedy_ref(np.zeros(4), 0)
    with pytest.raises(ValueError, match="blank"):
        ctc_greedy_ref(np.zeros((4, 3)), 3)
    with pytest.raises(ValueError, match="greedy"):
        first_mismatch_ref(np.array([1, 2]), np.array([1]))


# ----------------------------------------------------------------------------- data


def test_synthetic_acoustics_are_seeded_and_shaped():
    data = zoo_data("pydoc")
    a_train, a_val = acoustic_splits(data.train_ids, data.val_ids, data.tokenizer, max_train=20, max_val=5)
    b_train, _ = acoustic_splits(data.train_ids, data.val_ids, data.tokenizer, max_train=20, max_val=5)
    assert len(a_train) == 20 and len(a_val) == 5
    for fa, fb, text in zip(a_train.frames, b_train.frames, a_train.texts):
        assert torch.equal(fa, fb)                                 # same seed, same frames
        assert len(fa) == 2 * len(text) and fa.shape[1] == 16          # two frames per character
        assert 12 <= len(text) <= 60
    assert all(" " in data.tokenizer.decode(t.tolist()) for t in a_val.texts)
    frames, lengths = pad_frames(a_val.frames)
    assert frames.shape == (5, int(lengths.max()), 16)


def test_acoustics_bad_inputs():
    protos = np.zeros((4, 16))
    with pytest.raises(ValueError, match="text"):
        synthesize(np.array([0, 9]), protos, np.random.default_rng(0))
    with pytest.raises(ValueError, match="noise"):
        synthesize(np.array([0, 1]), protos, np.random.default_rng(0), noise=-1.0)
    with pytest.raises(ValueError, match="durations"):
        synthesize(np.array([0, 1]), protos, np.random.default_rng(0), durations=(3, 1))
    with pytest.raises(TypeError, match="tokenizer"):
        text_lines(np.array([1, 2]), "char")


# ----------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Seq2Seq(Seq2SeqConfig(vocab_size=9, n_features=4, d_model=16, n_heads=2, d_ff=32, max_frames=20, max_tokens=12)).eval()


def test_cached_decoding_in_chunks_equals_one_uncached_pass(tiny):
    frames, tokens = torch.randn(2, 11, 4), torch.randint(0, 9, (2, 10))
    lengths = torch.tensor([11, 7])
    with torch.no_grad():
        full = tiny(frames, lengths, tokens)
        memory = tiny.encode(frames, lengths)
        state = tiny.start(memory)
        parts = [tiny.decode(tokens[:, a:b], state) for a, b in ((0, 1), (1, 4), (4, 5), (5, 10))]
        # float32, same maths in another summation order: 1e-5
        torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
        state.cache.truncate(4)                                    # roll back, then rescore the rest
        torch.testing.assert_close(tiny.decode(tokens[:, 4:], state), full[:, 4:], atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_an_utterance(tiny):
    frames = torch.randn(1, 7, 4)
    padded = torch.cat([frames, torch.randn(1, 4, 4)], dim=1)
    tokens = torch.randint(0, 9, (1, 5))
    with torch.no_grad():
        # the mask hides the 4 extra frames exactly; float32 reordering only: 1e-5
        torch.testing.assert_close(tiny(padded, torch.tensor([7]), tokens), tiny(frames, None, tokens), atol=1e-5, rtol=1e-5)


def test_model_bad_inputs(tiny):
    with pytest.raises(ValueError, match="frames"):
        tiny.encode(torch.randn(1, 5, 3))
    with pytest.raises(ValueError, match="lengths"):
        tiny.encode(torch.randn(1, 5, 4), torch.tensor([6]))
    state = tiny.start(tiny.encode(torch.randn(1, 5, 4)))
    with pytest.raises(ValueError, match="tokens"):
        tiny.decode(torch.tensor([[9]]), state)
    with pytest.raises(TypeError, match="tokens"):
        tiny.decode(torch.tensor([[1.0]]), state)
    with pytest.raises(ValueError, match="max_tokens"):
        tiny.decode(torch.zeros(1, 13, dtype=torch.long), state)
    with pytest.raises(TypeError, match="model"):
        hybrid_decode("asr", torch.randn(5, 4))
    with pytest.raises(ValueError, match="frames"):
        hybrid_decode(tiny, torch.randn(1, 5, 4))
    with pytest.raises(TypeError, match="config"):
        Seq2Seq({"vocab_size": 9})


def test_hybrid_equals_greedy_on_an_untrained_model(tiny):
    # an untrained CTC head proposes junk: every token is a correction, the output is still greedy AR's
    for seed in range(5):
        frames = torch.randn(9, 4, generator=torch.Generator().manual_seed(seed))
        stats = HybridStats()
        expected = greedy_ar_decode(tiny, frames)
        assert torch.equal(hybrid_decode(tiny, frames, stats=stats), expected)
        assert stats.calls <= len(expected) + 1


# ----------------------------------------------------------------------------- the trained model (zoo)


@pytest.fixture(scope="module")
def asr():
    model, tok = load("asr-hybrid")
    data = zoo_data("pydoc")
    _, held_out = acoustic_splits(data.train_ids, data.val_ids, tok, max_val=8)
    return model, held_out


def test_trained_hybrid_equals_greedy_and_the_uncached_reference(asr):
    model, held_out = asr
    for frames in held_out.frames:
        stats, ref_stats = HybridStats(), HybridStats()
        expected = greedy_ar_decode(model, frames)
        assert torch.equal(hybrid_decode(model, frames, stats=stats), expected)
        hyp = ctc_greedy(model.ctc_log_probs(model.encode(frames[None]))[0], model.config.vocab.blank)
        ref = hybrid_decode_ref(hyp.numpy(), uncached_verify_fn(model, frames), model.config.vocab.eos,
                                model.config.max_tokens, stats=ref_stats)
        assert np.array_equal(ref, expected.numpy()) and stats == ref_stats
        assert stats.calls < len(expected) + 1                     # the trained fast pass saves calls


def test_zoo_smoke_build(tmp_path):
    command = [sys.executable, "-m", "lib.zoo", "build", "asr-hybrid", "--steps", "3", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "CI": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    record = read_records(tmp_path)["asr-hybrid"]
    assert record["steps"] == 3 and record["val_loss_nats"] > 1.0           # 3 steps learn little
    model, _ = load("asr-hybrid", tmp_path)
    assert isinstance(model, Seq2Seq) and not model.training


# ----------------------------------------------------------------------------- the exercise


def test_checker_passes_the_solution():
    assert check_ctc_collapse(_solution()) == 47


def test_checker_propagates_not_implemented():
    def stub(ids, blank):
        raise NotImplementedError("write ctc_collapse")

    with pytest.raises(NotImplementedError):
        check_ctc_collapse(stub)


@pytest.mark.parametrize("wrong, message", [
    (lambda ids, blank: [x for i, x in enumerate([y for y in ids if y != blank])
                         if i == 0 or x != [y for y in ids if y != blank][i - 1]], "blank between equal labels"),
    (lambda ids, blank: [x for x in ids if x != blank], "run of one label"),
    (lambda ids, blank: [x for i, x in enumerate(ids) if i == 0 or x != ids[i - 1]], "blank between equal labels"),
    (lambda ids, blank: ctc_collapse_ref(np.array(ids, dtype=np.int64), 0).tolist(), "blank need not be 0"),
])
def test_checker_catches_plausible_wrong_answers(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check_ctc_collapse(wrong)
