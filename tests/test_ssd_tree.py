"""Section 07.6: SSD on chains and trees — references, the torch mask form, tree decoding, the exercise check."""


import numpy as np
import pytest
import torch

from lib.exercises.ch07_decoding.tree import check_tree_cumulative_decay, cumulative_decay_by_walks
from lib.bookmodel import ROOT
from lib.exercises.generate import master_function
from lib.exercises.registry import CheckFailed
from lib.models.ssd_lm import SSDLM, SSDLMConfig
from lib.ngram import NGramModel
from lib.recurrent.ssd import causal_conv, ssd_chain, ssd_chain_masked_ref, ssd_scan_ref, ssd_step
from lib.recurrent.ssd_tree import (
    accepted_state,
    accepted_state_ref,
    check_parents,
    make_tree,
    parent_chain_table,
    root_path,
    ssd_tree,
    ssd_tree_bruteforce,
    ssd_tree_masked_ref,
    tree_conv,
    tree_conv_ref,
    tree_cumsum,
    tree_from_parents,
)
from lib.recurrent.tree_decoding import (
    NGramProposer,
    TreeStats,
    greedy_generate,
    score_unrolled,
    static_tree,
    tree_speculative_generate,
    verify_greedy_tree,
)


def solution_tree_cumulative_decay():
    """The exercise's solution, from the chapter's master."""
    return master_function(ROOT, "07", "tree_cumulative_decay")


H, P, N = 3, 5, 4


def _inputs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """x (n, H, P), log_a (n, H) in [−2, 0), B, C (n, N), h0 (H, N, P), float64."""
    return (rng.normal(size=(n, H, P)), -rng.uniform(0.01, 2.0, size=(n, H)), rng.normal(size=(n, N)),
            rng.normal(size=(n, N)), rng.normal(size=(H, N, P)))


def _random_parents(rng: np.random.Generator, n: int, shuffle: bool = False) -> np.ndarray:
    parents = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, n)])
    if shuffle:
        perm = rng.permutation(n)
        out = np.empty(n, dtype=np.int64)
        out[perm] = np.where(parents >= 0, perm[np.maximum(parents, 0)], -1)
        parents = out
    return parents


TREES = {
    "one node": [-1],
    "chain of 7": list(range(-1, 6)),
    "star of 6": [-1, 0, 0, 0, 0, 0],
    "3-2-1 static tree": static_tree((3, 2, 1)),
    "random, parents after children": _random_parents(np.random.default_rng(5), 13, shuffle=True).tolist(),
}


def _t(*arrays: np.ndarray, dtype=torch.float64) -> list[torch.Tensor]:
    """NumPy arrays → torch tensors with a batch axis of 1."""
    return [torch.tensor(a, dtype=dtype)[None] for a in arrays]


# ----------------------------------------------------------------------------- chain


def test_chain_masked_form_equals_the_scan():
    rng = np.random.default_rng(0)
    for n in (1, 2, 9):
        x, la, B, C, h0 = _inputs(rng, n)
        y, _ = ssd_scan_ref(x, la, B, C, h0)
        # two float64 evaluations of the same sums of ≤ 9 terms of size ~10: rounding ~1e-14
        np.testing.assert_allclose(ssd_chain_masked_ref(x, la, B, C, h0), y, atol=1e-10, rtol=1e-10)


def test_torch_chain_and_step_equal_the_scan():
    rng = np.random.default_rng(1)
    x, la, B, C, h0 = _inputs(rng, 17)
    y_ref, h_ref = ssd_scan_ref(x, la, B, C, h0)
    y, h = ssd_chain(*_t(x, la, B, C, h0))
    # float64 on both sides; the mask form subtracts prefix sums (|cum| ≤ 34): rounding ~1e-14
    np.testing.assert_allclose(y[0].numpy(), y_ref, atol=1e-10, rtol=1e-10)
    np.testing.assert_allclose(h[0].numpy(), h_ref, atol=1e-10, rtol=1e-10)
    state = torch.tensor(h0)[None]
    for t in range(17):
        out, state = ssd_step(*[torch.tensor(a[t])[None] for a in (x, la, B, C)], state)
        np.testing.assert_allclose(out[0].numpy(), y_ref[t], atol=1e-10, rtol=1e-10)  # same recurrence, float64


def test_chain_without_start_state_is_a_zero_start():
    rng = np.random.default_rng(2)
    x, la, B, C, _ = _inputs(rng, 6)
    y_ref, h_ref = ssd_scan_ref(x, la, B, C)
    y, h = ssd_chain(*_t(x, la, B, C))
    np.testing.assert_allclose(y[0].numpy(), y_ref, atol=1e-10, rtol=1e-10)  # float64 rounding only
    np.testing.assert_allclose(h[0].numpy(), h_ref, atol=1e-10, rtol=1e-10)


def test_causal_conv_continues_from_its_state():
    rng = np.random.default_rng(3)
    u, w, b = rng.normal(size=(11, 6)), torch.tensor(rng.normal(size=(6, 4))), torch.tensor(rng.normal(size=6))
    whole = causal_conv(*_t(u), w, b, torch.zeros(1, 3, 6, dtype=torch.float64))
    first = causal_conv(*_t(u[:5]), w, b, torch.zeros(1, 3, 6, dtype=torch.float64))
    rest = causal_conv(*_t(u[5:]), w, b, *_t(u[2:5]))
    torch.testing.assert_close(torch.cat([first, rest], 1), whole, atol=1e-12, rtol=0)  # the same 4-term sums


# ----------------------------------------------------------------------------- tree references


@pytest.mark.parametrize("name", list(TREES))
def test_tree_references_agree_with_the_bruteforce(name):
    parents = TREES[name]
    x, la, B, C, h0 = _inputs(np.random.default_rng(len(parents)), len(parents))
    truth = ssd_tree_bruteforce(x, la, B, C, parents, h0)
    # float64, sums of ≤ 13 terms: 1e-10 leaves four orders of magnitude above the rounding
    np.testing.assert_allclose(ssd_tree_masked_ref(x, la, B, C, parents, h0), truth, atol=1e-10, rtol=1e-10)
    y, _ = ssd_tree(*_t(x, la, B, C), make_tree(parents), torch.tensor(h0)[None])
    np.testing.assert_allclose(y[0].numpy(), truth, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", list(TREES))
def test_tree_form_in_float32_meets_its_error_bound(name):
    parents = TREES[name]
    x, la, B, C, h0 = _inputs(np.random.default_rng(7 + len(parents)), len(parents))
    truth = ssd_tree_bruteforce(x, la, B, C, parents, h0)
    y32, _ = ssd_tree(*_t(x, la, B, C, dtype=torch.float32), make_tree(parents), torch.tensor(h0).float()[None])
    assert torch.isfinite(y32).all()
    # float32: each output sums ≤ 13 products of O(10) terms (eps 6e-8 → ~1e-5 absolute), and
    # exp(cum_u − cum_s) loses |cum| · eps relative with |cum| ≤ 26: atol 1e-4, rtol 1e-4
    np.testing.assert_allclose(y32[0].double().numpy(), truth, atol=1e-4, rtol=1e-4)


def test_masking_in_log_space_keeps_strong_decays_finite():
    # sibling 2 forgets almost everything (log a = −200): for node 1, cum(1) − cum(2) ≈ +200, whose
    # float32 exponential is inf; masked after exp that would give inf · 0 = NaN
    x, la, B, C, h0 = _inputs(np.random.default_rng(23), 4)
    la[2] = -200.0
    parents = [-1, 0, 0, 2]
    y32, _ = ssd_tree(*_t(x, la, B, C, dtype=torch.float32), make_tree(parents), torch.tensor(h0).float()[None])
    assert torch.isfinite(y32).all()
    truth = ssd_tree_bruteforce(x, la, B, C, parents, h0)
    np.testing.assert_allclose(y32[0].double().numpy(), truth, atol=1e-4, rtol=1e-4)  # float32, as above


def test_a_chain_tree_is_the_causal_ssd():
    x, la, B, C, h0 = _inputs(np.random.default_rng(11), 9)
    y_tree, _ = ssd_tree(*_t(x, la, B, C), make_tree(list(range(-1, 8))), torch.tensor(h0)[None])
    y_chain, _ = ssd_chain(*_t(x, la, B, C, h0))
    # the same mask form; only cum differs (torch.cumsum vs gathers along parents): float64 rounding
    torch.testing.assert_close(y_tree, y_chain, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", list(TREES))
def test_accepted_state_is_the_scan_along_its_path(name):
    parents = TREES[name]
    x, la, B, C, h0 = _inputs(np.random.default_rng(13), len(parents))
    tree = make_tree(parents)
    y, cum = ssd_tree(*_t(x, la, B, C), tree, torch.tensor(h0)[None])
    for leaf in range(len(parents)):
        path = root_path(parents, leaf)
        _, h_scan = ssd_scan_ref(x[path], la[path], B[path], C[path], h0)
        h = accepted_state(*_t(x), cum, *_t(B), tree, leaf, torch.tensor(h0)[None])
        np.testing.assert_allclose(h[0].numpy(), h_scan, atol=1e-10, rtol=1e-10)  # float64 rounding only
        np.testing.assert_allclose(accepted_state_ref(x, la, B, parents, leaf, h0), h_scan, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", list(TREES))
def test_tree_conv_reads_each_path(name):
    parents = TREES[name]
    rng = np.random.default_rng(17)
    u, state, w, b = rng.normal(size=(len(parents), 7)), rng.normal(size=(3, 7)), rng.normal(size=(7, 4)), rng.normal(size=7)
    (u_t, state_t) = _t(u, state)
    out = tree_conv(u_t, make_tree(parents), state_t, torch.tensor(w), torch.tensor(b))
    np.testing.assert_allclose(out[0].numpy(), tree_conv_ref(u, parents, state, w, b), atol=1e-12, rtol=0)  # 4-term sums


def test_tree_conv_on_a_chain_is_the_causal_conv():
    rng = np.random.default_rng(19)
    u, state, w, b = rng.normal(size=(8, 5)), rng.normal(size=(3, 5)), rng.normal(size=(5, 4)), rng.normal(size=5)
    (u_t, state_t) = _t(u, state)
    chain = tree_conv(u_t, make_tree(list(range(-1, 7))), state_t, torch.tensor(w), torch.tensor(b))
    torch.testing.assert_close(chain, causal_conv(*_t(u), torch.tensor(w), torch.tensor(b), *_t(state)), atol=1e-12, rtol=0)


def test_tree_structure_by_hand():
    parents = [-1, 0, 0, 1, 1, 2, 3]
    anc, depth, order = tree_from_parents(parents)
    assert depth.tolist() == [0, 1, 1, 2, 2, 2, 3]
    assert np.flatnonzero(anc[6]).tolist() == [0, 1, 3, 6]
    assert order.tolist() == [0, 1, 2, 3, 4, 5, 6]
    tree = make_tree(parents)
    assert torch.equal(tree.anc, torch.as_tensor(anc)) and tree.depth.tolist() == depth.tolist()
    # rows index [state0, state1, state2, node0, …]: node 6's window is nodes 0, 1, 3, 6
    assert tree.conv_table[6].tolist() == [3, 4, 6, 9]
    assert tree.conv_table[0].tolist() == [0, 1, 2, 3]  # the root: the three committed inputs, then itself
    assert parent_chain_table(torch.tensor(parents), 2)[3].tolist() == [2, 4]  # width 2: node 1, node 3


@pytest.mark.parametrize("seed", range(5))
def test_tree_cumsum_and_masks_on_random_trees(seed):
    rng = np.random.default_rng(seed)
    parents = _random_parents(rng, int(rng.integers(1, 30)), shuffle=bool(seed % 2))
    la = -rng.uniform(0, 2, size=(len(parents), 2))
    tree = make_tree(parents)
    cum = tree_cumsum(torch.tensor(la)[None], tree)[0].numpy()
    np.testing.assert_allclose(cum, cumulative_decay_by_walks(la, parents), atol=1e-12, rtol=0)  # ≤ 30 terms
    anc, depth, _ = tree_from_parents(parents)
    assert np.array_equal(tree.anc.numpy(), anc) and np.array_equal(tree.depth.numpy(), depth)


@pytest.mark.parametrize(
    "parents, message",
    [
        ([], "non-empty 1-d"),
        ([0.5, -1], "sequence of ints"),
        ([-1, -1], "exactly one root"),
        ([-1, 5], r"values in \[-1, 2\)"),
        ([-1, 1], "no node its own parent"),
        ([-1, 2, 1], "node 1 never reaches the root"),
    ],
)
def test_bad_parents_are_named(parents, message):
    with pytest.raises(ValueError, match=f"parents: .*{message}"):
        check_parents(parents)


# ----------------------------------------------------------------------------- decoding


def test_static_tree_shapes():
    assert static_tree((1, 1, 1, 1)) == [-1, 0, 1, 2, 3]
    assert static_tree((3, 2, 1)) == [-1, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="branching: expected a non-empty tuple"):
        static_tree([3, 2])
    with pytest.raises(ValueError, match="branching: expected a positive int"):
        static_tree((2, 0))


def test_verify_greedy_tree_by_hand():
    #     0 ─ 1 (tok 7) ─ 3 (tok 4)
    #       └ 2 (tok 8) ─ 4 (tok 5)
    tokens, children = [9, 7, 8, 4, 5], [[1, 2], [3], [4], [], []]
    assert verify_greedy_tree(tokens, children, [8, 0, 5, 0, 6]) == ([8, 5, 6], 4)  # full path + bonus
    assert verify_greedy_tree(tokens, children, [7, 1, 0, 0, 0]) == ([7, 1], 1)  # rejected below node 1
    assert verify_greedy_tree(tokens, children, [3, 0, 0, 0, 0]) == ([3], 0)  # nothing accepted


@pytest.fixture(scope="module")
def toy_model_and_proposer():
    """A random-init SSD LM (V = 12) and a trigram fitted to a repetitive text, so drafts get accepted."""
    torch.manual_seed(0)
    model = SSDLM(SSDLMConfig(vocab_size=12, d_model=32, n_layers=2, d_state=8, n_heads=2, mlp_ratio=1)).eval()
    text = np.random.default_rng(0).integers(0, 12, size=400)
    return model, NGramProposer(NGramModel.fit(text, 12, 3))


@pytest.mark.parametrize("branching", [(1,), (1, 1, 1, 1), (3, 2, 1), (2, 2, 2, 2)])
def test_tree_decoding_equals_greedy(toy_model_and_proposer, branching):
    model, proposer = toy_model_and_proposer
    for seed in range(3):
        prompt = torch.as_tensor(np.random.default_rng(seed).integers(0, 12, size=1 + 5 * seed))
        stats = TreeStats()
        out = tree_speculative_generate(model, proposer, prompt, branching=branching, max_new=25, stats=stats)
        assert torch.equal(out, greedy_generate(model, prompt, 25))  # integers: exact
        assert 1 <= stats.tokens_per_call() <= len(branching) + 1


@pytest.mark.parametrize("context_length", [0, 1, 2, 9])
def test_proposer_fills_each_node_with_its_parents_top_candidates(context_length):
    text = np.random.default_rng(1).integers(0, 12, size=3000)
    proposer = NGramProposer(NGramModel.fit(text, 12, 5))  # 4 context tokens: longer than some contexts here
    parents = static_tree((3, 2, 1))
    children = [[c for c, p in enumerate(parents) if p == u] for u in range(len(parents))]
    context = list(range(context_length))
    tokens = proposer.fill(parents, children, context, 11)
    assert tokens[0] == 11
    for node, kids in enumerate(children):
        path = context + [tokens[u] for u in root_path(parents, node)]
        ranked = np.argsort(-proposer.model.next_distribution(path), kind="stable")  # the full path, uncut
        assert [tokens[k] for k in kids] == ranked[: len(kids)].tolist()


def test_unrolled_paths_score_like_the_tree(toy_model_and_proposer):
    model, _ = toy_model_and_proposer
    cache = model.new_cache(1)
    model(torch.tensor([[1, 5, 2, 7]]), cache)
    parents = static_tree((3, 2, 1))
    tokens = np.random.default_rng(4).integers(0, 12, size=len(parents)).tolist()
    tree_logits, _ = model.tree_forward(torch.tensor(tokens), make_tree(parents), cache)
    # float32, the same function by two summation orders (batched chains vs one masked tree): ~1e-6
    torch.testing.assert_close(score_unrolled(model, tokens, parents, cache), tree_logits, atol=1e-5, rtol=1e-5)


def test_decoding_rejects_bad_prompts(toy_model_and_proposer):
    model, proposer = toy_model_and_proposer
    with pytest.raises(ValueError, match="prompt: expected at least one token"):
        greedy_generate(model, torch.zeros(0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="max_new: expected an int ≥ 0"):
        tree_speculative_generate(model, proposer, torch.tensor([1]), branching=(2,), max_new=-1)
    with pytest.raises(TypeError, match="model: expected an NGramModel"):
        NGramProposer("trigram")


# ----------------------------------------------------------------------------- exercise 07.6a


def test_exercise_check_passes_on_the_solution():
    assert check_tree_cumulative_decay(solution_tree_cumulative_decay()) == 7


def _stub(log_a, parents):
    raise NotImplementedError("Exercise 07.6a")


def _chain_cumsum(log_a, parents):  # treats the tree as a chain in index order
    return np.cumsum(log_a, axis=0)


def _parent_only(log_a, parents):  # forgets the node's own decay
    return solution_tree_cumulative_decay()(log_a, parents) - log_a


def _one_pass(log_a, parents):  # a single sweep in index order: wrong when a parent has a larger index
    cum = np.array(log_a, dtype=np.float64)
    for u in range(len(parents)):
        if parents[u] >= 0:
            cum[u] = cum[parents[u]] + log_a[u]
    return cum


@pytest.mark.parametrize("wrong", [_stub, _chain_cumsum, _parent_only, _one_pass])
def test_exercise_check_fails_on_wrong_answers(wrong):
    with pytest.raises((CheckFailed, NotImplementedError)):
        check_tree_cumulative_decay(wrong)
