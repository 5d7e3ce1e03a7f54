"""The agreement helpers must fail when they should: each rule is tested on a case it rejects."""

import numpy as np
import pytest
import torch

from lib.agreement import agree, agree_flash_rule, rel_rms_error, rounding_floor


def test_agree_passes_and_prints_one_verdict_line(capsys):
    x = np.linspace(-1, 1, 50)
    verdict = agree("identity", torch.tensor(x, dtype=torch.float32), x, atol=1e-6, rtol=1e-6, reason="fp32 rounding")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("✓ identity: max abs ")
    assert "(fp32 rounding)" in out
    assert 0 < verdict.max_abs < 1e-7


def test_agree_names_the_worst_element():
    expected = np.zeros((3, 4))
    actual = expected.copy()
    actual[2, 1] = 1e-3
    with pytest.raises(AssertionError, match=r"disagrees at index \(2, 1\).*1 of 12 entries"):
        agree("z", actual, expected, atol=1e-5, rtol=0, reason="r")


def test_agree_checks_shape_first():
    with pytest.raises(AssertionError, match=r"shape \(3,\) differs from the reference's \(4,\)"):
        agree("s", np.zeros(3), np.zeros(4), atol=1e-5, rtol=0, reason="r")


def test_agree_rejects_nan_where_reference_is_finite():
    actual = np.array([0.0, np.nan, 1.0])
    with pytest.raises(AssertionError, match="NaN/inf value"):
        agree("n", actual, np.zeros(3), atol=0.5, rtol=0, reason="r")


def test_agree_requires_the_reference_nan_pattern():
    expected = np.array([0.0, -np.inf])
    with pytest.raises(AssertionError, match="NaN/inf pattern"):
        agree("p", np.array([0.0, 0.0]), expected, atol=1e-5, rtol=0, reason="r")
    agree("p", np.array([0.0, -np.inf]), expected, atol=1e-5, rtol=0, reason="r", quiet=True)


@pytest.mark.parametrize("atol,reason", [(1.0, "r"), (1e-5, ""), (-1e-5, "r")])
def test_agree_rejects_meaningless_tolerances(atol, reason):
    with pytest.raises(ValueError, match="agree"):
        agree("t", np.zeros(2), np.zeros(2), atol=atol, rtol=0, reason=reason)


def test_agree_rejects_lists():
    with pytest.raises(TypeError, match="actual: expected a numpy.ndarray or torch.Tensor, got list"):
        agree("l", [0.0], np.zeros(1), atol=1e-5, rtol=0, reason="r")


def test_flash_rule_accepts_same_dtype_rounding_and_rejects_worse():
    torch.manual_seed(0)
    ref = torch.randn(64, 64, dtype=torch.float64)
    plain = ref.to(torch.float16)
    agree_flash_rule("half", plain.clone(), plain, ref, quiet=True)
    much_worse = (ref + 0.05).to(torch.float16)
    with pytest.raises(AssertionError, match=r"exceeds 2 × baseline error"):
        agree_flash_rule("half", much_worse, plain, ref)


def test_flash_rule_compares_like_with_like():
    ref = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="same dtype"):
        agree_flash_rule("d", ref.half(), ref.float(), ref)


def test_rel_rms_and_floor():
    assert rel_rms_error(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.0
    assert rounding_floor(torch.float16, 4.0) == pytest.approx(2 * 2**-10 * 4.0)
    assert rounding_floor(np.float32, 0.1) == pytest.approx(2 * 2**-23)
