"""A run killed mid-training and resumed ends exactly like an uninterrupted run."""

import pytest
import torch
from safetensors.torch import load_file

from transferlab.api import fit
from transferlab.api import build_config
from transferlab.engine.loop import Trainer


def _config(out, **extra):
    return build_config(overrides={
        "train": "sklearn-digits", "method": "scratch", "backbone": "lenet", "epochs": 4, "batch_size": 64,
        "lr": 3e-3, "scheduler": "onecycle", "dropout": 0.2, "seed": 3, "out": out, **extra,
    })


def _without_timing(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("extra", [{}, {"ema": 0.99}])  # ema: the weights' moving average is checkpointed too
def test_killed_run_resumes_to_identical_result(tmp_path, monkeypatch, extra):
    full = fit(_config(tmp_path / "full", **extra), progress=False)

    original = Trainer._train_one_epoch

    def killed_in_third_epoch(self, loader, epoch):
        if epoch == 2:
            next(iter(loader))  # mid-epoch: a batch was drawn, nothing saved yet
            raise KeyboardInterrupt
        return original(self, loader, epoch)

    monkeypatch.setattr(Trainer, "_train_one_epoch", killed_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(_config(tmp_path / "killed", **extra), progress=False)
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    monkeypatch.setattr(Trainer, "_train_one_epoch", original)

    torch.manual_seed(12345)  # resuming must not depend on the state the new process starts in
    # from Python as from the command line, resuming needs only the run directory: its saved settings come back
    resumed = fit({"out": tmp_path / "killed", "resume": True}, progress=False)
    assert len(resumed.history) == 4
    assert _without_timing(resumed.history) == _without_timing(full.history)
    assert resumed.metrics["val"] == full.metrics["val"]
    full_weights = load_file(str(tmp_path / "full" / "model.safetensors"))
    resumed_weights = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(full_weights[k], resumed_weights[k]) for k in full_weights)


def test_a_features_run_resumes_from_its_directory_alone_even_with_settings_an_older_version_saved(tmp_path):
    import json

    run = tmp_path / "features"
    first = fit(build_config(overrides={"train": "sklearn-digits", "method": "features", "backbone": "lenet",
                                        "labels_per_class": 5, "out": run}), progress=False)
    # config.json holds every setting, the logistic head's unused epochs and lr included: none of them was "given"
    resumed = fit({"out": run, "resume": True}, progress=False)
    assert resumed.metrics["logistic"] == first.metrics["logistic"]
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "epochs": 1, "lr": 0.5}))  # an older compare's cell
    assert fit({"out": run, "resume": True}, progress=False).metrics["logistic"] == first.metrics["logistic"]
