"""``make bench``'s chapter-07 tables, in a short mode: registered, both tables filled, calls printed."""

import pytest
import torch

from lib import bench
from lib.benchmarks import decoding


@pytest.fixture
def short(monkeypatch: pytest.MonkeyPatch) -> None:
    """8 new characters after one prompt, each provider timed for 0.05 s."""
    one_prompt = decoding.prompts()[:1]
    monkeypatch.setattr(decoding, "N_NEW", 8)
    monkeypatch.setattr(decoding, "MIN_RUN_TIME", 0.05)
    monkeypatch.setattr(decoding, "prompts", lambda: one_prompt)


def test_decoding_benchmark_is_registered():
    bench._load_benchmarks()
    assert bench.REGISTRY["decoding"] is decoding.decoding_benchmark
    assert decoding.decoding_benchmark("cuda") == []  # the character models are CPU workbench models


def test_short_run_fills_both_tables(short, capsys: pytest.CaptureFixture[str]):
    threads = torch.get_num_threads()
    sampling, greedy = decoding.decoding_benchmark("cpu")
    assert torch.get_num_threads() == threads  # restored after the single-threaded run
    assert [t.provider for t in sampling.timings] == [
        "autoregressive", "speculative, char-ngram γ=6", "speculative, char-draft γ=2"]
    assert [t.provider for t in greedy.timings] == ["greedy (cached)", "jacobi b=8", "lookahead W=5 N=4 G=5"]
    assert all(t.median_ms > 0 for t in sampling.timings + greedy.timings)
    calls = capsys.readouterr().out
    assert "target calls per character: autoregressive 1.000; char-ngram" in calls
