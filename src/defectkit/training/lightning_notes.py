"""Lightning's notes that nobody training a defect model can act on, hidden while it trains.

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
