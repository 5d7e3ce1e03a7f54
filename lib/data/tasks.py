"""Synthetic tasks: small algorithmic problems whose right answer is known exactly.

Every task makes ``n`` examples as token sequences ``prompt + answer (+ padding)`` of one fixed
length ``L`` (set by the task's parameters, never by the random draw), packed for next-token
training with the loss on the answer only (:class:`TaskBatch`):

* ``sequences`` (n, L): every token; ``inputs = sequences[:, :-1]``;
* ``targets`` (n, L-1): ``sequences[:, 1:]`` where that token belongs to the answer, else
  :data:`IGNORE_INDEX` (-100, which ``torch.nn.functional.cross_entropy`` skips);
* ``vocab``: id → symbol, each symbol one character, so ``text(i)`` (the symbols of example ``i``
  joined) reads like ``"31415|51413"``.

Registry: ``TASKS[name]`` is a :class:`TaskSpec` (a one-line description, the generator, its
parameters with defaults); :func:`make_task` draws a batch reproducibly from a seed::

    batch = make_task("addition_reversed", 1000, seed=0, digits=5)
    batch.text(0)                      # '59804+2962=66726$__' (answer digits least significant first)
    loss = F.cross_entropy(model(batch.inputs).flatten(0, 1), batch.targets.flatten())

Each generator's docstring gives its exact format. They take a NumPy ``Generator`` and are
vectorized over examples, except addition, which writes its examples as strings.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lib.validation import check_choice, check_int_in_range, check_seed
from lib.validation import check_positive_int

__all__ = ["IGNORE_INDEX", "SYMBOLS", "TASKS", "TaskBatch", "TaskSpec", "make_task"]

IGNORE_INDEX = -100
"""Target of a position that carries no loss (prompt and padding)."""

SYMBOLS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
"""Content symbols of copy/reverse/sort, in ASCII order, so sorting ids sorts the rendered text."""


@dataclass(frozen=True)
class TaskBatch:
    """``n`` examples of one task, ready for next-token training with the loss on answer tokens only.

    ``sequences`` (n, L) long: prompt, answer and padding tokens. ``inputs`` (n, L-1) long: the
    sequences without their last token. ``targets`` (n, L-1) long: the next token where it belongs to
    the answer, :data:`IGNORE_INDEX` elsewhere. ``vocab``: token id → one-character symbol.
    """

    sequences: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    vocab: list[str]

    @property
    def answer_mask(self) -> torch.Tensor:
        """(n, L-1) bool: where a target is taken (``targets != IGNORE_INDEX``)."""
        return self.targets != IGNORE_INDEX

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def text(self, i: int) -> str:
        """Example ``i`` as its symbols joined, e.g. ``'123+45=168$__'``."""
        check_int_in_range("i", i, 0, len(self) - 1)
        return "".join(self.vocab[token] for token in self.sequences[i].tolist())


def _batch(sequences: np.ndarray, is_answer: np.ndarray, vocab: list[str]) -> TaskBatch:
    """Pack ``sequences`` (n, L) and the mask of their answer tokens (n, L) into a :class:`TaskBatch`."""
    tokens = torch.from_numpy(np.ascontiguousarray(sequences, dtype=np.int64))
    answer = torch.from_numpy(np.ascontiguousarray(is_answer[:, 1:], dtype=bool))
    targets = torch.where(answer, tokens[:, 1:], IGNORE_INDEX)
    return TaskBatch(sequences=tokens, inputs=tokens[:, :-1].contiguous(), targets=targets, vocab=list(vocab))


# ---- copy, reverse, sort: rewrite a random string -------------------------------------------------


def _rewrite_task(
    rng: np.random.Generator, n: int, length: int, num_symbols: int, rewrite: Callable[[np.ndarray], np.ndarray]
) -> TaskBatch:
    """``source | rewrite(source)`` with ``source`` (n, length) uniform over the first ``num_symbols`` symbols."""
    check_positive_int("length", length)
    check_int_in_range("num_symbols", num_symbols, 2, len(SYMBOLS))
    source = rng.integers(0, num_symbols, size=(n, length))
    separator = np.full((n, 1), num_symbols)
    sequences = np.concatenate([source, separator, rewrite(source)], axis=1)
    is_answer = np.zeros(sequences.shape, dtype=bool)
    is_answer[:, length + 1 :] = True
    return _batch(sequences, is_answer, [*SYMBOLS[:num_symbols], "|"])


def copy_task(rng: np.random.Generator, n: int, *, length: int = 8, num_symbols: int = 10) -> TaskBatch:
    """Repeat a random string: ``31415|31415``.

    Tokens: the first ``num_symbols`` (2..62) of :data:`SYMBOLS` (ids ``0..num_symbols-1``), then
    ``"|"``. Prompt: ``length`` symbols drawn uniformly and independently, then ``"|"``. Answer: the
    same ``length`` symbols. ``L = 2 * length + 1``; no padding.
    """
    return _rewrite_task(rng, n, length, num_symbols, lambda source: source)


def reverse_task(rng: np.random.Generator, n: int, *, length: int = 8, num_symbols: int = 10) -> TaskBatch:
    """Write a random string backwards: ``31415|51413``. Tokens, prompt and ``L`` as in :func:`copy_task`."""
    return _rewrite_task(rng, n, length, num_symbols, lambda source: source[:, ::-1])


def sort_task(rng: np.random.Generator, n: int, *, length: int = 8, num_symbols: int = 10) -> TaskBatch:
    """Sort a random string (repeats kept): ``31415|11345``. Tokens, prompt and ``L`` as in :func:`copy_task`.

    The order is the id order, which is the ASCII order of the symbols (digits < A-Z < a-z).
    """
    return _rewrite_task(rng, n, length, num_symbols, lambda source: np.sort(source, axis=1))


# ---- parity ---------------------------------------------------------------------------------------


def parity_task(rng: np.random.Generator, n: int, *, length: int = 8) -> TaskBatch:
    """The parity of a bit string: ``10110=1``.

    Tokens: ``"0"``, ``"1"``, ``"="`` (ids 0, 1, 2). Prompt: ``length`` uniform random bits, then
    ``"="``. Answer: one bit, the sum of the bits modulo 2 (``1`` when the count of ones is odd).
    ``L = length + 2``.
    """
    check_positive_int("length", length)
    bits = rng.integers(0, 2, size=(n, length))
    parity = bits.sum(axis=1, keepdims=True) % 2
    sequences = np.concatenate([bits, np.full((n, 1), 2), parity], axis=1)
    is_answer = np.zeros(sequences.shape, dtype=bool)
    is_answer[:, -1] = True
    return _batch(sequences, is_answer, ["0", "1", "="])


# ---- addition -------------------------------------------------------------------------------------

ADDITION_VOCAB = [*"0123456789", "+", "=", "$", "_"]
"""Digits (ids 0-9), then ``+``, ``=``, ``$`` (end of answer) and ``_`` (padding)."""


def _random_operands(rng: np.random.Generator, n: int, min_digits: int, digits: int) -> np.ndarray:
    """(n,) int64 numbers whose digit count is uniform in ``[min_digits, digits]``, the value uniform given it."""
    lengths = rng.integers(min_digits, digits + 1, size=n)
    low = np.where(lengths == 1, 0, 10 ** (lengths - 1))
    return rng.integers(low, 10**lengths)


def _addition(rng: np.random.Generator, n: int, digits: int, min_digits: int, reverse_answer: bool) -> TaskBatch:
    """``a+b=c$`` padded with ``_``; ``c`` written least significant digit first when ``reverse_answer``."""
    check_int_in_range("digits", digits, 1, 18)  # sums then stay exact in int64
    check_int_in_range("min_digits", min_digits, 1, digits)
    width = 3 * digits + 4  # two operands, "+", "=", a sum of up to digits + 1 digits, "$"
    ids = {symbol: i for i, symbol in enumerate(ADDITION_VOCAB)}
    sequences = np.full((n, width), ids["_"])
    is_answer = np.zeros((n, width), dtype=bool)
    a, b = _random_operands(rng, n, min_digits, digits), _random_operands(rng, n, min_digits, digits)
    for row, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        total = str(x + y)
        prompt = f"{x}+{y}="
        answer = (total[::-1] if reverse_answer else total) + "$"
        sequences[row, : len(prompt) + len(answer)] = [ids[symbol] for symbol in prompt + answer]
        is_answer[row, len(prompt) : len(prompt) + len(answer)] = True
    return _batch(sequences, is_answer, ADDITION_VOCAB)


def addition_task(rng: np.random.Generator, n: int, *, digits: int = 3, min_digits: int = 1) -> TaskBatch:
    """Add two numbers, answer written as usual: ``407+95=502$__``.

    Tokens: :data:`ADDITION_VOCAB`. Each operand has a digit count drawn uniformly from
    ``[min_digits, digits]`` (``digits`` ≤ 18) and then a value uniform among numbers of that many
    digits, written without leading zeros (one-digit operands include 0). Prompt: ``a+b=``. Answer:
    the decimal digits of ``a + b`` (no leading zeros), then ``$``. Then ``_`` up to
    ``L = 3 * digits + 4``; padding carries no target. Set ``min_digits = digits`` for operands of
    exactly ``digits`` digits.
    """
    return _addition(rng, n, digits, min_digits, reverse_answer=False)


def addition_reversed_task(rng: np.random.Generator, n: int, *, digits: int = 3, min_digits: int = 1) -> TaskBatch:
    """Add two numbers, answer least significant digit first: ``407+95=205$__``.

    As :func:`addition_task` (operands written as usual), but the answer's digits are reversed, the
    order in which carries are computed, as in the "reverse" format of Lee et al. 2023 (arXiv
    2307.03381) that length-generalization studies build on.
    """
    return _addition(rng, n, digits, min_digits, reverse_answer=True)


# ---- flip-flop ------------------------------------------------------------------------------------

FLIP_FLOP_VOCAB = ["w", "i", "r", "0", "1"]
"""Instructions write, ignore, read (ids 0, 1, 2), then the bits 0 and 1 (ids 3, 4)."""


def _check_probability(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")


def flip_flop_task(
    rng: np.random.Generator,
    n: int,
    *,
    length: int = 128,
    p_write: float = 0.1,
    p_ignore: float = 0.8,
    p_read: float = 0.1,
) -> TaskBatch:
    """Flip-flop language (Liu et al. 2023, arXiv 2306.00946): remember the last written bit.

    Tokens: :data:`FLIP_FLOP_VOCAB`. A sequence is ``length / 2`` pairs *instruction, bit* (``length``
    even, ≥ 4), e.g. ``w1i0i1r1w0i0r0``. The first instruction is always ``w`` and the last always
    ``r``; the others are drawn independently: ``w`` with probability ``p_write``, ``i`` with
    ``p_ignore``, ``r`` with ``p_read`` (the three sum to 1). The bit after ``w`` or ``i`` is uniform;
    the bit after ``r`` equals the bit after the most recent ``w``. Answer: the bits after the ``r``
    instructions — the only tokens the prefix determines, and the ones the paper scores. The
    defaults are the paper's FFL(0.8) (``p_ignore = 0.8``, ``p_write = p_read = 0.1``); its sparse and
    dense tests are FFL(0.98) and FFL(0.1), with ``p_write = p_read = (1 - p_ignore) / 2``. The paper
    uses ``length = 512``. ``L = length``.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 4 or length % 2:
        raise ValueError(f"length: expected an even int >= 4, got {length!r}")
    for name, p in (("p_write", p_write), ("p_ignore", p_ignore), ("p_read", p_read)):
        _check_probability(name, p)
    if not math.isclose(p_write + p_ignore + p_read, 1.0, abs_tol=1e-9):
        raise ValueError(f"p_write + p_ignore + p_read: expected 1, got {p_write + p_ignore + p_read!r}")
    write, _, read = range(3)
    pairs = length // 2
    instructions = rng.choice(3, size=(n, pairs), p=[p_write, p_ignore, p_read])
    instructions[:, 0], instructions[:, -1] = write, read
    bits = rng.integers(0, 2, size=(n, pairs))
    position = np.arange(pairs)
    latest_write = np.maximum.accumulate(np.where(instructions == write, position, 0), axis=1)
    is_read = instructions == read
    bits = np.where(is_read, np.take_along_axis(bits, latest_write, axis=1), bits)
    sequences = np.empty((n, length), dtype=np.int64)
    sequences[:, 0::2], sequences[:, 1::2] = instructions, bits + FLIP_FLOP_VOCAB.index("0")
    is_answer = np.zeros((n, length), dtype=bool)
    is_answer[:, 1::2] = is_read
    return _batch(sequences, is_answer, FLIP_FLOP_VOCAB)


# ---- associative recall ---------------------------------------------------------------------------


def associative_recall_task(
    rng: np.random.Generator, n: int, *, num_pairs: int = 8, num_keys: int = 26, num_values: int = 10
) -> TaskBatch:
    """Look up a key among key-value pairs: ``c4a7x1?a7``.

    Tokens: keys are the first ``num_keys`` (≤ 26) lowercase letters (ids ``0..num_keys-1``), values
    the first ``num_values`` (2..10) digits (the next ids), then ``"?"``. Prompt: ``num_pairs``
    (≤ ``num_keys``) pairs *key value* with distinct keys in random order and uniform values (values
    may repeat), then ``"?"`` and a query key drawn uniformly from the pairs' keys. Answer: the value
    paired with the query key. ``L = 2 * num_pairs + 3``.
    """
    check_int_in_range("num_keys", num_keys, 1, 26)
    check_int_in_range("num_values", num_values, 2, 10)
    check_int_in_range("num_pairs", num_pairs, 1, num_keys)
    keys = np.argsort(rng.random((n, num_keys)), axis=1)[:, :num_pairs]  # distinct keys per example
    values = rng.integers(0, num_values, size=(n, num_pairs))
    asked = rng.integers(0, num_pairs, size=(n, 1))
    pairs = np.stack([keys, num_keys + values], axis=2).reshape(n, 2 * num_pairs)
    question = np.full((n, 1), num_keys + num_values)
    answer = num_keys + np.take_along_axis(values, asked, axis=1)
    sequences = np.concatenate([pairs, question, np.take_along_axis(keys, asked, axis=1), answer], axis=1)
    is_answer = np.zeros(sequences.shape, dtype=bool)
    is_answer[:, -1] = True
    vocab = [*"abcdefghijklmnopqrstuvwxyz"[:num_keys], *"0123456789"[:num_values], "?"]
    return _batch(sequences, is_answer, vocab)


# ---- registry -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: a one-line ``description`` and its ``generate(rng, n, **params)``."""

    description: str
    generate: Callable[..., TaskBatch]

    @property
    def defaults(self) -> dict[str, Any]:
        """The task's parameters and their default values, read from ``generate``'s signature."""
        parameters = inspect.signature(self.generate).parameters.values()
        return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


TASKS: dict[str, TaskSpec] = {
    "copy": TaskSpec("repeat a random string after a separator", copy_task),
    "reverse": TaskSpec("write a random string backwards", reverse_task),
    "sort": TaskSpec("sort the symbols of a random string", sort_task),
    "parity": TaskSpec("the parity of a bit string", parity_task),
    "addition": TaskSpec("add two multi-digit numbers, answer most significant digit first", addition_task),
    "addition_reversed": TaskSpec(
        "add two multi-digit numbers, answer least significant digit first", addition_reversed_task
    ),
    "flip_flop": TaskSpec("flip-flop language: read back the last written bit (Liu et al. 2023)", flip_flop_task),
    "associative_recall": TaskSpec("recall the value paired with a query key", associative_recall_task),
}


def make_task(name: str, n: int, *, seed: int, **params: Any) -> TaskBatch:
    """``n`` examples of task ``name`` (a key of :data:`TASKS`), the same for the same ``seed`` and ``params``.

    ``params`` override the task's defaults (``TASKS[name].defaults``); see the task's generator
    docstring for their meaning and the exact format.
    """
    check_choice("task", name, TASKS)
    check_positive_int("n", n)
    check_seed(seed)
    spec = TASKS[name]
    for key in params:
        check_choice(f"parameter of task {name!r}", key, spec.defaults)
    return spec.generate(np.random.default_rng(seed), n, **params)
