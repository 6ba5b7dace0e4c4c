"""Child processes for the cache concurrency and fault-injection tests (started through a forkserver that has
imported `PRELOAD`, so each child starts in a fraction of a second).

A child embeds two small data sets ("train" and "val", sklearn digits at 32 px) with the packaged EfficientNet-Lite0
through `extract_features` and its cache in ``cache_dir``, as `fit --method features` does. With ``kill_at``, it
SIGKILLs itself at that event: events are the embedding of a chunk, a cache file being written (killed half-way,
leaving a truncated temporary file, or with ``torn`` a truncated file at the final name, as a filesystem without
atomic rename could after a power loss), and a written file about to be renamed into place.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import numpy as np
import torch

from transferlab import cache_files, fileio
from transferlab.backbones import create_backbone
from transferlab.data import load_data
from transferlab.embeddings import extract_features

PRELOAD = ["transferlab.embeddings", "transferlab.backbones", "transferlab.data"]
"""What this module imports that takes time; a forkserver preloads these (Python 3.11's forkserver ignores the
parent's sys.path, so it could not import this module from tests/)."""
SPLITS = {"train": np.arange(0, 24), "val": np.arange(24, 40)}
IMAGE_SIZE = 32


def splits() -> dict:
    digits = load_data("sklearn-digits", split_preference=("all",))
    return {name: digits.subset(rows) for name, rows in SPLITS.items()}


def embed(cache_dir: Path) -> dict[str, torch.Tensor]:
    """The features of both splits, read from or written to the cache at ``cache_dir``."""
    before = os.environ.get("TRANSFERLAB_CACHE")
    os.environ["TRANSFERLAB_CACHE"] = str(cache_dir)
    try:
        backbone = create_backbone("efficientnet_lite0", image_size=IMAGE_SIZE)
        return {name: extract_features(backbone, data, progress=False) for name, data in splits().items()}
    finally:
        if before is None:
            del os.environ["TRANSFERLAB_CACHE"]
        else:
            os.environ["TRANSFERLAB_CACHE"] = before


def run(cache_dir: Path, out: Path, barrier=None, kill_at: int | None = None, seed: int = 0,
        torn: bool = False) -> None:
    """Child entry point: wait at ``barrier`` (to start with the others), embed, save the features to ``out``.

    The kinds of the events seen are saved too (a dry run lists the points a kill can hit): "embed", "write",
    "rename"."""
    torch.set_num_threads(1)
    events = _Events(kill_at, random.Random(seed), torn)
    events.install()
    if barrier is not None:
        barrier.wait()
    features = embed(cache_dir)
    torch.save({"features": features, "events": events.kinds}, out)


class _Events:
    def __init__(self, kill_at: int | None, rng: random.Random, torn: bool):
        self.kill_at, self.rng, self.torn, self.kinds = kill_at, rng, torn, []

    def tick(self, kind: str) -> bool:
        """Record an event; True when this is the one to die at."""
        self.kinds.append(kind)
        return self.kill_at is not None and len(self.kinds) - 1 == self.kill_at

    def install(self) -> None:
        from transferlab.backbones.base import Backbone

        forward, save_file, replace = Backbone.__call__, cache_files.save_file, os.replace

        def counted_forward(backbone, *args, **kwargs):
            if self.tick("embed"):
                _die()
            return forward(backbone, *args, **kwargs)

        def counted_save(tensors, filename, metadata=None):
            save_file(tensors, filename, metadata=metadata)
            if self.tick("write"):
                data = Path(filename).read_bytes()
                torn = data[: self.rng.randrange(len(data))]
                if self.torn:  # the final name: the temporary file is ".NAME.XXXX.tmp"
                    Path(filename).unlink()
                    Path(filename).with_name(Path(filename).name[1:].rsplit(".", 2)[0]).write_bytes(torn)
                else:
                    Path(filename).write_bytes(torn)
                _die()

        def counted_replace(source, target):
            if self.tick("rename"):
                _die()
            replace(source, target)

        Backbone.__call__ = counted_forward
        cache_files.save_file = counted_save
        fileio.os.replace = counted_replace


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)

