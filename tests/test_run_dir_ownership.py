"""A run directory belongs to one fit at a time, and nothing the user had is lost: the lock, --overwrite, --resume.

The two-process tests start a real ``transferlab fit`` that pauses before its first epoch (until the test lets it
go), so that what a second process does while it trains is deterministic.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import transferlab
from transferlab.api import build_config, fit
from transferlab.cli import app
from test_cli import assert_user_error
from transferlab.engine.checkpoint import saved_train_seconds
from transferlab.engine.loop import Trainer

runner = CliRunner()
SRC = str(Path(transferlab.__file__).resolve().parents[1])
QUICK = ["--train", "sklearn-digits", "--method", "scratch", "--backbone", "lenet", "--labels-per-class", "5",
         "--batch-size", "25"]

PAUSED_FIT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from transferlab.cli import main
    from transferlab.engine.loop import Trainer

    go = Path(sys.argv[1])
    original = Trainer._train_one_epoch

    def paused(self, loader, epoch):
        Path(str(go) + ".waiting").touch()
        while not go.exists():
            time.sleep(0.05)
        return original(self, loader, epoch)

    Trainer._train_one_epoch = paused
    sys.argv = ["transferlab", *sys.argv[2:]]
    main()
""")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def start_paused_fit(tmp_path, *args) -> tuple[subprocess.Popen, Path]:
    """A ``transferlab fit`` process paused before its first epoch (its data loaded, its run directory held);
    touch the returned path to let it go on."""
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": SRC}
    process = subprocess.Popen([sys.executable, "-c", PAUSED_FIT, str(go), "fit", *map(str, args), "-q"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiting = Path(str(go) + ".waiting")
    deadline = time.monotonic() + 240
    while not waiting.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the paused fit did not start: {process.communicate()}")
        time.sleep(0.1)
    return process, go


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def beside(run: Path) -> list[str]:
    """What lies next to ``run`` in its folder besides it (locks, replacements)."""
    return sorted(p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}."))


def test_a_second_fit_on_a_run_in_progress_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    first, go = start_paused_fit(tmp_path, *QUICK, "--epochs", 2, "--seed", 1, "--out", run)
    try:
        result = invoke("fit", *QUICK, "--epochs", 1, "--seed", 7, "--out", run, "--overwrite")
        assert_user_error(result, f"{run} is in use", f"PID {first.pid}")
        assert_user_error(invoke("fit", "--out", run, "--resume"), f"PID {first.pid}")
    finally:
        go.touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    # the first run's files alone: its settings, its two epochs, a model that loads
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    assert len((run / "history.csv").read_text().splitlines()) == 3
    assert transferlab.load(run).classes == [str(d) for d in range(10)]
    assert beside(run) == []  # the lock went with its holder


def test_a_killed_holder_leaves_no_lock_and_its_run_resumes_from_the_start(tmp_path):
    run = tmp_path / "run"
    first, _ = start_paused_fit(tmp_path, *QUICK, "--epochs", 1, "--out", run)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    # killed in its first epoch: its settings are saved, no checkpoint yet; --resume trains it from the start
    assert (run / "config.json").is_file() and not (run / "checkpoint.pt").exists()
    result = invoke("fit", "--out", run, "--resume", "-q")
    assert result.exit_code == 0, result.output
    assert (run / "metrics.json").is_file() and beside(run) == []


def test_an_existing_run_is_refused_before_any_data_loads(tmp_path, monkeypatch):
    from dataclasses import replace

    from transferlab.methods import METHODS

    def no_loading(config):
        raise AssertionError("data loaded before the run directory was checked")

    monkeypatch.setitem(METHODS, "scratch", replace(METHODS["scratch"], prepare=no_loading))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    assert_user_error(invoke("fit", *QUICK, "--out", existing), "already exists", "--overwrite")
    assert_user_error(invoke("fit", *QUICK, "--out", existing, "--resume"), "holds no transferlab run",
                      "--overwrite")
    assert snapshot(existing) == {"notes.txt": b"mine"}


def _quick_config(out, **extra):
    return build_config(overrides={"train": "sklearn-digits", "method": "scratch", "backbone": "lenet",
                                   "labels_per_class": 5, "batch_size": 25, "epochs": 1, "out": out, **extra})


def test_overwrite_replaces_the_old_run_only_when_the_new_one_finishes(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fit(_quick_config(run), progress=False)
    (run / "notes.txt").write_text("from the old run")
    old = snapshot(run)

    def crash(self, loader, epoch):
        raise RuntimeError("power cut")

    monkeypatch.setattr(Trainer, "_train_one_epoch", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        fit(_quick_config(run, seed=5, overwrite=True), progress=False)
    assert snapshot(run) == old and beside(run) == []  # nothing the user had is lost, nothing left beside it
    monkeypatch.undo()

    result = fit(_quick_config(run, seed=5, overwrite=True), progress=False)
    assert result.run_dir == run and json.loads((run / "config.json").read_text())["seed"] == 5
    assert not (run / "notes.txt").exists()  # the new run's files alone
    assert beside(run) == []


def test_config_that_is_a_directory_is_named_as_one(tmp_path):
    assert_user_error(invoke("fit", "--config", tmp_path), f"{tmp_path} is a directory", "YAML file")


def test_resuming_a_finished_run_reports_its_saved_result(tmp_path):
    run = tmp_path / "run"
    fit(_quick_config(run, epochs=2), progress=False)
    before = snapshot(run)
    saved = json.loads((run / "metrics.json").read_text())
    result = invoke("fit", "--out", run, "--resume")
    assert result.exit_code == 0, result.output
    assert "finished already" in result.output
    assert f"training time: {saved['train_seconds']:.1f} s" in result.output
    assert snapshot(run) == before  # nothing trained, nothing rewritten


def test_training_time_adds_up_across_resumes(tmp_path, monkeypatch):
    run = tmp_path / "run"
    original = Trainer._train_one_epoch

    def killed_in_second_epoch(self, loader, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, loader, epoch)

    monkeypatch.setattr(Trainer, "_train_one_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(_quick_config(run, epochs=2), progress=False)
    before = saved_train_seconds(run / "checkpoint.pt")
    assert before > 0
    monkeypatch.setattr(Trainer, "_train_one_epoch", original)
    started = time.perf_counter()
    result = fit({"out": run, "resume": True}, progress=False)
    resumed_for = time.perf_counter() - started
    assert before < result.metrics["train_seconds"] <= before + resumed_for + 0.01
    assert saved_train_seconds(run / "checkpoint.pt") > before
