from __future__ import annotations

import errno
from pathlib import Path

import pytest

from defectkit.files import writable_folder


def test_writable_folder_creates_it_and_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = writable_folder(tmp_path / "a" / "report")
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_an_unwritable_folder_is_named_not_its_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: Path, data: bytes) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))  # root ignores chmod

    monkeypatch.setattr(Path, "write_bytes", refused)
    with pytest.raises(PermissionError) as raised:
        writable_folder(tmp_path)
    assert raised.value.filename == str(tmp_path) and "cannot write in this folder" in str(raised.value)
    assert list(tmp_path.iterdir()) == []
