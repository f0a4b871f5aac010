"""Batch machinery shared by ``cmosx upscale`` and ``cmosx blurmap``.

Input discovery (files, folders, ``--recursive`` trees, globs; hidden and system files skipped), output naming,
the existing-output policy, ``--dry-run``, sharding across ``torchrun`` processes, per-file error isolation,
progress bars, and the JSON report. The work itself is a callable given by the command, so this module never
imports torch or the engine.
"""

from __future__ import annotations

import glob
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from cmosx.errors import CmosxError, UsageError
from cmosx.io.formats import is_image_path
from cmosx.launch import launch_from_environment

SYSTEM_FILES = {"thumbs.db", "desktop.ini", ".ds_store", "ehthumbs.db", "icon\r"}
_GLOB_CHARS = set("*?[")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Found:
    """An input file and the relative path its outputs are named after (mirrors folder trees)."""

    path: Path
    relative: Path


@dataclass
class Job:
    """One input and the files it will produce (``outputs[0]`` is the main one)."""

    input: Path
    outputs: list[Path]
    status: str = "pending"  # pending -> ok | failed | skipped | planned
    error: str | None = None


@dataclass
class Outcome:
    """What a processor reports back for one finished file."""

    input_size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # extra fields for the file's report record


@dataclass
class Processor:
    """The work of a command: ``run(job, progress) -> Outcome``, and the model name for the report."""

    run: Callable[[Job, Progress | None], Outcome]
    model: str | None = None


@dataclass
class BatchOptions:
    existing: str = "refuse"  # refuse | overwrite | skip
    dry_run: bool = False
    json: bool = False
    quiet: bool = False


def _is_system_or_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def discover_inputs(
    specs: Iterable[str],
    recursive: bool,
    output_dir: Path | None = None,
    output_suffixes: tuple[str, ...] = (),
) -> list[Found]:
    """Expand command-line inputs into image files, sorted, without duplicates.

    A file is taken as given (system files such as ``Thumbs.db`` excepted); a folder contributes its image files
    (all levels with ``recursive``, named relative to that folder so the tree is mirrored); a glob contributes
    its matching image files, named relative to the glob's fixed leading folder. Inside folders and globs, these
    are skipped: hidden files and folders, anything under ``output_dir``, and earlier outputs written beside
    their inputs (a stem ending in one of ``output_suffixes`` next to an image with the stem without it).
    A name that matches nothing is a :class:`UsageError`.
    """
    specs = list(specs)
    found: dict[Path, Found] = {}
    skip_root = output_dir.resolve() if output_dir is not None else None

    def keep(item: Found) -> bool:
        resolved = item.path.resolve()
        if skip_root is not None and resolved.is_relative_to(skip_root):
            return False
        return not _is_earlier_output(item.path, output_suffixes)

    for spec in specs:
        path = Path(spec)
        if path.is_file():
            if path.name.lower() not in SYSTEM_FILES:
                found.setdefault(path.resolve(), Found(path, Path(path.name)))
        elif path.is_dir():
            for item in filter(keep, _scan_folder(path, recursive)):
                found.setdefault(item.path.resolve(), item)
        elif _GLOB_CHARS & set(spec):
            matches = [Found(Path(m), _glob_relative(spec, Path(m))) for m in glob.glob(spec, recursive=recursive)]
            matches = [m for m in matches if m.path.is_file() and _wanted(m.relative) and keep(m)]
            if not matches:
                raise UsageError(f"{spec}: no image files match")
            for item in sorted(matches, key=lambda m: str(m.path)):
                found.setdefault(item.path.resolve(), item)
        else:
            raise UsageError(f"{spec}: no such file or folder")
    if not found:
        raise UsageError("no input images found (" + ", ".join(specs) + ")")
    return sorted(found.values(), key=lambda item: str(item.path))


def _is_earlier_output(path: Path, suffixes: tuple[str, ...]) -> bool:
    for suffix in suffixes:
        if path.stem.endswith(suffix) and len(path.stem) > len(suffix):
            base = path.stem[: -len(suffix)]
            if any(is_image_path(sibling) for sibling in path.parent.glob(glob.escape(base) + ".*")):
                return True
    return False


def _wanted(relative: Path) -> bool:
    return is_image_path(relative) and not any(_is_system_or_hidden(part) for part in relative.parts)


def _scan_folder(folder: Path, recursive: bool) -> list[Found]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    items = []
    for path in candidates:
        relative = path.relative_to(folder)
        if path.is_file() and _wanted(relative):
            items.append(Found(path, relative))
    return sorted(items, key=lambda item: str(item.relative))


def _glob_relative(spec: str, match: Path) -> Path:
    fixed = []
    for part in Path(spec).parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    base = Path(*fixed) if fixed else Path(".")
    try:
        return match.relative_to(base)
    except ValueError:
        return Path(match.name)


def plan_jobs(found: list[Found], name_outputs: Callable[[Found], list[Path]]) -> list[Job]:
    """Name every input's outputs; refuse outputs that equal an input or collide with another job's."""
    inputs = {item.path.resolve() for item in found}
    claimed: dict[Path, Path] = {}
    jobs = []
    for item in found:
        job = Job(item.path, name_outputs(item))
        for output in job.outputs:
            resolved = output.resolve()
            if resolved in inputs:
                job.status, job.error = "failed", f"{item.path}: output {output} would overwrite an input; refused"
            elif resolved in claimed:
                job.status = "failed"
                job.error = f"{item.path}: output {output} is also the output of {claimed[resolved]}; refused"
            else:
                claimed[resolved] = item.path
        jobs.append(job)
    return jobs


def shard_from_environment() -> tuple[int, int, int | None]:
    """(rank, world size, local rank) from ``torchrun``'s environment (:func:`cmosx.launch.launch_from_environment`);
    (0, 1, None) when not launched by it."""
    launch = launch_from_environment()
    return launch.rank, launch.world_size, launch.local_rank


def shard(jobs: list[Job], rank: int, world: int) -> list[Job]:
    """This process's share: every ``world``-th job starting at ``rank`` (jobs are sorted, so shares are stable)."""
    return jobs[rank::world]


def output_exists(job: Job) -> Path | None:
    return next((output for output in job.outputs if output.exists()), None)


class _Bars:
    """tqdm bars over files and over the tiles of the current file, on a terminal only."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        self.files = None
        self.tiles = None
        if enabled:
            from tqdm import tqdm

            self._tqdm = tqdm
            self.files = tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True)

    def tile_progress(self) -> Progress | None:
        if not self.enabled:
            return None

        def update(done: int, total: int) -> None:
            if self.tiles is None or self.tiles.total != total:
                self.close_tiles()
                self.tiles = self._tqdm(total=total, unit="tile", leave=False, position=1, file=sys.stderr)
            self.tiles.update(done - self.tiles.n)

        return update

    def close_tiles(self) -> None:
        if self.tiles is not None:
            self.tiles.close()
            self.tiles = None

    def file_done(self) -> None:
        self.close_tiles()
        if self.files is not None:
            self.files.update(1)

    def write(self, line: str, err: bool = False) -> None:
        if self.files is not None:
            self.files.write(line, file=sys.stderr if err else sys.stdout)
        else:
            typer.echo(line, err=err)

    def close(self) -> None:
        self.close_tiles()
        if self.files is not None:
            self.files.close()


def run_batch(
    jobs: list[Job],
    make_processor: Callable[[], Processor],
    options: BatchOptions,
    rank: int = 0,
    world: int = 1,
) -> int:
    """Run ``jobs`` and report them; returns the exit code (0 all done or skipped, 1 any failed).

    The processor is built (model loaded) only when the first file actually needs work, so ``--dry-run`` and an
    all-skipped ``--skip-existing`` run load nothing. A :class:`CmosxError` or any other exception while
    processing one file fails that file only; the batch goes on.
    """
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    processor: Processor | None = None
    show_bars = not options.quiet and not options.dry_run and sys.stderr.isatty()
    bars = _Bars(len(jobs), show_bars)
    try:
        for job in jobs:
            record = _run_one(job, options, processor, bars)
            if record is None:  # the job needs the processor: build it (load the model) on first use
                processor = make_processor()
                record = _run_one(job, options, processor, bars)
            records.append(record)
            _print_record(record, options, bars)
            bars.file_done()
    finally:
        bars.close()
    summary = _summary(records, processor, started, rank, world)
    if options.json:
        typer.echo(json.dumps({"summary": summary}))
    elif not options.quiet or summary["failed"]:
        typer.echo(_summary_line(summary), err=options.quiet)
    return summary["exit_code"]


def _run_one(job: Job, options: BatchOptions, processor: Processor | None, bars: _Bars) -> dict[str, Any] | None:
    record: dict[str, Any] = {
        "input": str(job.input),
        "output": str(job.outputs[0]),
        "outputs": [str(output) for output in job.outputs],
        "status": job.status,
        "error": job.error,
        "seconds": 0.0,
        "model": None,
        "input_size": None,
        "output_size": None,
        "notes": [],
    }
    if job.status == "failed":
        return record
    existing = output_exists(job)
    if existing is not None and options.existing == "skip":
        record.update(status="skipped", error=None, notes=[f"output exists: {existing}"])
        return record
    if existing is not None and options.existing == "refuse":
        message = f"{job.input}: output {existing} exists (use --overwrite or --skip-existing)"
        record.update(status="failed", error=message)
        return record
    if options.dry_run:
        record.update(status="planned")
        return record
    if processor is None:
        return None
    start = time.perf_counter()
    try:
        outcome = processor.run(job, bars.tile_progress())
    except CmosxError as error:
        record.update(status="failed", error=str(error))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # one file's unexpected failure must not stop the batch
        record.update(status="failed", error=f"{job.input}: {type(error).__name__}: {error}")
    else:
        record.update(
            status="ok",
            input_size=list(outcome.input_size) if outcome.input_size else None,
            output_size=list(outcome.output_size) if outcome.output_size else None,
            notes=outcome.notes,
            **outcome.details,
        )
    record["seconds"] = round(time.perf_counter() - start, 4)
    record["model"] = processor.model
    return record


def _print_record(record: dict[str, Any], options: BatchOptions, bars: _Bars) -> None:
    if options.json:
        bars.write(json.dumps(record))
        return
    status = record["status"]
    if status == "failed":
        bars.write(f"Error: {record['error']}", err=True)
    elif options.quiet:
        return
    elif status == "ok":
        sizes = ""
        if record["input_size"] and record["output_size"]:
            (w, h), (ow, oh) = record["input_size"], record["output_size"]
            sizes = f"{w}x{h} -> {ow}x{oh}, "
        bars.write(f"ok       {record['input']} -> {record['output']} ({sizes}{record['seconds']:.2f} s)")
        for note in record["notes"]:
            bars.write(f"         note: {note}")
    elif status == "skipped":
        bars.write(f"skipped  {record['input']} ({record['notes'][0]})")
    elif status == "planned":
        bars.write(f"would write {', '.join(record['outputs'])}  (from {record['input']})")


def _summary(records, processor: Processor | None, started: float, rank: int, world: int) -> dict[str, Any]:
    counts = {status: sum(r["status"] == status for r in records) for status in ("ok", "failed", "skipped", "planned")}
    return {
        "total": len(records),
        **counts,
        "seconds": round(time.perf_counter() - started, 4),
        "model": processor.model if processor is not None else None,
        "rank": rank,
        "world_size": world,
        "exit_code": 1 if counts["failed"] else 0,
    }


def _summary_line(summary: dict[str, Any]) -> str:
    parts = [f"{summary['ok']} done", f"{summary['failed']} failed", f"{summary['skipped']} skipped"]
    if summary["planned"]:
        parts.append(f"{summary['planned']} planned (dry run)")
    shard_text = f" [shard {summary['rank'] + 1}/{summary['world_size']}]" if summary["world_size"] > 1 else ""
    return f"{', '.join(parts)} of {summary['total']} in {summary['seconds']:.1f} s{shard_text}"
