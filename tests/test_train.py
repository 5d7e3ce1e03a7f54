"""lib.train: the schedule, the parameter groups, clipping, determinism, learning, evaluation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lib.train import History, TrainConfig, bits_per_char, evaluate_lm, lr_at, parameter_groups, train

VOCAB = 8


class TinyLM(nn.Module):
    """Embedding → LayerNorm → Linear with bias: every kind of parameter the groups tell apart."""

    def __init__(self, vocab: int = VOCAB, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.norm = nn.LayerNorm(width)
        self.hidden = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.norm(self.embed(ids)))))


def cyclic_batches(batch_size: int = 4, seq_len: int = 12, seed: int = 0):
    """Windows of the sequence 0, 1, …, 7, 0, 1, … at random offsets: next token = current + 1 mod 8."""
    stream = torch.arange(1000) % VOCAB
    gen = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(stream) - seq_len - 1, (batch_size,), generator=gen)
        windows = torch.stack([stream[s : s + seq_len + 1] for s in starts.tolist()])
        yield windows[:, :-1], windows[:, 1:]


def quiet(**kwargs) -> TrainConfig:
    return TrainConfig(progress=False, **kwargs)


def run(seed: int = 0, **kwargs) -> History:
    torch.manual_seed(seed)
    return train(TinyLM(), cyclic_batches(seed=seed), quiet(**kwargs))


def test_warmup_is_linear_up_to_the_peak():
    config = quiet(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert [lr_at(s, config) for s in range(10)] == pytest.approx([1e-4 * (s + 1) for s in range(10)])
    assert lr_at(10, config) == pytest.approx(1e-3)


def test_cosine_ends_exactly_at_the_minimum_and_halves_in_the_middle():
    config = quiet(steps=111, lr=2e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(110, config) == pytest.approx(2e-4)
    assert lr_at(60, config) == pytest.approx((2e-3 + 2e-4) / 2)  # t = ½: cos = 0
    lrs = [lr_at(s, config) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])), "the cosine must only go down"


def test_schedule_without_warmup_starts_at_the_peak():
    config = quiet(steps=5, lr=1.0, warmup_steps=0, min_lr_ratio=0.0)
    assert [lr_at(s, config) for s in range(5)] == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466, 0.0])


def test_history_records_the_learning_rate_it_used():
    config = quiet(steps=6, lr=1e-2, warmup_steps=3)
    torch.manual_seed(0)
    history = train(TinyLM(), cyclic_batches(), config)
    assert history.steps == [1, 2, 3, 4, 5, 6]
    assert history.lr == [lr_at(s, config) for s in range(6)]


def test_no_decay_on_biases_norms_and_embeddings():
    model = TinyLM()
    decay, no_decay = parameter_groups(model, 0.1)
    assert {id(p) for p in decay["params"]} == {id(model.hidden.weight), id(model.head.weight)}
    exempt = [model.embed.weight, model.norm.weight, model.norm.bias, model.hidden.bias, model.head.bias]
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in exempt}
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)


def test_a_tied_output_layer_is_listed_once_and_not_decayed():
    model = TinyLM(width=VOCAB)
    model.head.weight = model.embed.weight  # tie (V, d) to (V, d)
    decay, no_decay = parameter_groups(model, 0.1)
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert id(model.embed.weight) in {id(p) for p in no_decay["params"]}


def test_grad_norm_is_recorded_before_clipping_and_gradients_are_clipped(monkeypatch):
    clipped_norms = []
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):  # the gradient norm the optimizer actually sees
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        clipped_norms.append(float(torch.nn.utils.get_total_norm(grads)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    history = run(steps=5, lr=1e-3, warmup_steps=0, grad_clip=1e-3)
    assert min(history.grad_norm) > 1e-2, "the recorded norm must be the one before clipping"
    assert clipped_norms == pytest.approx([1e-3] * 5, rel=1e-4)


def test_without_clipping_the_norm_is_still_recorded():
    history = run(steps=3, grad_clip=None)
    assert all(math.isfinite(g) and g > 0 for g in history.grad_norm)


def test_same_seed_gives_an_identical_loss_history():
    first, second = run(seed=3, steps=20), run(seed=3, steps=20)
    assert first.train_loss == second.train_loss
    assert first.grad_norm == second.grad_norm
    assert run(seed=4, steps=20).train_loss != first.train_loss


def test_loss_decreases_on_a_tiny_task():
    history = run(steps=150, lr=1e-2, warmup_steps=10)
    assert history.train_loss[0] > 1.5  # ≈ ln 8 = 2.08 at initialisation
    assert np.mean(history.train_loss[-10:]) < 0.05, "next = current + 1 is learnable exactly"
    assert history.tokens_per_s > 0 and history.seconds > 0


def test_evaluation_runs_periodically_and_after_the_last_step():
    calls = []

    def evaluate(model: nn.Module) -> float:
        calls.append((model.training, torch.is_grad_enabled()))
        return 1.0

    torch.manual_seed(0)
    model = TinyLM()
    history = train(model, cyclic_batches(), quiet(steps=7, eval_every=3), evaluate=evaluate)
    assert [s for s, _ in history.eval] == [3, 6, 7]
    assert calls == [(False, False)] * 3, "evaluation runs in eval mode without gradients"
    assert not model.training


def test_history_plot_draws_loss_and_evaluations():
    import matplotlib

    matplotlib.use("Agg")
    history = History(steps=[1, 2], train_loss=[2.0, 1.0], eval=[(2, 1.5)])
    ax = history.plot()
    assert len(ax.lines) == 2
    assert ax.get_xlabel() == "step"


def test_evaluate_lm_matches_a_direct_cross_entropy():
    torch.manual_seed(0)
    model = TinyLM().eval()
    ids = np.arange(101) % VOCAB  # 100 targets: windows of 10, all used
    x, y = torch.as_tensor(ids[:100]), torch.as_tensor(ids[1:101])
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(model(x[None])[0], y))
    assert evaluate_lm(model, ids, batch_size=3, seq_len=10) == pytest.approx(expected, rel=1e-6)


def test_bits_per_char_converts_nats():
    assert bits_per_char(math.log(2)) == pytest.approx(1.0)
    assert bits_per_char(math.log(256)) == pytest.approx(8.0)


def test_progress_follows_the_ci_variable(monkeypatch):
    monkeypatch.setenv("CI", "1")
    assert not TrainConfig().show_progress()
    monkeypatch.delenv("CI")
    assert TrainConfig().show_progress()
    assert not TrainConfig(progress=False).show_progress()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "TrainConfig.steps: expected a positive int, got 0"),
        ({"lr": -1.0}, "TrainConfig.lr: expected a positive number, got -1.0"),
        ({"warmup_steps": 1.5}, "TrainConfig.warmup_steps: expected a non-negative int, got 1.5"),
        ({"min_lr_ratio": 2}, r"TrainConfig.min_lr_ratio: expected a number in \[0, 1\], got 2"),
        ({"betas": (0.9, 1.0)}, r"TrainConfig.betas: expected a number in \[0, 1\), got 1.0"),
        ({"grad_clip": 0}, "TrainConfig.grad_clip: expected a positive number or None, got 0"),
    ],
)
def test_bad_config_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_a_diverging_loss_stops_with_the_step():
    class Broken(TinyLM):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return super().forward(ids) * float("nan")

    with pytest.raises(FloatingPointError, match="the loss became nan at step 1"):
        train(Broken(), cyclic_batches(), quiet(steps=2))
