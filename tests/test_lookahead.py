"""Section 07.4: lookahead decoding — mask, n-gram pool, verification, the decoder, the exercise check."""

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.decoding.jacobi import greedy_decode, greedy_ref, markov_step_fn
from lib.decoding.lookahead import (
    LookaheadStats,
    NGramPool,
    harvest_ngrams_ref,
    init_levels,
    lookahead_decode,
    lookahead_decode_ref,
    lookahead_mask,
    lookahead_mask_ref,
    verify_greedy,
    verify_greedy_ref,
)
from lib.decoding.masks import extend_mask, masked_forward
from lib.exercises.ch07_decoding.lookahead import check_verify_greedy, verify_cases
from lib.exercises.generate import master_function
from lib.exercises.registry import CheckFailed
from lib.zoo import load, zoo_data

ROOT = Path(__file__).resolve().parents[1]

GRID = [(1, 2, 0), (2, 3, 1), (3, 4, 2), (5, 3, 5), (4, 5, 3), (7, 2, 1)]


def test_hand_built_mask_w2_n3_g1():
    mask, pos = lookahead_mask_ref(2, 3, 1)
    expected = np.array([
        [1, 0, 0, 0, 0, 0, 0],   # c
        [1, 1, 0, 0, 0, 0, 0],   # level 0, column 0
        [1, 1, 1, 0, 0, 0, 0],   # level 0, column 1
        [1, 1, 0, 1, 0, 0, 0],   # level 1, column 0
        [1, 1, 1, 0, 1, 0, 0],   # level 1, column 1
        [1, 0, 0, 0, 0, 1, 0],   # candidate token 0
        [1, 0, 0, 0, 0, 1, 1],   # candidate token 1
    ], dtype=bool)
    assert np.array_equal(mask, expected)
    assert pos.tolist() == [0, 1, 2, 2, 3, 1, 2]


@pytest.mark.parametrize("W,N,G", GRID)
def test_lib_mask_equals_reference_and_contexts_are_contiguous(W, N, G):
    mask, pos = lookahead_mask_ref(W, N, G)
    lib_mask, lib_pos = lookahead_mask(W, N, G)
    assert np.array_equal(lib_mask.numpy(), mask) and np.array_equal(lib_pos.numpy(), pos)
    for q in range(len(pos)):  # each query sees exactly one token at each position 0 … its own
        assert sorted(pos[mask[q]].tolist()) == list(range(pos[q] + 1))


def test_harvest_pool_and_init():
    levels = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert harvest_ngrams_ref(levels, 3) == [(1, 4, 7), (2, 5, 8), (3, 6, 9)]
    pool = NGramPool(3, 2)
    for ngram in [(1, 2, 3), (1, 4, 5), (1, 2, 3), (1, 6, 7), (2, 0, 0)]:
        pool.add(ngram)
    assert pool.candidates(1).tolist() == [[6, 7], [2, 3]] and len(pool) == 3
    assert pool.candidates(9).shape == (0, 2)
    assert init_levels(np.array([5, 6, 7]), 4, 3).tolist() == [[5, 6, 7, 5], [6, 7, 5, 6]]


def test_verify_greedy_by_hand_and_torch_equals_reference():
    cands = np.array([[3, 9, 9], [3, 4, 9], [7, 7, 7]])
    argmax = np.array([[3, 4, 5, 6], [3, 4, 5, 6], [3, 1, 1, 1]])
    assert verify_greedy_ref(cands, argmax) == [3, 4, 5]
    assert verify_greedy_ref(np.array([[8]]), np.array([[2, 5]])) == [2]
    for _, cands, argmax in verify_cases():
        assert verify_greedy(torch.as_tensor(cands), torch.as_tensor(argmax)) == verify_greedy_ref(cands, argmax)


def test_reference_decode_equals_greedy_on_chains():
    rng = np.random.default_rng(0)
    for W, N, G in GRID:
        step_fn, prefix = markov_step_fn(rng.integers(0, 7, 7)), rng.integers(0, 7, 3)
        tokens, stats = lookahead_decode_ref(step_fn, prefix, 25, W, N, G)
        assert np.array_equal(tokens, greedy_ref(step_fn, prefix, 25)) and sum(stats.accepted) == 25


@pytest.fixture(scope="module")
def target():
    return load("char-target")[0].eval()


@pytest.fixture(scope="module")
def prompts():
    val = torch.as_tensor(zoo_data("pydoc").val_ids)
    return [val[s : s + 32] for s in (700, 11_000, 27_000)]


def test_masked_forward_with_causal_mask_is_the_model(target):
    ids = torch.randint(0, target.config.vocab_size, (1, 20))
    plain, masked = target.new_cache(1), target.new_cache(1)
    with torch.no_grad():
        target(ids[:, :12], plain)
        expected = target(ids[:, 12:], plain)
    masked_forward(target, ids[:, :12], torch.arange(12), torch.ones(12, 12, dtype=torch.bool).tril(), masked)
    got = masked_forward(target, ids[:, 12:], torch.arange(12, 20), extend_mask(torch.ones(3, 3, dtype=torch.bool).tril(), 5, 12), masked)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)  # fp32, same ops up to the mask's form
    assert masked.length == 20


def test_lookahead_decode_equals_greedy(target, prompts):
    for prompt, (W, N, G) in zip(prompts, [(3, 3, 3), (5, 4, 5), (2, 2, 1)]):
        stats = LookaheadStats()
        assert torch.equal(lookahead_decode(target, prompt, 40, W, N, G, stats=stats), greedy_decode(target, prompt, 40))
        assert sum(stats.accepted) == 40 and max(stats.accepted) <= N


def test_lookahead_decode_matches_reference(target, prompts):
    def step_fn(seq):
        with torch.no_grad():
            return target(torch.as_tensor(seq)[None])[0].argmax(-1).numpy()

    stats = LookaheadStats()
    tokens = lookahead_decode(target, prompts[0], 16, 3, 3, 2, stats=stats)
    ref_tokens, ref_stats = lookahead_decode_ref(step_fn, prompts[0].numpy(), 16, 3, 3, 2)
    assert np.array_equal(tokens.numpy(), ref_tokens) and stats.accepted == ref_stats.accepted


def test_bad_inputs(target):
    with pytest.raises(ValueError, match="N"):
        lookahead_mask(3, 1, 2)
    with pytest.raises(ValueError, match="G"):
        lookahead_mask_ref(3, 3, -1)
    with pytest.raises(ValueError, match="W"):
        lookahead_decode(target, torch.tensor([1, 2]), 5, 0, 3, 3)
    with pytest.raises(ValueError, match="max_new"):
        lookahead_decode(target, torch.tensor([1, 2]), target.config.max_seq_len - 4, 3, 3, 3)
    with pytest.raises(ValueError, match="target_argmax"):
        verify_greedy_ref(np.zeros((2, 3), dtype=int), np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match="levels"):
        harvest_ngrams_ref(np.zeros((2, 4)), 3)
    cache = target.new_cache(1)
    with pytest.raises(ValueError, match="mask"):
        masked_forward(target, torch.tensor([[1, 2]]), torch.arange(2), torch.ones(2, 3, dtype=torch.bool), cache)
    with pytest.raises(ValueError, match="positions"):
        masked_forward(target, torch.tensor([[1, 2]]), torch.arange(3), torch.ones(2, 2, dtype=torch.bool), cache)


# ----------------------------------------------------------------------------- the exercise


def _solution():
    """The solution in the chapter's master, solutions/07_decoding.py."""
    return master_function(ROOT, "07", "verify_greedy")


def test_checker_passes_the_solution():
    assert check_verify_greedy(_solution()) == 45


def test_checker_propagates_not_implemented():
    def stub(candidates, target_argmax):
        raise NotImplementedError("write verify_greedy")

    with pytest.raises(NotImplementedError):
        check_verify_greedy(stub)


def test_checker_catches_a_missing_free_token():
    solution = _solution()
    with pytest.raises(CheckFailed, match="tokens"):
        check_verify_greedy(lambda c, a: solution(c, a)[:-1] or [int(a[0, 0])])


def test_checker_catches_shifted_comparison():
    def shifted(candidates, target_argmax):  # compares with the argmax *after* the token
        kept = np.cumprod(candidates == target_argmax[:, 1:], axis=1).sum(1)
        best = int(np.argmax(kept))
        return candidates[best, : kept[best]].tolist() + [int(target_argmax[best, kept[best]])]

    with pytest.raises(CheckFailed):
        check_verify_greedy(shifted)


def test_checker_catches_counting_all_matches():
    def all_matches(candidates, target_argmax):  # forgets to stop at the first mismatch
        kept = (candidates == target_argmax[:, :-1]).sum(1)
        best = int(np.argmax(kept))
        return candidates[best, : kept[best]].tolist() + [int(target_argmax[best, kept[best]])]

    with pytest.raises(CheckFailed, match="case 3"):
        check_verify_greedy(all_matches)
