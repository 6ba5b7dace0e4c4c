"""Shared fixtures: fixed seeds, the real data beside the project, and an isolated feature cache."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read by huggingface_hub at import time: set before anything imports it

import random
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fixed_seeds_and_cache(tmp_path_factory, monkeypatch):
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def kill_then_resume(monkeypatch):
    """``kill_then_resume(make_config, epoch)``: run ``fit(make_config(resume=False))`` until training reaches
    ``epoch`` (0-based), stop it as a killed process would (KeyboardInterrupt, nothing saved for that epoch), then
    ``fit(make_config(resume=True))``; returns the resumed run's history without timings."""
    from transferlab.api import fit
    from transferlab.engine.loop import Trainer

    def run(make_config, epoch: int) -> list[dict]:
        original = Trainer._train_one_epoch

        def killed(self, loader, current):
            if current == epoch:
                raise KeyboardInterrupt
            return original(self, loader, current)

        monkeypatch.setattr(Trainer, "_train_one_epoch", killed)
        with pytest.raises(KeyboardInterrupt):
            fit(make_config(resume=False), progress=False)
        monkeypatch.setattr(Trainer, "_train_one_epoch", original)
        return without_timing(fit(make_config(resume=True), progress=False).history)

    return run


def without_timing(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in history]
