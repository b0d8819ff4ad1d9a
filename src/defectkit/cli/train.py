"""``defectkit train``: one config in, one saved-model directory out."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from defectkit.cli.errors import EXIT_INTERRUPTED, UsageError, message_of, stderr, user_errors
from defectkit.cli.evaluate import format_metric
from defectkit.config import ConfigError, load_config

console = Console(highlight=False)


@user_errors
def train(
    config: Path = typer.Argument(..., help="Training config (configs/<method>/<dataset>.yaml)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory; the model lands in OUT/model."),
    profile: str | None = typer.Option(None, "--profile", "-p", help="Config profile, e.g. cpu or paper."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value: a.b=c (repeatable)."),
    devices: str | None = typer.Option(
        None, help="Devices per node: a number (-1: all), a list of indices such as 0,1, or auto."
    ),
    strategy: str | None = typer.Option(None, help="Lightning strategy, e.g. ddp (gloo on CPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a method; the decision threshold is chosen on the validation split and saved with it."""
    from defectkit.registry import get_method
    from defectkit.training.engine import train as run

    try:
        run_config = load_config(config, profile, overrides)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    try:
        get_method(run_config.method).check_config(run_config)
    except (KeyError, ValueError) as error:
        raise UsageError(f"{config}: {message_of(error)}") from None
    chosen_devices = _devices(devices)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: is a file; --out takes a folder (the model lands in OUT/model)")
    kept = (out / "model").is_dir()
    try:
        model_dir = run(run_config, out, devices=chosen_devices, strategy=strategy, progress=not quiet)
    except ConfigError as error:  # found once the data is known (a model option of the wrong type)
        raise UsageError(f"{config}: {error}") from None
    except KeyboardInterrupt:
        # The model is saved only at the end, in one step: an interrupted run leaves the old one.
        before = f"{out / 'model'} still holds the earlier run's model" if kept else "no model was saved"
        stderr.print(escape(f"interrupted: {before}"), soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if model_dir is None:
        return  # a non-zero DDP rank: rank 0 reports
    from defectkit.inference.saved_model import read_card

    card = read_card(model_dir)
    metrics = card.validation_metrics
    if "accuracy" in metrics and "ap" not in metrics:  # a defect-type classifier
        console.print(
            escape(
                f"saved {model_dir}: {len(card.class_names)} classes, validation accuracy "
                f"{format_metric(metrics['accuracy'])} on {metrics.get('n_images')} images; unknown below "
                f"similarity {1.0 - (card.thresholds.unknown or 1.0):.4f}"
            )
        )
        return
    console.print(
        escape(
            f"saved {model_dir}: threshold {card.thresholds.decision:.4f} ({card.thresholds.rule}), "
            f"validation AP {format_metric(metrics.get('ap'))}, "
            f"FP {metrics.get('fp')}, FN {metrics.get('fn')} on {metrics.get('n_images')} images"
        )
    )


def _devices(devices: str | None) -> int | str | None:
    """``--devices`` as Lightning takes it: a positive count, ``-1`` or ``auto`` (all), or a list of
    device indices (``0,1``; ``1,`` is the one device with index 1)."""
    if devices is None or devices == "auto":
        return devices
    if devices == "-1" or (devices.isdigit() and int(devices) >= 1):
        return int(devices)
    indices = [part.strip() for part in devices.split(",")]
    if "," in devices and any(indices) and all(part.isdigit() for part in indices if part):
        return devices
    raise UsageError(
        f"--devices {devices!r}: a number of devices (1 or more, -1 for all), a list such as 0,1, or auto"
    )
