"""``cmosx weights``: list and verify the bundled model weights."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cmosx.cli._common import report_errors
from cmosx.errors import CmosxError, UsageError

group = typer.Typer(help="List and verify the bundled model weights.", no_args_is_help=True)

NO_MODEL = "No bundled model is installed yet (weights/manifest.json lists none)."


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="weights")


def _figures(metrics: dict) -> str:
    if not metrics:
        return "none recorded"
    parts = []
    for key, value in metrics.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


@group.command(name="list")
@report_errors
def list_command() -> None:
    """Show each bundled model: size, classes, training data and measured figures from its model card."""
    from cmosx.models.hub import bundled_models

    models = bundled_models()
    if not models:
        typer.echo(NO_MODEL)
        return
    for model in models:
        card = model.card()
        default = " (default)" if model.is_default else ""
        data = card.recipe.get("data") or card.recipe.get("dataset") or "not recorded"
        typer.echo(f"{model.name}{default}")
        typer.echo(f"  file:     {model.weights_path.name} ({model.size / 1e6:.1f} MB, sha256 {model.sha256[:16]}...)")
        typer.echo(f"  network:  spec {card.spec.name}, x{card.scale}, blur sigma 0..{card.sigma_max:g} HR px")
        typer.echo(f"  classes:  {card.num_classes} ({', '.join(card.class_names)})")
        typer.echo(f"  trained:  {data}")
        typer.echo(f"  measured: {_figures(card.metrics)}")
        if card.description:
            typer.echo(f"  about:    {card.description}")


@group.command(name="verify")
@report_errors
def verify_command(
    name: Annotated[Optional[str], typer.Argument(help="Verify only this bundled model.")] = None,
) -> None:
    """Check every bundled weights file against the sha256 in the manifest (exit 1 on a mismatch)."""
    from cmosx.models.hub import bundled_models

    models = bundled_models()
    if name is not None:
        models = [m for m in models if m.name == name]
        if not models:
            raise UsageError(f"no bundled model named {name!r}; see 'cmosx weights list'")
    if not models:
        typer.echo(NO_MODEL)
        return
    failed = 0
    for model in models:
        try:
            digest = model.verify()
        except CmosxError as error:
            typer.echo(f"Error: {error}", err=True)
            failed += 1
        else:
            typer.echo(f"OK  {model.name}  sha256 {digest}")
    if failed:
        raise typer.Exit(1)
