"""Input normalisation shared by the metric modules.

Every public metric accepts numpy arrays, torch tensors or plain sequences and
returns plain Python numbers, so results can go straight into a results file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

ArrayLike: TypeAlias = "np.ndarray | torch.Tensor | Sequence[Any]"

NAN = float("nan")


def to_numpy(x: ArrayLike) -> np.ndarray:
    """Return `x` as a numpy array (torch tensors are detached and moved to CPU)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        # numpy has no bfloat16 / float16 arithmetic worth trusting for metrics.
        if t.is_floating_point() and t.dtype != torch.float64:
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def binary_labels_scores(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate image-level inputs: 1-D, same length, labels in {0, 1}, finite scores.

    Returns labels as int64 (1 = defective) and scores as float64.
    """
    y = to_numpy(labels).reshape(-1)
    s = to_numpy(scores).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()
        raise ValueError(f"labels must be 0 (good) or 1 (defective); got values {bad}")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return y.astype(np.int64), s


def py_float(x: float | np.floating[Any]) -> float:
    """Plain Python float (numpy scalars do not pass strict JSON encoders everywhere)."""
    return float(x)


def nanmean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (not a warning) when there are none."""
    a = np.asarray(values, dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else NAN


def is_nan(x: float) -> bool:
    return isinstance(x, float) and math.isnan(x)
