"""Content digests of example files: the key of the feature cache, computed once per example."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_digest"]


def file_digest(memo: dict[int, str], index: int, path: Path | str, *, tag: bytes = b"",
                error: type[Exception], noun: str) -> str:
    """SHA-1 of ``tag`` + the bytes of ``path``, remembered in ``memo`` under ``index``.

    Raises:
        ``error``: the file cannot be read (the message names the ``noun`` and the file).
    """
    digest = memo.get(index)
    if digest is None:
        try:
            payload = Path(path).read_bytes()
        except OSError as exc:
            raise error(f"cannot read {noun} {path}: {exc}") from None
        digest = memo[index] = hashlib.sha1(tag + payload).hexdigest()
    return digest
