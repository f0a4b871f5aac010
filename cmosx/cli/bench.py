"""``cmosx bench``: measure this machine, one sub-command per measurement.

``pipeline`` (the default), ``networks``, ``memory``, ``end-to-end``, and ``clear-cache`` (forget the
measured ``--precision auto`` choices). The flags of the single command these replaced still work:
:func:`route_legacy`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from cmosx.cli._common import parse_size, set_threads
from cmosx.cli.options import (
    DeviceOpt,
    DevicesOpt,
    ModelOpt,
    PrecisionOpt,
    PrecisionsOpt,
    SpecOpt,
    SpecsOpt,
    ThreadsOpt,
)
from cmosx.errors import UsageError

DEFAULT_COMMAND = "pipeline"

# The flags that chose a mode of the single `cmosx bench` command, in the order it tested them, and the
# sub-command that does that job now.
LEGACY_MODES = {
    "--clear-precision-cache": "clear-cache",
    "--end-to-end": "end-to-end",
    "--peak-memory": "memory",
    "--networks": "networks",
}


def route_legacy(args: list[str], commands: dict) -> tuple[list[str], str | None]:
    """The arguments of ``cmosx bench`` with their sub-command in front, and a note when old flags were used.

    No sub-command: ``pipeline``. A mode flag of the old single command (``--networks``, ``--peak-memory``,
    ``--end-to-end``, ``--clear-precision-cache``) becomes its sub-command; ``--json FILE`` becomes
    ``--json-file FILE``. ``--help`` and a named sub-command pass as they are.
    """
    if args and (args[0] in commands or args[0] == "--help" or not args[0].startswith("-")):
        return args, None
    modes = [flag for flag in LEGACY_MODES if flag in args]
    name = LEGACY_MODES[modes[0]] if modes else DEFAULT_COMMAND
    rest = [arg for arg in args if arg not in LEGACY_MODES]
    if name == DEFAULT_COMMAND and "--json" in rest:
        rest = ["--json-file" if arg == "--json" else arg for arg in rest]
    old = [arg for arg in args if arg in LEGACY_MODES or arg == "--json"]
    note = None
    if old:
        note = f"note: 'cmosx bench {' '.join(old)}' is now 'cmosx bench {name}'"
        if name == DEFAULT_COMMAND and "--json" in old:
            note += " --json-file FILE"
    return [name, *rest], note


class BenchGroup(TyperGroup):
    """``cmosx bench``: without a sub-command it runs ``pipeline``; old flags are routed (:func:`route_legacy`)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        args, note = route_legacy(args, self.commands)
        if note and not ctx.resilient_parsing:
            typer.echo(note, err=True)
        return super().parse_args(ctx, args)


group = typer.Typer(
    cls=BenchGroup,
    help="Measure speed, FLOP rate and memory on this machine.\n\n"
    "Without a command, 'cmosx bench [OPTIONS]' runs 'cmosx bench pipeline [OPTIONS]'.",
    short_help="Measure speed, FLOP rate and memory on this machine.",
)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="bench")


# Options several bench commands share.
SizeOpt = Annotated[str, typer.Option("--size", metavar="HxW", help="LR input size for tiny and lite.")]
PaperSizeOpt = Annotated[
    str, typer.Option("--paper-size", metavar="HxW", help="LR input size for the (slow) paper spec.")
]
RepeatsOpt = Annotated[int, typer.Option("--repeats", metavar="N", min=1, help="Timed rounds (the best is kept).")]
SrTileOpt = Annotated[int, typer.Option("--tile", metavar="N", help="SR tile size in LR pixels.")]


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


@group.command(name="pipeline", short_help="Speed, FLOP rate and memory of the tiled pipeline.")
def pipeline_command(
    spec: SpecsOpt = None,
    model: ModelOpt = None,
    device: DevicesOpt = "all",
    precision: PrecisionsOpt = None,
    layout: Annotated[
        str, typer.Option("--layout", metavar="NAME", help="Memory format: cl (channels-last), nchw, or both.")
    ] = "cl",
    size: SizeOpt = "240x320",
    paper_size: PaperSizeOpt = "120x160",
    tile: SrTileOpt = 128,
    tile_batch: Annotated[
        str, typer.Option("--tile-batch", metavar="N", help="SR tiles per device call, or auto.")
    ] = "auto",
    repeats: RepeatsOpt = 2,
    threads: ThreadsOpt = None,
    json_file: Annotated[
        Optional[Path], typer.Option("--json-file", metavar="FILE", help="Also write the results as JSON here.")
    ] = None,
) -> None:
    """Time each (model, device, precision, layout) on a synthetic photo; print one row per case.

    Models: --spec (seeded random weights; default tiny, lite and paper), or --model. Precisions: default
    fp32 and bf16.

    Columns: output megapixels/s of the tiled pipeline; tiled/untiled time ratio; GFLOP/s achieved by
    the SR network on one tile and by the whole pipeline (FLOPs counted with torch's FlopCounterMode);
    the device's conv peak (best of representative convolutions, never below a rate of the run);
    SR/peak; peak memory (CUDA allocated, or the process's peak RSS on the CPU). For each spec and
    device the PSNR between the first precision's output and each other's is printed below the table.
    """
    from cmosx.engine.bench import bench_case, compare_outputs, raise_peaks, random_model
    from cmosx.engine.device import parse_precision, resolve_device
    from cmosx.engine.memory import retain_freed_memory

    set_threads(threads)
    retain_freed_memory()  # measure the CPU as `cmosx upscale` runs it (freed memory reused, not page-faulted)
    specs = spec or ["tiny", "lite", "paper"]
    precisions = precision or ["fp32", "bf16"]
    layouts = {"cl": [True], "nchw": [False], "both": [True, False]}.get(layout)
    if layouts is None:
        raise UsageError(f"--layout must be cl, nchw or both, got {layout!r}")
    if tile < 8:
        raise UsageError(f"--tile must be at least 8, got {tile}")
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
    if json_file is not None:
        from cmosx.io.atomic import atomic_write_bytes

        payload = {"results": [r.as_dict() for r in results], "comparisons": comparisons}
        atomic_write_bytes(json_file, json.dumps(payload, indent=2).encode())


@group.command(name="networks", short_help="FLOPs and times of each network on the CPU.")
def networks_command(
    spec: SpecsOpt = None,
    size: SizeOpt = "240x320",
    paper_size: PaperSizeOpt = "120x160",
    repeats: RepeatsOpt = 2,
    threads: ThreadsOpt = None,
    halo: Annotated[bool, typer.Option("--halo", help="Also probe each network's receptive field.")] = False,
) -> None:
    """Each network's FLOPs, NCHW / channels-last / bf16 times and GFLOP/s on the CPU (seeded random
    weights; default specs tiny, lite and paper), against a reference convolution and the fp32 conv peak,
    and the projected time of a 12 MP x4 output."""
    import torch

    from cmosx.engine.bench import PEAK_SHAPES, conv_peak_gflops, conv_rate
    from cmosx.engine.memory import retain_freed_memory
    from cmosx.models.bench import MEGAPIXELS_12_LR, benchmark_spec, measure_halos
    from cmosx.models.specs import SPECS

    set_threads(threads)
    retain_freed_memory()
    specs = spec or ["tiny", "lite", "paper"]
    unknown = [name for name in specs if name not in SPECS]
    if unknown:
        raise UsageError(f"unknown spec(s) {', '.join(unknown)} (use {', '.join(SPECS)})")
    height, width = parse_size(size, "--size")
    paper_height_width = parse_size(paper_size, "--paper-size")
    typer.echo(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, fp32 unless noted")
    cpu = torch.device("cpu")
    ref_s, ref_rate = conv_rate(cpu, torch.float32, (64, 64, 3), (height, width))
    typer.echo(
        f"reference at {height}x{width}: channels_last 3x3 conv 64->64 {ref_s * 1e3:.1f} ms, {ref_rate:.0f} GFLOP/s"
    )
    peak = conv_peak_gflops(cpu, torch.float32)
    typer.echo(f"fp32 peak (best of {len(PEAK_SHAPES)} conv shapes): {peak:.0f} GFLOP/s")
    measured = []
    for name in specs:
        h, w = paper_height_width if name == "paper" else (height, width)
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


@group.command(name="memory", short_help="Peak memory of a small and a large photo.")
def memory_command(spec: SpecOpt = "tiny", tile: SrTileOpt = 128) -> None:
    """Peak RSS of 1000x750 and 2000x1500 photos with the same tiles (one fresh process each, CPU, seeded
    random weights): the larger photo may add its output buffers, not more."""
    from cmosx.engine.bench import peak_rss_subprocess
    from cmosx.models.specs import SPECS

    if spec not in SPECS:
        raise UsageError(f"unknown spec {spec} (use {', '.join(SPECS)})")
    cmos_tile = 480
    rows = []
    for width, height in ((1000, 750), (2000, 1500)):
        r = peak_rss_subprocess(spec, height, width, tile, cmos_tile)
        rows.append(r)
        typer.echo(
            f"{spec} {width}x{height}: peak RSS {r['peak_rss_mb']:.0f} MiB (before run {r['rss_before_mb']:.0f}), "
            f"output buffers {r['output_mb']:.0f} MiB, {r['seconds']:.1f} s  [tile {tile}, CMOS tile {cmos_tile}]"
        )
    small, large = rows
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    verdict = "within" if growth <= large["output_mb"] else "OVER"
    typer.echo(f"growth {growth:.0f} MiB vs larger output buffers {large['output_mb']:.0f} MiB: {verdict} the bound")


@group.command(name="end-to-end", short_help="A 12 MP photo through 'cmosx upscale' vs its networks.")
def end_to_end_command(
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    repeats: RepeatsOpt = 2,
    threads: ThreadsOpt = None,
) -> None:
    """A 1000x750 JPEG -> 4000x3000 JPEG through the path of 'cmosx upscale' (read, upscale, write with
    metadata) against the model's two networks alone on the whole photo, timed in alternation; prints
    both times and their ratio. Default model: the bundled one."""
    set_threads(threads)
    end_to_end(model, device, precision, repeats)


@group.command(name="clear-cache", short_help="Forget the measured precision choices and memory probes.")
def clear_cache_command() -> None:
    """Forget the measured --precision auto choices and memory probes (each is measured again on its
    next use)."""
    from cmosx.engine.probe_cache import ENV_VAR, clear

    path, count = clear()
    if path is None:
        typer.echo(f"the probe cache is off ({ENV_VAR}=off): nothing to clear")
    else:
        typer.echo(f"cleared {count} cached measurement(s) from {path}")


def end_to_end(
    model_ref: str | None, device: str, precision: str, repeats: int, size: tuple[int, int] = (750, 1000)
) -> None:
    """A 12 MP output through the path of `cmosx upscale` (read, upscale, write the JPEG with its metadata)
    against the model's two networks alone on the whole photo, timed in alternation."""
    import tempfile

    import torch

    from cmosx.cli._engine import EngineChoice, load_upscaler, model_label
    from cmosx.cli._photos import upscale_photo
    from cmosx.engine.bench import synthetic_photo
    from cmosx.io import read_image, write_image
    from cmosx.io.photo import Photo
    from cmosx.models.cmos import conditions
    from cmosx.ops.timing import device_sync, interleaved_best

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

        t_pipe, t_nets = interleaved_best([pipeline, networks], device_sync(upscaler.device), rounds=repeats)
    name = str(upscaler.precision).replace("torch.", "")
    typer.echo(
        f"{model_label(model)} on {upscaler.device} ({name}, {torch.get_num_threads()} threads): "
        f"{width}x{height} JPEG -> {4 * width}x{4 * height} JPEG end to end {t_pipe:.1f} s; "
        f"its two networks on the whole photo {t_nets:.1f} s; ratio {t_pipe / t_nets:.2f}"
    )
