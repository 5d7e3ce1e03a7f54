"""Section 07.3: Jacobi decoding — the NumPy references, the cached torch decoder, the exercise check."""

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.decoding.jacobi import (
    JacobiTrace,
    ddg,
    greedy_decode,
    greedy_ref,
    jacobi_block_ref,
    jacobi_decode,
    markov_step_fn,
    pgj_ref,
    settle_iterations,
)
from lib.exercises.ch07_decoding.jacobi import check_jacobi_decode
from lib.exercises.generate import master_function
from lib.exercises.registry import CheckFailed
from lib.zoo import load, zoo_data

ROOT = Path(__file__).resolve().parents[1]



def _chains(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        vocab = int(rng.integers(2, 20))
        yield markov_step_fn(rng.integers(0, vocab, vocab)), rng.integers(0, vocab, int(rng.integers(1, 5)))


def test_jacobi_block_ref_is_greedy_within_b_iterations():
    for step_fn, prefix in _chains(200):
        for b in (1, 3, 8):
            tokens, iters, settle = jacobi_block_ref(step_fn, prefix, b, b)
            assert np.array_equal(tokens, greedy_ref(step_fn, prefix, b))
            assert 1 <= iters <= b
            assert np.all(settle <= np.minimum(np.arange(1, b + 1), iters))  # invariant: token i exact by pass i


def test_counter_chain_needs_all_b_iterations():
    step_fn = markov_step_fn((np.arange(10) + 1) % 10)
    tokens, iters, settle = jacobi_block_ref(step_fn, np.array([5]), 6, 6)
    assert tokens.tolist() == [6, 7, 8, 9, 0, 1] and iters == 6
    assert settle.tolist() == [1, 2, 3, 4, 5, 6]


def test_settle_iterations_by_hand():
    history = np.array([[1, 0, 2], [1, 3, 2], [1, 3, 4]])
    assert settle_iterations(history).tolist() == [1, 2, 3]


def test_pgj_ref_equals_greedy_and_offsets_settle():
    for step_fn, prefix in _chains(50, seed=1):
        tokens, iters, settle = pgj_ref(step_fn, prefix, 13, 4)
        assert np.array_equal(tokens, greedy_ref(step_fn, prefix, 13))
        assert len(iters) == 4 and all(k <= b for k, b in zip(iters, (4, 4, 4, 1)))
        assert settle.max() <= sum(iters) and np.all(np.diff(settle[::4]) > 0)


@pytest.fixture(scope="module")
def target():
    model, _ = load("char-target")
    return model.eval()


@pytest.fixture(scope="module")
def prompts():
    val = torch.as_tensor(zoo_data("pydoc").val_ids)
    return [val[s : s + 32] for s in (500, 9_000, 30_000)]


def test_jacobi_decode_equals_greedy(target, prompts):
    for prompt, block in zip(prompts, (3, 8, 16)):
        expected = target.generate(prompt, 40, temperature=0)[len(prompt):]
        assert torch.equal(greedy_decode(target, prompt, 40), expected)
        trace = JacobiTrace()
        assert torch.equal(jacobi_decode(target, prompt, 40, block, trace=trace), expected)
        assert all(k <= block for k in trace.iters) and len(trace.settle) == 40


def test_jacobi_decode_matches_pgj_ref_passes_and_settle(target, prompts):
    def step_fn(seq):
        with torch.no_grad():
            return target(torch.as_tensor(seq)[None])[0].argmax(-1).numpy()

    trace = JacobiTrace()
    tokens = jacobi_decode(target, prompts[0], 24, 8, trace=trace)
    ref_tokens, ref_iters, ref_settle = pgj_ref(step_fn, prompts[0].numpy(), 24, 8)
    assert np.array_equal(tokens.numpy(), ref_tokens)
    assert trace.iters == ref_iters and trace.settle == ref_settle.tolist()
    grid = ddg(trace)
    assert grid.shape == (trace.passes, 24) and np.all(np.diff(grid, axis=0) >= 0) and grid[-1].all()


def test_one_token_prompt(target):
    prompt = torch.tensor([5])
    assert torch.equal(jacobi_decode(target, prompt, 10, 4), greedy_decode(target, prompt, 10))


def test_bad_inputs(target):
    with pytest.raises(ValueError, match="block"):
        jacobi_decode(target, torch.tensor([1, 2]), 5, 0)
    with pytest.raises(ValueError, match="prompt"):
        jacobi_decode(target, torch.tensor([[1, 2]]), 5, 2)
    with pytest.raises(ValueError, match="max_new"):
        jacobi_decode(target, torch.tensor([1, 2]), 10_000, 2)
    with pytest.raises(TypeError, match="model"):
        jacobi_decode("gpt", torch.tensor([1, 2]), 5, 2)
    with pytest.raises(ValueError, match="prefix"):
        jacobi_block_ref(markov_step_fn(np.array([0, 1])), np.array([0.5]), 2, 2)
    with pytest.raises(ValueError, match="table"):
        markov_step_fn(np.array([0, 7]))


# ----------------------------------------------------------------------------- the exercise


def _solution():
    """The solution in the chapter's master, solutions/07_decoding.py."""
    return master_function(ROOT, "07", "jacobi_decode")


def test_checker_passes_the_solution():
    assert check_jacobi_decode(_solution()) == 7


def test_checker_propagates_not_implemented():
    def stub(step_fn, prefix, block_size):
        raise NotImplementedError("write jacobi_decode")

    with pytest.raises(NotImplementedError):
        check_jacobi_decode(stub)


def test_checker_catches_gauss_seidel():
    def gauss_seidel(step_fn, prefix, block_size):  # one call per token, reported as one iteration
        seq = np.array(prefix)
        for _ in range(block_size):
            seq = np.append(seq, step_fn(seq)[-1])
        return seq[len(prefix):], 1

    with pytest.raises(CheckFailed, match="called"):
        check_jacobi_decode(gauss_seidel)


def test_checker_catches_off_by_one_read():
    def shifted(step_fn, prefix, block_size):
        block = np.zeros(block_size, dtype=np.int64)
        for k in range(1, block_size + 1):
            new = step_fn(np.concatenate([prefix, block]))[len(prefix) : len(prefix) + block_size]
            new = np.pad(new, (0, block_size - len(new)))
            if np.array_equal(new, block) or k == block_size:
                return new, k
            block = new

    with pytest.raises(CheckFailed, match="differ from greedy"):
        check_jacobi_decode(shifted)


def test_checker_catches_missing_bound():
    def unbounded(step_fn, prefix, block_size):  # always confirms with one more pass
        block, k = np.zeros(block_size, dtype=np.int64), 0
        while True:
            k += 1
            new = step_fn(np.concatenate([prefix, block]))[len(prefix) - 1 : len(prefix) - 1 + block_size]
            if np.array_equal(new, block):
                return new, k
            block = new

    with pytest.raises(CheckFailed, match="never more than block_size"):
        check_jacobi_decode(unbounded)
