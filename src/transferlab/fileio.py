"""Atomic file writes and run-directory creation: a crash never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from transferlab.errors import TransferlabError

__all__ = ["atomic_path", "cache_root", "write_json", "read_json", "prepare_run_dir", "require_checkpoint"]


def cache_root() -> Path:
    """Where transferlab keeps its caches (embeddings, converted weights): ``$TRANSFERLAB_CACHE`` or
    ``~/.cache/transferlab``."""
    return Path(os.environ.get("TRANSFERLAB_CACHE", Path.home() / ".cache" / "transferlab"))


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _default_file_mode())  # mkstemp makes files private (0600); keep the usual umask instead
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, value) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TransferlabError(f"file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TransferlabError(f"{path} is not valid JSON: {exc}") from None


def require_checkpoint(run_dir: Path) -> None:
    """Raise unless ``run_dir`` holds a training checkpoint to resume from."""
    if not (Path(run_dir) / "checkpoint.pt").is_file():
        raise TransferlabError(f"cannot resume: no checkpoint found in {run_dir}")


def prepare_run_dir(path: Path, *, overwrite: bool, resume: bool) -> Path:
    """Create the run directory; refuse to touch an existing non-empty one unless asked.

    With ``resume`` the directory must exist and hold a checkpoint; with ``overwrite`` its old contents are removed.
    """
    path = Path(path)
    exists = path.exists() and (not path.is_dir() or any(path.iterdir()))
    if path.exists() and not path.is_dir():
        raise TransferlabError(f"run directory {path} exists and is a file; choose another --out")
    if resume:
        require_checkpoint(path)
        return path
    if exists and not overwrite:
        raise TransferlabError(
            f"run directory {path} already exists and is not empty; pass --overwrite to replace it or --resume to continue it"
        )
    if exists:
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path
