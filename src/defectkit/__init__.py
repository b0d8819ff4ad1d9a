"""defectkit: visual surface-defect inspection for production lines."""

__version__ = "0.1.0"

__all__ = ["__version__"]
