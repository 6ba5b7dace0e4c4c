"""torchrun for real: two processes on the CPU (gloo) train one model, resume on one, and shard embedding.

Each test starts ``torchrun --nproc-per-node 2`` as users do (``python -m torch.distributed.run``), with one torch
thread per process so the two fit on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transferlab.api import fit
from transferlab.engine.checkpoint import load_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"


def torchrun(args: list[str], *, processes: int = 2, env: dict | None = None, script: Path | None = None,
             expect_ok: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               *([str(script)] if script else ["-m", "transferlab"]), *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600, check=False)
    if expect_ok and done.returncode != 0:
        raise AssertionError(f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return done


def head_settings(out: Path, batch_size: int, **more) -> dict:
    """A linear head trained through the shared loop on frozen embeddings: no dropout, no BatchNorm, so one process
    with a batch of ``2b`` and two with ``b`` each must compute the same updates."""
    return {"method": "features", "head": "linear", "train": "sklearn-digits", "labels_per_class": 10,
            "backbone": "efficientnet_lite0", "image_size": 32, "epochs": 2, "batch_size": batch_size,
            "precision": "fp32", "seed": 0, "out": str(out), **more}


def as_flags(settings: dict) -> list[str]:
    """``transferlab fit`` with ``settings`` as flags."""
    return ["fit", *(part for key, value in settings.items() for part in (f"--{key.replace('_', '-')}", str(value)))]


def test_two_processes_train_the_weights_one_process_trains_with_the_global_batch(tmp_path):
    one = fit(head_settings(tmp_path / "one", batch_size=8), progress=False)
    assert one.metrics["train_images"] % 8 == 0  # no padded shard: both runs see exactly the same examples
    torchrun(as_flags(head_settings(tmp_path / "two", batch_size=4)), env={"TRANSFERLAB_CACHE": str(tmp_path / "c")})

    single, double = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert single.keys() == double.keys()
    for name in single:
        torch.testing.assert_close(double[name], single[name], atol=1e-5, rtol=1e-4)
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and one.metrics["processes"] == 1
    history = [line.split(",") for line in (tmp_path / "two" / "history.csv").read_text().splitlines()]
    assert len(history) == 3  # a header and one row per epoch, written once (rank 0)
    assert metrics["val"]["accuracy"] == pytest.approx(one.metrics["val"]["accuracy"])


def test_a_killed_two_process_run_resumes_on_one_process(tmp_path):
    """Killed during its second epoch under torchrun (rank 0 had written the first epoch's checkpoint), then
    resumed by one process: the first epoch is kept, the second trains, the schedule is placed in the new steps."""
    settings = head_settings(tmp_path / "run", batch_size=4, epochs=3)
    killed = torchrun(as_flags(settings), script=FIXTURES / "killed_at_epoch.py", env={"KILL_AT_EPOCH": "1"},
                      expect_ok=False)
    assert killed.returncode != 0
    first = load_checkpoint(next(tmp_path.glob("**/checkpoint.pt")))
    assert first["epoch"] == 0 and first["processes"] == 2

    resumed = fit({"out": str(tmp_path / "run"), "resume": True}, progress=False)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert resumed.history[0]["train_loss"] == pytest.approx(first["history"][0]["train_loss"])
    assert resumed.metrics["processes"] == 1
    # cosine over 3 epochs, resumed at the start of epoch 2 with twice the steps per epoch: the rate at the end of
    # the run is the schedule's last step, not a step of the two-process schedule
    assert resumed.history[-1]["lr"] < resumed.history[1]["lr"] < resumed.history[0]["lr"]


def test_sharded_embedding_equals_one_process(tmp_path, shared_data):
    images = tmp_path / "images"
    for label in ("ants", "bees"):
        (images / label).mkdir(parents=True)
        for path in sorted((shared_data / "hymenoptera" / "val" / label).glob("*.jpg"))[:5]:
            (images / label / path.name).symlink_to(path)
    flags = ["--backbone", "efficientnet_lite0", "--precision", "fp32", "--image-size", "64"]
    torchrun(["embed", str(images), *flags, "--out", str(tmp_path / "two")], env={"TRANSFERLAB_CACHE": str(tmp_path / "c2")})
    done = subprocess.run([sys.executable, "-m", "transferlab", "embed", str(images), *flags, "--out",
                           str(tmp_path / "one")], capture_output=True, text=True, check=False,
                          env={**os.environ, "TRANSFERLAB_CACHE": str(tmp_path / "c1")}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = np.load(tmp_path / "one" / "vectors.npy"), np.load(tmp_path / "two" / "vectors.npy")
    assert one.shape == two.shape == (10, 1280)  # an odd count per process would be padded: 5 + 5 here
    np.testing.assert_allclose(two, one, atol=1e-4, rtol=1e-4)
    assert (tmp_path / "one" / "items.csv").read_text() == (tmp_path / "two" / "items.csv").read_text()


def test_sync_bn_without_torchrun_is_one_line(tmp_path):
    from transferlab.errors import TransferlabError

    with pytest.raises(TransferlabError, match="sync-bn .* one process"):
        fit(head_settings(tmp_path / "x", batch_size=8, head="linear", method="finetune", sync_bn=True),
            progress=False)


def every_kind_of_step(shared_data) -> dict[str, dict]:
    """A method per way the loop draws batches or fills gradients, on real digits, a few steps each."""
    mnist, usps = f"mnist:{shared_data / 'mnist'}@test", f"usps:{shared_data / 'usps'}@train"
    small = {"backbone": "lenet", "epochs": 2, "steps_per_epoch": 6, "batch_size": 16, "lr": 3e-3}
    return {
        "joint": {"method": "joint", "source": mnist, "train": usps, "labels_per_class": 5, **small},
        "dann": {"method": "dann", "source": mnist, "target": usps, "val_fraction": 0.05, "selection_samples": 200,
                 "image_size": 28, **small},
        "multitask-upgrad": {"method": "multitask", "weighting": "upgrad", **small, "tasks": [
            {"name": "mnist", "data": mnist, "labels_per_class": 10},
            {"name": "usps", "data": usps, "labels_per_class": 10}]},
    }


@pytest.mark.parametrize("name", ["joint", "dann", "multitask-upgrad"])
def test_pairs_of_loaders_adversaries_and_own_gradients_train_under_torchrun(name, shared_data, tmp_path):
    """Two domains drawn together (joint), a domain discriminator and label-free selection (dann), and a
    Jacobian weighting that fills the gradients itself (multitask upgrad): each trains one model on 2 processes."""
    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(every_kind_of_step(shared_data)[name]))
    torchrun(["fit", "--config", str(config), "--out", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["processes"] == 2
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "nan" not in "".join(history).lower()
