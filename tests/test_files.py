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


def test_a_long_legal_name_gets_a_temporary_name_within_the_limit(tmp_path: Path) -> None:
    from defectkit.files import temporary_name, write_atomic

    long_name = "x" * 235 + ".json"  # 240 bytes: legal, but not with the temporary name's tags
    assert len(temporary_name(tmp_path / long_name).name.encode()) <= 255
    write_atomic(tmp_path / long_name, "{}")
    assert [p.name for p in tmp_path.iterdir()] == [long_name]


def test_a_failed_write_names_the_file_asked_for_not_its_temporary_name(tmp_path: Path) -> None:
    from defectkit.files import write_atomic

    target = tmp_path / "report.json"
    target.mkdir()  # a folder in the way fails the final rename
    with pytest.raises(OSError) as raised:  # IsADirectoryError on Linux, PermissionError on Windows
        write_atomic(target, "{}")
    assert raised.value.filename == str(target)
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left
