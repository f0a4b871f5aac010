"""The batch machinery on its own: discovery, naming, collisions, sharding environment, progress bars."""

import json
import sys
from pathlib import Path

import pytest

from cmosx.cli import _batch
from cmosx.errors import InputImageError, UsageError


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_glob_names_are_relative_to_the_fixed_part_and_filter_like_folders(tmp_path):
    _touch(tmp_path / "a" / "one.jpg")
    _touch(tmp_path / "a" / "deep" / "two.PNG")
    _touch(tmp_path / "a" / "deep" / ".three.png")
    _touch(tmp_path / "a" / "deep" / "notes.txt")
    found = _batch.discover_inputs([str(tmp_path / "a" / "**" / "*")], recursive=True)
    assert [str(f.relative) for f in found] == ["deep/two.PNG", "one.jpg"]


def test_explicit_files_kept_even_unsupported_but_system_files_dropped(tmp_path):
    odd = _touch(tmp_path / "scan.gif")
    thumbs = _touch(tmp_path / "Thumbs.db")
    photo = _touch(tmp_path / "p.jpg")
    found = _batch.discover_inputs([str(odd), str(thumbs), str(photo), str(photo)], recursive=False)
    assert [f.path.name for f in found] == ["p.jpg", "scan.gif"]  # duplicates merged, sorted
    with pytest.raises(UsageError, match="no such file"):
        _batch.discover_inputs([str(tmp_path / "missing.jpg")], recursive=False)
    with pytest.raises(UsageError, match="no image files match"):
        _batch.discover_inputs([str(tmp_path / "*.tif")], recursive=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no input images"):
        _batch.discover_inputs([str(empty)], recursive=False)


def test_colliding_outputs_are_refused(tmp_path):
    found = _batch.discover_inputs([str(_touch(tmp_path / "x.jpg")), str(_touch(tmp_path / "x.png"))], False)
    jobs = _batch.plan_jobs(found, lambda f: [tmp_path / "out" / f"{f.relative.stem}.png"])
    assert [j.status for j in jobs] == ["pending", "failed"]
    assert "also the output of" in jobs[1].error


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (0, 1, None)),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4, 1)),
        ({"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}, (1, 2, 1)),
    ],
)
def test_shard_environment(monkeypatch, env, expected):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _batch.shard_from_environment() == expected


def test_invalid_shard_environment_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError):
        _batch.shard_from_environment()


def _jobs(tmp_path, names):
    found = _batch.discover_inputs([str(_touch(tmp_path / n)) for n in names], False)
    return _batch.plan_jobs(found, lambda f: [tmp_path / "out" / f"{f.relative.stem}.png"])


def _processor(built):
    """A test processor: copies the input bytes to the output, fails on inputs named bad*."""

    def run(job, progress):
        if progress is not None:
            for done in range(1, 4):
                progress(done, 3)
        if job.input.name.startswith("bad"):
            raise InputImageError(f"{job.input}: corrupt")
        if job.input.name.startswith("crash"):
            raise RuntimeError("boom")
        job.outputs[0].parent.mkdir(parents=True, exist_ok=True)
        job.outputs[0].write_bytes(job.input.read_bytes())
        return _batch.Outcome((1, 1), (4, 4), [])

    def make():
        built.append(1)
        return _batch.Processor(run=run, model="test")

    return make


def test_run_batch_isolates_failures_and_reports_json(tmp_path, capsys):
    jobs = _jobs(tmp_path, ["a.png", "bad.png", "crash.png", "z.png"])
    built = []
    code = _batch.run_batch(jobs, _processor(built), _batch.BatchOptions(json=True))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and built == [1]
    assert [r["status"] for r in lines[:-1]] == ["ok", "failed", "failed", "ok"]
    assert "crash.png: RuntimeError: boom" in lines[2]["error"]
    assert lines[-1]["summary"]["ok"] == 2 and lines[-1]["summary"]["exit_code"] == 1


def test_progress_bars_on_a_terminal_only(tmp_path, capsys, monkeypatch):
    jobs = _jobs(tmp_path, ["a.png", "b.png"])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert _batch.run_batch(jobs, _processor([]), _batch.BatchOptions()) == 0
    err = capsys.readouterr().err
    assert "2/2" in err and "file" in err and "tile" in err
    jobs = _jobs(tmp_path / "q", ["a.png"])
    assert _batch.run_batch(jobs, _processor([]), _batch.BatchOptions(quiet=True)) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    jobs = _jobs(tmp_path / "n", ["a.png"])
    _batch.run_batch(jobs, _processor([]), _batch.BatchOptions())
    assert "file/s" not in capsys.readouterr().err


def test_output_folder_and_earlier_outputs_are_not_taken_as_inputs(tmp_path):
    _touch(tmp_path / "a.jpg")
    _touch(tmp_path / "a_x4.jpg")  # an earlier output beside its input
    _touch(tmp_path / "trip_x4.jpg")  # a photo that only looks like one: no trip.* beside it
    _touch(tmp_path / "out" / "a.jpg")  # an earlier run's -o folder inside the input folder
    found = _batch.discover_inputs([str(tmp_path)], True, tmp_path / "out", ("_x4",))
    assert [str(f.relative) for f in found] == ["a.jpg", "trip_x4.jpg"]
    named = _batch.discover_inputs([str(tmp_path / "a_x4.jpg")], False, None, ("_x4",))
    assert [f.path.name for f in named] == ["a_x4.jpg"]  # a file named explicitly is always taken
