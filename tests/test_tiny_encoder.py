"""The chapter's tiny encoder: attention paths agree, shapes, data loaders, training and the seed runner."""

import numpy as np
import pytest
import torch
from torch import nn

import lib
from lib.data.tasks import IGNORE_INDEX
from lib.models.tiny_encoder import (
    SeedSummary,
    SelfAttention,
    TinyEncoder,
    TinyEncoderConfig,
    accuracy,
    load_digit_patches,
    seed_runs,
    sequence_task,
    train_classifier,
)

FP32 = dict(atol=1e-5, rtol=1e-4, reason="same attention in fp32, tiled vs materialized: summation order only")


def _softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1)


def test_self_attention_normalize_softmax_matches_the_flash_path() -> None:
    lib.seed_everything(0)
    layer = SelfAttention(64, 4)
    x = torch.randn(3, 13, 64)
    flash = layer(x)
    layer.normalize = _softmax_rows
    lib.agree("SelfAttention: flash vs materialized softmax", flash, layer(x), **FP32, quiet=True)


def test_self_attention_calls_normalize_on_logits_of_every_head() -> None:
    seen = []

    def uniform(logits: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(logits.shape))
        return torch.full_like(logits, 1.0 / logits.shape[-1])

    layer = SelfAttention(32, 2, normalize=uniform)
    x = torch.randn(2, 5, 32)
    out = layer(x)
    assert seen == [(2, 2, 5, 5)]
    # uniform weights: every position gets the mean of the values, so all rows are equal
    assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)


@pytest.mark.parametrize("per_token, expected", [(True, (4, 16, 10)), (False, (4, 10))])
def test_encoder_output_shapes(per_token: bool, expected: tuple[int, ...]) -> None:
    config = TinyEncoderConfig(n_inputs=10, n_tokens=16, n_outputs=10, per_token=per_token)
    logits = TinyEncoder(config)(torch.randint(0, 10, (4, 16)))
    assert logits.shape == expected


def test_encoder_on_features_and_shorter_sequences() -> None:
    config = TinyEncoderConfig(n_inputs=4, n_tokens=16, n_outputs=3, inputs="features", d_model=32, n_heads=2)
    assert TinyEncoder(config)(torch.randn(2, 7, 4)).shape == (2, 3)


def test_encoder_builds_one_mixer_per_layer_with_its_sizes() -> None:
    built = []

    def mixer(d_model: int, n_heads: int) -> nn.Module:
        built.append((d_model, n_heads))
        return nn.Identity()

    model = TinyEncoder(TinyEncoderConfig(n_inputs=5, n_tokens=8, n_outputs=2, n_layers=3), mixer=mixer)
    assert built == [(64, 4)] * 3
    assert model(torch.randint(0, 5, (2, 8))).shape == (2, 2)


def test_without_positions_the_pooled_encoder_sees_a_set() -> None:
    lib.seed_everything(0)
    config = TinyEncoderConfig(n_inputs=10, n_tokens=16, n_outputs=4, learned_positions=False)
    model = TinyEncoder(config)
    tokens = torch.randint(0, 10, (3, 16))
    permuted = tokens[:, torch.randperm(16)]
    lib.agree("pooled logits of permuted tokens", model(permuted), model(tokens), atol=1e-5, rtol=1e-5,
              reason="fp32: only the order of the mean's summands changes", quiet=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_inputs=0, n_tokens=4, n_outputs=2), "TinyEncoderConfig.n_inputs"),
        (dict(n_inputs=3, n_tokens=4, n_outputs=2, d_model=30, n_heads=4), "n_heads: expected a divisor"),
        (dict(n_inputs=3, n_tokens=4, n_outputs=2, inputs="pixels"), "TinyEncoderConfig.inputs"),
        (dict(n_inputs=3, n_tokens=4, n_outputs=2, per_token=1), "TinyEncoderConfig.per_token"),
    ],
)
def test_bad_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TinyEncoderConfig(**kwargs)


def test_bad_inputs_and_mixers() -> None:
    model = TinyEncoder(TinyEncoderConfig(n_inputs=10, n_tokens=8, n_outputs=2))
    with pytest.raises(ValueError, match=r"inputs: expected a long \(B, N\)"):
        model(torch.randn(2, 8))
    with pytest.raises(ValueError, match="N ≤ 8"):
        model(torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(TypeError, match="config"):
        TinyEncoder({"n_inputs": 3})
    with pytest.raises(TypeError, match="mixer"):
        TinyEncoder(TinyEncoderConfig(n_inputs=3, n_tokens=4, n_outputs=2), mixer=lambda d, h: "attention")
    with pytest.raises(ValueError, match=r"x: expected a floating \(B, N, 16\)"):
        SelfAttention(16, 2)(torch.randn(2, 3, 8))
    with pytest.raises(TypeError, match="normalize"):
        SelfAttention(16, 2, normalize="softmax")


def test_digit_patches_rebuild_the_images_and_split_reproducibly() -> None:
    from sklearn.datasets import load_digits

    (x_train, y_train), (x_test, y_test) = load_digit_patches()
    assert x_train.shape[1:] == (16, 4) and x_train.dtype == torch.float32
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == round(0.25 * 1797)
    # patch (r, c) holds pixels [2r:2r+2, 2c:2c+2]: rebuild the first test image and find it in sklearn's set
    image = x_test[0].reshape(4, 4, 2, 2).permute(0, 2, 1, 3).reshape(8, 8).numpy() * 16
    match = np.flatnonzero((load_digits().images == image).all(axis=(1, 2)))
    assert len(match) >= 1 and load_digits().target[match[0]] == int(y_test[0])
    again = load_digit_patches()
    assert torch.equal(again[0][0], x_train) and torch.equal(again[1][1], y_test)
    assert load_digit_patches(patch=4)[0][0].shape[1:] == (4, 16)


def test_bad_digit_arguments() -> None:
    with pytest.raises(ValueError, match="patch"):
        load_digit_patches(patch=3)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digit_patches(test_fraction=1.5)


def test_sequence_tasks_give_the_right_labels() -> None:
    for name, rule in {
        "copy": lambda s: s,
        "reverse": lambda s: s[::-1],
        "sort": np.sort,
        "swap": lambda s: np.concatenate([s[8:], s[:8]]),
    }.items():
        inputs, labels = sequence_task(name, 5, seed=3)
        assert inputs.shape == labels.shape == (5, 16) and inputs.dtype == labels.dtype == torch.long
        assert int(inputs.max()) < 10
        for source, target in zip(inputs.numpy(), labels.numpy()):
            np.testing.assert_array_equal(target, rule(source), err_msg=name)
    assert torch.equal(sequence_task("swap", 4, seed=1)[0], sequence_task("swap", 4, seed=1)[0])
    odd_inputs, odd_labels = sequence_task("swap", 2, seed=0, length=5)
    np.testing.assert_array_equal(odd_labels[0].numpy(), odd_inputs[0].numpy()[[3, 4, 2, 0, 1]])
    with pytest.raises(ValueError, match="name"):
        sequence_task("rotate", 4, seed=0)


def test_training_learns_digits_and_is_reproducible() -> None:
    train_split, test_split = load_digit_patches()
    config = TinyEncoderConfig(n_inputs=4, n_tokens=16, n_outputs=10, inputs="features", d_model=32, n_layers=1)

    def run(seed: int) -> float:
        lib.seed_everything(seed)
        model = TinyEncoder(config)
        return train_classifier(model, train_split, test_split, steps=100, lr=1e-2, batch_size=64, seed=seed)

    first = run(0)
    assert first > 0.5  # chance is 0.1; 100 steps of a 1-layer encoder reach ~0.87
    assert run(0) == first
    assert torch.get_num_threads() == 2  # restored after training on one thread


def test_accuracy_skips_ignored_labels() -> None:
    class Echo(nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return nn.functional.one_hot(inputs, 3).float()

    inputs = torch.tensor([[0, 1, 2, 2]])
    labels = torch.tensor([[0, 1, 0, IGNORE_INDEX]])
    assert accuracy(Echo(), (inputs, labels)) == pytest.approx(2 / 3)


def test_bad_training_arguments() -> None:
    model = TinyEncoder(TinyEncoderConfig(n_inputs=10, n_tokens=16, n_outputs=10, per_token=True))
    split = sequence_task("copy", 8, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        train_classifier(model, split, split, steps=1, lr=1e-3, batch_size=9, seed=0)
    with pytest.raises(TypeError, match="train"):
        train_classifier(model, split[0], split, steps=1, lr=1e-3, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="test"):
        train_classifier(model, split, (split[0], split[1][:3]), steps=1, lr=1e-3, batch_size=4, seed=0)
    with pytest.raises(TypeError, match="model"):
        train_classifier("model", split, split, steps=1, lr=1e-3, batch_size=4, seed=0)


def test_seed_runs_summarizes_with_the_sample_std() -> None:
    summary = seed_runs(lambda seed: float(seed), [1, 2, 3])
    assert summary == SeedSummary(mean=2.0, std=1.0, values=(1.0, 2.0, 3.0))
    assert str(summary) == "2.000 ± 1.000"
    assert seed_runs(lambda seed: 0.5, [7]).std == 0.0
    with pytest.raises(ValueError, match="seeds"):
        seed_runs(lambda seed: 0.0, [])
    with pytest.raises(TypeError, match="fn"):
        seed_runs(0.5, [1])
