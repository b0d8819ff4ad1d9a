"""Lightning's advert and library-internal warnings are hidden while defectkit trains; its device
lines are not."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import lightning as L
import pytest

from defectkit.training.lightning_notes import lightning_notes_hidden


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def notes() -> Iterator[_Records]:
    records = _Records()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)


def _make_trainer() -> None:
    L.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)


def test_the_advert_is_hidden_and_the_device_lines_stay(notes: _Records) -> None:
    _make_trainer()
    assert any("litlogger" in m.lower() for m in notes.messages), "Lightning no longer adverts"
    notes.messages.clear()
    with lightning_notes_hidden():
        _make_trainer()
    assert not any("litlogger" in m.lower() for m in notes.messages)
    assert any(m.startswith("GPU available") for m in notes.messages)
    notes.messages.clear()
    _make_trainer()  # the filter goes with the block
    assert any("litlogger" in m.lower() for m in notes.messages)


def test_library_warnings_are_hidden_inside_the_block_only() -> None:
    message = "`isinstance(treespec, LeafSpec)` is deprecated"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with lightning_notes_hidden():
            warnings.warn(message, FutureWarning, stacklevel=1)
        warnings.warn(message, FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [message]
