"""``cmosx weights``: list, verify and export model weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cmosx.errors import CmosxError, UsageError

group = typer.Typer(help="List, verify and export model weights.", no_args_is_help=True)

NO_MODEL = "No bundled model is installed yet (weights/manifest.json lists none)."


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="weights")


def _figures(metrics) -> str:
    """One model card's :class:`~cmosx.models.card.Metrics` in a few words."""
    if not metrics.entries:
        return "none recorded"
    if metrics.rows:  # a `cmosx eval` report: show each row's mean over the test groups
        lines = []
        for row, mean in metrics.means().items():
            shown = ", ".join(f"{k} {v:.4g}" for k, v in mean.items() if isinstance(v, (int, float)))
            lines.append(f"{row}: {shown}")
        where = f"{metrics.dataset or '?'} groups {metrics.groups or '?'}"
        return f"({where}, mean)\n    " + "\n    ".join(lines)
    parts = []
    for key, value in metrics.entries.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


def _describe(title: str, file_line: str, card) -> None:
    """The lines of one model: its file, network, classes, training data and measured figures."""
    typer.echo(title)
    typer.echo(f"  file:     {file_line}")
    typer.echo(f"  network:  spec {card.spec.name}, x{card.scale}, blur sigma 0..{card.sigma_max:g} HR px")
    typer.echo(f"  classes:  {card.num_classes} ({', '.join(card.class_names)})")
    typer.echo(f"  trained:  {card.recipe.dataset or 'not recorded'}")
    typer.echo(f"  measured: {_figures(card.metrics)}")
    if card.companions:
        shipped = ", ".join(f"{role} ({entry.size / 1e6:.1f} MB)" for role, entry in sorted(card.companions.items()))
        typer.echo(f"  for eval: {shipped}")
    if card.description:
        typer.echo(f"  about:    {card.description}")


@group.command(name="list", short_help="Show the bundled and cached models.")
def list_command() -> None:
    """Show the bundled models and the cmosx models in the local Hugging Face cache: size, classes,
    training data and measured figures from each model card."""
    from cmosx.models.hub import bundled_models, cached_hub_models, hub_cache_dir

    models = bundled_models()
    if not models:
        typer.echo(NO_MODEL)
    for model in models:
        default = " (default)" if model.is_default else ""
        size = f"{model.size / 1e6:.1f} MB, sha256 {model.sha256[:16]}..."
        _describe(f"{model.name}{default}", f"{model.weights_path.name} ({size})", model.card())
    cached = cached_hub_models()
    if cached:
        typer.echo(f"\nIn the Hugging Face cache ({hub_cache_dir()}); pass the reference as --model:")
    for model in cached:
        refs = f" ({', '.join(model.refs)})" if model.refs else ""
        _describe(f"{model.reference}{refs}", f"{model.weights_path.name} ({model.size / 1e6:.1f} MB)", model.card())


@group.command(name="verify", short_help="Check the bundled weights' sha256.")
def verify_command(
    name: Annotated[Optional[str], typer.Argument(metavar="NAME", help="Verify only this bundled model.")] = None,
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
            companions = model.verify_companions()
        except CmosxError as error:
            typer.echo(f"Error: {error}", err=True)
            failed += 1
        else:
            typer.echo(f"OK  {model.name}  sha256 {digest}")
            for role, companion_digest in companions.items():
                typer.echo(f"OK  {model.name}:{role}  sha256 {companion_digest}")
    if failed:
        raise typer.Exit(1)


@group.command(name="export", short_help="Write a trained run as a model.")
def export_command(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A blind-stage run folder (cmosx train --stage blind).")],
    dest: Annotated[
        str,
        typer.Argument(metavar="DEST", help="A folder path, or a NAME bundled into weights/ (source checkouts only)."),
    ],
    metrics: Annotated[
        Optional[Path],
        typer.Option("--metrics", help="A `cmosx eval --json` report to store in the model card."),
    ] = None,
    eval_images: Annotated[
        int, typer.Option("--eval-images", help="Without --metrics: images per test group to evaluate (0: none).")
    ] = 20,
    description: Annotated[str, typer.Option("--description", help="One paragraph for the model card.")] = "",
    half: Annotated[
        bool, typer.Option("--half", help="Store the weights as float16 (half the file; loaded back as float32).")
    ] = False,
    default: Annotated[
        Optional[bool], typer.Option("--default/--no-default", help="Make it the default bundled model.")
    ] = None,
    upper: Annotated[
        Optional[Path],
        typer.Option("--upper", help="An sr-stage run (ground-truth maps) to ship for the eval's upper-bound row."),
    ] = None,
    baseline: Annotated[
        Optional[Path],
        typer.Option("--baseline", help="An --unconditioned run to ship for the eval's blur-unaware baseline row."),
    ] = None,
) -> None:
    """Write a trained run as safetensors + model card (and register it in weights/manifest.json)."""
    import json

    from cmosx.train.export import export_run

    figures = None
    if metrics is not None:
        try:
            figures = json.loads(metrics.read_text())
        except (OSError, ValueError) as error:
            raise UsageError(f"{metrics}: not a readable JSON report ({error})") from None
    written = export_run(
        run,
        dest,
        eval_images=eval_images,
        metrics=figures,
        description=description,
        make_default=default,
        storage_dtype="float16" if half else None,
        companions={role: run for role, run in (("upper", upper), ("baseline", baseline)) if run is not None},
    )
    typer.echo(f"exported {written.weights} (sha256 {written.sha256}) and {written.config}")
