"""Few-shot summaries: accuracy mean and spread over repeats / reference draws.

Convention: ``acc_std`` is the *sample* standard deviation (``ddof=1``), the
"mean ± std" that few-shot papers report over episodes or draws; with a
single repeat it is 0.0 (there is no spread to estimate, and a float keeps the
results file uniform). Hand-written: a mean and a std need no library.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from defectkit.metrics._utils import ArrayLike, to_numpy

__all__ = ["fewshot_summary"]


def fewshot_summary(accuracies: ArrayLike) -> dict[str, Any]:
    """``{"acc_mean", "acc_std", "n"}`` of per-repeat accuracies (fractions or percent, unchanged)."""
    a = to_numpy(accuracies).reshape(-1).astype(np.float64)
    if a.size == 0:
        raise ValueError("no accuracies to summarise (zero repeats)")
    if not np.isfinite(a).all():
        raise ValueError("accuracies contain NaN or infinite values")
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"acc_mean": float(a.mean()), "acc_std": std, "n": int(a.size)}
