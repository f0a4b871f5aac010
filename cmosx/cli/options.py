"""Options shared by several commands: each defined once, with one help text, used by every command.

A command takes one by annotating its parameter (``device: DeviceOpt = "auto"``); the default stays at the
command, since it differs between commands (``--threads``: all cores for ``eval``, 1 for ``dataset bench``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

# The photo commands' inputs and outputs (``upscale``, ``blurmap``).
InputsArg = Annotated[
    list[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False, metavar="INPUT")
]
OutputDirOpt = Annotated[
    Optional[Path],
    typer.Option("-o", "--output-dir", metavar="DIR", help="Folder for the outputs (created if missing)."),
]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
SkipExistingOpt = Annotated[bool, typer.Option("--skip-existing", help="Skip inputs whose outputs exist.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="List what would be written; process nothing.")]
MaxMegapixelsOpt = Annotated[
    float,
    typer.Option(
        "--max-megapixels", metavar="MP", help="Refuse inputs above this many megapixels (checked before decoding)."
    ),
]

# The model and how it runs.
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", metavar="MODEL", help="Bundled model name, local path, or hf://owner/repo[@rev][/file]."),
]
SpecOpt = Annotated[Optional[str], typer.Option("--spec", metavar="SPEC", help="Model size: tiny, lite or paper.")]
SpecsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--spec", metavar="SPEC", help="Model size: tiny, lite or paper (repeat for several)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps.")]
DevicesOpt = Annotated[
    str,
    typer.Option("--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N, mps, or all (each one available)."),
]
PrecisionOpt = Annotated[str, typer.Option("--precision", metavar="NAME", help="auto, fp32, bf16 or fp16.")]
PrecisionsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--precision", metavar="NAME", help="fp32, bf16 or fp16 (repeat for several)."),
]
TileOpt = Annotated[
    str, typer.Option("--tile", metavar="N", help="Tile size in input pixels, or 'auto' (from free memory).")
]
OverlapOpt = Annotated[
    int, typer.Option("--overlap", metavar="N", help="Overlap between tiles, input pixels (blended).")
]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", metavar="N", min=1, help="torch CPU threads.")]

# What is printed.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the results as JSON instead of text.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or progress lines; errors still show.")]
