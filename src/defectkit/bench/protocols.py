"""Paper protocols: ``defectkit bench NAME`` runs one and writes its results file.

A protocol registers with :func:`register_protocol`. It must get each cell (a fold, a seed)
through :meth:`~defectkit.bench.results.CellCache.get_or_compute`, which skips cells already
there and stores each new one as it finishes, so a grid can span sessions and ``--cells-only``
can rebuild its results without training; the pooled results file is written once every cell is
done. A protocol that measures afresh on each run and keeps no cells (``service/load``,
``aux/efficiency``) registers with ``cells=False``, and ``--cells-only`` is refused for it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from defectkit.bench.results import CellCache, variant_slug
from defectkit.inference.saved_model import git_commit

N = TypeVar("N", int, float)

REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class BenchRequest:
    profile: str
    supervision: str
    command: str
    results_root: Path
    work_root: Path  # trained models and scratch files (not committed)
    progress: bool = True
    variant: dict[str, str] = field(default_factory=dict)  # protocol options (--variant key=value)
    # Extra config overrides (--set a.b=c): smoke runs and experiments; the command records them.
    overrides: list[str] = field(default_factory=list)
    # Finished cells (small JSON, committed): a grid resumes on a fresh checkout in a later session.
    cells_root: Path = Path("benchmarks/cells")
    # The code that runs is the code at start: commits made while a long grid runs must not be
    # credited with its figures.
    commit: str | None = field(default_factory=git_commit)
    # Summarise the committed cells only; a missing one is an error, never trained (--cells-only).
    cells_only: bool = False

    def cells(self, name: str) -> CellCache:
        return CellCache(self.cells_root / name, cells_only=self.cells_only, commit=self.commit)

    def set_variant(self, exclude: Collection[str] = ()) -> dict[str, str]:
        """``{"set": ...}`` naming this run's ``--set`` overrides, for a protocol's results variant,
        so an experiment writes a results file of its own instead of replacing the profile's row
        (cells are keyed by the resolved config, so they never mix). Sorted, so one experiment has
        one name whatever the order of its options; a list past 60 characters is shortened to a
        digest (file names have a length limit), the command keeps it all. ``{}`` without any.

        ``exclude``: config keys left out, those the variant already names by a field of its own
        or that the row's figures never read."""
        kept = [o.strip() for o in self.overrides if o.split("=", 1)[0].strip() not in exclude]
        if not kept:
            return {}
        named = ",".join(sorted(kept))
        if len(named) > 60:
            named = "sha1-" + hashlib.sha1(named.encode()).hexdigest()[:10]
        return {"set": named}

    def work_folder(self, name: str, exclude: Collection[str] = ()) -> Path:
        """Where ``name``'s models train: a ``--set`` experiment gets a folder of its own, named as
        its results file is (:meth:`set_variant`, with the same ``exclude``), so it never replaces
        the trained models of the profile's own row; without ``--set``, ``work_root / name``."""
        return self.work_root / "-".join(
            part for part in (name, variant_slug(self.set_variant(exclude))) if part
        )


ProtocolRunner = Callable[[BenchRequest], Path]
# name -> (runner, description, whether it keeps cells, whether it reads --supervision)
_PROTOCOLS: dict[str, tuple[ProtocolRunner, str, bool, bool]] = {}


def register_protocol(
    name: str, description: str, aliases: tuple[str, ...] = (), cells: bool = True, supervision: bool = False
) -> Callable[[ProtocolRunner], ProtocolRunner]:
    """Register ``runner`` as protocol ``name`` (and under each short ``alias``, e.g. ``service``).
    ``cells=False``: the protocol measures afresh every time and keeps no cells, so a cells-only
    request is refused rather than allowed to overwrite its committed results with a new measurement.
    ``supervision``: the protocol reads ``--supervision``; any other refuses all but the default
    ``full``, which would otherwise be ignored without a word."""

    def decorator(runner: ProtocolRunner) -> ProtocolRunner:
        for registered in (name, *aliases):
            described = description if registered == name else f"same as {name}"
            _PROTOCOLS[registered] = (runner, described, cells, supervision)
        return runner

    return decorator


def _load_all() -> None:
    from defectkit.bench import aux, dagm_mix, ksdd, line, neu_cls, service, tlu  # noqa: F401  (they register)


def list_protocols() -> dict[str, str]:
    _load_all()
    return {name: description for name, (_, description, _, _) in sorted(_PROTOCOLS.items())}


class BenchOptionError(KeyError):
    """A bench option that makes no sense (an unknown protocol or ``--variant`` key, a value out of
    range, options that contradict each other): bad usage, unlike a KeyError from bad data."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def run_protocol(name: str, request: BenchRequest) -> Path:
    _load_all()
    if name not in _PROTOCOLS:
        raise BenchOptionError(f"unknown protocol {name!r}; known: {', '.join(sorted(_PROTOCOLS))}")
    runner, _, keeps_cells, reads_supervision = _PROTOCOLS[name]
    if request.cells_only and not keeps_cells:
        raise BenchOptionError(
            f"{name} keeps no cells (it measures afresh each run): --cells-only has nothing to summarise"
        )
    if request.supervision != "full" and not reads_supervision:
        raise BenchOptionError(
            f"{name} takes no --supervision (its labels are the protocol's own); "
            f"--supervision {request.supervision} would be ignored"
        )
    return runner(request)


def dataset_root(name: str) -> Path:
    """``$DEFECTKIT_DATA/<name>``, or a ``FileNotFoundError`` saying how to get it."""
    base = os.environ.get("DEFECTKIT_DATA")
    if not base:
        raise FileNotFoundError(
            f"DEFECTKIT_DATA is not set; {name} is needed (unpack the datasets with shared/data/unpack.sh)"
        )
    root = Path(base) / name
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: {name} not found; unpack it (shared/data/unpack.sh)")
    return root


def check_options(options: Mapping[str, str], known: Collection[str], protocol: str) -> None:
    """Reject ``--variant`` keys the protocol does not know (a typo must not run a default grid)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BenchOptionError(f"{protocol}: unknown --variant key(s) {unknown}; known: {sorted(known)}")


def option_list(options: Mapping[str, str], key: str, default: str) -> list[str]:
    """A comma-separated ``--variant`` value as a list (``default`` when the key is absent)."""
    return [v.strip() for v in options.get(key, default).split(",") if v.strip()]


def option_numbers(options: Mapping[str, str], key: str, default: str, kind: type[N]) -> list[N]:
    """:func:`option_list` as ``kind`` (int or float); a value that is none is bad usage."""
    try:
        return [kind(v) for v in option_list(options, key, default)]
    except ValueError:
        raise BenchOptionError(
            f"--variant {key}={options.get(key)}: expected {kind.__name__} value(s), comma-separated"
        ) from None


def option_number(options: Mapping[str, str], key: str, default: str, kind: type[N]) -> N:
    """One ``--variant`` number (``default`` when the key is absent)."""
    values = option_numbers(options, key, default, kind)
    if len(values) != 1:
        raise BenchOptionError(f"--variant {key}={options.get(key)}: expected one {kind.__name__}")
    return values[0]


def supervision_overrides(supervision: str) -> tuple[dict[str, Any], list[str]]:
    """``full`` | ``weak`` | ``mixed:N`` -> (variant, config overrides)."""
    if supervision == "full":
        return {"supervision": "full"}, ["data.supervision=full"]
    if supervision == "weak":
        return {"supervision": "weak"}, ["data.supervision=weak"]
    if supervision.startswith("mixed:"):
        count = supervision.split(":", 1)[1]
        if not count.isdigit():
            raise BenchOptionError(
                f"--supervision {supervision!r}: expected mixed:N with N a number of masks"
            )
        return {"supervision": supervision}, ["data.supervision=mixed", f"data.num_segmented={count}"]
    raise BenchOptionError(f"--supervision {supervision!r}: use full, weak or mixed:N")
