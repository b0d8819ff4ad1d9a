"""Paper protocols -> results files (``benchmarks/results/*.json``) -> ``BENCHMARKS.md``.

:mod:`defectkit.bench.results` writes and reads the results files (DESIGN.md, "Results file") and
caches finished cells of multi-fold grids; :mod:`defectkit.bench.render` renders BENCHMARKS.md
from them. Protocol runners build on :func:`defectkit.evaluation.evaluate.score_dataset`.
"""

from defectkit.bench.render import render_benchmarks, render_markdown
from defectkit.bench.results import (
    SCHEMA,
    CellCache,
    machine_info,
    read_results,
    results_path,
    write_results,
)

__all__ = [
    "SCHEMA",
    "CellCache",
    "machine_info",
    "read_results",
    "render_benchmarks",
    "render_markdown",
    "results_path",
    "write_results",
]
