"""``make demo``: the main job on generated data, end to end, in about a minute on a laptop CPU.

For now (foundation): generate a DAGM-style set and a Severstal-like multi-label set with the
``defectkit data synth`` command, check both with ``defectkit data check``, and draw a contact sheet
of every surface with its defects outlined. Later issues extend this with training, evaluation and
inspection.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console

from defectkit.cli.main import app
from defectkit.data.formats import read_dataset
from defectkit.evaluation.contact_sheet import save_contact_sheet

console = Console(highlight=False)


def _run(args: list[str]) -> int:
    """Run a ``defectkit`` command as a user would and return its exit status."""
    console.rule(f"[bold]defectkit {' '.join(args)}")
    # Without standalone mode, Click returns a command's exit code instead of raising SystemExit.
    status = app(args, standalone_mode=False)
    return status if isinstance(status, int) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where to write (replaced)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--per-surface", type=int, default=40)
    options = parser.parse_args(argv)
    started = time.perf_counter()
    if options.out.exists():
        shutil.rmtree(options.out)
    dagm, multi = options.out / "synthetic-dagm", options.out / "synthetic-multiclass"
    common = ["--size", str(options.size), "--seed", "0"]
    steps = [
        ["data", "synth", str(dagm), "--surfaces", "10", "--per-surface", str(options.per_surface), *common],
        ["data", "check", str(dagm), "--max-problems", "20"],
        ["data", "synth", str(multi), "--surfaces", "4", "--per-surface", "30", "--mode", "multiclass",
         "--layout", "manifest", *common],
        ["data", "check", str(multi), "--max-problems", "20"],
    ]  # fmt: skip
    for step in steps:
        status = _run(step)
        if status != 0:
            console.print(f"[red]demo step failed with exit status {status}: defectkit {' '.join(step)}")
            return status

    dataset = read_dataset(dagm)
    picks = []
    for surface in dataset.info.surface_names:
        of_surface = [s for s in dataset.samples if s.surface == surface]
        picks += [s for s in of_surface if s.label == 0][:1] + [s for s in of_surface if s.label == 1][:1]
    captions = [f"{s.surface} {'defect' if s.label else 'good'}" for s in picks]
    sheet = save_contact_sheet(picks, options.out / "surfaces.png", captions, columns=10, tile=160)
    multi_set = read_dataset(multi)
    multi_picks = [s for s in multi_set.samples if s.classes and len(s.classes) > 1][:10]
    multi_captions = ["+".join(multi_set.info.class_name(c) for c in s.classes or []) for s in multi_picks]
    save_contact_sheet(multi_picks, options.out / "multiclass.png", multi_captions, columns=5, tile=160)
    console.rule("[bold]done")
    console.print(f"contact sheets: {sheet}, {options.out / 'multiclass.png'} (defects tinted)")
    console.print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
