"""Speculative decoding in PyTorch (Leviathan, Kalman & Matias, arXiv 2211.17192), batch 1.

One round: the draft proposes γ tokens one at a time (its own KV cache, cheap steps); the target
scores all γ + 1 new positions in ONE call; :func:`speculative_step` keeps a prefix of the drafts
and adds one corrected or bonus token. Both caches roll back in O(1) with ``truncate``. Output
has exactly the target's law, whatever the draft (see :mod:`lib.decoding.reference`).

The models follow the Decoder protocol (:class:`lib.models.decoder.Decoder`): ``new_cache(1)``,
``model(ids (1, t), cache) → logits (1, t, V)`` extending the cache, ``cache.length``,
``cache.truncate(n)``, and ``model.config.vocab_size`` / ``model.config.max_seq_len``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lib.decoding.reference import RESIDUAL_FLOOR, expected_tokens_from_betas
from lib.decoding.sampling import check_sampling, sampling_transform
from lib.validation import check_dtype, check_ndim, check_positive_int, check_tensor

__all__ = ["SpecStats", "Verifier", "acceptance_on_text", "speculative_generate", "speculative_step"]

Verifier = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], list[int]]


# ----------------------------------------------------------------------------- the rule


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> int:
    """The smallest index x with cumsum(weights)[x] > u · total (the reference's rule), weights (V,) ≥ 0."""
    cdf = weights.cumsum(0)
    x = int(torch.searchsorted(cdf, (u * cdf[-1]).reshape(1), right=True))
    return x if x < weights.shape[0] else int(weights.nonzero()[-1])


def _residual_weights(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """clamp(p − q, min=0) (V,), or p when its mass is below 1e-12 (p = q numerically)."""
    w = (p - q).clamp_(min=0)
    return w if w.cumsum(0)[-1] >= RESIDUAL_FLOOR else p


def _check_step_shapes(p_rows: Any, q_rows: Any, drafts: Any, uniforms: Any, u_resid: Any) -> None:
    for name, x in (("p_rows", p_rows), ("q_rows", q_rows), ("drafts", drafts), ("uniforms", uniforms)):
        check_tensor(name, x)
    check_ndim("p_rows", p_rows, "gamma + 1, vocab")
    gamma, vocab = p_rows.shape[0] - 1, p_rows.shape[1]
    if tuple(q_rows.shape) != (gamma, vocab):
        raise ValueError(f"q_rows: expected shape {(gamma, vocab)} (γ rows like p_rows'), got {tuple(q_rows.shape)}")
    if tuple(drafts.shape) != (gamma,) or tuple(uniforms.shape) != (gamma,):
        raise ValueError(
            f"drafts, uniforms: expected shape ({gamma},) each, got {tuple(drafts.shape)} and {tuple(uniforms.shape)}"
        )
    if not isinstance(u_resid, (float, torch.Tensor)) or torch.as_tensor(u_resid).numel() != 1:
        raise ValueError(f"u_resid: expected one uniform number (a float or a 0-d tensor), got {u_resid!r}")


def speculative_step(
    p_rows: torch.Tensor, q_rows: torch.Tensor, drafts: torch.Tensor, uniforms: torch.Tensor, u_resid: Any
) -> list[int]:
    """One verification round, vectorised; returns the emitted tokens (between 1 and γ + 1).

    p_rows (γ+1, V) target rows, q_rows (γ, V) draft rows, drafts (γ,) the drafted ids, uniforms
    (γ,) in [0, 1), u_resid a uniform for the residual or bonus draw. All ratios
    ``p_i(x̃_i)/q_i(x̃_i)`` are gathered at once; the first rejection is ``argmax(r ≥ ratio)`` over
    the rejections with a sentinel column for "all accepted". Token-for-token equal to
    :func:`lib.decoding.reference.spec_step_ref` on the same inputs.
    """
    _check_step_shapes(p_rows, q_rows, drafts, uniforms, u_resid)
    gamma = drafts.shape[0]
    index = torch.arange(gamma)
    ratio = p_rows[index, drafts] / q_rows[index, drafts]
    rejected = torch.cat([uniforms >= ratio, torch.ones(1, dtype=torch.bool)])  # sentinel: "all accepted"
    n = int(rejected.to(torch.uint8).argmax())
    u = torch.as_tensor(u_resid, dtype=p_rows.dtype)
    weights = _residual_weights(p_rows[n], q_rows[n]) if n < gamma else p_rows[gamma]
    return drafts[:n].tolist() + [_inverse_cdf(weights, u)]


# ----------------------------------------------------------------------------- statistics


@dataclass
class SpecStats:
    """What :func:`speculative_generate` logs, one entry per round (one target call each).

    ``gammas[r]`` drafts were proposed in round r (γ, or fewer at the end), ``accepted[r]`` of them
    kept, ``betas[r]`` the β_i = Σ_x min(p_i(x), q_i(x)) of each drafted position (γ_r,),
    ``ratios[r]`` the acceptance probabilities r_i = min(1, p_i(x̃_i)/q_i(x̃_i)) of the drafted tokens
    themselves (γ_r,; positions after a rejection included: the target scored them anyway);
    ``draft_seconds`` / ``target_seconds`` the time spent in draft steps and in the target call
    (its sampling transform and the verification included). The target's prompt pass is logged
    apart (``prefill_seconds``).
    """

    gammas: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    betas: list[np.ndarray] = field(default_factory=list)
    ratios: list[np.ndarray] = field(default_factory=list)
    draft_seconds: list[float] = field(default_factory=list)
    target_seconds: list[float] = field(default_factory=list)
    prefill_seconds: float = 0.0

    @property
    def target_calls(self) -> int:
        """Target calls after the prompt pass: one per round."""
        return len(self.accepted)

    @property
    def draft_steps(self) -> int:
        """Draft forward steps: one per drafted token."""
        return int(sum(self.gammas))

    def _rounds(self, gamma: int | None) -> list[int]:
        return [r for r, g in enumerate(self.gammas) if gamma is None or g == gamma]

    def tokens_per_call(self, gamma: int | None = None) -> float:
        """Emitted tokens per target call, Σ(n_r + 1) / rounds; only rounds that drafted ``gamma`` if given."""
        rounds = self._rounds(gamma)
        return float(np.mean([self.accepted[r] + 1 for r in rounds])) if rounds else float("nan")

    def alpha(self, gamma: int | None = None) -> float:
        """α̂: the mean β over every drafted position logged (of rounds that drafted ``gamma`` if given)."""
        betas = [self.betas[r] for r in self._rounds(gamma) if self.gammas[r] > 0]
        return float(np.concatenate(betas).mean()) if betas else float("nan")

    def predicted_tokens_per_call(self, gamma: int | None = None) -> float:
        """The β-log prediction: the mean over rounds of Σ_{k=0}^{γ_r} Π_{i≤k} β_{r,i}."""
        rounds = self._rounds(gamma)
        preds = [expected_tokens_from_betas(self.betas[r]) for r in rounds]
        return float(np.mean(preds)) if preds else float("nan")

    def ratio_predicted_tokens_per_call(self, gamma: int | None = None) -> float:
        """The ratio-log prediction: the mean over rounds of Σ_{k=0}^{γ_r} Π_{i≤k} r_{r,i}.

        Given the drafted tokens, draft i survives with probability r_i independently of the others
        (its uniform is fresh), so P(N ≥ k | drafts) = Π_{i≤k} r_i exactly and each round's term is
        E[N + 1 | drafts]: an unbiased estimate of tokens per call, with the uniforms' noise averaged
        out. (The β-log prediction is not unbiased: β_{i+1} depends on the draft x̃_i that r_i judged.)
        """
        rounds = self._rounds(gamma)
        preds = [expected_tokens_from_betas(self.ratios[r]) for r in rounds]
        return float(np.mean(preds)) if preds else float("nan")

    def ratio_residuals(self, gamma: int | None = None) -> np.ndarray:
        """Per round, emitted tokens minus the ratio-log expectation, (n_r + 1) − Σ_k Π_{i≤k} r_{r,i} → (rounds,).

        Mean zero for a correct rule (see :meth:`ratio_predicted_tokens_per_call`); its standard
        error turns "measured ≈ predicted" into a z-test.
        """
        rounds = self._rounds(gamma)
        return np.array([self.accepted[r] + 1 - expected_tokens_from_betas(self.ratios[r]) for r in rounds])

    def cost_ratio(self) -> float:
        """Measured c: seconds per draft step / seconds per round's target call (nan before any draft step)."""
        if self.draft_steps == 0:
            return float("nan")
        return (sum(self.draft_seconds) / self.draft_steps) / (sum(self.target_seconds) / self.target_calls)


# ----------------------------------------------------------------------------- generation


def _config(name: str, model: Any) -> tuple[int, int]:
    """(vocab_size, max_seq_len) of a model following the Decoder protocol."""
    config = getattr(model, "config", None)
    if not hasattr(config, "vocab_size") or not hasattr(config, "max_seq_len"):
        raise TypeError(
            f"{name}: expected a model with .config.vocab_size and .config.max_seq_len, got {type(model).__name__}"
        )
    return int(config.vocab_size), int(config.max_seq_len)


def _check_generate_args(target: Any, draft: Any, prompt: Any, gamma: Any, max_new: Any) -> None:
    check_positive_int("gamma", gamma)
    if isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 0:
        raise ValueError(f"max_new: expected an int ≥ 0, got {max_new!r}")
    (v_target, len_target), (v_draft, len_draft) = _config("target", target), _config("draft", draft)
    if v_target != v_draft:
        raise ValueError(f"draft: expected the target's vocabulary of {v_target} tokens, got {v_draft}")
    check_tensor("prompt", prompt)
    check_dtype("prompt", prompt, (torch.long, torch.int32))
    check_ndim("prompt", prompt, "tokens")
    context = min(len_target, len_draft)
    if not 1 <= prompt.shape[0] <= context:
        raise ValueError(f"prompt: expected 1 to {context} tokens (max_seq_len), got {prompt.shape[0]}")
    if prompt.shape[0] + max_new > context:
        raise ValueError(
            f"max_new: prompt {prompt.shape[0]} + {max_new} new tokens exceeds max_seq_len {context}"
        )


def _overlap(p: torch.Tensor, q: torch.Tensor) -> np.ndarray:
    """β = Σ_x min(p(x), q(x)) per row, (…, V) → float64 (…); clipped to 1 against float32 rounding."""
    return torch.minimum(p, q).sum(-1).clamp_(max=1.0).double().numpy()


def _acceptance(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor) -> np.ndarray:
    """r_i = min(1, p_i(x̃_i) / q_i(x̃_i)) for rows p, q (γ, V) and drafts (γ,) → float64 (γ,)."""
    rows = torch.arange(len(drafts))
    return (p[rows, drafts].double() / q[rows, drafts].double()).clamp_(max=1.0).numpy()


def _sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One draw from a probability row (V,)."""
    return int(torch.multinomial(probs, 1, generator=generator))


def _draft_round(
    draft: Any, cache: Any, pending: list[int], gamma: int, transform: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """γ draft steps: feed the pending tokens, sample x̃_i ~ q_i; returns drafts (γ,) and q_rows (γ, V)."""
    drafts, q_rows = [], []
    for _ in range(gamma):
        logits = draft(torch.tensor([pending]), cache)[0, -1]
        q_rows.append(transform(logits))
        pending = [_sample(q_rows[-1], generator)]
        drafts.append(pending[0])
    q_rows = torch.stack(q_rows) if q_rows else torch.empty(0, draft.config.vocab_size)
    return torch.tensor(drafts, dtype=torch.long), q_rows


@torch.inference_mode()
def speculative_generate(
    target: Any,
    draft: Any,
    prompt: torch.Tensor,
    *,
    gamma: int,
    max_new: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    stats: SpecStats | None = None,
    verify: Verifier = speculative_step,
) -> torch.Tensor:
    """Continue ``prompt`` (T0,) by ``max_new`` tokens with the target's law → LongTensor (T0 + max_new,).

    Invariants at the start of a round: the target cache holds every token but the last (which
    the scoring call feeds first); the draft cache holds a prefix of the sequence and the rest
    is fed at its next step: after a full acceptance it is one token behind (x̃_γ was never fed).
    Round: γ_r = min(γ, tokens still wanted − 1) drafts; target([last, x̃_1..x̃_γr]) gives
    p_1..p_{γr+1}; ``verify`` emits n accepted drafts + 1; then ``truncate`` both caches to the
    prefix they share with the new sequence. The same :func:`sampling_transform` (temperature,
    top_k, top_p) shapes p and q. ``generator`` drives every random draw; ``stats`` (a
    :class:`SpecStats`) receives the per-round log; ``verify`` swaps the rule (tests pass broken ones).
    """
    check_sampling(temperature, top_k, top_p)
    _check_generate_args(target, draft, prompt, gamma, max_new)
    stats = stats if stats is not None else SpecStats()

    def transform(logits: torch.Tensor) -> torch.Tensor:
        return sampling_transform(logits, temperature, top_k, top_p)

    seq = prompt.tolist()
    target_cache, draft_cache = target.new_cache(1), draft.new_cache(1)
    start = time.perf_counter()
    if len(seq) > 1:
        target(torch.tensor([seq[:-1]]), target_cache)
    stats.prefill_seconds += time.perf_counter() - start
    while len(seq) < len(prompt) + max_new:
        gamma_r = min(gamma, len(prompt) + max_new - len(seq) - 1)
        start = time.perf_counter()
        drafts, q_rows = _draft_round(draft, draft_cache, seq[draft_cache.length:], gamma_r, transform, generator)
        middle = time.perf_counter()
        scored = torch.cat([torch.tensor(seq[-1:]), drafts])
        p_rows = transform(target(scored[None], target_cache)[0])
        uniforms = torch.rand(gamma_r + 1, generator=generator, dtype=p_rows.dtype)
        emitted = verify(p_rows, q_rows, drafts, uniforms[:-1], uniforms[-1])
        stats.target_seconds.append(time.perf_counter() - middle)
        stats.draft_seconds.append(middle - start)
        stats.gammas.append(gamma_r)
        stats.accepted.append(len(emitted) - 1)
        stats.betas.append(_overlap(p_rows[:gamma_r], q_rows))
        stats.ratios.append(_acceptance(p_rows[:gamma_r], q_rows, drafts))
        shared = len(seq) + len(emitted) - 1  # the sequence up to the new last token
        target_cache.truncate(shared)
        draft_cache.truncate(min(draft_cache.length, shared))
        seq.extend(emitted)
    return torch.tensor(seq, dtype=torch.long)


# ----------------------------------------------------------------------------- acceptance on real text


@torch.inference_mode()
def acceptance_on_text(
    target: Any, draft: Any, ids: torch.Tensor, *, window: int, temperatures: tuple[float, ...] = (1.0,),
    top_k: int | None = None, top_p: float | None = None,
) -> np.ndarray:
    """β_t = Σ_x min(p_t(x), q_t(x)) at every position of held-out text ids (N,) → float64 (len(temperatures), N').

    Teacher-forced: the text is cut into windows of ``window`` tokens (the last partial one is
    dropped), each scored once by both models from a fresh cache, so p_t and q_t condition on the
    same real prefix; each temperature reuses those logits. α = mean β; at temperature 0,
    β_t = 1 exactly when the two argmaxes agree.
    """
    check_tensor("ids", ids)
    check_ndim("ids", ids, "tokens")
    check_positive_int("window", window)
    for temperature in temperatures:
        check_sampling(temperature, top_k, top_p)
    if ids.shape[0] < window:
        raise ValueError(f"ids: expected at least one window of {window} tokens, got {ids.shape[0]}")
    chunks = ids[: ids.shape[0] // window * window].reshape(-1, window)
    logits = [torch.cat([m(chunk[None], m.new_cache(1))[0] for chunk in chunks]) for m in (target, draft)]
    betas = []
    for temperature in temperatures:
        p, q = (sampling_transform(x, temperature, top_k, top_p) for x in logits)
        betas.append(_overlap(p, q))
    return np.stack(betas)
