"""Section 07.7: Direct Multi-Token Decoding — schedule, NumPy reference, cached generator, training flow, check."""

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.decoding.dmtd import (
    anchors,
    cyclical_mask,
    dmtd_forward,
    dmtd_generate,
    dmtd_generate_ref,
    dmtd_loss,
    dmtd_speedup,
    new_dmtd_caches,
    pass_counts,
)
from lib.decoding.jacobi import greedy_decode
from lib.exercises.ch07_decoding.dmtd import check_cyclical_mask
from lib.exercises.generate import master_function
from lib.exercises.registry import CheckFailed
from lib.models.decoder import Decoder, DecoderConfig
from lib.zoo import VAL_LOSS_ATOL, build, evaluate_entry, load

ROOT = Path(__file__).resolve().parents[1]


def solution(name: str):
    """The 07.7a solution ``name``, from the chapter's master."""
    return master_function(ROOT, "07", name)


@pytest.fixture(scope="module")
def target():
    torch.manual_seed(0)
    model, tok = load("char-target")
    return model, tok


def _prompt(tok, text="The module defines the following functions:\n"):
    return torch.tensor(tok.encode(text))


# ----------------------------------------------------------------------------- the schedule


def test_speedup_by_hand():
    assert dmtd_speedup(36, 8, 4) == pytest.approx(2.4, abs=1e-12)        # 144 / 60; exact rationals
    assert dmtd_speedup(36, 9, 4) == pytest.approx(144 / 63, abs=1e-12)
    assert dmtd_speedup(5, 2, 1) == 1.0                                   # τ = 1: plain decoding
    assert dmtd_speedup(5, 5, 4) == 1.0                                   # M = L: nothing skipped
    assert dmtd_speedup(5, 1, 1000) < 5.0                                 # bounded by L / M


@pytest.mark.parametrize("args, name", [((0, 1, 2), "L"), ((5, 0, 2), "M"), ((5, 6, 2), "M"), ((5, 1, 0), "tau"),
                                        ((5.0, 1, 2), "L"), ((5, 1, True), "tau")])
def test_speedup_bad_input_names_the_argument(args, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        dmtd_speedup(*args)


def test_anchors_and_cyclical_mask_by_hand():
    assert anchors(7, 3).tolist() == [1, 0, 0, 1, 0, 0, 1]
    assert anchors(7, 3, first=2).tolist() == [1, 1, 1, 0, 0, 1, 0]      # a prompt of 3: full until 2
    expected = np.array([[1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    assert np.array_equal(cyclical_mask(5, 2), expected)


@pytest.mark.parametrize("T, tau, first", [(1, 1, 0), (9, 1, 0), (13, 4, 0), (13, 3, 5), (6, 10, 0)])
def test_cyclical_mask_is_causal_and_tau1_is_the_causal_mask(T, tau, first):
    mask = cyclical_mask(T, tau, first)
    causal = np.tril(np.ones((T, T), dtype=bool))
    assert not np.triu(mask, k=1).any()
    assert np.array_equal(mask[:first + 1], causal[:first + 1])           # the prompt sees itself
    assert np.array_equal(cyclical_mask(T, 1, first), causal)
    a = anchors(T, tau, first)
    assert np.array_equal(mask.diagonal(), a)                             # only anchors use their own deep state


def test_mask_bad_input():
    with pytest.raises(ValueError, match="^T:"):
        cyclical_mask(0, 2)
    with pytest.raises(ValueError, match="^first:"):
        anchors(4, 2, first=4)


def test_pass_counts():
    assert pass_counts(1, 4) == (1, 0)
    assert pass_counts(9, 4) == (3, 6)
    assert pass_counts(8, 1) == (8, 0)


# ----------------------------------------------------------------------------- the layer-split API


@pytest.mark.parametrize("positions", ["rope", "learned", "sinusoidal", "alibi", "none"])
def test_forward_is_head_of_run_layers_of_embed_also_with_two_caches(positions):
    torch.manual_seed(1)
    model = Decoder(DecoderConfig(vocab_size=11, d_model=32, n_layers=3, n_heads=4, max_seq_len=32,
                                  positions=positions)).eval()
    ids = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        full = model(ids)
        assert torch.equal(model.head(model.run_layers(model.embed(ids), 0, 3)), full)  # the same ops in order
        lo, hi = model.new_cache(2), model.new_cache(2)                   # layers [0, 2) and [2, 3), own lengths
        h = model.run_layers(model.embed(ids[:, :5]), 0, 2, lo)
        lo.advance(5)
        h = model.run_layers(h, 2, 3, hi)
        hi.advance(5)
        h2 = model.run_layers(model.embed(ids[:, 5:], 5), 0, 2, lo)
        step = model.head(model.run_layers(h2, 2, 3, hi))
    # float32, incremental vs one pass: rounding of reordered sums only (~1e-7 relative)
    torch.testing.assert_close(step, full[:, 5:], atol=1e-5, rtol=1e-4)


def test_run_layers_bad_input_names_the_argument(target):
    model, _ = target
    h = torch.zeros(1, 3, 128)
    with pytest.raises(ValueError, match="^last:"):
        model.run_layers(h, 0, 6)
    with pytest.raises(ValueError, match="^last:"):
        model.run_layers(h, 3, 2)
    with pytest.raises(ValueError, match="^h:"):
        model.run_layers(torch.zeros(1, 3, 64), 0, 1)


# ----------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("late_layers", [1, 2, 4])
def test_tau1_is_greedy_exactly(target, late_layers):
    model, tok = target
    prompt = _prompt(tok)
    assert torch.equal(dmtd_generate(model, prompt, 40, 1, late_layers), greedy_decode(model, prompt, 40))


@pytest.mark.parametrize("tau, late_layers", [(2, 1), (3, 2), (4, 2)])
def test_refilled_early_caches_equal_a_plain_forward(target, tau, late_layers):
    model, tok = target
    prompt, n = _prompt(tok), 4 * tau + 1                   # ends right after an anchor's refill
    early, late = new_dmtd_caches(model)
    out = dmtd_generate(model, prompt, n, tau, late_layers, caches=(early, late))
    seq = torch.cat([prompt, out[:-1]])
    assert early.length == late.length == len(seq)         # nothing pending after the anchor
    plain = model.new_cache(1)
    with torch.no_grad():
        model(seq[None], plain)
    for layer in range(model.config.n_layers - late_layers):
        # float32: the cache was filled in chunks (prompt, refills), the plain pass in one call → ~1e-7
        torch.testing.assert_close(early.keys[layer][:, :, : len(seq)], plain.keys[layer][:, :, : len(seq)],
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(early.values[layer][:, :, : len(seq)], plain.values[layer][:, :, : len(seq)],
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tau, late_layers", [(2, 2), (3, 1), (4, 2), (4, 3)])
def test_teacher_forced_flow_matches_step_by_step_inference(target, tau, late_layers):
    model, tok = target
    prompt, rows = _prompt(tok), []
    out = dmtd_generate(model, prompt, 30, tau, late_layers, logits_out=rows)
    ids = torch.cat([prompt, out[:-1]])[None]
    with torch.no_grad():
        forced = dmtd_forward(model, ids, tau, late_layers, first=len(prompt) - 1)[0, len(prompt) - 1:]
    # float32; the same function computed in one pass vs cached steps: reordered sums, logits ~10 → 1e-4
    torch.testing.assert_close(forced, torch.stack(rows), atol=1e-4, rtol=1e-4)
    assert torch.equal(forced.argmax(-1), out)


@pytest.mark.parametrize("tau, late_layers", [(2, 2), (3, 2), (4, 1)])
def test_numpy_reference_equals_the_cached_generator(target, tau, late_layers):
    model, tok = target
    prompt, rows = _prompt(tok, "Return the value"), []
    out = dmtd_generate(model, prompt, 9, tau, late_layers, logits_out=rows)
    ref_tokens, ref_logits = dmtd_generate_ref(model, prompt.tolist(), 9, tau, late_layers)
    assert ref_tokens.tolist() == out.tolist()
    # float32 torch vs float64 NumPy through 5 blocks: ~1e-5 on logits of size ~10
    np.testing.assert_allclose(torch.stack(rows).double().numpy(), ref_logits, atol=1e-4, rtol=1e-4)


def test_dmtd_forward_with_tau1_is_the_plain_model(target):
    model, tok = target
    ids = _prompt(tok)[None]
    with torch.no_grad():
        assert torch.equal(dmtd_forward(model, ids, 1, 2), model(ids))  # the same ops in the same order


def test_loss_gradient_reaches_every_layer(target):
    model, tok = target
    ids = _prompt(tok)[None]
    model.zero_grad()
    dmtd_loss(model, ids[:, :-1], ids[:, 1:], 3, 2).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad()


def test_generator_bad_input_names_the_argument(target):
    model, tok = target
    prompt = _prompt(tok)
    with pytest.raises(ValueError, match="^late_layers:"):
        dmtd_generate(model, prompt, 4, 2, 0)
    with pytest.raises(ValueError, match="^late_layers:"):
        dmtd_generate(model, prompt, 4, 2, 6)
    with pytest.raises(ValueError, match="^tau:"):
        dmtd_generate(model, prompt, 4, 0, 1)
    with pytest.raises(ValueError, match="^prompt:"):
        dmtd_generate(model, prompt[None], 4, 2, 1)
    with pytest.raises(ValueError, match="^n_new:"):
        dmtd_generate(model, prompt, 300, 2, 1)
    with pytest.raises(TypeError, match="^model:"):
        dmtd_generate("char-target", prompt, 4, 2, 1)


# ----------------------------------------------------------------------------- the zoo entries


def test_zoo_smoke_build_of_a_dmtd_entry(tmp_path):
    record = build("char-target-dmtd2", steps=2, out=tmp_path, progress=False)
    assert record["steps"] == 2
    recorded, measured = evaluate_entry("char-target-dmtd2", tmp_path)   # reload the fp16 file, rescore
    assert measured == pytest.approx(recorded, abs=VAL_LOSS_ATOL)
    model, _ = load("char-target-dmtd2", tmp_path)
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ----------------------------------------------------------------------------- exercise 07.7a


def test_check_passes_on_the_solution():
    assert check_cyclical_mask(solution("cyclical_mask")) > 20


def _stub(T, tau):
    raise NotImplementedError("Exercise 07.7a")


def _causal(T, tau):
    return np.tril(np.ones((T, T), dtype=bool))


def _strict(T, tau):
    t = np.arange(T)
    return t[None, :] < (t - t % tau)[:, None]


def _block_diagonal(T, tau):
    t = np.arange(T)
    return (t[None, :] <= t[:, None]) & (t[None, :] // tau == t[:, None] // tau)


def _one_past_the_anchor(T, tau):
    t = np.arange(T)
    return t[None, :] <= np.minimum(t - t % tau + 1, t)[:, None]


def _ints(T, tau):
    return cyclical_mask(T, tau).astype(int)


@pytest.mark.parametrize("wrong", [_causal, _strict, _block_diagonal, _one_past_the_anchor, _ints])
def test_check_rejects_plausible_wrong_answers(wrong):
    with pytest.raises(CheckFailed):
        check_cyclical_mask(wrong)


def test_check_rejects_the_stub():
    with pytest.raises(NotImplementedError):
        check_cyclical_mask(_stub)
