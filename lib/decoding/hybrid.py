"""Fast hypothesis, selective correction: hybrid decoding (Lim et al., arXiv 2508.19671).

An encoder–decoder recognizer pays one decoder call per output token. Hybrid decoding lets a
cheap *fast decoder* on the same encoder propose the whole output at once; the expensive
autoregressive (AR) decoder then only **verifies** it, several tokens per call, and **corrects**
it where the two disagree.

The book's version (the paper's text beyond its abstract was not available; see the notebook):

1. Fast pass — a CTC head: per-frame argmax, merge repeats, drop blanks → ŷ.
2. Verify — one teacher-forced decoder call on ``[last emitted token, d₁ … d_k]`` where the draft
   ``d = (ŷ_p, ŷ_{p+1}, …, eos)`` continues ŷ from position p. Row i gives the decoder's greedy
   choice ``g_i = argmax p(· | x, y, d_{<i})``. Accept the longest prefix with ``d_i = g_i``
   (:func:`first_mismatch_ref`), then emit ``g_n`` — the *correction* at the first mismatch.
   Every call emits at least one token and every emitted token is the decoder's own greedy
   choice for the prefix before it, so the output **equals greedy AR decoding** exactly.
3. Re-sync (:func:`resync`) — after a correction the fast hypothesis may be off by a token
   (ŷ inserted or dropped one). The draft resumes at the position q near the expected one
   whose preceding tokens ŷ_{<q} end with the longest match (up to ``k_sync`` tokens) of the
   output's end; with no match it assumes a substitution and skips one token of ŷ.

Cost: AR decoding needs |y| + 1 decoder calls (the last one emits eos); hybrid decoding needs
one call per correction plus one, when ŷ is perfect exactly one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lib.models.seq2seq import Memory, Seq2Seq
from lib.validation import check_positive_int, check_tensor

__all__ = [
    "HybridStats",
    "VerifyFn",
    "ctc_collapse_ref",
    "ctc_greedy",
    "char_error_rate",
    "ctc_greedy_ref",
    "edit_distance",
    "first_mismatch",
    "first_mismatch_ref",
    "greedy_ar_decode",
    "greedy_ar_ref",
    "hybrid_decode",
    "hybrid_decode_ref",
    "oracle_verify_fn",
    "resync",
    "uncached_verify_fn",
]

VerifyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``verify_fn(prefix, draft) -> argmaxes``: the decoder's greedy choice after ``prefix`` (the
output so far, without the start token) and after each longer prefix ``prefix + draft[: i]``,
for i = 0 … len(draft): (len(draft) + 1,) ints from one teacher-forced call."""


@dataclass
class HybridStats:
    """Counters of one or more decodes.

    ``calls``: decoder calls (verification passes); ``accepted``: draft tokens the decoder
    confirmed; ``corrected``: tokens the decoder emitted in place of a wrong draft token; ``bonus``:
    tokens emitted after a fully accepted draft (only when ``max_len`` cut the draft short);
    ``fast_tokens``: length of the fast hypotheses. Emitted tokens (eos included) =
    accepted + corrected + bonus.
    """

    calls: int = 0
    accepted: int = 0
    corrected: int = 0
    bonus: int = 0
    fast_tokens: int = 0

    @property
    def emitted(self) -> int:
        return self.accepted + self.corrected + self.bonus


# ----------------------------------------------------------------------------- NumPy references


def _ids(name: str, x: np.ndarray | list[int]) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 or (x.size and not np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name}: expected a 1-D array of token ids, got {x.dtype} shape {x.shape}")
    return x.astype(np.int64)


def ctc_collapse_ref(ids: np.ndarray, blank: int) -> np.ndarray:
    """CTC's many-to-one map B: merge runs of the same label, then drop blanks. (S,) → (L,) ints.

    ``[a, a, _, a, b, b, _] ↦ [a, a, b]``: a blank between two equal labels keeps them apart.
    """
    out, previous = [], None
    for label in _ids("ids", ids).tolist():
        if label != previous and label != blank:
            out.append(label)
        previous = label
    return np.array(out, dtype=np.int64)


def ctc_greedy_ref(logprobs: np.ndarray, blank: int) -> np.ndarray:
    """Best-path CTC decoding: the most likely label of every frame, collapsed. (S, V) → (L,) ints."""
    logprobs = np.asarray(logprobs)
    if logprobs.ndim != 2:
        raise ValueError(f"logprobs: expected a (frames, labels) array, got shape {logprobs.shape}")
    if not 0 <= blank < logprobs.shape[1]:
        raise ValueError(f"blank: expected a label in [0, {logprobs.shape[1]}), got {blank!r}")
    return ctc_collapse_ref(logprobs.argmax(axis=1), blank)


def first_mismatch_ref(draft: np.ndarray, greedy: np.ndarray) -> int:
    """The first i with ``draft[i] ≠ greedy[i]``, or len(draft) when the whole draft matches.

    ``greedy`` holds at least len(draft) entries (the verifier returns one more).
    """
    draft, greedy = _ids("draft", draft), _ids("greedy", greedy)
    if len(greedy) < len(draft):
        raise ValueError(f"greedy: expected at least len(draft) = {len(draft)} entries, got {len(greedy)}")
    for i, token in enumerate(draft):
        if token != greedy[i]:
            return i
    return len(draft)


def resync(hyp: np.ndarray, out: list[int], expected: int, window: int, k_sync: int) -> int:
    """Where in the fast hypothesis the next draft starts, after a correction.

    Candidates q ∈ [expected − 1 − window, expected + window] ∩ [0, len(hyp)]. Score(q) = the
    number of final tokens ``out`` and ``hyp[:q]`` share, capped at ``k_sync``; the highest score
    wins, ties go to the q closest to ``expected`` (then the smaller). ``expected`` is the
    position after the replaced token (a substitution), so with no match at all, or
    ``k_sync = 0``, the draft simply skips the wrong token. Shared by both implementations.
    """
    def score(q: int) -> int:
        s = 0
        while s < min(k_sync, q, len(out)) and hyp[q - 1 - s] == out[-1 - s]:
            s += 1
        return s

    candidates = range(max(0, expected - 1 - window), min(len(hyp), expected + window) + 1)
    best = max(candidates, key=lambda q: (score(q), -abs(q - expected), -q))
    return best if score(best) > 0 else min(expected, len(hyp))


def _draft(hyp: np.ndarray, p: int, eos: int, room: int) -> np.ndarray:
    """``(hyp[p:], eos)``, cut to ``room − 1`` tokens so that a call never emits past ``max_len``."""
    return np.append(hyp[p:], eos)[: max(room - 1, 0)]


def _check_decode_args(eos: int, max_len: int, window: int, k_sync: int) -> None:
    check_positive_int("max_len", max_len)
    for name, value in (("eos", eos), ("window", window), ("k_sync", k_sync)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected an int ≥ 0, got {value!r}")


def greedy_ar_ref(step_fn: VerifyFn, eos: int, max_len: int) -> tuple[np.ndarray, int]:
    """Greedy AR decoding with a verifier used one token at a time → (tokens (L,), calls)."""
    out: list[int] = []
    for calls in range(1, max_len + 1):
        token = int(step_fn(np.array(out, dtype=np.int64), np.zeros(0, dtype=np.int64))[0])
        if token == eos:
            return np.array(out, dtype=np.int64), calls
        out.append(token)
    return np.array(out, dtype=np.int64), max_len


def hybrid_decode_ref(
    fast_hyp: np.ndarray,
    verify_fn: VerifyFn,
    eos: int,
    max_len: int,
    *,
    window: int = 2,
    k_sync: int = 2,
    stats: HybridStats | None = None,
) -> np.ndarray:
    """Verify-and-correct decoding of ``fast_hyp`` (L,) with a stateless ``verify_fn`` → tokens (≤ max_len,).

    Equals :func:`greedy_ar_ref` for any ``fast_hyp``; ``stats`` counts calls and tokens.
    """
    hyp = _ids("fast_hyp", fast_hyp)
    _check_decode_args(eos, max_len, window, k_sync)
    stats = stats if stats is not None else HybridStats()
    stats.fast_tokens += len(hyp)
    out: list[int] = []
    p = 0                                                            # the draft starts at hyp[p]
    while len(out) < max_len:
        draft = _draft(hyp, p, eos, max_len - len(out))
        greedy = np.asarray(verify_fn(np.array(out, dtype=np.int64), draft))   # (len(draft) + 1,)
        stats.calls += 1
        n = first_mismatch_ref(draft, greedy)
        for token in draft[:n].tolist():
            stats.accepted += 1
            if token == eos:
                return np.array(out, dtype=np.int64)
            out.append(token)
        if n < len(draft):
            stats.corrected += 1
        else:
            stats.bonus += 1
        token = int(greedy[n])
        if token == eos:
            break
        out.append(token)
        p = resync(hyp, out, p + n + 1, window, k_sync) if n < len(draft) else p + n
    return np.array(out, dtype=np.int64)


# ----------------------------------------------------------------------------- torch


def ctc_greedy(log_probs: torch.Tensor, blank: int) -> torch.Tensor:
    """Best-path CTC decoding, vectorised: (S, V) → (L,) long. Keep frame s iff its argmax is not
    blank and differs from frame s − 1's."""
    check_tensor("log_probs", log_probs)
    if log_probs.ndim != 2:
        raise ValueError(f"log_probs: expected a (frames, labels) tensor, got shape {tuple(log_probs.shape)}")
    best = log_probs.argmax(dim=-1)
    keep = best != blank
    keep[1:] &= best[1:] != best[:-1]
    return best[keep]


def first_mismatch(draft: torch.Tensor, greedy: torch.Tensor) -> int:
    """:func:`first_mismatch_ref` without a Python loop: argmax of the mismatch mask, with a sentinel."""
    wrong = torch.cat([draft != greedy[: len(draft)], torch.ones(1, dtype=torch.bool)])
    return int(wrong.int().argmax())


def _check_model(model: Seq2Seq) -> None:
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model: expected a lib.models.seq2seq.Seq2Seq, got {type(model).__name__}")


def _encode_one(model: Seq2Seq, frames: torch.Tensor) -> Memory:
    """Encode one utterance (S, F) as a batch of one."""
    _check_model(model)
    check_tensor("frames", frames)
    if frames.ndim != 2:
        raise ValueError(f"frames: expected one utterance (S, F), got shape {tuple(frames.shape)}")
    return model.encode(frames[None])


@torch.no_grad()
def greedy_ar_decode(model: Seq2Seq, frames: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """The baseline: encode once, then one cached decoder call per token until eos → tokens (L,)."""
    _check_model(model)
    max_len = model.config.max_tokens if max_len is None else max_len
    check_positive_int("max_len", max_len)
    eos = model.config.vocab.eos
    state = model.start(_encode_one(model, frames))
    token, out = torch.tensor([[eos]]), []
    for _ in range(max_len):
        token = model.decode(token, state)[:, -1:].argmax(-1)
        if int(token) == eos:
            break
        out.append(token)
    return torch.cat(out, dim=1)[0] if out else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def hybrid_decode(
    model: Seq2Seq,
    frames: torch.Tensor,
    *,
    max_len: int | None = None,
    window: int = 2,
    k_sync: int = 2,
    stats: HybridStats | None = None,
) -> torch.Tensor:
    """Hybrid decoding of one utterance (S, F) → tokens (L,), equal to :func:`greedy_ar_decode`.

    One encoder pass feeds both the CTC head (the fast hypothesis) and the decoder, whose
    cross-attention keys and values are computed once. The KV cache always holds the start token
    and all emitted tokens but the last: after a call it is truncated back (O(1)) to that length,
    which drops the rejected draft tokens.
    """
    _check_model(model)
    max_len = model.config.max_tokens if max_len is None else max_len
    eos = model.config.vocab.eos
    _check_decode_args(eos, max_len, window, k_sync)
    stats = stats if stats is not None else HybridStats()
    memory = _encode_one(model, frames)
    hyp = ctc_greedy(model.ctc_log_probs(memory)[0], model.config.vocab.blank)
    stats.fast_tokens += len(hyp)
    hyp_np, state = hyp.numpy(), model.start(memory)
    out, last, p = [], eos, 0
    while len(out) < max_len:
        draft = torch.as_tensor(_draft(hyp_np, p, eos, max_len - len(out)))
        state.cache.truncate(len(out))                                # start token + out[:-1]
        greedy = model.decode(torch.cat([torch.tensor([last]), draft])[None], state)[0].argmax(-1)
        stats.calls += 1
        n = first_mismatch(draft, greedy)
        accepted = draft[:n].tolist()
        if eos in accepted:
            stats.accepted += accepted.index(eos) + 1
            out += accepted[: accepted.index(eos)]
            break
        stats.accepted += n
        stats.corrected += n < len(draft)
        stats.bonus += n == len(draft)
        out += accepted
        last = int(greedy[n])
        if last == eos:
            break
        out.append(last)
        p = resync(hyp_np, out, p + n + 1, window, k_sync) if n < len(draft) else p + n
    return torch.tensor(out, dtype=torch.long)


def oracle_verify_fn(target: np.ndarray, eos: int) -> VerifyFn:
    """A toy decoder that knows the answer: after a prefix of ``target`` it chooses the next token
    (eos at the end); after any other prefix, eos. For hand-traced examples."""
    target = _ids("target", target)

    def verify(prefix: np.ndarray, draft: np.ndarray) -> np.ndarray:
        context = np.concatenate([prefix, draft]).astype(np.int64)
        rows = []
        for t in range(len(prefix), len(context) + 1):
            on_track = t < len(target) and np.array_equal(context[:t], target[:t])
            rows.append(target[t] if on_track else eos)
        return np.array(rows, dtype=np.int64)

    return verify


def uncached_verify_fn(model: Seq2Seq, frames: torch.Tensor) -> VerifyFn:
    """A stateless :data:`VerifyFn` for the references: re-runs the decoder on [start, prefix, draft]."""
    memory = _encode_one(model, frames)
    eos = model.config.vocab.eos

    @torch.no_grad()
    def verify(prefix: np.ndarray, draft: np.ndarray) -> np.ndarray:
        k = len(draft) + 1
        tokens = torch.as_tensor(np.concatenate([[eos], prefix, draft]).astype(np.int64))[None]
        return model.decode(tokens, model.start(memory, cached=False))[0, -k:].argmax(-1).numpy()

    return verify


# ----------------------------------------------------------------------------- scoring


def edit_distance(a: np.ndarray | list[int], b: np.ndarray | list[int]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions, each cost 1) of two id sequences.

    One DP row per token of ``a``: ``D[i, j] = min(D[i−1, j] + 1, D[i, j−1] + 1, D[i−1, j−1] + [a_i ≠ b_j])``.
    """
    a, b = _ids("a", a), _ids("b", b)
    row = np.arange(len(b) + 1)
    for i, token in enumerate(a, 1):
        diagonal = row[:-1] + (b != token)                          # substitute (or match)
        new = np.empty_like(row)
        new[0] = i
        for j in range(1, len(b) + 1):                              # the insertion chain is sequential
            new[j] = min(row[j] + 1, new[j - 1] + 1, diagonal[j - 1])
        row = new
    return int(row[-1])


def char_error_rate(hyps: list, refs: list) -> float:
    """CER = Σ edit_distance(hyp, ref) / Σ |ref| over a corpus of id sequences."""
    if len(hyps) != len(refs) or not refs:
        raise ValueError(f"hyps: expected one hypothesis per reference ({len(refs)}), got {len(hyps)}")
    errors = sum(edit_distance(np.asarray(h), np.asarray(r)) for h, r in zip(hyps, refs))
    return errors / sum(len(r) for r in refs)
