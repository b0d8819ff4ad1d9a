"""The issues' acceptance targets: each verdict follows the profile's own row, never another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from defectkit.bench.render import render_markdown
from defectkit.bench.results import read_results
from defectkit.bench.targets import TARGETS, Row, Target, check_targets

REPO = Path(__file__).resolve().parents[2]


def _record(protocol: str, variant: dict[str, Any], profile: str = "cpu", **metrics: Any) -> dict[str, Any]:
    return {"protocol": protocol, "variant": variant, "profile": profile, "metrics": metrics}


def test_each_verdict_reads_the_named_row_and_its_bound() -> None:
    row = Row("p/x", {"k": 1})
    results = [
        _record("p/x", {"k": 1}, ap=0.97, fp=5, accuracy={"mean": 0.9, "std": 0.01}),
        # The same protocol under other settings, or at the paper profile, never counts.
        _record("p/x", {"k": 1, "set": "trainer.epochs=40"}, ap=0.999),
        _record("p/x", {"k": 1}, profile="paper", ap=0.999),
        _record("p/base", {"k": 1}, accuracy={"mean": 0.95, "std": 0.01}),
    ]
    targets = [
        Target(1, row, "ap", 0.98),
        Target(1, row, "ap", 0.97),
        Target(1, row, "fp", 5, at_most=True),
        Target(1, row, "fp", 5, at_most=True, strict=True),
        Target(1, row, "accuracy", 0.9),
        Target(1, row, "accuracy", baseline=Row("p/base", {"k": 1})),
        Target(1, row, "missing", 0.5),
        Target(1, Row("p/x", {"k": 2}), "ap", 0.5),
        Target(1, row, "ap", baseline=Row("p/none", {})),
    ]
    checks = check_targets(results, targets)
    assert [check.met for check in checks] == [False, True, True, False, True, False, None, None, None]
    assert checks[0].ours == 0.97 and checks[2].ours == 5 and isinstance(checks[2].ours, int)
    assert (checks[5].ours, checks[5].theirs) == (0.9, 0.95)


def test_clearly_above_needs_a_gap_beyond_the_spread_of_repeats() -> None:
    row, near, far = Row("p/x", {}), Row("p/near", {}), Row("p/far", {})
    results = [
        _record("p/x", {}, accuracy=0.970, accuracy_std=0.009),
        _record("p/near", {}, accuracy=0.965, accuracy_std=0.004),
        _record("p/far", {}, accuracy=0.950, accuracy_std=0.004),
    ]
    targets = [
        Target(1, row, "accuracy", baseline=near),
        Target(1, row, "accuracy", baseline=near, clearly=True),
        Target(1, row, "accuracy", baseline=far, clearly=True),
    ]
    assert [check.met for check in check_targets(results, targets)] == [True, False, True]
    text = render_markdown(results, targets)
    assert "| accuracy | > p/near (default) + the larger std | 0.970 | 0.965 | **not met** |" in text


def test_targets_render_first_with_their_verdicts() -> None:
    results = [_record("p/x", {"k": 1}, ap=0.97), _record("p/y", {}, ap=0.99)]
    targets = [
        Target(2, Row("p/x", {"k": 1}), "ap", 0.98, text="all positives"),
        Target(2, Row("p/y", {}), "ap", 0.98),
        Target(2, Row("p/z", {}), "ap", 0.98),
    ]
    text = render_markdown(results, targets)
    assert text.index("## Targets") < text.index("## p/x")
    rows = [line for line in text.splitlines() if line.startswith("| 2 |")]
    assert rows == [
        "| 2 | p/x (k=1) | ap | ≥ 0.980 | 0.970 |  | **not met** (all positives) |",
        "| 2 | p/y (default) | ap | ≥ 0.980 | 0.990 |  | met |",
        "| 2 | p/z (default) | ap | ≥ 0.980 | – |  | no row |",
    ]
    assert "## Targets" not in render_markdown([], targets)


def test_every_target_names_a_committed_row() -> None:
    """A typo in a target's variant would read "no row" for ever: each names a results file."""
    results = read_results(REPO / "benchmarks" / "results")
    missing = [
        (target.issue, row)
        for target in TARGETS
        for row in (target.row, target.baseline)
        if row is not None and row.find(results) is None
    ]
    assert missing == []
