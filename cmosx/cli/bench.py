"""``cmosx bench``: benchmark inference speed, FLOP rate and memory on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cmosx.cli._common import parse_size, report_errors
from cmosx.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command(name="bench", help="Benchmark inference speed, FLOP rate and memory on this machine.")(bench_command)


def _devices(choice: str) -> list[str]:
    import torch

    from cmosx.engine.device import mps_available

    if choice != "all":
        return [choice]
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if mps_available():
        found.append("mps")
    return found


HEADER = (
    f"{'spec':6} {'device':6} {'prec':8} {'layout':6} {'size':>9} {'tile':>5} {'bat':>3} {'out MP/s':>9} "
    f"{'tiled/un':>8} {'SR GF/s':>8} {'pipe GF/s':>9} {'peak GF/s':>9} {'SR/peak':>7} {'mem MB':>8}"
)


def _row(r) -> str:
    layout = "cl" if r.channels_last else "nchw"
    return (
        f"{r.spec:6} {r.device:6} {r.precision:8} {layout:6} {r.size:>9} {r.tile:>5} {r.tile_batch:>3} "
        f"{r.output_mp_per_s:9.3f} "
        f"{r.tiled_over_untiled:8.2f} {r.sr_gflops:8.1f} {r.pipeline_gflops:9.1f} {r.conv_peak_gflops:9.1f} "
        f"{r.sr_fraction_of_peak:7.0%} {r.peak_memory_mb:8.0f}"
    )


@report_errors
def bench_command(
    spec: Annotated[
        Optional[list[str]], typer.Option("--spec", help="Model spec(s) to run (seeded random weights).")
    ] = None,
    model: Annotated[
        Optional[str], typer.Option("--model", help="Benchmark this model (name, path or hf://) instead of specs.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, mps, or all (every device available).")] = "all",
    precision: Annotated[
        Optional[list[str]], typer.Option("--precision", help="fp32, bf16, fp16 (default: fp32 and bf16).")
    ] = None,
    layout: Annotated[str, typer.Option(help="Memory format: cl (channels-last), nchw, or both.")] = "cl",
    size: Annotated[str, typer.Option(help="LR input size HxW for tiny and lite.")] = "240x320",
    paper_size: Annotated[str, typer.Option(help="LR input size HxW for the (slow) paper spec.")] = "120x160",
    tile: Annotated[int, typer.Option(help="SR tile size (LR pixels) for the tiled run.")] = 128,
    tile_batch: Annotated[str, typer.Option(help="SR tiles per device call, or auto.")] = "auto",
    repeats: Annotated[int, typer.Option(min=1, help="Timed rounds per case (best is kept).")] = 2,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    peak_memory: Annotated[
        bool,
        typer.Option(
            "--peak-memory",
            help="Instead: peak RSS of 1000x750 and 2000x1500 photos (fixed tiles, fresh processes, CPU).",
        ),
    ] = False,
    networks: Annotated[
        bool,
        typer.Option(
            "--networks",
            help="Instead: each network's FLOPs, NCHW / channels-last / bf16 times and GFLOP/s on the CPU.",
        ),
    ] = False,
    halo: Annotated[bool, typer.Option("--halo", help="With --networks: also the receptive-field probe.")] = False,
    end_to_end: Annotated[
        bool,
        typer.Option(
            "--end-to-end",
            help="Instead: a 1000x750 JPEG -> 12 MP JPEG through `cmosx upscale` (read, upscale, write) against "
            "the model's two networks on the whole photo, timed in alternation (--model, default the bundled one).",
        ),
    ] = False,
    clear_precision_cache: Annotated[
        bool,
        typer.Option(
            "--clear-precision-cache",
            help="Instead: forget the measured --precision auto choices (they are measured again on next use).",
        ),
    ] = False,
) -> None:
    """Time each (model, device, precision, layout) on a synthetic photo and print one row per case.

    Columns: output megapixels/s of the tiled pipeline; tiled/untiled time ratio; GFLOP/s achieved by
    the SR network on one tile and by the whole pipeline (FLOPs counted with torch's FlopCounterMode);
    the device's conv peak (best of representative convolutions, never below a rate of the run);
    SR/peak; peak memory (CUDA allocated, or the process's peak RSS on the CPU). For each spec and
    device the PSNR between the first precision's output and each other's is printed below the table.
    """
    from cmosx.engine.bench import bench_case, compare_outputs, raise_peaks, random_model
    from cmosx.engine.device import parse_precision, resolve_device
    from cmosx.engine.memory import retain_freed_memory

    retain_freed_memory()  # measure the CPU as `cmosx upscale` runs it (freed memory reused, not page-faulted)
    if clear_precision_cache:
        from cmosx.engine.precision_cache import ENV_VAR, clear

        path, count = clear()
        if path is None:
            typer.echo(f"the precision cache is off ({ENV_VAR}=off): nothing to clear")
        else:
            typer.echo(f"cleared {count} precision choice(s) from {path}")
        return
    if end_to_end:
        _end_to_end(model, device if device != "all" else "auto", precision[0] if precision else "auto", repeats)
        return
    if peak_memory:
        _peak_memory(spec[0] if spec else "tiny", tile)
        return
    specs = spec or ["tiny", "lite", "paper"]
    if networks:
        _network_table(specs, parse_size(size, "--size"), parse_size(paper_size, "--paper-size"), repeats, halo)
        return
    precisions = precision or ["fp32", "bf16"]
    layouts = {"cl": [True], "nchw": [False], "both": [True, False]}.get(layout)
    if layouts is None:
        raise UsageError(f"layout must be cl, nchw or both, got {layout!r}")
    if tile < 8:
        raise UsageError(f"tile must be at least 8, got {tile}")
    sizes = {"default": parse_size(size, "--size"), "paper": parse_size(paper_size, "--paper-size")}
    batch: int | str = int(tile_batch) if tile_batch.isdigit() else tile_batch

    if model is not None:
        from cmosx.models.hub import resolve_model

        models = [(model, resolve_model(model))]
    else:
        models = [(name, None) for name in specs]

    results, comparisons = [], []
    for dev_name in _devices(device):
        dev = resolve_device(dev_name)
        for label, loaded in models:
            loaded = loaded or random_model(label)
            h, w = sizes["paper" if loaded.card.spec.name == "paper" else "default"]
            for cl in layouts:
                outputs = []
                for prec in precisions:
                    parse_precision(prec)  # a clear error for an unknown name before any work
                    result, out = bench_case(loaded, str(dev), prec, cl, h, w, tile, repeats=repeats, tile_batch=batch)
                    results.append(result)
                    outputs.append((result.precision, out))
                for name, out in outputs[1:]:
                    db = compare_outputs(outputs[0][1], out)
                    layout_name = "cl" if cl else "nchw"
                    pair = {"spec": label, "device": str(dev), "layout": layout_name, "a": outputs[0][0], "b": name}
                    comparisons.append({**pair, "psnr_db": db})
    raise_peaks(results)  # rows are printed once every case has run: the peak is the run's best rate
    typer.echo(HEADER)
    for result in results:
        typer.echo(_row(result))
    for c in comparisons:
        typer.echo(f"PSNR {c['spec']} {c['device']} {c['layout']} {c['a']} vs {c['b']}: {c['psnr_db']:.1f} dB")
    if json_out is not None:
        from cmosx.io.atomic import atomic_write_bytes

        payload = {"results": [r.as_dict() for r in results], "comparisons": comparisons}
        atomic_write_bytes(json_out, json.dumps(payload, indent=2).encode())


def _network_table(
    specs: list[str], size: tuple[int, int], paper_size: tuple[int, int], repeats: int, halo: bool
) -> None:
    """Per-network rows of :func:`cmosx.models.bench.benchmark_spec` against a reference conv."""
    import torch

    from cmosx.engine.bench import PEAK_SHAPES, conv_peak_gflops
    from cmosx.models.bench import MEGAPIXELS_12_LR, benchmark_spec, measure_halos, reference_conv
    from cmosx.models.specs import SPECS

    unknown = [name for name in specs if name not in SPECS]
    if unknown:
        raise UsageError(f"unknown spec(s) {', '.join(unknown)} (use {', '.join(SPECS)})")
    height, width = size
    typer.echo(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, fp32 unless noted")
    ref_s, ref_rate = reference_conv(height, width)
    typer.echo(
        f"reference at {height}x{width}: channels_last 3x3 conv 64->64 {ref_s * 1e3:.1f} ms, {ref_rate:.0f} GFLOP/s"
    )
    cpu = torch.device("cpu")
    peak = conv_peak_gflops(cpu, torch.float32)
    typer.echo(f"fp32 peak (best of {len(PEAK_SHAPES)} conv shapes): {peak:.0f} GFLOP/s")
    measured = []
    for name in specs:
        h, w = paper_size if name == "paper" else size
        measured.append((name, h, w, benchmark_spec(name, h, w, repeats=repeats)))
    peak = max([peak] + [row.gflops_cl for _name, _h, _w, rows in measured for row in rows])
    header = f"{'network':<12} {'LR size':>9} {'GFLOP':>8} {'MMAC/px':>8} {'NCHW ms':>9} {'CL ms':>8}"
    typer.echo(header + f" {'CL GFLOP/s':>10} {'% peak':>6} {'bf16 ms':>8} {'bf16 maxdiff':>12}")
    for name, h, w, rows in measured:
        seconds = 0.0
        for row in rows:
            macs_per_px = row.gflop * 1e9 / 2 / (h * w) / 1e6
            typer.echo(
                f"{row.name:<12} {f'{h}x{w}':>9} {row.gflop:8.2f} {macs_per_px:8.3f} {row.seconds_fp32 * 1e3:9.1f} "
                f"{row.seconds_cl * 1e3:8.1f} {row.gflops_cl:10.0f} {100 * row.gflops_cl / peak:6.0f} "
                f"{row.seconds_bf16 * 1e3:8.1f} {row.bf16_max_abs_diff:12.2e}"
            )
            seconds += min(row.seconds_cl, row.seconds_bf16)
        projected = seconds * MEGAPIXELS_12_LR / (h * w)
        typer.echo(f"{name}: CMOS + SR {seconds * 1e3:.0f} ms -> about {projected:.1f} s for a 12 MP x4 output")
        if halo and name != "paper":
            typer.echo(f"halo probe {name}: {measure_halos(name)}")


def _peak_memory(spec_name: str, tile: int) -> None:
    """Peak RSS for two photo sizes with the same tiles: the larger may add its output, not more."""
    from cmosx.engine.bench import peak_rss_subprocess

    cmos_tile = 480
    rows = []
    for width, height in ((1000, 750), (2000, 1500)):
        r = peak_rss_subprocess(spec_name, height, width, tile, cmos_tile)
        rows.append(r)
        typer.echo(
            f"{spec_name} {width}x{height}: peak RSS {r['peak_rss_mb']:.0f} MiB (before run {r['rss_before_mb']:.0f}), "
            f"output buffers {r['output_mb']:.0f} MiB, {r['seconds']:.1f} s  [tile {tile}, CMOS tile {cmos_tile}]"
        )
    small, large = rows
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    verdict = "within" if growth <= large["output_mb"] else "OVER"
    typer.echo(f"growth {growth:.0f} MiB vs larger output buffers {large['output_mb']:.0f} MiB: {verdict} the bound")


def _end_to_end(
    model_ref: str | None, device: str, precision: str, repeats: int, size: tuple[int, int] = (750, 1000)
) -> None:
    """A 12 MP output through the path of `cmosx upscale` (read, upscale, write the JPEG with its metadata)
    against the model's two networks alone on the whole photo, timed in alternation."""
    import tempfile
    from pathlib import Path

    import torch

    from cmosx.cli._engine import EngineChoice, load_upscaler, model_label
    from cmosx.cli._photos import upscale_photo
    from cmosx.engine.bench import interleaved_best, synthetic_photo
    from cmosx.io import read_image, write_image
    from cmosx.io.photo import Photo
    from cmosx.models.cmos import conditions

    height, width = size
    choice = EngineChoice(model=model_ref, device=device, precision=precision, tile="auto", overlap=16)
    upscaler, model = load_upscaler(choice)
    with tempfile.TemporaryDirectory(prefix="cmosx-bench-") as folder:
        source, target = Path(folder) / "photo.jpg", Path(folder) / "photo_x4.jpg"
        write_image(Photo(synthetic_photo(height, width), None, 8, "JPEG"), source)
        lr = read_image(source).rgb()[None]

        def pipeline():
            photo = read_image(source)
            write_image(upscale_photo(photo, lambda rgb: upscaler.upscale(rgb).image, 4), target)

        def networks():
            with torch.inference_mode():
                maps = upscaler._run_cmos(lr, upscaler.precision)
                blur, semantic = conditions(maps[:, :1], maps[:, 1:], upscaler.sigma_max)
                upscaler._run_sr(lr, blur, semantic, upscaler.precision)

        t_pipe, t_nets = interleaved_best([pipeline, networks], upscaler.device, rounds=repeats)
    name = str(upscaler.precision).replace("torch.", "")
    typer.echo(
        f"{model_label(model)} on {upscaler.device} ({name}, {torch.get_num_threads()} threads): "
        f"{width}x{height} JPEG -> {4 * width}x{4 * height} JPEG end to end {t_pipe:.1f} s; "
        f"its two networks on the whole photo {t_nets:.1f} s; ratio {t_pipe / t_nets:.2f}"
    )
