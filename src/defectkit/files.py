"""Writing files so that an interrupted run never leaves half of one (DESIGN.md, "Errors")."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

# Room for the temporary name's dot, process and thread ids and suffix within 255 bytes.
_LONGEST_KEPT_NAME = 200


class OutputFolderError(ValueError):
    """An output folder that cannot take the results without replacing or hiding a user's files
    (it holds the input images, or files no defectkit run wrote where results would go): bad usage."""


def temporary_name(path: Path, suffix: str = "tmp") -> Path:
    """A hidden name beside ``path`` to write it under before renaming (or to move an old copy
    aside, ``suffix="old"``): unique per process and thread, so two writers of one path never
    share a temporary file."""
    name = path.name
    if len(os.fsencode(name)) > _LONGEST_KEPT_NAME:
        # File systems cap a name at 255 bytes: a legal long name plus the tags would pass that.
        name = hashlib.sha1(os.fsencode(name)).hexdigest()[:16]
    return path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.{suffix}")


# The file that folder_lock holds; it stays in the folder and holds nothing.
LOCK_NAME = ".defectkit.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while the block reads and rewrites files in it.

    Another process (or thread) asking for the same folder's lock waits until the block ends, so
    two writers never interleave: without it, two enrolments into one model could each read the
    old reference database and the last write would drop the other's class, or leave a card that
    names one writer's class over the other's references. The lock is advisory (an OS file lock on
    ``LOCK_NAME``): it holds back only code that asks for it, and the OS releases it when a
    process dies, so a crash leaves no stale lock.
    """
    with open(Path(folder) / LOCK_NAME, "a+b") as handle:
        if sys.platform == "win32":
            import msvcrt

            handle.seek(0)
            while True:  # LK_LOCK gives up after about 10 s; an enrolment with an export takes longer
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    time.sleep(0.1)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_atomic(path: str | Path, data: bytes | str, durable: bool = True) -> Path:
    """Write ``data`` to a temporary name beside ``path`` and rename it over ``path``.

    Text is written as UTF-8 with ``\\n`` line ends. ``durable`` also syncs the file to disk before
    the rename (reports, models); bulk writers of many small files (generators) turn it off.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            sync_directory(path.parent)  # the rename itself survives a power cut only once synced
    except OSError as error:
        # Name the file the caller asked for, not the hidden temporary one (a folder in the way
        # fails the rename, and the error would name only the temporary file).
        if error.errno is None:
            raise
        raise type(error)(error.errno, error.strerror, str(path)) from error
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def writable_folder(path: str | Path) -> Path:
    """``path``, created if missing and proven writable by a probe file: a long run learns before
    its work, not after it, that its results have nowhere to go (a file in the way, a read-only
    model folder). Raises an ``OSError`` that names the folder."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    probe = temporary_name(folder / "probe")
    try:
        probe.write_bytes(b"")
    except OSError as error:
        raise OSError(error.errno, f"cannot write in this folder ({error.strerror})", str(folder)) from None
    finally:
        probe.unlink(missing_ok=True)
    return folder


@contextlib.contextmanager
def report_folder(path: str | Path) -> Iterator[Path]:
    """:func:`writable_folder` for the block that fills it: when the block fails, a folder this
    call created is removed again while still empty, so a refused run leaves nothing behind."""
    folder = Path(path)
    created = not folder.exists()
    writable_folder(folder)
    try:
        yield folder
    except BaseException:
        if created:
            with contextlib.suppress(OSError):  # not empty: keep what was written
                folder.rmdir()
        raise


def sync_directory(folder: Path) -> None:
    """fsync ``folder``'s own entry list: a rename into it survives a power cut once synced."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open folders (Windows): nothing to sync
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse to sync folders
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_folder(folder: Path) -> None:
    """fsync every file directly in ``folder``, then the folder: a folder written whole and then
    renamed into place (a saved model) holds its files, not empty ones, after a power cut."""
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    sync_directory(folder)
