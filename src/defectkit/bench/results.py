"""Benchmark results files (DESIGN.md, "Results file") and the per-cell cache of long grids.

A results file is the unit BENCHMARKS.md is rendered from: one JSON per protocol x variant x
profile under ``benchmarks/results/``, committed, carrying the commit, the machine and the exact
command so anyone can rerun the row. Files are written atomically (temporary name, then rename):
an interrupted benchmark never leaves a half-written file for the renderer to choke on.

:class:`CellCache` stores each finished cell of a multi-fold protocol (one fold, one seed, one
reference draw) as its own JSON file, so a grid interrupted after hours resumes by skipping the
cells already done. The cells (``benchmarks/cells/``, small JSON) are committed, so a grid
resumes on a fresh checkout in a later session; trained models stay in the uncommitted work folder.
Each cell records the machine that computed it, and a results file written from cells names their
commits and machines, not those of the session that summarised them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from defectkit.evaluation.evaluate import json_ready
from defectkit.files import write_atomic
from defectkit.inference.saved_model import git_commit, utc_timestamp

__all__ = [
    "DEFAULT_ROOT",
    "SCHEMA",
    "CellCache",
    "cells_commit",
    "cells_machine",
    "machine_info",
    "read_results",
    "recorded_machine",
    "results_path",
    "variant_slug",
    "write_results",
]

SCHEMA = 1
DEFAULT_ROOT = "benchmarks/results"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        # x86 says "model name"; some ARM kernels only give "Hardware" or "Processor".
        if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
            return value.strip()
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    """The machine a figure was measured on: cpu model, cores, gpu name (or None), torch, python."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _slug(text: str) -> str:
    return _UNSAFE.sub("-", text.replace(":", "-").replace("/", "-")).strip("-")


def variant_slug(variant: Mapping[str, Any]) -> str:
    """A file-name part for ``variant``, keys sorted so one variant always gives one name.

    One key: its value (``{"supervision": "mixed:5"}`` -> ``mixed-5``). Several keys: ``key-value``
    pairs joined by ``_`` (``{"positives": 10, "rotation": False}`` -> ``positives-10_rotation-false``),
    since bare values (``true-false``) would not say which switch is which.
    """

    def text(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    if len(variant) == 1:
        (value,) = variant.values()
        return _slug(text(value))
    parts = [f"{_slug(key)}-{_slug(text(variant[key]))}" for key in sorted(variant)]
    return "_".join(parts)


def results_path(
    protocol: str, variant: Mapping[str, Any], profile: str, root: str | Path = DEFAULT_ROOT
) -> Path:
    """``root/<protocol-with-dashes>-<variant>-<profile>.json``, e.g. ``ksdd-segdec-full-cpu.json``.

    An empty variant leaves its part out (``<protocol>-<profile>.json``).
    """
    if not protocol.strip() or not profile.strip():
        raise ValueError("a results file needs a protocol and a profile")
    parts = [_slug(protocol), variant_slug(variant), _slug(profile)]
    return Path(root) / ("-".join(part for part in parts if part) + ".json")


def write_results(
    *,
    protocol: str,
    method: str,
    dataset: str,
    variant: Mapping[str, Any],
    profile: str,
    metrics: Mapping[str, Any],
    n_images: int,
    command: str,
    per_fold: Sequence[Mapping[str, Any]] = (),
    paper: Mapping[str, Any] | None = None,
    wall_time_s: float | None = None,
    infer_ms_per_image: float | None = None,
    commit: str | None = None,
    machine: Mapping[str, Any] | None = None,
    cells: Iterable[Mapping[str, Any]] | None = None,
    created: str | None = None,
    init: str | None = None,
    notes: str | None = None,
    root: str | Path = DEFAULT_ROOT,
) -> Path:
    """Write one results file in DESIGN.md's schema (keys in that order) atomically; return its path.

    ``commit`` defaults to the working tree's (:func:`~defectkit.inference.saved_model.git_commit`,
    ``+dirty`` when uncommitted changes could have shaped the figure), ``machine`` to
    :func:`machine_info`, ``created`` to now (UTC). ``init`` ("random" when a backbone started
    without pretrained weights) and ``notes`` are written only when given. NaN becomes null.

    ``cells``, the cached cells a grid's figures summarise, give the commit and the machine instead
    (:func:`cells_commit`, :func:`cells_machine`): a grid re-summarised in a later session, on
    another machine, still names the code and the machine that computed it.
    """
    path = results_path(protocol, variant, profile, root)
    if cells is not None:
        if commit is not None or machine is not None:
            raise ValueError("give cells, or commit and machine, not both")
        cells = list(cells)
        commit = cells_commit(cells)
        machine = cells_machine(cells, _previous_machine(path, commit))
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "protocol": protocol,
        "method": method,
        "dataset": dataset,
        "variant": dict(variant),
        "profile": profile,
        "metrics": dict(metrics),
        "per_fold": [dict(fold) for fold in per_fold],
        "n_images": int(n_images),
        "paper": dict(paper or {}),
        "wall_time_s": wall_time_s,
        "infer_ms_per_image": infer_ms_per_image,
        "commit": commit if commit is not None else git_commit(),
        "machine": dict(machine) if machine is not None else machine_info(),
        "command": command,
        "created": created or utc_timestamp(),
    }
    if init is not None:
        record["init"] = init
    if notes is not None:
        record["notes"] = notes
    write_atomic(path, json.dumps(json_ready(record), indent=2, allow_nan=False) + "\n")
    return path


def read_results(root: str | Path = DEFAULT_ROOT) -> list[dict[str, Any]]:
    """Every ``*.json`` results file under ``root``, sorted by file name; ``[]`` when none.

    Each record gets ``"_file"`` (its file name) added, for messages and a stable order.

    A file that is not valid JSON or not schema 1 is a ``ValueError`` naming it: a renderer that
    silently dropped a row would publish a table with a figure missing.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    results = []
    for path in sorted(root.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable results file ({error})") from None
        if not isinstance(record, dict) or record.get("schema") != SCHEMA:
            found = record.get("schema") if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"{path}: results schema {found!r}, expected {SCHEMA}")
        missing = [key for key in ("protocol", "variant", "profile", "metrics") if key not in record]
        if missing:
            raise ValueError(f"{path}: results file lacks {', '.join(missing)}")
        record["_file"] = path.name
        results.append(record)
    return results


def cells_commit(cells: Iterable[Mapping[str, Any]]) -> str:
    """The commit(s) whose code computed ``cells``, sorted and space-separated; ``unknown`` for a
    cell that does not say. Never the commit running now: that one may only have summarised them."""
    return " ".join(sorted({str(cell.get("commit") or "unknown") for cell in cells})) or "unknown"


def cells_machine(
    cells: Iterable[Mapping[str, Any]], unrecorded: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The machine that computed ``cells`` (each cell records it when stored, see
    :meth:`CellCache.put`); a field on which cells differ holds their values joined by `` / ``.

    Cells stored before cells recorded their machine count as ``unrecorded`` when given (the
    machine the results file already names, for cells it summarised before), else as this machine.
    """
    fallback = unrecorded
    machines: list[Mapping[str, Any]] = []
    for cell in cells:
        recorded = cell.get("machine")
        if not isinstance(recorded, Mapping):
            fallback = recorded = fallback or machine_info()
        machines.append(recorded)
    if not machines:
        return machine_info()

    def parts(value: Any) -> list[Any]:
        # A value merged before (a re-summary of mixed cells) splits back into its parts.
        return str(value).split(" / ") if isinstance(value, str) else [value]

    merged: dict[str, Any] = {}
    for field in dict.fromkeys(key for machine in machines for key in machine):
        # A field some cells lack (no gpu) shows the others'.
        found = [
            part for machine in machines if machine.get(field) is not None for part in parts(machine[field])
        ]
        distinct = list(dict.fromkeys(found))
        merged[field] = " / ".join(map(str, distinct)) if len(distinct) > 1 else next(iter(distinct), None)
    return merged


def recorded_machine(path: str | Path) -> dict[str, Any] | None:
    """The machine a results file names; ``None`` when the file is missing, unreadable or names none."""
    record = _read_record(Path(path))
    machine = record.get("machine") if record is not None else None
    return dict(machine) if isinstance(machine, Mapping) else None


def _previous_machine(path: Path, commit: str) -> Mapping[str, Any] | None:
    """The machine ``path`` names when it was written from cells of the same ``commit``: the
    machine of cells that predate machine records, as best known."""
    previous = _read_record(path)
    if previous is None or previous.get("commit") != commit:
        return None
    machine = previous.get("machine")
    return machine if isinstance(machine, Mapping) else None


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


class CellMissingError(LookupError):
    """A cell that a cells-only cache was asked for has no finished file."""


class CellUnreadableError(ValueError):
    """A cell file that exists but holds no finished cell of its key (truncated, a merge gone
    wrong, edited by hand): never recomputed over, since it may be the only copy of hours of work."""


class CellCache:
    """One JSON file per finished cell of a grid (``get`` / ``put`` by a string key, or
    :meth:`get_or_compute`).

    Keys are free text (``"fold=2"``, ``"seed=1/shots=5"``); the file name is a readable slug
    plus a short hash of the exact key, so distinct keys never share a file. A cell file is
    written atomically, so it either holds a whole result or does not exist. A file that cannot
    be read back (edited by hand, a merge gone wrong, disk trouble) stops the run that asks for it
    (:class:`CellUnreadableError`), never recomputed over; :meth:`keys` lists finished cells only.

    ``cells_only``: never compute a cell (``defectkit bench --cells-only``): results files are
    rebuilt from the committed cells alone, after a change to how they are summarised, and a
    missing cell stops the run with its key and file instead of starting hours of training.
    """

    def __init__(self, directory: str | Path, *, cells_only: bool = False, commit: str | None = None) -> None:
        self.directory = Path(directory)
        self.cells_only = cells_only
        self.commit = commit  # the code computing new cells, stamped on each by put

    def path(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
        return self.directory / f"{_slug(key)[:80]}-{digest}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored result of cell ``key``, or None when it has not finished (no file); a file
        that holds no finished cell of ``key`` raises :class:`CellUnreadableError`."""
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise self._unreadable(path, str(error)) from None
        try:
            stored = json.loads(text)
        except json.JSONDecodeError as error:
            raise self._unreadable(path, f"not JSON: {error}") from None
        if not isinstance(stored, dict) or not isinstance(stored.get("value"), dict):
            raise self._unreadable(path, "no {key, value} object")
        if stored.get("key") != key:
            raise self._unreadable(path, f"it holds cell {stored.get('key')!r}")
        value: dict[str, Any] = stored["value"]
        return value

    @staticmethod
    def _unreadable(path: Path, reason: str) -> CellUnreadableError:
        return CellUnreadableError(
            f"{path}: unreadable cell ({reason}); restore it (git checkout -- {path}) or delete it "
            "to compute that cell again"
        )

    def put(self, key: str, value: Mapping[str, Any]) -> dict[str, Any]:
        """Store the result of finished cell ``key`` (NaN stored as null) with the machine that
        computed it (:func:`machine_info`) and the cache's ``commit``, each unless ``value`` already
        names one (a re-scored cell names its model's commit); return the cell as stored, for the
        grid to summarise as it would a cell read back, whenever that is."""
        stamps = {"machine": machine_info(), **({"commit": self.commit} if self.commit is not None else {})}
        cell = {**{k: v for k, v in stamps.items() if k not in value}, **value}
        # Compact: a cell holds per-image scores and boxes, which indenting would triple in size.
        stored = json.dumps(json_ready({"key": key, "value": cell}), separators=(",", ":"), allow_nan=False)
        write_atomic(self.path(key), stored + "\n")
        return cell

    def get_or_compute(self, key: str, compute: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        """The stored cell ``key``, else ``compute()``'s, stored as soon as it returns (as
        :meth:`put` gives it back). A cells-only cache raises :class:`CellMissingError` instead of
        computing."""
        cell = self.get(key)
        if cell is not None:
            return cell
        if self.cells_only:
            raise self.missing(key)
        return self.put(key, compute())

    def missing(self, key: str) -> CellMissingError:
        """The error a cells-only run stops with when cell ``key`` has no finished file."""
        return CellMissingError(
            f"cell {key!r} has no finished file ({self.path(key)}) and --cells-only computes none "
            "(a changed config or code version keys new cells); run without --cells-only to compute it"
        )

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def keys(self) -> list[str]:
        """Keys of every finished cell, sorted."""
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(stored, dict) and isinstance(stored.get("key"), str):
                found.append(stored["key"])
        return sorted(found)
