"""A character n-gram model from counts: the baseline every neural language model has to beat.

The model predicts the next token from the ``n − 1`` tokens before it, using how often each
``n``-gram occurred in the training text. Unseen events must not get probability zero, so the
counts are smoothed by **interpolated absolute discounting** (Ney, Essen & Kneser, 1994): every
seen count gives up a fixed discount ``D`` (0 < D ≤ 1), and the mass freed this way goes to the
next-shorter context, recursively down to the uniform distribution::

    P_k(w | h) = max(c(h w) − D, 0) / c(h)  +  D · N₁₊(h •) / c(h) · P_{k−1}(w | h')
    P_0(w)     = 1 / V

where ``h`` holds the last ``k − 1`` tokens, ``h'`` drops the oldest of them, ``c(h w)`` counts
the k-gram, ``c(h) = Σ_w c(h w)`` and ``N₁₊(h •)`` is the number of distinct tokens seen after
``h``. A history never seen (``c(h) = 0``) hands over to ``P_{k−1}`` entirely. Each ``P_k`` sums
to one: the discounted counts sum to ``c(h) − D · N₁₊(h •)`` and the back-off weight makes up the
rest. (Kneser–Ney would also replace the lower orders' counts by continuation counts; plain
absolute discounting keeps the raw counts and is simpler to check.)

Only the ``n``-gram counts are stored; the lower orders are their marginals (drop the oldest
token and add up), which keeps every ``P_k`` consistent with the table. ``n = 1`` is the unigram
baseline and ``n = 2`` the bigram baseline. Positions near the start of a text, with fewer than
``n − 1`` tokens before them, use the longest order their context allows.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["NGramModel"]

_FORMAT = "ngram-counts-v1"


def _as_ids(name: str, ids: Any, vocab_size: int) -> np.ndarray:
    """``ids`` as a 1-d int64 array with every value in ``[0, vocab_size)``, or a one-line error."""
    array = np.asarray(ids)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ValueError(
            f"{name}: expected a 1-d sequence of integer token ids, got {array.dtype} of shape {array.shape}"
        )
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise ValueError(f"{name}: expected ids in [0, {vocab_size}), got values in [{array.min()}, {array.max()}]")
    return array


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values`` at the positions of ``query`` in the sorted ``keys``; 0 where a query is absent."""
    if keys.size == 0:
        return np.zeros(query.shape, dtype=values.dtype)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return np.where(keys[pos] == query, values[pos], 0)


def _gram_keys(ids: np.ndarray, n: int, vocab_size: int) -> np.ndarray:
    """Every n-gram of ``ids`` as one integer, ``Σ_j ids[i+j] · V^(n−1−j)`` (base-V digits)."""
    windows = np.lib.stride_tricks.sliding_window_view(ids, n)
    powers = vocab_size ** np.arange(n - 1, -1, -1, dtype=np.int64)
    return windows @ powers


def _encode_array(array: np.ndarray) -> str:
    """Little-endian bytes of ``array``, zlib-compressed and base64-encoded for JSON."""
    return base64.b64encode(zlib.compress(array.tobytes(), 9)).decode("ascii")


def _decode_array(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype).astype(np.int64)


class _Order:
    """The counts of one order ``k``: k-grams, and their histories (the first ``k − 1`` tokens).

    ``gram_keys`` are sorted with their ``gram_counts``; ``hist_keys`` (sorted) carry ``c(h)``
    in ``hist_totals`` and ``N₁₊(h •)`` in ``hist_types``.
    """

    def __init__(self, gram_keys: np.ndarray, gram_counts: np.ndarray, vocab_size: int) -> None:
        self.gram_keys, self.gram_counts = gram_keys, gram_counts
        self.hist_keys, first, self.hist_types = np.unique(
            gram_keys // vocab_size, return_index=True, return_counts=True
        )
        self.hist_totals = np.add.reduceat(gram_counts, first) if gram_keys.size else gram_counts


class NGramModel:
    """Interpolated absolute discounting over token n-grams (see the module docstring).

    Build one with :meth:`fit`. ``n`` is the order (the context is ``n − 1`` tokens), ``discount``
    the ``D`` of the formula. Probabilities are float64 NumPy arrays.
    """

    def __init__(self, n: int, vocab_size: int, discount: float, gram_keys: np.ndarray, counts: np.ndarray) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size: expected a positive int, got {vocab_size!r}")
        if n * math.log2(vocab_size) >= 63:
            raise ValueError(
                f"n: expected vocab_size**n < 2**63 to key n-grams as int64, got n={n}, vocab_size={vocab_size}"
            )
        if isinstance(discount, bool) or not isinstance(discount, (int, float)) or not 0 < discount <= 1:
            raise ValueError(f"discount: expected a number in (0, 1], got {discount!r}")
        if gram_keys.shape != counts.shape or gram_keys.ndim != 1:
            raise ValueError(
                f"counts: expected one count per n-gram key, got {counts.shape} for {gram_keys.shape} keys"
            )
        self.n, self.vocab_size, self.discount = n, vocab_size, float(discount)
        self._orders = self._marginals(gram_keys, counts)

    def _marginals(self, gram_keys: np.ndarray, counts: np.ndarray) -> list[_Order]:
        """The tables of orders 1..n, each lower one the previous with its oldest token summed out."""
        orders = [_Order(gram_keys, counts, self.vocab_size)]
        for k in range(self.n - 1, 0, -1):
            keys, inverse = np.unique(orders[0].gram_keys % self.vocab_size**k, return_inverse=True)
            totals = np.bincount(inverse, weights=orders[0].gram_counts, minlength=keys.size).astype(np.int64)
            orders.insert(0, _Order(keys, totals, self.vocab_size))
        return orders

    @classmethod
    def fit(cls, ids: Any, vocab_size: int, n: int, *, discount: float = 0.75) -> NGramModel:
        """Count every n-gram of the training ids (1-d, values in ``[0, vocab_size)``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        ids = _as_ids("ids", ids, vocab_size)
        if ids.size < n:
            raise ValueError(f"ids: expected at least n = {n} tokens to count, got {ids.size}")
        keys, counts = np.unique(_gram_keys(ids, n, vocab_size), return_counts=True)
        return cls(n, vocab_size, discount, keys, counts.astype(np.int64))

    @property
    def num_counts(self) -> int:
        """How many distinct n-grams the model stores (its size, as parameters are a network's)."""
        return int(self._orders[-1].gram_keys.size)

    def _probabilities(self, contexts: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """``P(nxt[i] | contexts[i])`` for rows of ``contexts`` ``(m, n − 1)``, left-padded with −1.

        Climbs from the uniform distribution through orders 1..n, applying the interpolation of
        the module docstring where the history has been seen.
        """
        V, D = self.vocab_size, self.discount
        p = np.full(nxt.shape, 1.0 / V)
        hist = np.zeros(nxt.shape, dtype=np.int64)  # key of the last k − 1 context tokens
        available = np.ones(nxt.shape, dtype=bool)
        for k, order in enumerate(self._orders, start=1):
            if k > 1:
                older = contexts[:, self.n - k]  # the token k − 1 places back
                available &= older >= 0
                hist = hist + np.maximum(older, 0) * V ** (k - 2)
            c_hw = _lookup(order.gram_keys, order.gram_counts, hist * V + nxt)
            c_h = _lookup(order.hist_keys, order.hist_totals, hist)
            types = _lookup(order.hist_keys, order.hist_types, hist)
            interpolated = (np.maximum(c_hw - D, 0.0) + D * types * p) / np.maximum(c_h, 1)
            p = np.where(available & (c_h > 0), interpolated, p)
        return p

    def _context_row(self, context: Sequence[int]) -> np.ndarray:
        """The last ``n − 1`` tokens of ``context`` as one row ``(1, n − 1)``, left-padded with −1."""
        context = _as_ids("context", context, self.vocab_size)
        width = self.n - 1
        row = np.full((1, width), -1, dtype=np.int64)
        tail = context[len(context) - min(width, len(context)) :]
        row[0, width - tail.size :] = tail
        return row

    def next_distribution(self, context: Sequence[int]) -> np.ndarray:
        """``P(· | context)`` over the whole vocabulary, shape ``(V,)``; sums to 1."""
        row = self._context_row(context)
        return self._probabilities(np.repeat(row, self.vocab_size, axis=0), np.arange(self.vocab_size))

    def log_prob(self, next_id: int, context: Sequence[int]) -> float:
        """``ln P(next_id | context)``, using the last ``n − 1`` tokens of ``context``."""
        valid = isinstance(next_id, (int, np.integer)) and not isinstance(next_id, bool)
        if not valid or not 0 <= next_id < self.vocab_size:
            raise ValueError(f"next_id: expected an int in [0, {self.vocab_size}), got {next_id!r}")
        return float(np.log(self._probabilities(self._context_row(context), np.array([next_id]))[0]))

    def cross_entropy(self, ids: Any) -> float:
        """Mean ``−ln P(ids[i] | ids[i−n+1:i])`` over every token after the first, in nats per token."""
        ids = _as_ids("ids", ids, self.vocab_size)
        if ids.size < 2:
            raise ValueError(f"ids: expected at least 2 tokens to score, got {ids.size}")
        padded = np.concatenate([np.full(self.n - 1, -1, dtype=np.int64), ids])
        contexts = np.lib.stride_tricks.sliding_window_view(padded[:-1], self.n - 1)[1:]  # row i−1: before ids[i]
        return float(-np.log(self._probabilities(contexts, ids[1:])).mean())

    def sample(
        self, max_new_tokens: int, *, prompt: Sequence[int] = (), temperature: float = 1.0, seed: int = 0
    ) -> np.ndarray:
        """Draw ``max_new_tokens`` tokens one by one after ``prompt``; return prompt + new tokens.

        ``temperature`` rescales the distribution as ``p^(1/T)`` (renormalised). The same ``seed``
        gives the same text.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens: expected a non-negative int, got {max_new_tokens!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
        tokens = list(_as_ids("prompt", prompt, self.vocab_size))
        rng = np.random.default_rng(seed)
        for _ in range(max_new_tokens):
            logits = np.log(self.next_distribution(tokens)) / temperature
            p = np.exp(logits - logits.max())  # p^(1/T) without underflow at small T
            tokens.append(int(rng.choice(self.vocab_size, p=p / p.sum())))
        return np.asarray(tokens, dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the order, the discount and the n-gram counts, compressed.

        Keys (sorted) are stored as zlib-compressed int64 differences, counts as uint32; the
        lower orders are recomputed on load.
        """
        order = self._orders[-1]
        return {
            "format": _FORMAT,
            "n": self.n,
            "vocab_size": self.vocab_size,
            "discount": self.discount,
            "num_counts": self.num_counts,
            "keys": _encode_array(np.diff(order.gram_keys, prepend=0).astype("<i8")),
            "counts": _encode_array(order.gram_counts.astype("<u4")),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NGramModel:
        """Rebuild a model written by :meth:`to_dict`."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"d: expected a dict with format {_FORMAT!r} (from NGramModel.to_dict), got {found!r}")
        keys = np.cumsum(_decode_array(d["keys"], "<i8"))
        counts = _decode_array(d["counts"], "<u4")
        if keys.size != d["num_counts"]:
            raise ValueError(f"d['keys']: expected {d['num_counts']} n-grams, got {keys.size}")
        return cls(d["n"], d["vocab_size"], d["discount"], keys, counts)

    def __repr__(self) -> str:
        return (
            f"NGramModel(n={self.n}, vocab_size={self.vocab_size}, discount={self.discount}, "
            f"counts={self.num_counts})"
        )
