"""Section 07.2: speculative sampling is exact — the statistical protocol T1–T6, seeded.

A correct sampler must pass every goodness-of-fit test at p > 1e-3 (the seeds are fixed, so a
pass is a pass on every run); each deliberately broken variant must be rejected at p < 1e-6, which
shows the tests have the power to see the bugs that matter. Sample sizes are the smallest that
keep both margins wide on this 2-core machine.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.decoding.benchmark import benchmark_speculative
from lib.decoding.drafts import count_draft
from lib.decoding.reference import PAIR_KINDS, one_step_output_dist, random_pair
from lib.decoding.speculative import speculative_generate, speculative_step
from lib.decoding.toy import (
    MUTANTS,
    CachedMarkovLM,
    MarkovLM,
    NoRollback,
    blind_draft_rows,
    exact_accept_len_law,
    exact_joint,
    first_token_counts,
    sample_counts,
)
from lib.exercises.ch07_decoding.exactness import check_acceptance_length_law
from lib.exercises.generate import master_function
from lib.exercises.registry import CheckFailed
from lib.stats import chi2_pooled, permutation_chi2, welch_t
from lib.zoo import load, zoo_data

ROOT = Path(__file__).resolve().parents[1]

PASS, REJECT = 1e-3, 1e-6

# ----------------------------------------------------------------------------- setups


def single_step_setup() -> tuple[np.ndarray, np.ndarray]:
    """T2: V = 8, γ = 2; the draft puts no mass on the target's favourite first token."""
    return blind_draft_rows(vocab=8, gamma=2, seed=20)


PROMPT, LENGTH, GAMMA, VOCAB = [1, 2], 4, 3, 4


def toy_models() -> tuple[CachedMarkovLM, CachedMarkovLM]:
    """T4: an order-2 target and an order-1 draft over V = 4."""
    return CachedMarkovLM(MarkovLM(2, VOCAB, seed=1)), CachedMarkovLM(MarkovLM(1, VOCAB, seed=2))


def multi_round_counts(target, draft, verify, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return sample_counts(target, draft, PROMPT, length=LENGTH, gamma=GAMMA, samples=samples, seed=seed, verify=verify)


# ----------------------------------------------------------------------------- T1–T4 on toys


def test_t1_one_step_law_is_p():
    rng = np.random.default_rng(10)
    for kind in PAIR_KINDS:
        for _ in range(20):
            p, q = random_pair(rng, int(rng.integers(2, 40)), kind)
            np.testing.assert_allclose(one_step_output_dist(p, q), p, atol=1e-12, rtol=0)


def test_t2_single_step_through_lib_rule():
    p, _ = single_step_setup()
    stat, dof, pvalue = chi2_pooled(first_token_counts(speculative_step, *single_step_setup(), 12_000, seed=21), p[0])
    assert pvalue > PASS, (stat, dof, pvalue)


@pytest.mark.parametrize("name", list(MUTANTS)[:2])
def test_t3_single_step_mutants_rejected(name):
    p, _ = single_step_setup()
    assert chi2_pooled(first_token_counts(MUTANTS[name], *single_step_setup(), 4_000, seed=22), p[0])[2] < REJECT


def test_t4_multi_round_joint_and_acceptance_law():
    target, draft = toy_models()
    joint, accepted = multi_round_counts(target, draft, speculative_step, 8_000, seed=41)
    assert chi2_pooled(joint, exact_joint(target, PROMPT, LENGTH))[2] > PASS
    law = exact_accept_len_law(target, draft, PROMPT, GAMMA)
    assert abs(law.sum() - 1) < 1e-12
    assert chi2_pooled(accepted, law)[2] > PASS


@pytest.mark.parametrize("name", list(MUTANTS)[2:] + ["(e) target cache not rolled back"])
def test_t3_multi_round_mutants_rejected(name):
    target, draft = toy_models()
    law = exact_joint(target, PROMPT, LENGTH)
    if name.startswith("(e)"):
        target, verify = NoRollback(target), speculative_step
    else:
        verify = MUTANTS[name]
    joint, _ = multi_round_counts(target, draft, verify, 3_000, seed=42)
    assert chi2_pooled(joint, law)[2] < REJECT


def test_exact_accept_len_law_by_hand():
    """γ = 1 with order-0 chains: P(N = 1) = β = Σ min(p, q)."""
    p, q = MarkovLM(0, 5, seed=3), MarkovLM(0, 5, seed=4)
    beta = np.minimum(p.table[0], q.table[0]).sum()
    np.testing.assert_allclose(exact_accept_len_law(p, q, [], 1), [1 - beta, beta], atol=1e-15)
    np.testing.assert_allclose(exact_accept_len_law(p, q, [], 3), [1 - beta, beta * (1 - beta), beta**2 * (1 - beta), beta**3],
                               atol=1e-15)
    np.testing.assert_allclose(exact_joint(p, [], 2).reshape(5, 5), np.outer(p.table[0], p.table[0]), atol=1e-16)


def test_toy_bad_input():
    with pytest.raises(ValueError, match="order"):
        MarkovLM(-1, 4, seed=0)
    with pytest.raises(ValueError, match="vocab"):
        MarkovLM(1, 0, seed=0)
    with pytest.raises(TypeError, match="lm"):
        CachedMarkovLM("not a chain")
    model = CachedMarkovLM(MarkovLM(1, 4, seed=0))
    with pytest.raises(ValueError, match="ids"):
        model(torch.zeros(2, 3, dtype=torch.long), model.new_cache(1))
    with pytest.raises(ValueError, match="batch_size"):
        model.new_cache(2)
    with pytest.raises(ValueError, match="gamma"):
        exact_accept_len_law(model, model, [0], 0)
    with pytest.raises(ValueError, match="samples"):
        sample_counts(model, model, [0], length=2, gamma=2, samples=0, seed=0)


# ----------------------------------------------------------------------------- T5–T6 on the char LM


@pytest.fixture(scope="module")
def char_models():
    torch.set_num_threads(2)
    target, _ = load("char-target")
    return target, count_draft(load("char-ngram")[0]), torch.as_tensor(zoo_data("pydoc").val_ids)


@torch.inference_mode()
def next_two_law(target, prompt: torch.Tensor) -> np.ndarray:
    """The exact law (V·V,) of the next two characters: one batched call on prompt + every first character."""
    vocab = target.config.vocab_size
    ids = torch.cat([prompt.expand(vocab, -1), torch.arange(vocab)[:, None]], dim=1)
    probs = target(ids)[:, -2:].double().softmax(-1)
    return (probs[0, 0][:, None] * probs[:, 1]).reshape(-1).numpy()


def test_t5_char_lm_next_two_characters(char_models):
    target, draft, val_ids = char_models
    prompt = val_ids[3_000:3_024]
    vocab = target.config.vocab_size
    counts = np.zeros(vocab * vocab)
    generator = torch.Generator().manual_seed(51)
    for _ in range(800):
        out = speculative_generate(target, draft, prompt, gamma=4, max_new=2, generator=generator)
        counts[int(out[-2]) * vocab + int(out[-1])] += 1
    law = next_two_law(target, prompt)
    assert chi2_pooled(counts, law / law.sum())[2] > PASS


@torch.inference_mode()
def mean_nll(target, prompt: torch.Tensor, samples: torch.Tensor) -> np.ndarray:
    """Mean target NLL per generated character (nats) of each row of ``samples`` (S, n) after ``prompt``."""
    ids = torch.cat([prompt.expand(len(samples), -1), samples], dim=1)
    logp = target(ids[:, :-1]).double().log_softmax(-1)[:, len(prompt) - 1:]       # rows predicting samples
    return -logp.gather(-1, samples[..., None]).squeeze(-1).mean(1).numpy()


def bigram_rows(samples: torch.Tensor, vocab: int) -> np.ndarray:
    """One histogram (V·V,) of character pairs per sample row → (S, V·V): texts are the independent units."""
    pairs = samples[:, :-1] * vocab + samples[:, 1:]
    return np.stack([np.bincount(row.numpy(), minlength=vocab * vocab) for row in pairs])


def test_t5_long_samples_match_plain_sampling(char_models):
    """Whole 120-character texts: speculative and plain target samples must not differ in their mean
    NLL under the target (Welch t; one value per text) or in their character bigrams. The bigrams of
    one text depend on each other (a text that drifts into code brings many related pairs), so the
    plain two-sample chi-square on summed histograms is overdispersed: it rejected plain-vs-plain
    samples of this very prompt at p ≈ 5e-7 (seeds 1 and 2). The bigram test is therefore a
    permutation test over whole texts (lib.stats.permutation_chi2). The syllabus asks for 300 + 300
    texts of 200 characters; 80 + 80 of 120 keep the test near 15 s and still catch a sampler that
    follows the draft (checked on the same texts below)."""
    target, draft, val_ids = char_models
    vocab, n_samples, n_new = target.config.vocab_size, 80, 120
    prompt = val_ids[7_000:7_024]
    plain = target.generate(prompt.expand(n_samples, -1).contiguous(), n_new, seed=5)[:, len(prompt):]
    generator = torch.Generator().manual_seed(6)
    spec = torch.stack([speculative_generate(target, draft, prompt, gamma=4, max_new=n_new, generator=generator)
                        [len(prompt):] for _ in range(n_samples)])
    assert welch_t(mean_nll(target, prompt, spec), mean_nll(target, prompt, plain))[2] > PASS
    assert permutation_chi2(bigram_rows(spec, vocab), bigram_rows(plain, vocab))[1] > PASS
    # The tests have power: texts sampled from the 5-gram draft alone are told apart from the target's.
    from_draft = torch.stack([_sample_draft(draft, prompt, n_new, generator) for _ in range(n_samples)])
    assert welch_t(mean_nll(target, prompt, from_draft), mean_nll(target, prompt, plain))[2] < 1e-6
    assert permutation_chi2(bigram_rows(from_draft, vocab), bigram_rows(plain, vocab), 9_999)[1] < PASS


def _sample_draft(draft, prompt: torch.Tensor, n_new: int, generator: torch.Generator) -> torch.Tensor:
    """``n_new`` characters sampled from the count draft alone (the wrong law, for the power check)."""
    cache, new, out = draft.new_cache(1), prompt[None], []
    for _ in range(n_new):
        new = torch.multinomial(draft(new, cache)[0, -1].softmax(-1), 1, generator=generator)[None]
        out.append(int(new))
    return torch.tensor(out)


def test_t6_greedy_equals_target_greedy(char_models):
    target, draft, val_ids = char_models
    for start in (500, 9_000, 30_000):
        prompt = val_ids[start:start + 32]
        expected = target.generate(prompt, 100, temperature=0)
        assert torch.equal(speculative_generate(target, draft, prompt, gamma=5, max_new=100, temperature=0), expected)


def test_benchmark_speculative_logs(char_models):
    target, draft, val_ids = char_models
    prompts = [val_ids[100:116], val_ids[4_000:4_016]]
    result = benchmark_speculative(target, draft, prompts, gammas=[1, 3], n_new=12, repeats=1)
    for gamma in (1, 3):
        rounds = result.calls[gamma] * 24
        assert rounds == round(rounds) and 24 / (gamma + 1) <= rounds <= 24  # 1 to γ + 1 tokens per call
        assert result.accepted[gamma].shape == (gamma + 1,) and 0 <= result.alpha[gamma] <= 1
        assert result.ms[gamma] > 0 and result.cost[gamma] > 0 and result.predicted(gamma) > 0
    assert result.best_gamma() in (1, 3)
    with pytest.raises(ValueError, match="prompts"):
        benchmark_speculative(target, draft, [], gammas=[1], n_new=4)
    with pytest.raises(ValueError, match="gammas"):
        benchmark_speculative(target, draft, prompts, gammas=[0], n_new=4)


# ----------------------------------------------------------------------------- exercise 07.2a


def solution_function():
    """The solution in the chapter's master, solutions/07_decoding.py."""
    return master_function(ROOT, "07", "acceptance_length_law")


def test_exercise_passes_on_solution_and_fails_on_stub():
    assert check_acceptance_length_law(solution_function()) == 7

    def stub(betas, gamma):
        raise NotImplementedError("write acceptance_length_law")

    with pytest.raises(NotImplementedError):
        check_acceptance_length_law(stub)


def geometric_everywhere(betas, gamma):
    """Mistake: a rejection factor at k = γ too, as if a (γ+1)-th draft could be rejected (sums below 1)."""
    betas = np.broadcast_to(np.asarray(betas, dtype=np.float64), (gamma,))
    return np.concatenate([[1.0], np.cumprod(betas)]) * (1.0 - np.append(betas, betas[-1]))


def off_by_one(betas, gamma):
    """Mistake: (1 − β_k) instead of (1 − β_{k+1}) after k acceptances."""
    betas = np.broadcast_to(np.asarray(betas, dtype=np.float64), (gamma,))
    reach = np.concatenate([[1.0], np.cumprod(betas)])
    return reach * np.concatenate([[1.0 - betas[0]], 1.0 - betas[:-1], [1.0]])


def without_last_cell(betas, gamma):
    """Mistake: the law over 0..γ−1 only."""
    return solution_function()(betas, gamma)[:-1]


@pytest.mark.parametrize("mistake", [geometric_everywhere, off_by_one, without_last_cell])
def test_exercise_catches_mistakes(mistake):
    with pytest.raises(CheckFailed):
        check_acceptance_length_law(mistake)
