"""Images kept by content hash: ``ROOT/ab/abcdef...png``. Request data never names a path here.

A file's name is the SHA-256 of its bytes plus a suffix from a fixed list, so the same image sent
twice is stored once, a stored file can be checked against its name, and nothing a client sends
(a file name, an id) is ever joined onto the file system: only hashes this module computed are.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from defectkit.files import write_atomic

SUFFIXES = frozenset({"png", "jpeg", "bmp", "tiff", "gif", "webp"})
_HASH = re.compile(r"^[0-9a-f]{64}$")


class ContentStore:
    def __init__(self, root: str | Path, durable: bool = True) -> None:
        self.root = Path(root)
        self.durable = durable
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def path(self, sha256: str, suffix: str) -> Path:
        if not _HASH.match(sha256) or suffix not in SUFFIXES:
            raise ValueError(f"not a stored object: {sha256[:80]!r}.{suffix[:10]!r}")
        return self.root / sha256[:2] / f"{sha256}.{suffix}"

    def put(self, data: bytes, suffix: str) -> str:
        """Store ``data`` (atomically; once per content) and return its SHA-256."""
        sha256 = self.digest(data)
        target = self.path(sha256, suffix)
        if not target.is_file():
            write_atomic(target, data, durable=self.durable)
        return sha256

    def get(self, sha256: str, suffix: str) -> bytes:
        return self.path(sha256, suffix).read_bytes()

    def verify(self, sha256: str, suffix: str) -> bool:
        """True when the stored file exists and its bytes still hash to its name."""
        path = self.path(sha256, suffix)
        return path.is_file() and self.digest(path.read_bytes()) == sha256
