from __future__ import annotations

from defectkit.demo import _run


def test_demo_steps_report_failure() -> None:
    assert _run(["data", "check", "/definitely/absent"]) == 1
    assert _run(["methods"]) == 0
