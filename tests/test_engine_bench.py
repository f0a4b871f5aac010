"""`cmosx bench` end to end on the tiny spec (a smoke run: the figures themselves are not asserted)."""

import json

from typer.testing import CliRunner

from cmosx.cli.main import app


def test_bench_prints_a_row_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--spec", "tiny", "--device", "cpu", "--precision", "fp32", "--precision", "bf16"]
    args += ["--size", "24x30"]
    result = CliRunner().invoke(app, [*args, "--tile", "16", "--repeats", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "tiny" in result.output and "PSNR tiny cpu cl float32 vs bfloat16" in result.output
    row, _ = json.loads(out.read_text())["results"]
    for key in ("output_mp_per_s", "sr_gflops", "conv_peak_gflops", "tiled_over_untiled", "peak_memory_mb"):
        assert row[key] > 0
    assert row["precision"] == "float32" and row["tile"] == 16


def test_bench_rejects_bad_options():
    result = CliRunner().invoke(app, ["bench", "--spec", "tiny", "--size", "big"])
    assert result.exit_code == 2 and "HEIGHTxWIDTH" in result.output
