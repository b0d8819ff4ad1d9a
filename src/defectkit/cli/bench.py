"""``defectkit bench PROTOCOL``: run a paper protocol, write its results file, re-render BENCHMARKS.md."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from defectkit.cli.errors import UsageError, fail, user_errors

console = Console(highlight=False)


def _list_protocols() -> None:
    from defectkit.bench.protocols import list_protocols

    table = Table("protocol", "what")
    for name, description in list_protocols().items():
        table.add_row(name, description)
    console.print(table)


@user_errors
def bench(
    protocol: str | None = typer.Argument(None, help="Protocol, e.g. ksdd/segdec (--list shows them)."),
    profile: str = typer.Option("cpu", "--profile", "-p", help="cpu or paper."),
    supervision: str = typer.Option(
        "full", "--supervision", "-s", help="full, weak or mixed:N (ksdd/segdec; others refuse all but full)."
    ),
    variant: list[str] = typer.Option(
        [], "--variant", "-V", help="Protocol option KEY=VALUE, repeatable (--list names each protocol's)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Config override KEY=VALUE for every cell, repeatable (recorded in the command)."
    ),
    results: Path = typer.Option(Path("benchmarks/results"), help="Where results files go."),
    work: Path = typer.Option(
        Path("runs/bench"),
        help="Trained models and scratch files (not committed); a --set experiment gets a folder of its own.",
    ),
    cells: Path = typer.Option(
        Path("benchmarks/cells"), help="Finished cells (folds, repeats): committed, so grids span sessions."
    ),
    cells_only: bool = typer.Option(
        False,
        "--cells-only",
        help="Rewrite the results from the finished cells in CELLS only: a missing cell is an error, "
        "nothing is trained (a protocol's shared inputs, such as generated images or dagm-mix/sbad's "
        "frozen features, are still made when absent).",
    ),
    list_: bool = typer.Option(False, "--list", help="List the protocols and exit."),
    render_only: bool = typer.Option(False, "--render", help="Only regenerate BENCHMARKS.md from results."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run PROTOCOL: a paper's protocol, written to its results file and BENCHMARKS.md.

    Finished cells are kept in CELLS and skipped when run again, so a long grid can be stopped and
    resumed (commit CELLS to resume on another checkout); the results file is written when every
    cell is done."""
    from defectkit.bench.render import render_benchmarks

    if list_:
        _list_protocols()
        return
    if render_only and cells_only:
        raise UsageError("--render rewrites BENCHMARKS.md alone; --cells-only needs a protocol to summarise")
    if render_only and (protocol is not None or variant or overrides):
        raise UsageError(
            "--render rewrites BENCHMARKS.md from the results alone: it takes no protocol, -V or --set"
        )
    if render_only and not results.is_dir():
        raise UsageError(f"{results}: no results folder to render")
    if not render_only:
        from defectkit.bench.protocols import BenchOptionError, BenchRequest, run_protocol
        from defectkit.bench.results import CellMissingError, CellUnreadableError
        from defectkit.config import ConfigError

        if protocol is None:
            raise UsageError("name a protocol (defectkit bench --list shows them)")
        for folder in (results, cells, work):
            if folder.exists() and not folder.is_dir():  # fails now, not after the grid
                raise fail(f"{folder}: is a file, not a folder")
        # What reruns the row: this command (from its first option, which may come before the
        # protocol), less --cells-only, which only re-summarises its cells.
        argv = sys.argv
        before = argv[: argv.index(protocol)] if protocol in argv else []
        tail = argv[before.index("bench") + 1 :] if "bench" in before else [protocol]
        command = "defectkit bench " + shlex.join(a for a in tail if a != "--cells-only")
        options = {}
        for item in variant:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"--variant {item!r}: expected KEY=VALUE, e.g. positives=10")
            options[key.strip()] = value.strip()
        request = BenchRequest(
            profile, supervision, command, results, work, not quiet, options, list(overrides), cells,
            cells_only=cells_only,
        )  # fmt: skip
        try:
            path = run_protocol(protocol, request)
        except (CellMissingError, CellUnreadableError) as error:
            raise fail(str(error)) from None
        except (BenchOptionError, ConfigError) as error:
            raise UsageError(str(error)) from None
        console.print(escape(f"wrote {path}"))
    # Only the project's own results feed BENCHMARKS.md; other folders get their own page.
    default = results.resolve() == Path("benchmarks/results").resolve()
    page = render_benchmarks(results, Path("BENCHMARKS.md") if default else results / "BENCHMARKS.md")
    console.print(escape(f"{page} regenerated"))
