"""lib.data.tasks: every task's answers are recomputed here from the rendered text, independently.

Each ``solve_*`` reads one example as ``TaskBatch.text(i)`` renders it, checks its format, and
returns ``(prompt, answer)``: the answer the example must carry, computed from the prompt alone.
The tests then check that the answer tokens (the targets under ``answer_mask``) spell exactly it.
"""

import re

import pytest
import torch

from lib.data import TASKS, TaskBatch, make_task
from lib.data.tasks import IGNORE_INDEX

N = 64


def solve_rewrite(text: str, rewrite) -> tuple[str, str]:
    prompt, answer = text.split("|")
    assert len(prompt) == len(answer)
    return prompt + "|", rewrite(prompt)


def solve_parity(text: str) -> tuple[str, str]:
    bits, _ = text.split("=")
    assert set(bits) <= {"0", "1"}
    return bits + "=", str(bits.count("1") % 2)


def solve_addition(text: str, reversed_answer: bool) -> tuple[str, str]:
    match = re.fullmatch(r"(\d+)\+(\d+)=(\d+)\$(_*)", text)
    assert match, text
    a, b = match.group(1), match.group(2)
    for operand in (a, b):
        assert operand == str(int(operand))  # no leading zeros
    total = str(int(a) + int(b))
    return f"{a}+{b}=", (total[::-1] if reversed_answer else total) + "$"


def solve_flip_flop(text: str) -> tuple[str, str]:
    instructions, bits = text[0::2], text[1::2]
    assert set(instructions) <= set("wir") and set(bits) <= set("01")
    assert instructions[0] == "w" and instructions[-1] == "r"
    memory, reads = None, ""
    for instruction, bit in zip(instructions, bits):
        if instruction == "w":
            memory = bit
        elif instruction == "r":
            reads += memory
    return text, reads  # the answer tokens are interleaved with the prompt: compared in order


def solve_associative_recall(text: str) -> tuple[str, str]:
    pairs, query = text.split("?")
    keys, values = pairs[0::2], pairs[1::2]
    assert len(set(keys)) == len(keys) and keys.isalpha() and values.isdigit()
    return pairs + "?" + query[0], dict(zip(keys, values))[query[0]]


SOLVERS = {
    "copy": lambda text: solve_rewrite(text, lambda s: s),
    "reverse": lambda text: solve_rewrite(text, lambda s: s[::-1]),
    "sort": lambda text: solve_rewrite(text, lambda s: "".join(sorted(s))),
    "parity": solve_parity,
    "addition": lambda text: solve_addition(text, reversed_answer=False),
    "addition_reversed": lambda text: solve_addition(text, reversed_answer=True),
    "flip_flop": solve_flip_flop,
    "associative_recall": solve_associative_recall,
}

# A non-default setting per task, so that the parameters are exercised too.
SETTINGS = {
    "copy": {"length": 13, "num_symbols": 62},
    "reverse": {"length": 5, "num_symbols": 3},
    "sort": {"length": 11, "num_symbols": 40},
    "parity": {"length": 17},
    "addition": {"digits": 7, "min_digits": 2},
    "addition_reversed": {"digits": 12, "min_digits": 12},
    "flip_flop": {"length": 64, "p_write": 0.3, "p_ignore": 0.4, "p_read": 0.3},
    "associative_recall": {"num_pairs": 5, "num_keys": 6, "num_values": 4},
}

LENGTHS = {  # L, the length of every sequence, for the default and the SETTINGS parameters
    "copy": (17, 27),
    "reverse": (17, 11),
    "sort": (17, 23),
    "parity": (10, 19),
    "addition": (13, 25),
    "addition_reversed": (13, 40),
    "flip_flop": (128, 64),
    "associative_recall": (19, 13),
}


def test_every_task_is_registered_and_tested():
    assert set(TASKS) == set(SOLVERS) == set(SETTINGS) == set(LENGTHS)
    assert all(spec.description and spec.generate.__doc__ for spec in TASKS.values())


def answer_text(batch: TaskBatch, i: int) -> str:
    return "".join(batch.vocab[t] for t in batch.targets[i][batch.answer_mask[i]].tolist())


@pytest.mark.parametrize("params", ["defaults", "settings"])
@pytest.mark.parametrize("name", sorted(TASKS))
def test_answers_are_right(name, params):
    batch = make_task(name, N, seed=3, **(SETTINGS[name] if params == "settings" else {}))
    for i in range(N):
        text = batch.text(i)
        prompt, answer = SOLVERS[name](text)
        assert answer_text(batch, i) == answer, text
        if name != "flip_flop":  # elsewhere the answer follows the prompt directly
            assert text.startswith(prompt + answer), text


@pytest.mark.parametrize("name", sorted(TASKS))
def test_shapes_masks_and_the_shift(name):
    for params, length in zip(({}, SETTINGS[name]), LENGTHS[name]):
        batch = make_task(name, N, seed=0, **params)
        assert len(batch) == N and batch.sequences.shape == (N, length)
        for tensor in (batch.sequences, batch.inputs, batch.targets):
            assert tensor.dtype == torch.long
        assert batch.inputs.shape == batch.targets.shape == batch.answer_mask.shape == (N, length - 1)
        assert torch.equal(batch.inputs, batch.sequences[:, :-1])
        mask = batch.answer_mask
        assert mask.dtype == torch.bool and mask.any(dim=1).all()  # every example has an answer
        assert torch.equal(batch.targets[mask], batch.sequences[:, 1:][mask])
        assert (batch.targets[~mask] == IGNORE_INDEX).all()
        assert batch.sequences.min() >= 0 and batch.sequences.max() < len(batch.vocab)
        assert all(len(symbol) == 1 for symbol in batch.vocab) and len(set(batch.vocab)) == len(batch.vocab)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_same_batch(name):
    a, b, c = (make_task(name, N, seed=seed) for seed in (7, 7, 8))
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.sequences, c.sequences)


def test_answer_positions_per_task():
    copy = make_task("copy", 2, seed=0, length=4)
    assert copy.answer_mask[0].tolist() == [False] * 4 + [True] * 4  # targets at the 4 tokens after "|"
    parity = make_task("parity", 2, seed=0, length=4)
    assert parity.answer_mask[0].tolist() == [False] * 4 + [True]
    recall = make_task("associative_recall", 2, seed=0, num_pairs=2)
    assert recall.answer_mask[0].tolist() == [False] * 5 + [True]


def test_addition_padding_and_operand_lengths():
    batch = make_task("addition", 500, seed=1, digits=4, min_digits=2)
    lengths = set()
    for i in range(len(batch)):
        a, rest = batch.text(i).split("+")
        b = rest.split("=")[0]
        lengths |= {len(a), len(b)}
    assert lengths == {2, 3, 4}
    assert (batch.targets[batch.sequences[:, 1:] == batch.vocab.index("_")] == IGNORE_INDEX).all()
    exact = make_task("addition", 50, seed=1, digits=3, min_digits=3)
    assert all(len(exact.text(i).split("+")[0]) == 3 for i in range(50))


def test_flip_flop_instruction_frequencies_follow_the_probabilities():
    batch = make_task("flip_flop", 400, seed=0, length=202, p_write=0.2, p_ignore=0.7, p_read=0.1)
    inner = "".join(batch.text(i)[2:-2:2] for i in range(len(batch)))  # instructions between the fixed ends
    frequencies = {symbol: inner.count(symbol) / len(inner) for symbol in "wir"}
    assert frequencies == pytest.approx({"w": 0.2, "i": 0.7, "r": 0.1}, abs=0.01)


def test_flip_flop_sparse_reads_have_long_gaps():
    batch = make_task("flip_flop", 20, seed=0, length=512, p_write=0.01, p_ignore=0.98, p_read=0.01)
    assert batch.answer_mask.sum(dim=1).float().mean() < 5  # FFL(0.98): about 1 + 254 * 0.01 reads


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("copy", {"length": 0}, r"length: expected a positive int, got 0"),
        ("copy", {"num_symbols": 63}, r"num_symbols: expected an int in \[2, 62\], got 63"),
        ("sort", {"lenght": 3}, r"parameter of task 'sort': expected one of length, num_symbols, got 'lenght'"),
        ("parity", {"length": True}, r"length: expected a positive int, got True"),
        ("addition", {"digits": 19}, r"digits: expected an int in \[1, 18\], got 19"),
        ("addition_reversed", {"digits": 3, "min_digits": 4}, r"min_digits: expected an int in \[1, 3\], got 4"),
        ("flip_flop", {"length": 7}, r"length: expected an even int >= 4, got 7"),
        ("flip_flop", {"p_read": -0.1}, r"p_read: expected a probability in \[0, 1\], got -0.1"),
        ("flip_flop", {"p_write": 0.2}, r"p_write \+ p_ignore \+ p_read: expected 1, got 1.1"),
        ("associative_recall", {"num_pairs": 7, "num_keys": 6}, r"num_pairs: expected an int in \[1, 6\], got 7"),
        ("associative_recall", {"num_values": 11}, r"num_values: expected an int in \[2, 10\], got 11"),
    ],
)
def test_bad_params_are_named(name, params, message):
    with pytest.raises(ValueError, match=message):
        make_task(name, 4, seed=0, **params)


def test_bad_names_counts_seeds_and_indices():
    known = "addition, addition_reversed, associative_recall, copy, flip_flop, parity, reverse, sort"
    with pytest.raises(ValueError, match=rf"task: expected one of {known}, got 'cpoy'"):
        make_task("cpoy", 4, seed=0)
    with pytest.raises(ValueError, match=r"n: expected a positive int, got 0"):
        make_task("copy", 0, seed=0)
    with pytest.raises(ValueError, match=r"seed: expected a non-negative int, got 1.5"):
        make_task("copy", 4, seed=1.5)
    with pytest.raises(ValueError, match=r"i: expected an int in \[0, 3\], got 4"):
        make_task("copy", 4, seed=0).text(4)
