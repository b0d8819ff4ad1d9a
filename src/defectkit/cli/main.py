"""The ``defectkit`` command: one Typer app, one module per command group."""

from __future__ import annotations

import signal
from types import FrameType

import typer

from defectkit import __version__
from defectkit.cli import bench, data, enroll, evaluate, export, line, methods, predict, serve, train

app = typer.Typer(
    name="defectkit",
    help="Visual surface-defect inspection: datasets, training, evaluation and deployment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data")
app.command("methods")(methods.methods)
app.command("train")(train.train)
app.command("bench")(bench.bench)
app.command("eval")(evaluate.evaluate)
app.command("predict")(predict.predict)
app.command("export")(export.export)
app.command("enroll")(enroll.enroll)
app.command("serve")(serve.serve)
app.add_typer(serve.reviews_app, name="reviews")
app.add_typer(line.app, name="line")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"defectkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Visual surface-defect inspection."""


def interrupt_on_sigterm() -> None:
    """Make SIGTERM (a batch scheduler's stop, ``kill``) end a command as Ctrl-C does, so that its
    ``finally`` blocks still run: predict's summary.csv, a failed save's cleanup."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def main() -> None:
    interrupt_on_sigterm()
    app()


if __name__ == "__main__":
    main()
