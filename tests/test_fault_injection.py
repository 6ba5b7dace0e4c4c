"""Fault injection: ``fit`` killed (``os._exit``, as SIGKILL would: no cleanup runs) at seeded random points, then
recovered the way a user would, ends exactly like an uninterrupted run, and no run directory is ever left
half-written: after any kill it is finished, resumable, or absent (empty).

The kill points are the run's *events*: every optimizer step and every file or directory rename (each atomic write
of a checkpoint, history, weights, ``model.json`` or ``metrics.json`` ends in one). A driver process imports
transferlab once and forks one child per run, so a trial costs a short lenet fit, not a Python start-up.
"""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import transferlab
from transferlab.rundir import is_finished, is_resumable

SRC = str(Path(transferlab.__file__).resolve().parents[1])
SEED = 20240612
NEW_RUN_TRIALS = 8
OVERWRITE_TRIALS = 5

DRIVER = textwrap.dedent("""
    import json, os, shutil, sys, traceback
    from pathlib import Path

    import torch
    from transferlab.api import build_config, fit

    spec = json.loads(sys.argv[1])
    root = Path(spec["root"])
    torch.set_num_threads(1)  # the runs are tiny: threads would only contend
    events, kill_at = 0, None
    real_replace = os.replace

    def event():
        global events
        events += 1
        if events == kill_at:
            os._exit(137)  # as SIGKILL: no finally, no atexit

    def counted_replace(*args, **kwargs):
        event()
        return real_replace(*args, **kwargs)

    os.replace = counted_replace
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    register_optimizer_step_pre_hook(lambda *args: event())

    def run(settings, kill=None):
        # one fit in a forked child (this process never computes, so forking it is safe); its exit code and events
        count_file = root / "events.txt"
        pid = os.fork()
        if pid == 0:
            global kill_at
            kill_at = kill
            code = 0
            try:
                fit(build_config(overrides=settings), progress=False)
            except BaseException:
                traceback.print_exc()
                code = 1
            count_file.write_text(str(events))
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return code, int(count_file.read_text()) if code == 0 else None

    def settings(out, **extra):
        return {**spec["settings"], "out": str(out), **extra}

    report = {"trials": []}
    code, report["events"] = run(settings(root / "reference"))
    assert code == 0, "the reference run failed"
    code, _ = run(settings(root / "old", seed=spec["settings"]["seed"] + 1, epochs=1))
    assert code == 0, "the old run failed"
    rng = __import__("random").Random(spec["seed"])
    kills = {"new": sorted(rng.sample(range(1, report["events"] + 1), spec["new_trials"])),
             "overwrite": sorted(rng.sample(range(1, report["events"] + 1), spec["overwrite_trials"]))}
    for mode, points in kills.items():
        for index, point in enumerate(points):
            out = root / f"{mode}-{index}"
            overwrite = mode == "overwrite"
            if overwrite:
                shutil.copytree(root / "old", out)
            code, _ = run(settings(out, overwrite=overwrite), kill=point)
            killed = root / f"{mode}-{index}.after-kill"
            if out.exists():
                shutil.copytree(out, killed)
            # recover as a user would: a killed replacement is tried again; a killed run is resumed if it can be
            from transferlab.rundir import is_finished, is_resumable
            if overwrite:
                recovery = settings(out, overwrite=True)
            elif out.is_dir() and is_finished(out):
                recovery = None
            elif out.is_dir() and is_resumable(out):
                recovery = settings(out, resume=True)
            else:
                recovery = settings(out)
            recovered = run(recovery)[0] if recovery else 0
            report["trials"].append({"mode": mode, "kill_at": point, "exit": code, "out": str(out),
                                     "after_kill": str(killed), "recovery": recovery and
                                     ("resume" if recovery.get("resume") else "fit"), "recovered": recovered})
    print(json.dumps(report))
""")


def _tiny_images(root: Path) -> Path:
    """Two classes of ten 20 px grayscale images: a lenet epoch takes a fraction of a second."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(("dark", "light")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 60, (20, 20)) + index * 150
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def _same_run(run: Path, reference: Path) -> bool:
    weights, expected = load_file(str(run / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    val = json.loads((run / "metrics.json").read_text())["val"]
    return (weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)
            and _history(run) == _history(reference) and val == json.loads((reference / "metrics.json").read_text())["val"])


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the driver forks one child per run")
def test_runs_killed_at_random_points_recover_to_the_uninterrupted_result(tmp_path):
    spec = {"root": str(tmp_path), "seed": SEED, "new_trials": NEW_RUN_TRIALS, "overwrite_trials": OVERWRITE_TRIALS,
            "settings": {"train": str(_tiny_images(tmp_path / "images")), "method": "scratch", "backbone": "lenet",
                         "epochs": 2, "batch_size": 4, "image_size": 16, "scheduler": "onecycle", "seed": 3}}
    completed = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(spec)], capture_output=True, text=True,
                               timeout=900, env={**os.environ, "PYTHONPATH": SRC})
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    reference, old = tmp_path / "reference", _files(tmp_path / "old")
    assert report["events"] > 10 and len(report["trials"]) == NEW_RUN_TRIALS + OVERWRITE_TRIALS

    for trial in report["trials"]:
        where = f"{trial['mode']} run killed at event {trial['kill_at']} of {report['events']}"
        assert trial["exit"] == 137, where
        after = Path(trial["after_kill"])
        # right after the kill: finished, resumable or absent; a replaced run is intact until its successor finished
        temp_files = [p.name for p in after.glob(".*.tmp")] if after.exists() else []
        state = {name: data for name, data in _files(after).items() if name not in temp_files} if after.exists() else {}
        if trial["mode"] == "overwrite":
            assert state == old or (is_finished(after) and _same_run(after, reference)), where
        else:
            assert not state or is_finished(after) or is_resumable(after), f"{where}: half-written {sorted(state)}"
        # recovered: the uninterrupted result, and nothing left inside or beside the run directory
        out = Path(trial["out"])
        assert trial["recovered"] == 0, where
        assert _same_run(out, reference), where
        assert not list(out.glob(".*.tmp")), where
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}.")], where
