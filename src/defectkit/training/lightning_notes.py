"""Lightning's ways that do not suit defectkit's commands, undone while it trains.

Its Ctrl-C handling ends the process with ``sys.exit(1)``: :func:`fit_interruptibly` turns that back
into the ``KeyboardInterrupt`` it was, so a command can say what was kept and exit as shells do.

Its notes that nobody training a defect model can act on are hidden:

Lightning prints them on every run, ``-q`` or not: hints about DataLoader workers and short
logging intervals (noise on the 2-core machines this project targets), a deprecation raised inside
Lightning by the pinned torch, and an advert for its cloud logger. Its device lines ("GPU
available: ...") stay: they say where a run trained.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L

# Lightning's rank-zero notes, the advert among them, are logged here.
_NOTES_LOGGER = "lightning.pytorch.utilities.rank_zero"
_IGNORED_WARNINGS = (
    ".*does not have many workers.*",
    ".*log_every_n_steps.*",
    r".*isinstance\(treespec, LeafSpec\).*",
)


class _AdvertFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage().lower()


@contextmanager
def lightning_notes_hidden() -> Iterator[None]:
    """Build the Trainer and fit inside this block: the advert is logged when a Trainer is made."""
    notes = logging.getLogger(_NOTES_LOGGER)
    advert = _AdvertFilter()
    notes.addFilter(advert)
    try:
        with warnings.catch_warnings():
            for message in _IGNORED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        notes.removeFilter(advert)


def fit_interruptibly(trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
    """``trainer.fit``, raising ``KeyboardInterrupt`` where Lightning would exit on a Ctrl-C (or a
    SIGTERM, which ``defectkit`` turns into one)."""
    try:
        trainer.fit(*args, **kwargs)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt("training interrupted") from None
        raise
