"""defectkit: visual surface-defect inspection for production lines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from defectkit.inference.inspection import Inspection
    from defectkit.inference.inspector import load_inspector
    from defectkit.inference.line import load_line

__all__ = ["Inspection", "__version__", "load_inspector", "load_line"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import defectkit` (and the CLI's start-up) does not pay for torch until needed.
    if name == "load_inspector":
        from defectkit.inference.inspector import load_inspector

        return load_inspector
    if name == "load_line":
        from defectkit.inference.line import load_line

        return load_line
    if name == "Inspection":
        from defectkit.inference.inspection import Inspection

        return Inspection
    raise AttributeError(f"module 'defectkit' has no attribute {name!r}")
