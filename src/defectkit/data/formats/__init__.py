"""Dataset format readers: one module per format, each registering ``read(root) -> Dataset``.

A reader returns index samples (paths and every label level its format has; pixels are read later
by :func:`defectkit.data.io.load_sample`) plus a :class:`~defectkit.data.sample.DatasetInfo` and the
problems met while indexing. Readers never raise on a bad file: they record a
:class:`~defectkit.data.sample.Problem` and go on. They raise :class:`FormatError` only when the
root is not that format at all.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from defectkit.data.sample import Dataset


class FormatError(ValueError):
    """The folder is not in the expected layout; the message says which path and why."""


class UnknownFormatError(FormatError):
    """A format name that no reader has (a usage error, not a data error)."""


@dataclass(frozen=True)
class FormatSpec:
    name: str
    read: Callable[[Path], Dataset]
    detect: Callable[[Path], bool]
    description: str
    priority: int = 50  # lower is tried first by auto-detection (specific layouts before generic)


_FORMATS: dict[str, FormatSpec] = {}

# Imported lazily so a broken optional reader (e.g. ELPV without its extra) never breaks the others.
_MODULES = ("kolektorsdd", "neu_cls", "neu_det", "dagm", "severstal", "mvtec", "elpv", "manifest", "folder")


def register_format(
    name: str, *, detect: Callable[[Path], bool], description: str, priority: int = 50
) -> Callable[[Callable[[Path], Dataset]], Callable[[Path], Dataset]]:
    def decorator(read: Callable[[Path], Dataset]) -> Callable[[Path], Dataset]:
        _FORMATS[name] = FormatSpec(name, read, detect, description, priority)
        return read

    return decorator


def _load_all() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as error:
            # Only a reader that is absent is skipped; a reader whose own imports fail still fails loudly.
            if error.name != f"{__name__}.{module}":
                raise


def available_formats() -> list[FormatSpec]:
    _load_all()
    return sorted(_FORMATS.values(), key=lambda spec: (spec.priority, spec.name))


def get_format(name: str) -> FormatSpec:
    _load_all()
    key = name.lower().replace("-", "_")
    aliases = {spec.name.replace("-", "_"): spec for spec in _FORMATS.values()}
    if key not in aliases:
        known = ", ".join(sorted(_FORMATS))
        raise UnknownFormatError(f"unknown format {name!r}; known formats: {known}")
    return aliases[key]


def detect_format(root: str | Path) -> FormatSpec:
    root = Path(root).expanduser()
    if not root.exists():
        raise FormatError(f"{root}: no such file or directory")
    for spec in available_formats():
        if spec.detect(root):
            return spec
    raise FormatError(f"{root}: layout not recognised; pass --format (one of {', '.join(sorted(_FORMATS))})")


def read_dataset(root: str | Path, format: str | None = None) -> Dataset:
    """Index the dataset at ``root`` (``~`` expanded) with the named reader, or the detected one."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FormatError(f"{root}: no such file or directory")
    spec = get_format(format) if format else detect_format(root)
    return spec.read(root)


__all__ = [
    "FormatError",
    "FormatSpec",
    "UnknownFormatError",
    "available_formats",
    "detect_format",
    "get_format",
    "read_dataset",
    "register_format",
]
