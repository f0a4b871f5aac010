"""The CLI skeleton: help, version, lazy imports, error mapping and packaging layout."""

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import typer
from typer.testing import CliRunner

from cmosx import __version__
from cmosx.cli._common import report_errors
from cmosx.cli.main import app
from cmosx.errors import CmosxError, UsageError

ROOT = Path(__file__).resolve().parents[1]
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


def _app_raising(error: Exception) -> typer.Typer:
    test_app = typer.Typer()

    @test_app.command()
    @report_errors
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
