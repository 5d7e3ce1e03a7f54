"""Count models as drafts: an n-gram (or unigram) model behind the Decoder protocol.

:func:`lib.decoding.speculative.speculative_generate` asks a draft for ``new_cache(1)``,
``draft(ids (1, t), cache) → logits (1, t, V)``, ``cache.length``, ``cache.truncate(n)`` and
``draft.config.vocab_size`` / ``.max_seq_len``. A count model has no hidden state: its "cache"
is the context itself, and a step is a table look-up (c ≈ 0 next to a transformer call). Logits
are ln P(· | context), so the sampling transform treats them like a network's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from lib.ngram import NGramModel
from lib.validation import check_dtype, check_ndim, check_positive_int, check_tensor

__all__ = ["ContextCache", "ContextModel", "CountDraft", "CountDraftConfig", "check_context_ids", "count_draft"]


@dataclass(frozen=True)
class CountDraftConfig:
    """What the protocol reads: the vocabulary and the longest context a cache holds."""

    vocab_size: int
    max_seq_len: int


@dataclass
class ContextCache:
    """The tokens seen so far: all a count model needs. ``truncate`` rolls back in O(1) (a list slice)."""

    tokens: list[int] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.tokens)

    def truncate(self, length: int) -> None:
        """Forget every token from ``length`` on (0 ≤ length ≤ the current length)."""
        if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= self.length:
            raise ValueError(f"length: expected an int in [0, {self.length}], got {length!r}")
        del self.tokens[length:]


def check_context_ids(ids: Any, cache: ContextCache, max_seq_len: int) -> None:
    """The new tokens of a one-sequence count or toy model: a (1, t ≥ 1) integer tensor that fits the context."""
    check_tensor("ids", ids)
    check_dtype("ids", ids, (torch.long, torch.int32))
    check_ndim("ids", ids, "batch, tokens")
    if ids.shape[0] != 1 or ids.shape[1] == 0:
        raise ValueError(f"ids: expected shape (1, t) with t ≥ 1, got {tuple(ids.shape)}")
    if cache.length + ids.shape[1] > max_seq_len:
        raise ValueError(f"ids: context of {cache.length + ids.shape[1]} tokens exceeds max_seq_len {max_seq_len}")


class ContextModel:
    """The Decoder protocol (batch 1) for a model whose next row depends only on the tokens so far.

    The cache is the context itself (:class:`ContextCache`); a call on ``ids (1, t)`` appends the
    tokens one by one and stacks the row after each. Subclasses set ``config`` (``vocab_size``,
    ``max_seq_len``) and give :meth:`logits_after`.
    """

    config: Any

    def logits_after(self, tokens: list[int]) -> torch.Tensor:
        """The logits (V,) of the next token after the whole context ``tokens``."""
        raise NotImplementedError

    def new_cache(self, batch_size: int) -> ContextCache:
        """An empty context; these models decode one sequence at a time."""
        if batch_size != 1:
            raise ValueError(f"batch_size: expected 1 ({type(self).__name__} decodes one sequence), got {batch_size!r}")
        return ContextCache()

    def __call__(self, ids: torch.Tensor, cache: ContextCache) -> torch.Tensor:
        """Logits after each new token: ids (1, t) → (1, t, V); extends the cache."""
        check_context_ids(ids, cache, self.config.max_seq_len)
        rows = []
        for token in ids[0].tolist():
            cache.tokens.append(token)
            rows.append(self.logits_after(cache.tokens))
        return torch.stack(rows)[None]


class CountDraft(ContextModel):
    """An :class:`~lib.ngram.NGramModel` with the Decoder protocol (batch 1): logits ln P(· | context), float32.

    A row depends only on the last n − 1 tokens, and text repeats its short contexts, so each
    row is computed once and kept (an LRU memo of ``memo_size`` contexts): a step is then one
    dictionary look-up.
    """

    def __init__(self, model: NGramModel, max_seq_len: int = 4096, memo_size: int = 1 << 16) -> None:
        if not isinstance(model, NGramModel):
            raise TypeError(f"model: expected an NGramModel, got {type(model).__name__}")
        check_positive_int("max_seq_len", max_seq_len)
        check_positive_int("memo_size", memo_size)
        self.model = model
        self.config = CountDraftConfig(model.vocab_size, max_seq_len)
        self._row = lru_cache(maxsize=memo_size)(self._log_probs)

    def _log_probs(self, context: tuple[int, ...]) -> torch.Tensor:
        """ln P(· | context) as float32 (V,), for the last n − 1 tokens ``context``."""
        return torch.from_numpy(np.log(self.model.next_distribution(context))).float()

    def logits_after(self, tokens: list[int]) -> torch.Tensor:
        """ln P(· | the last n − 1 tokens), memoised."""
        return self._row(tuple(tokens[max(0, len(tokens) - self.model.n + 1):]))


def count_draft(model: NGramModel, max_seq_len: int = 4096) -> CountDraft:
    """Wrap a count model (e.g. ``lib.zoo.load("char-ngram")[0]`` or ``"char-unigram"``) as a draft."""
    return CountDraft(model, max_seq_len)
