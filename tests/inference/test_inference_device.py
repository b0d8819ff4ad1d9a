"""Scoring follows the accelerator the trainer was allowed: a GPU when present, else the CPU."""

from __future__ import annotations

import pytest
import torch

from defectkit.inference.inspector import inference_device


@pytest.mark.parametrize(
    ("accelerator", "gpu_present", "expected"),
    [
        ("auto", True, "cuda"),
        ("gpu", True, "cuda"),
        ("cpu", True, "cpu"),
        ("auto", False, "cpu"),
        ("gpu", False, "cpu"),
    ],
)
def test_scoring_device(
    accelerator: str, gpu_present: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu_present)
    assert inference_device(accelerator) == expected
