"""Section 07.1: speculative decoding — the rule, its exactness, the speed formulas, the generator.

The NumPy reference (:mod:`lib.decoding.reference`) is checked against the exactness identity
and hand-computable formulas; the torch rule against the reference token for token; the
generator against the target's own greedy decoding with the zoo's models and drafts.
"""


from pathlib import Path

import numpy as np
import pytest
import torch

from lib import agree
from lib.decoding.drafts import ContextCache, count_draft
from lib.decoding.reference import (
    PAIR_KINDS,
    inverse_cdf,
    alpha_of,
    expected_tokens,
    expected_tokens_from_betas,
    one_step_output_dist,
    optimal_gamma,
    random_pair,
    random_step_case,
    residual,
    spec_step_ref,
    speedup,
)
from lib.decoding.sampling import sampling_transform
from lib.decoding.speculative import SpecStats, acceptance_on_text, speculative_generate, speculative_step
from lib.decoding.toy import MUTANTS, CachedMarkovLM, MarkovLM
from lib.exercises.ch07_decoding.speculative import check_speculative_step
from lib.models.decoder import sample_next_token
from lib.exercises.generate import master_function
from lib.exercises.registry import CheckFailed
from lib.zoo import load

ROOT = Path(__file__).resolve().parents[1]

EXACT = dict(atol=1e-12, rtol=0.0, reason="float64: the law is p up to the rounding of a few sums")
PROMPTS = ["The function returns ", "class Foo:\n    ", "If the argument is"]


@pytest.fixture(scope="module")
def zoo():
    """The target, the three drafts (decoder, 5-gram, unigram) and the tokenizer."""
    target, tok = load("char-target")
    drafts = {
        "char-draft": load("char-draft")[0],
        "char-ngram": count_draft(load("char-ngram")[0]),
        "char-unigram": count_draft(load("char-unigram")[0]),
    }
    return target, drafts, tok


def encode(tok, text):
    return torch.tensor(tok.encode(text))


# ----------------------------------------------------------------------------- the reference


def test_one_step_output_dist_is_p_for_every_kind_of_pair():
    rng = np.random.default_rng(0)
    for case in range(1000):
        kind = PAIR_KINDS[case % len(PAIR_KINDS)]
        p, q = random_pair(rng, int(rng.integers(2, 40)), kind)
        law = one_step_output_dist(p, q)
        np.testing.assert_allclose(law, p, atol=1e-12, rtol=0, err_msg=f"case {case} ({kind})")


def test_residual_is_the_normalised_positive_part_and_falls_back_to_p():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.5, 0.3])
    agree("residual", residual(p, q), np.array([1.0, 0.0, 0.0]), **EXACT)
    agree("residual of p = q falls back to p", residual(p, p), p, **EXACT)


def test_alpha_is_one_minus_total_variation():
    rng = np.random.default_rng(1)
    p, q = random_pair(rng, 17, "dense")
    agree("alpha_of", np.asarray(alpha_of(p, q)), np.array(1 - 0.5 * np.abs(p - q).sum()), **EXACT)
    assert alpha_of(p, p) == pytest.approx(1.0) and alpha_of(*random_pair(rng, 8, "disjoint")) == 0.0


def test_speed_formulas_match_their_closed_forms():
    for alpha in (0.0, 0.3, 0.75, 0.99):
        for gamma in (1, 3, 8):
            closed = (1 - alpha ** (gamma + 1)) / (1 - alpha)
            assert expected_tokens(alpha, gamma) == pytest.approx(closed, rel=1e-12)
            assert expected_tokens_from_betas(np.full(gamma, alpha)) == pytest.approx(closed, rel=1e-12)
            assert speedup(alpha, gamma, 0.1) == pytest.approx(closed / (gamma * 0.1 + 1), rel=1e-12)
    assert speedup(0.5, 1, 0.5) == pytest.approx(1.0)  # γ = 1: S = (1 + α)/(1 + c), break-even at α = c
    assert optimal_gamma(0.8, 0.05, 20) == max(range(1, 21), key=lambda g: speedup(0.8, g, 0.05))
    assert optimal_gamma(0.1, 0.5, 8) == 1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: expected_tokens(0.5, 0), "gamma"),
        (lambda: expected_tokens(1.2, 3), "alpha"),
        (lambda: speedup(0.5, 3, -0.1), "c"),
        (lambda: optimal_gamma(0.5, 0.1, 0), "gmax"),
        (lambda: expected_tokens_from_betas([0.5, -0.1]), "alpha"),
    ],
)
def test_speed_formulas_reject_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_expected_tokens_from_betas_hand_case():
    assert expected_tokens_from_betas([0.5, 0.4, 1.0]) == pytest.approx(1 + 0.5 + 0.2 + 0.2)


# ----------------------------------------------------------------------------- the torch rule


def test_speculative_step_matches_reference_token_for_token():
    rng = np.random.default_rng(2)
    for case in range(500):
        gamma, vocab = int(rng.integers(1, 9)), int(rng.integers(2, 30))
        p_rows, q_rows, drafts, uniforms, u = random_step_case(rng, gamma, vocab)
        expected = spec_step_ref(p_rows, q_rows, drafts, uniforms, u)
        tensors = [torch.from_numpy(a) for a in (p_rows, q_rows, drafts, uniforms)]
        assert speculative_step(*tensors, torch.tensor(u, dtype=torch.float64)) == expected, f"case {case}"
        assert 1 <= len(expected) <= gamma + 1


def test_speculative_step_accepts_everything_when_draft_equals_target():
    rng = np.random.default_rng(3)
    p_rows, _, drafts, uniforms, u = random_step_case(rng, 6, 11)
    p = torch.from_numpy(p_rows)
    out = speculative_step(p, p[:-1], torch.from_numpy(drafts), torch.from_numpy(uniforms), u)
    assert out[:-1] == drafts.tolist()


def test_speculative_step_is_exact_when_the_draft_misses_the_target_favourite():
    """q(x*) = 0 where p(x*) = 0.6: x* can only come from the residual, and must still have probability 0.6."""
    p = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.5, 0.5]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    first = []
    for _ in range(n):
        draft = torch.multinomial(q[0], 1, generator=gen)
        r = torch.rand(2, generator=gen, dtype=torch.float64)
        first.append(speculative_step(p, q, draft, r[:1], r[1])[0])
    freq = np.bincount(first, minlength=3) / n
    sigma = np.sqrt(0.6 * 0.4 / n)
    assert abs(freq[0] - 0.6) < 5 * sigma and freq @ np.arange(3) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.rand(3, 5), torch.rand(3, 5), torch.zeros(2, dtype=torch.long), torch.rand(2), 0.5), "q_rows"),
        ((torch.rand(3, 5), torch.rand(2, 5), torch.zeros(3, dtype=torch.long), torch.rand(2), 0.5), "drafts"),
        ((torch.rand(3, 5), torch.rand(2, 5), torch.zeros(2, dtype=torch.long), torch.rand(2), "x"), "u_resid"),
        ((np.ones((3, 5)), torch.rand(2, 5), torch.zeros(2, dtype=torch.long), torch.rand(2), 0.5), "p_rows"),
    ],
)
def test_speculative_step_rejects_bad_shapes(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        speculative_step(*args)


# ----------------------------------------------------------------------------- sampling transform


def test_sampling_transform_rows_sum_to_one_and_truncate():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    settings = ({}, {"temperature": 0.7, "top_k": 5}, {"top_p": 0.8}, {"temperature": 2.0, "top_k": 10, "top_p": 0.5})
    for kwargs in settings:
        probs = sampling_transform(logits, **kwargs)
        agree(f"rows sum to 1 {kwargs}", probs.sum(-1), torch.ones(4, dtype=torch.float64), **EXACT)
    assert ((sampling_transform(logits, top_k=5) > 0).sum(-1) == 5).all()
    greedy = sampling_transform(logits.float(), temperature=0)
    assert greedy.dtype == torch.float32 and torch.equal(greedy.argmax(-1), logits.argmax(-1))
    assert torch.equal(greedy.sum(-1), torch.ones(4))
    assert sampling_transform(logits.half()).dtype == torch.float32


def test_sampling_transform_is_the_decoders_sampling_rule():
    """The same generator state draws the same tokens from sampling_transform's rows as Decoder.generate does."""
    logits = 3 * torch.randn(5, 40, generator=torch.Generator().manual_seed(1))
    for kwargs in ({"temperature": 0.8}, {"temperature": 1.0, "top_k": 7}, {"temperature": 1.3, "top_p": 0.7}):
        ours = torch.multinomial(sampling_transform(logits, **kwargs), 1, generator=torch.Generator().manual_seed(2))
        theirs = sample_next_token(logits, **{"top_k": None, "top_p": None, **kwargs},
                                   generator=torch.Generator().manual_seed(2))
        assert torch.equal(ours[:, 0], theirs), kwargs


@pytest.mark.parametrize(
    "kwargs, match",
    [({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"temperature": -1.0}, "temperature"),
     ({"top_k": 0}, "top_k")],
)
def test_sampling_transform_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sampling_transform(torch.randn(2, 5), **kwargs)


# ----------------------------------------------------------------------------- generation with the zoo


@pytest.mark.parametrize("draft_name", ["char-draft", "char-ngram", "char-unigram"])
def test_greedy_speculative_equals_target_greedy(zoo, draft_name):
    target, drafts, tok = zoo
    for prompt, gamma in zip(PROMPTS, (1, 4, 7)):
        ids = encode(tok, prompt)
        ours = speculative_generate(target, drafts[draft_name], ids, gamma=gamma, max_new=80, temperature=0)
        assert torch.equal(ours, target.generate(ids, 80, temperature=0)), (draft_name, prompt)


class BlindDraft:
    """A draft that never proposes ``token``: its logit is −inf (the Decoder protocol around ``inner``)."""

    def __init__(self, inner, token):
        self.inner, self.token, self.config = inner, token, inner.config

    def new_cache(self, batch_size):
        return self.inner.new_cache(batch_size)

    def __call__(self, ids, cache):
        return self.inner(ids, cache).index_fill(-1, torch.tensor([self.token]), float("-inf"))


def test_greedy_exact_with_a_draft_blind_to_the_targets_favourite(zoo):
    target, drafts, tok = zoo
    ids = encode(tok, PROMPTS[0])
    space = tok.encode(" ")[0]
    blind = BlindDraft(drafts["char-draft"], space)
    ours = speculative_generate(target, blind, ids, gamma=4, max_new=80, temperature=0)
    assert torch.equal(ours, target.generate(ids, 80, temperature=0))


def test_draft_equal_to_target_accepts_every_draft(zoo):
    _, drafts, tok = zoo
    ngram = drafts["char-ngram"]  # a count model computes each row alone, so p and q are bit-identical
    stats = SpecStats()
    out = speculative_generate(ngram, ngram, encode(tok, PROMPTS[1]), gamma=5, max_new=60,
                               generator=torch.Generator().manual_seed(0), stats=stats)
    assert stats.accepted == stats.gammas and out.shape == (len(PROMPTS[1]) + 60,)
    assert stats.tokens_per_call(5) == 6.0 and stats.alpha() == pytest.approx(1.0)
    assert stats.predicted_tokens_per_call(5) == pytest.approx(6.0)
    assert stats.ratio_predicted_tokens_per_call(5) == pytest.approx(6.0)


def test_ratio_log_prediction_is_unbiased():
    """Toy Markov chains, 3,000 rounds at γ = 4: measured tokens per call minus the ratio-log
    expectation must average zero within 4 standard errors (an unbiased estimate: given the drafts,
    each survives with probability r_i on its own uniform). Float64 toys, so no rounding enters."""
    target, draft = CachedMarkovLM(MarkovLM(2, 6, seed=3)), CachedMarkovLM(MarkovLM(1, 6, seed=4))
    stats = SpecStats()
    generator = torch.Generator().manual_seed(8)
    for _ in range(60):
        speculative_generate(target, draft, torch.tensor([1, 2]), gamma=4, max_new=251, generator=generator, stats=stats)
    residuals = stats.ratio_residuals(4)
    assert len(residuals) > 2_000 and all(len(r) == g for r, g in zip(stats.ratios, stats.gammas))
    assert abs(residuals.mean()) < 4 * residuals.std(ddof=1) / np.sqrt(len(residuals))
    assert stats.ratio_predicted_tokens_per_call(4) == pytest.approx(stats.tokens_per_call(4) - residuals.mean())
    # A rule that judges with the inverted ratio min(1, q/p) accepts at other rates: the z-test sees it.
    broken = SpecStats()
    for _ in range(60):
        speculative_generate(target, draft, torch.tensor([1, 2]), gamma=4, max_new=251, generator=generator,
                             stats=broken, verify=MUTANTS["(b) inverted ratio min(1, q/p)"])
    residuals = broken.ratio_residuals(4)
    assert abs(residuals.mean()) > 8 * residuals.std(ddof=1) / np.sqrt(len(residuals))


def test_decoder_as_its_own_draft_accepts_every_greedy_draft(zoo):
    """Draft = target through the KV-cache path: any slip in the draft cache (one token behind after a
    full acceptance) would propose a wrong token and show up as a rejection."""
    target, _, tok = zoo
    stats = SpecStats()
    ids = encode(tok, PROMPTS[2])
    out = speculative_generate(target, target, ids, gamma=4, max_new=60, temperature=0, stats=stats)
    assert stats.accepted == stats.gammas
    assert torch.equal(out, target.generate(ids, 60, temperature=0))


def test_stats_and_length_at_temperature_one(zoo):
    target, drafts, tok = zoo
    stats = SpecStats()
    ids = encode(tok, PROMPTS[2])
    out = speculative_generate(target, drafts["char-ngram"], ids, gamma=3, max_new=50, top_k=20, top_p=0.95,
                               generator=torch.Generator().manual_seed(1), stats=stats)
    assert out.shape == (len(ids) + 50,) and torch.equal(out[: len(ids)], ids)
    assert sum(stats.accepted) + stats.target_calls == 50 and max(stats.gammas) == 3
    assert all(len(b) == g for b, g in zip(stats.betas, stats.gammas))
    assert 0 < stats.alpha() < 1 and stats.cost_ratio() > 0


def test_generation_is_reproducible_with_a_seeded_generator(zoo):
    target, drafts, tok = zoo
    ids = encode(tok, PROMPTS[0])
    runs = [speculative_generate(target, drafts["char-draft"], ids, gamma=3, max_new=40,
                                 generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*runs)


def test_a_broken_rule_is_caught_by_greedy_equality(zoo):
    """Mutation: a verifier that accepts every draft emits the draft's text, not the target's."""
    target, drafts, tok = zoo
    ids = encode(tok, PROMPTS[0])

    def accept_all(p_rows, q_rows, drafts_, uniforms, u):
        return drafts_.tolist() + [int(p_rows[-1].argmax())]

    ours = speculative_generate(target, drafts["char-unigram"], ids, gamma=4, max_new=40, temperature=0,
                                verify=accept_all)
    assert not torch.equal(ours, target.generate(ids, 40, temperature=0))


@pytest.mark.parametrize(
    "change, match",
    [
        ({"gamma": 0}, "gamma"),
        ({"max_new": -1}, "max_new"),
        ({"max_new": 250}, "max_new"),
        ({"prompt": torch.zeros(300, dtype=torch.long)}, "prompt"),
        ({"prompt": torch.zeros(0, dtype=torch.long)}, "prompt"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
    ],
)
def test_speculative_generate_rejects_bad_arguments(zoo, change, match):
    target, drafts, tok = zoo
    args = {"prompt": encode(tok, PROMPTS[0]), "gamma": 4, "max_new": 10, **change}
    with pytest.raises(ValueError, match=match):
        speculative_generate(target, drafts["char-draft"], **args)


def test_speculative_generate_rejects_a_vocabulary_mismatch(zoo):
    target, _, tok = zoo
    from lib.ngram import NGramModel

    small = count_draft(NGramModel.fit(np.arange(20) % 7, 7, 2))
    with pytest.raises(ValueError, match="draft: expected the target's vocabulary of 103"):
        speculative_generate(target, small, encode(tok, PROMPTS[0]), gamma=2, max_new=5)


def test_acceptance_on_text(zoo):
    target, drafts, tok = zoo
    ids = encode(tok, "The function returns the value of the argument. " * 3)
    same = acceptance_on_text(drafts["char-ngram"], drafts["char-ngram"], ids, window=64, temperatures=(1.0, 0.0))
    assert same.shape == (2, 128) and np.allclose(same, 1.0)
    greedy = acceptance_on_text(target, drafts["char-draft"], ids, window=64, temperatures=(0.0,))
    assert set(np.unique(greedy)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="ids"):
        acceptance_on_text(target, drafts["char-draft"], ids[:10], window=64)


def test_count_draft_rejects_bad_arguments(zoo):
    _, drafts, _ = zoo
    with pytest.raises(TypeError, match="model"):
        count_draft(object())
    with pytest.raises(ValueError, match="batch_size"):
        drafts["char-ngram"].new_cache(2)
    with pytest.raises(ValueError, match="ids"):
        drafts["char-ngram"](torch.zeros(2, 3, dtype=torch.long), ContextCache())


def test_count_draft_rows_are_the_models_log_probabilities(zoo):
    _, drafts, tok = zoo
    ngram = drafts["char-ngram"]
    ids = encode(tok, "def f(x):")
    logits = ngram(ids[None], ngram.new_cache(1))[0]
    expected = np.log(ngram.model.next_distribution(ids.tolist()))
    agree("count draft row", logits[-1], expected, atol=1e-6, rtol=1e-6, reason="float32 copy of float64 log-probs")


def test_random_pair_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        random_pair(np.random.default_rng(0), 5, "uniform")


def test_context_cache_truncates_and_checks():
    cache = ContextCache([1, 2, 3])
    cache.truncate(1)
    assert cache.length == 1 and cache.tokens == [1]
    with pytest.raises(ValueError, match="length"):
        cache.truncate(5)



# ----------------------------------------------------------------------------- exercise 07.1a


def load_solution():
    """The solution in the chapter's master, solutions/07_decoding.py."""
    return master_function(ROOT, "07", "speculative_step")


def residual_from_p(p_rows, q_rows, drafts, uniforms, u):
    """Mistake: after a rejection, sample p_i instead of the residual (p_i − q_i)_+."""
    for i, x in enumerate(drafts):
        if not uniforms[i] < p_rows[i, x] / q_rows[i, x]:
            return [int(d) for d in drafts[:i]] + [inverse_cdf(p_rows[i], u)]
    return [int(d) for d in drafts] + [inverse_cdf(p_rows[-1], u)]


def inverted_ratio(p_rows, q_rows, drafts, uniforms, u):
    """Mistake: accept with probability min(1, q/p) instead of min(1, p/q)."""
    for i, x in enumerate(drafts):
        if not uniforms[i] * p_rows[i, x] < q_rows[i, x]:
            return [int(d) for d in drafts[:i]] + [inverse_cdf(np.maximum(p_rows[i] - q_rows[i], 0), u)]
    return [int(d) for d in drafts] + [inverse_cdf(p_rows[-1], u)]


def keeps_going_after_a_rejection(p_rows, q_rows, drafts, uniforms, u):
    """Mistake: drop a rejected draft but keep judging (and emitting) the later ones."""
    kept = [int(x) for i, x in enumerate(drafts) if uniforms[i] < p_rows[i, x] / q_rows[i, x]]
    return kept + [inverse_cdf(p_rows[-1], u)]


def no_bonus_token(p_rows, q_rows, drafts, uniforms, u):
    """Mistake: a fully accepted round forgets the bonus token from p_{γ+1}."""
    out = spec_step_ref(p_rows, q_rows, drafts, uniforms, u)
    return out[:-1] if len(out) == len(drafts) + 1 else out


def test_exercise_check_passes_on_the_solution():
    assert check_speculative_step(load_solution()) == 501


def test_exercise_check_lets_a_stub_error_through():
    def stub(*args):
        raise NotImplementedError("Exercise 07.1a")

    with pytest.raises(NotImplementedError):
        check_speculative_step(stub)


@pytest.mark.parametrize(
    "mistake, match",
    [
        (residual_from_p, "expected"),
        (inverted_ratio, "expected"),
        (keeps_going_after_a_rejection, "no later draft"),
        (no_bonus_token, "expected"),
    ],
)
def test_exercise_check_catches_typical_mistakes(mistake, match):
    with pytest.raises(CheckFailed, match=match):
        check_speculative_step(mistake)


def test_exercise_law_test_alone_rejects_a_wrong_residual_and_passes_the_rule():
    from lib.exercises.ch07_decoding.speculative import _check_law

    with pytest.raises(CheckFailed, match="chi-square"):
        _check_law(residual_from_p)
    _check_law(spec_step_ref)
