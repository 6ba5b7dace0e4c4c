"""Who writes a run directory, and where: one process at a time, and a replaced run kept until its successor is done.

`claim_run_dir` is what ``fit`` holds while it runs. It

- locks the run directory for this process (``flock`` on ``.NAME.lock`` beside it: the kernel releases it when the
  process dies, so a killed run never leaves it held); a second ``fit`` on the same ``--out`` is refused with the
  holder's PID;
- checks what is there before any data is loaded: an existing run is refused without ``--overwrite`` or
  ``--resume``; ``--resume`` needs a run to continue;
- gives the run its working directory (`RunDir.work`): the run directory itself for a new or resumed run; a private
  ``.NAME.overwrite`` beside it when ``--overwrite`` replaces a run, renamed into place only once the new run has
  finished (`RunDir.commit`), so a failed replacement leaves the old run as it was;
- cleans up after a failure (`RunDir.abandon`): a new run that never wrote a checkpoint is removed (a retry needs
  no ``--overwrite``), a failed replacement is dropped, a resumed run is left resumable.

A run directory is therefore always finished (``metrics.json``, written last, beside ``model.json``), resumable (its
``config.json``, and ``checkpoint.pt`` once an epoch has ended), or absent. Only the main process of a distributed
run claims, creates, removes or renames (`RunDir.main`); the others follow its decision
(`transferlab.api.fit`) and read the same paths.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.artifacts import MODEL_JSON
from transferlab.errors import TransferlabError

__all__ = ["CHECKPOINT", "CONFIG", "HISTORY", "METRICS", "RunDir", "RunDirLock", "claim_run_dir", "is_finished", "is_resumable",
           "require_resumable"]

log = logging.getLogger("transferlab")

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
HISTORY = "history.csv"
METRICS = "metrics.json"  # written last: a run directory holding it (and model.json) is finished


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run: its model and, written after it, its metrics."""
    return (Path(run_dir) / MODEL_JSON).is_file() and (Path(run_dir) / METRICS).is_file()


def is_resumable(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a started run: its settings (from its start) or a checkpoint (after an epoch)."""
    return (Path(run_dir) / CHECKPOINT).is_file() or (Path(run_dir) / CONFIG).is_file()


def require_resumable(run_dir: Path) -> None:
    """Raise unless ``run_dir`` holds a run ``--resume`` can continue (`is_resumable`), saying what to do instead."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise TransferlabError(f"cannot resume: run directory {run_dir} does not exist; start a new run without "
                               "--resume")
    if not run_dir.is_dir():
        raise TransferlabError(f"cannot resume: {run_dir} is a file, not a run directory; choose another --out")
    if not is_resumable(run_dir):
        raise TransferlabError(f"cannot resume: {run_dir} holds no transferlab run to continue (no {CHECKPOINT}, no "
                               f"{CONFIG}); start a new run there with --overwrite instead of --resume, or choose "
                               "another --out")


def _beside(run_dir: Path, suffix: str) -> Path:
    """``.NAME.suffix`` next to the run directory (the real one, when ``run_dir`` is a symbolic link to it)."""
    real = Path(run_dir).resolve()
    return real.parent / f".{real.name}.{suffix}"


class RunDirLock:
    """An exclusive, non-blocking ``flock`` on ``.NAME.lock`` beside a run directory, holding the owner's PID.

    The lock file is removed on release. A process that opened it just before (and would lock a file no longer in
    place) notices that the path now names another file and tries again, so two processes never both hold it.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = _beside(self.run_dir, "lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl  # POSIX
        except ImportError:
            log.warning("run directories are not locked on this platform (no fcntl): do not run two fits on %s",
                        self.run_dir)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise TransferlabError(
                    f"run directory {self.run_dir} is in use by another transferlab process "
                    f"({'PID ' + holder if holder else 'PID unknown'}, lock {self.path}); wait for it to finish, "
                    "or choose another --out"
                ) from None
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)  # its holder removed it between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()  # while still locked: the next process creates a fresh file
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


def _exchange(first: Path, second: Path) -> bool:
    """Swap two directories atomically (``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    try:
        import ctypes

        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without renameat2
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0


def _read_pid(fd: int) -> str:
    """The PID a lock holder wrote (it writes right after locking: wait a moment for it)."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return ""


@dataclass
class RunDir:
    """A claimed run directory. ``path`` is where the run ends up (``--out``), ``work`` where it writes while it
    trains; ``finished`` says that ``--resume`` found the run already finished (nothing to train)."""

    path: Path
    work: Path
    resume: bool
    main: bool = True
    finished: bool = False
    _started: bool = field(default=False, repr=False)
    _lock: RunDirLock | None = field(default=None, repr=False)

    @property
    def replacing(self) -> bool:
        return self.work != self.path

    @property
    def has_checkpoint(self) -> bool:
        return (self.work / CHECKPOINT).is_file()

    def start(self) -> None:
        """Create the working directory (after the data has loaded: a run that fails before leaves nothing)."""
        if self.main and not self.resume:
            self.work.mkdir(parents=True, exist_ok=True)  # absent, or (a new run) an empty directory
            self._started = True

    def commit(self) -> None:
        """The run has finished in `work`: put it in place of the run it replaces (if any).

        Where the file system can exchange two directories in one step (Linux ``renameat2``), the run directory
        holds the old run or the new one at every instant; elsewhere the old run is moved aside first, and a kill
        between the two renames is repaired by the next ``fit`` on it (`_clean_after_killed_run`)."""
        if not (self.main and self.replacing):
            return
        target = self.path.resolve()  # a symbolic link to a run directory keeps pointing at the new run
        if target.exists() and _exchange(self.work, target):
            shutil.rmtree(self.work, ignore_errors=True)  # now the old run
        else:
            replaced = _beside(target, "replaced")
            if target.exists():
                os.replace(target, replaced)
            os.replace(self.work, target)
            shutil.rmtree(replaced, ignore_errors=True)
        self.work = self.path

    def abandon(self) -> None:
        """The run failed: drop what it wrote unless it can be resumed (see the module docstring)."""
        if not self.main:
            return
        # a failed replacement, or a new run with nothing worth resuming
        if self.replacing or (self._started and not self.has_checkpoint):
            shutil.rmtree(self.work, ignore_errors=True)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is not None:
                self.abandon()
        finally:
            self.release()


def claim_run_dir(path: Path, *, overwrite: bool, resume: bool, noun: str = "run directory") -> RunDir:
    """Lock ``path`` for this process and decide where the run writes (see the module docstring). The main process
    of a distributed run claims; the others follow its decision.

    ``noun`` names the directory in messages; other output directories written whole (embeddings, indexes) claim
    theirs the same way with ``resume=False``, and their messages then offer ``--overwrite`` alone.

    Raises:
        TransferlabError: another process holds the run directory; ``path`` is a file; it holds something and
            neither ``overwrite`` nor ``resume`` is given; ``resume`` finds no run to continue.
    """
    path = Path(path)
    lock = RunDirLock(path)
    lock.acquire()
    try:
        _clean_after_killed_run(path)
        run = _plan(path, overwrite=overwrite, resume=resume, noun=noun)
    except BaseException:
        lock.release()
        raise
    run._lock = lock
    return run


def _plan(path: Path, *, overwrite: bool, resume: bool, noun: str) -> RunDir:
    if path.exists() and not path.is_dir():
        raise TransferlabError(f"{noun} {path} exists and is a file; choose another --out")
    occupied = path.is_dir() and any(path.iterdir())
    if resume:
        require_resumable(path)
        return RunDir(path, path, resume=True, finished=is_finished(path))
    if occupied and not overwrite:
        resuming = " or --resume to continue it" if noun == "run directory" else ""
        raise TransferlabError(f"{noun} {path} already exists and is not empty; pass --overwrite to replace "
                               f"it{resuming}")
    if occupied:
        return RunDir(path, _beside(path, "overwrite"), resume=False)
    return RunDir(path, path, resume=False)


def _clean_after_killed_run(path: Path) -> None:
    """Clean what a killed run left: a replacement's directories beside ``path``, temporary files of atomic
    writes inside it (we hold the lock: nobody else is using them)."""
    pending, replaced = _beside(path, "overwrite"), _beside(path, "replaced")
    if replaced.is_dir():
        if path.exists():
            shutil.rmtree(replaced, ignore_errors=True)
        else:  # killed between moving the old run aside and moving the new one in: bring the old one back
            os.replace(replaced, path.resolve())
            log.warning("a replacement of %s was interrupted; the previous run is back in place", path)
    if pending.exists():
        log.info("removing %s, left by a replacement of %s that did not finish", pending, path)
        shutil.rmtree(pending, ignore_errors=True)
    if path.is_dir():  # temporary files of atomic writes a killed run did not get to rename
        for stale in path.glob(".*.tmp"):
            if stale.is_file():
                stale.unlink()
