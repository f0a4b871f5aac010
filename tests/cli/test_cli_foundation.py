"""The CLI skeleton: help, version, lazy imports, error mapping and packaging layout."""

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import typer
import typer.main
from typer.testing import CliRunner

from cmosx import __version__
from cmosx.cli._common import CmosxGroup
from cmosx.cli.main import app
from cmosx.errors import CmosxError, UsageError

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_help_lists_every_command_group():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ["upscale", "blurmap", "train", "eval", "dataset", "weights", "bench"]:
        assert name in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"cmosx {__version__}"


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\n"
        "from cmosx.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.parametrize(
    "module", ["cmosx.catalog", "cmosx.launch", "cmosx.io.formats", "cmosx.io.atomic", "cmosx.cli._batch"]
)
def test_modules_documented_torch_free_do_not_import_torch(module):
    code = f"import sys, {module}\nassert 'torch' not in sys.modules, 'torch imported by {module}'\n"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def _app_raising(error: Exception) -> typer.Typer:
    test_app = typer.Typer(cls=CmosxGroup)

    @test_app.command()
    def boom() -> None:
        raise error

    @test_app.command()
    def other() -> None:
        pass

    return test_app


@pytest.mark.parametrize(("error", "code"), [(CmosxError("photo.jpg: truncated"), 1), (UsageError("bad"), 2)])
def test_errors_become_one_line_and_exit_code(error, code, monkeypatch):
    monkeypatch.delenv("CMOSX_DEBUG", raising=False)
    result = runner.invoke(_app_raising(error), ["boom"])
    assert result.exit_code == code
    assert result.stderr.strip().splitlines() == [f"Error: {error}"]


def test_debug_variable_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("CMOSX_DEBUG", "1")
    result = runner.invoke(_app_raising(CmosxError("x")), ["boom"])
    assert isinstance(result.exception, CmosxError)


def test_errors_of_nested_commands_and_interrupts_map_in_one_place(monkeypatch):
    """The root group maps errors for every level: a sub-group's command, and Ctrl-C (130)."""
    monkeypatch.delenv("CMOSX_DEBUG", raising=False)
    root = typer.Typer(cls=CmosxGroup)
    sub = typer.Typer()

    @sub.command()
    def bad() -> None:
        raise UsageError("--size: bad")

    @sub.command()
    def stop() -> None:
        raise KeyboardInterrupt

    root.add_typer(sub, name="sub")
    result = runner.invoke(root, ["sub", "bad"])
    assert result.exit_code == 2 and result.stderr.strip() == "Error: --size: bad"
    result = runner.invoke(root, ["sub", "stop"])
    assert result.exit_code == 130 and result.stderr.strip() == "Error: interrupted"


def _command_paths(command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            paths += _command_paths(sub, (*path, name))
    return paths


def test_every_help_fits_80_columns_untruncated(monkeypatch):
    """Each command's and sub-command's --help at 80 columns: no line longer, the usage line whole (it names
    the full command path), no summary cut short with '...' in a command list, every option listed."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERMINAL_WIDTH", "80")
    root = typer.main.get_command(app)
    paths = _command_paths(root)
    assert ("bench", "pipeline") in paths and ("bench", "clear-cache") in paths and ("weights", "export") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], terminal_width=80)
        assert result.exit_code == 0, (path, result.output)
        lines = result.output.splitlines()
        too_long = [line for line in lines if len(line) > 80]
        assert not too_long, (path, too_long)
        usage = " ".join(lines[: lines.index("")]).split()
        assert usage[:2] == ["Usage:", " ".join(("cmosx", *path)).split()[0]], (path, usage)
        assert " ".join(("cmosx", *path)) in " ".join(usage), (path, usage)
        assert not [line for line in lines if line.endswith("...") and not line.lstrip().startswith("Usage")], path
        command = root
        for name in path:
            command = command.commands[name]
        for param in command.params:
            for opt in param.opts if param.param_type_name == "option" else ():
                assert opt in result.output, (path, opt)


def test_usage_error_from_click_exits_2():
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    mapping = config["tool"]["setuptools"]["package-dir"]
    found = set()
    for name, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((name, *rel)) if rel else name)
    assert found == listed
