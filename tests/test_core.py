"""lib.show, lib.seeding, lib.device and lib.bench: the helpers every section uses."""

import numpy as np
import pytest
import torch

import lib
from lib import bench, device, seeding
from lib.show import source_of


def test_show_prints_the_source_of_a_lib_function(capsys):
    lib.show(seeding.seed_everything)
    out = capsys.readouterr().out
    assert out.startswith("def seed_everything(") and "torch.manual_seed" in out


def test_show_rejects_what_has_no_source():
    with pytest.raises(TypeError, match="show\\(obj\\): expected a function, class or module"):
        source_of(3)


def test_seed_everything_repeats_every_generator():
    draws = []
    for _ in range(2):
        rng = lib.seed_everything(7)
        draws.append((rng.standard_normal(3), np.random.rand(), torch.randn(3)))
    assert np.array_equal(draws[0][0], draws[1][0]) and draws[0][1] == draws[1][1]
    assert torch.equal(draws[0][2], draws[1][2])
    with pytest.raises(ValueError, match="seed"):
        lib.seed_everything(-1)


def test_dispatch_rule_cpu_goes_to_pytorch_and_mixed_devices_fail():
    assert device.use_kernel(torch.zeros(2)) is False
    assert device.default_device().type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        assert device.interpreting()  # conftest configured the Triton interpreter
        with pytest.raises(ValueError, match="one device"):
            device.use_kernel(torch.zeros(1), torch.zeros(1, device="meta"))


def test_compare_times_every_provider_and_reports_ratios(tmp_path):
    x = torch.randn(64, 64)
    table = bench.compare(
        "sum",
        {"loop": lambda: sum(float(v) for v in x.flatten()[:256]), "torch": lambda: x.sum()},
        shape="64x64", dtype="float32", reference="loop", best="torch", device="cpu",
        bytes_moved=x.numel() * 4, min_run_time=0.01,
    )
    assert [t.provider for t in table.timings] == ["loop", "torch"]
    assert table.speedup("loop", "loop") == 1.0
    assert all(t.p20_ms <= t.median_ms <= t.p80_ms for t in table.timings)
    assert "× loop" in str(table) and "GB/s" in str(table)
    out = tmp_path / "b.csv"
    table.write_csv(out)
    table.write_csv(out)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("op,provider,shape,dtype,median_ms,p20_ms,p80_ms") and len(lines) == 5
    assert "torch " in lines[1]  # versions column


def test_compare_names_bad_arguments():
    with pytest.raises(ValueError, match="'nope' is not one of the providers"):
        bench.compare("op", {"a": lambda: None}, shape="1", dtype="f", reference="nope")
    with pytest.raises(TypeError, match=r"providers\['a'\]"):
        bench.compare("op", {"a": 3}, shape="1", dtype="f", reference="a")
    with pytest.raises(ValueError, match="device"):
        bench.compare("op", {"a": lambda: None}, shape="1", dtype="f", reference="a", device="tpu")
