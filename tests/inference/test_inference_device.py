"""Scoring follows the accelerator the trainer was allowed (a GPU when present, else the CPU), in
full float32 on a GPU."""

from __future__ import annotations

import pytest
import torch

from defectkit.inference.inspector import full_float32, inference_device


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


def test_full_float32_turns_tf32_off_on_cuda_only_and_restores_it() -> None:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with full_float32(torch.device("cpu")):
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with full_float32(torch.device("cuda")):  # only flags: no GPU needed
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
