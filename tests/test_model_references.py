"""The workbench's NumPy references agree with the torch models they describe."""

import numpy as np
import pytest
import torch

from lib import agree
from lib.models.decoder import naive_attention, sdpa_attention
from lib.models.reference import reference_causal_attention, reference_sentence_embedding

FP32 = dict(atol=1e-5, rtol=1e-4, reason="float32 scores, softmax and weighted sum against float64")


@pytest.mark.parametrize("backend", [naive_attention, sdpa_attention])
@pytest.mark.parametrize("tq,tk", [(7, 7), (1, 9), (3, 11)])
def test_causal_attention_matches_the_decoders_backends(backend, tq, tk):
    g = torch.Generator().manual_seed(tq * 100 + tk)
    q, k, v = (torch.randn(2, 3, t, 16, generator=g) for t in (tq, tk, tk))
    expected = reference_causal_attention(q.numpy(), k.numpy(), v.numpy())
    agree(f"{backend.__name__} Tq={tq} Tk={tk}", backend(q, k, v, causal=True, bias=None), expected, **FP32)


def test_causal_attention_hides_the_future():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5, 4))
    changed = v.copy()
    changed[:, -1] += 10.0                                  # the last key's value only reaches the last query
    before, after = reference_causal_attention(q, k, v), reference_causal_attention(q, k, changed)
    assert np.array_equal(before[:, :-1], after[:, :-1]) and not np.allclose(before[:, -1], after[:, -1])
    with pytest.raises(ValueError, match="q: expected at most as many queries as keys"):
        reference_causal_attention(q, k[:, :2], v[:, :2])


def test_sentence_embedding_ignores_padding_and_has_unit_length():
    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((2, 4, 6))
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    emb = reference_sentence_embedding(hidden, mask)
    agree("unit length", np.linalg.norm(emb, axis=-1), np.ones(2), atol=1e-12, rtol=0, reason="float64 norm")
    direction = hidden[0, :2].mean(axis=0)
    agree("padding ignored", emb[0], direction / np.linalg.norm(direction), atol=1e-12, rtol=0, reason="float64")
