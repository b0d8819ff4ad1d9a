from __future__ import annotations

import math

from defectkit.cli.evaluate import format_metric


def test_undefined_metrics_read_the_same_whether_null_or_nan() -> None:
    # evaluate holds NaN, the model card's JSON holds null: a user must see one word for both.
    assert format_metric(None) == format_metric(math.nan) == "n/a"


def test_numbers_and_tables_are_formatted_for_a_row() -> None:
    assert format_metric(0.98765) == "0.9877"
    assert format_metric(0.98765, digits=3) == "0.988"
    assert format_metric(7) == "7"
    assert format_metric({"crazing": 0.4}) == "(in metrics.json)"
