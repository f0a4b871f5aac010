"""`cmosx bench`: the measuring code on the tiny spec, and the sub-commands' tables, PSNR lines and JSON."""

import json

import pytest
import torch
from typer.testing import CliRunner

import cmosx.engine.bench as bench
from cmosx.cli.main import app


@pytest.mark.slow
def test_bench_case_measures_speed_flops_and_memory():
    model = bench.random_model("tiny")
    result, output = bench.bench_case(model, "cpu", "fp32", True, 24, 30, tile=16, repeats=1)
    assert output.shape == (3, 96, 120)
    for key in ("output_mp_per_s", "sr_gflops", "pipeline_gflops", "conv_peak_gflops", "peak_memory_mb"):
        assert result.as_dict()[key] > 0
    assert result.tiled_over_untiled > 0 and result.precision == "float32" and result.tile == 16


def test_bench_command_prints_rows_psnr_and_json(tmp_path, monkeypatch):
    def fake_case(model, device, precision, channels_last, height, width, tile, **kwargs):
        fields = {name: 1.0 for name in bench.BenchResult.__dataclass_fields__}
        fields.update(spec="tiny", device=device, precision=precision, channels_last=channels_last)
        fields.update(size=f"{height}x{width}", tile=tile, tile_batch=1)
        out = torch.full((3, 4 * height, 4 * width), 0.5 if precision == "fp32" else 0.51)
        return bench.BenchResult(**fields), out

    monkeypatch.setattr(bench, "bench_case", fake_case)
    out = tmp_path / "bench.json"
    args = ["bench", "pipeline", "--spec", "tiny", "--device", "cpu", "--precision", "fp32", "--precision", "bf16"]
    result = CliRunner().invoke(app, [*args, "--size", "8x10", "--layout", "both", "--json-file", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("tiny   cpu") == 4
    assert "PSNR tiny cpu cl fp32 vs bf16: 40.0 dB" in result.output
    data = json.loads(out.read_text())
    assert len(data["results"]) == 4 and len(data["comparisons"]) == 2


def test_bench_rejects_bad_options():
    result = CliRunner().invoke(app, ["bench", "pipeline", "--spec", "tiny", "--size", "big"])
    assert result.exit_code == 2 and "HEIGHTxWIDTH" in result.output


def test_bench_networks_prints_each_network_of_a_spec():
    result = CliRunner().invoke(app, ["bench", "networks", "--spec", "tiny", "--size", "16x16", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("tiny/cmos ") for line in lines) and any(line.startswith("tiny/sr ") for line in lines)
    assert "reference at 16x16" in result.output and "tiny: CMOS + SR" in result.output
    bad = CliRunner().invoke(app, ["bench", "networks", "--spec", "huge"])
    assert bad.exit_code == 2 and "unknown spec(s) huge" in bad.output


def test_bench_clears_the_precision_cache(tmp_path):
    from cmosx.engine import probe_cache

    probe_cache.store("k", "bf16", "machine", "model", {})
    result = CliRunner().invoke(app, ["bench", "clear-cache"])
    assert result.exit_code == 0, result.output
    assert f"cleared 1 cached measurement(s) from {probe_cache.cache_path()}" in result.output
    assert not probe_cache.cache_path().exists() and probe_cache.load("k") is None


def test_peak_is_the_best_shape_measured_once_and_never_below_a_network(monkeypatch):
    calls = []

    def fake_best_time(fn, sync=None, repeats=2):
        calls.append(1)
        return 0.01 * len(calls)  # the first shape is the fastest

    monkeypatch.setattr(bench, "_peak_cache", {})
    monkeypatch.setattr(bench, "best_time", fake_best_time)
    cpu = torch.device("cpu")
    peak = bench.conv_peak_gflops(cpu, torch.float32)
    _run, flops = bench.conv_probe(cpu, torch.float32, bench.PEAK_SHAPES[0])
    assert len(calls) == len(bench.PEAK_SHAPES) and peak == pytest.approx(flops / 0.01 / 1e9)
    assert bench.conv_peak_gflops(cpu, torch.float32) == peak and len(calls) == len(bench.PEAK_SHAPES)  # cached

    fields = {name: 1.0 for name in bench.BenchResult.__dataclass_fields__}
    fields.update(spec="lite", device="cpu", precision="bfloat16", channels_last=True, size="1x1", tile=1)
    slow = bench.BenchResult(**{**fields, "sr_gflops": 150.0, "conv_peak_gflops": 201.0, "pipeline_gflops": 90.0})
    fast = bench.BenchResult(**{**fields, "sr_gflops": 372.0, "conv_peak_gflops": 201.0, "pipeline_gflops": 90.0})
    other = bench.BenchResult(**{**fields, "precision": "float32", "sr_gflops": 50.0, "conv_peak_gflops": 80.0})
    bench.raise_peaks([slow, fast, other])
    assert slow.conv_peak_gflops == fast.conv_peak_gflops == 372.0 and other.conv_peak_gflops == 80.0
    assert fast.sr_fraction_of_peak == 1.0 and slow.sr_fraction_of_peak == pytest.approx(150 / 372)


def test_end_to_end_times_the_upscale_path_against_the_networks(capsys):
    from cmosx.cli.bench import end_to_end

    end_to_end(None, "cpu", "fp32", repeats=1, size=(24, 32))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "32x24 JPEG -> 128x96 JPEG end to end" in line and "its two networks on the whole photo" in line
    assert float(line.rsplit("ratio ", 1)[1]) > 0


def test_plain_bench_and_the_old_flags_run_the_sub_commands(tmp_path, monkeypatch):
    """Scripts written for the single `cmosx bench` keep working: no sub-command runs `pipeline`, and each old
    mode flag runs its sub-command (with a note naming the new spelling)."""
    from cmosx.cli.bench import route_legacy
    from cmosx.engine import probe_cache

    commands = {"pipeline": 0, "networks": 0, "memory": 0, "end-to-end": 0, "clear-cache": 0}
    assert route_legacy([], commands) == (["pipeline"], None)
    assert route_legacy(["--spec", "tiny"], commands) == (["pipeline", "--spec", "tiny"], None)
    assert route_legacy(["networks", "--halo"], commands) == (["networks", "--halo"], None)
    assert route_legacy(["--help"], commands) == (["--help"], None)
    args, note = route_legacy(["--spec", "tiny", "--networks", "--halo"], commands)
    assert args == ["networks", "--spec", "tiny", "--halo"] and "is now 'cmosx bench networks'" in note
    args, note = route_legacy(["--peak-memory", "--tile", "64"], commands)
    assert args == ["memory", "--tile", "64"]
    assert route_legacy(["--end-to-end"], commands)[0] == ["end-to-end"]
    args, note = route_legacy(["--json", "out.json"], commands)
    assert args == ["pipeline", "--json-file", "out.json"] and "--json-file FILE" in note

    probe_cache.store("k", "bf16", "machine", "model", {})
    result = CliRunner().invoke(app, ["bench", "--clear-precision-cache"])
    assert result.exit_code == 0, result.output
    assert "cleared 1 cached measurement(s)" in result.stdout and "bench clear-cache" in result.stderr
    unknown = CliRunner().invoke(app, ["bench", "--no-such-option"])
    assert unknown.exit_code == 2 and "No such option" in unknown.output
