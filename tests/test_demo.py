"""`transferlab demo` compares scratch, features and finetune on one digits split (a shortened budget here)."""

import re

import numpy as np
from typer.testing import CliRunner

from transferlab import demo
from transferlab.cli import app


def test_demo_split_is_disjoint_and_few_shot():
    splits = demo.demo_splits(labels_per_class=5, seed=0)
    assert np.bincount(splits.train.labels).tolist() == [5] * 10
    assert np.bincount(splits.val.labels).tolist() == [5] * 10
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    digests = [{d.content_digest(i) for i in range(len(d))} for d in (splits.train, splits.val)]
    assert len(digests[0]) > 40 and len(digests[1]) > 40


def test_demo_prints_a_table_for_every_method(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "IMAGE_SIZE", 32)
    monkeypatch.setattr(demo, "DEMO_RUNS", {
        "scratch": {"method": "scratch", "epochs": 1},
        "features": {"method": "features"},
        "finetune": {"method": "finetune", "epochs": 1, "head_epochs": 0},
    })
    result = CliRunner().invoke(app, ["demo", "--labels-per-class", "3", "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(scratch|features|finetune)\s+([\d.]+)\s+[\d.]+$",
                                                                  result.output, re.MULTILINE)}
    assert set(rows) == {"scratch", "features", "finetune"}
    assert all(0 <= accuracy <= 1 for accuracy in rows.values())
    assert (tmp_path / "cells" / "finetune-efficientnet_lite0-3pc-seed0" / "model.safetensors").is_file()
    again = CliRunner().invoke(app, ["demo", "--labels-per-class", "3", "--out", str(tmp_path), "-q"])
    assert again.exit_code == 0 and again.output == result.output  # the compare machinery: finished cells reused
