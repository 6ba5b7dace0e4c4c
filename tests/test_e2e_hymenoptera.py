"""End to end on real photos: ImageNet EfficientNet-Lite0 -> ants vs bees (../shared/data/hymenoptera)."""

import pytest

import transferlab
from transferlab import embeddings
from transferlab.api import fit
from transferlab.api import build_config


def _fit(shared_data, out, **settings):
    config = build_config(overrides={"train": str(shared_data / "hymenoptera"), "out": out, **settings})
    return fit(config, progress=False)


def test_features_separate_ants_from_bees_and_are_cached(shared_data, tmp_path, monkeypatch):
    embedded = []
    real_embed = embeddings._embed
    monkeypatch.setattr(embeddings, "_embed", lambda backbone, dataset, **kw: embedded.append(len(dataset))
                        or real_embed(backbone, dataset, **kw))
    first = _fit(shared_data, tmp_path / "features", method="features")
    assert first.metrics["val"]["n"] == 153
    assert first.metrics["val"]["accuracy"] > 0.85
    assert embedded == [244, 153]

    embedded.clear()
    again = _fit(shared_data, tmp_path / "again", method="features")
    assert embedded == []  # every embedding came from the cache
    assert again.metrics["val"]["accuracy"] == first.metrics["val"]["accuracy"]

    model = transferlab.load(tmp_path / "features")
    assert model.classes == ["ants", "bees"]
    scores = transferlab.api.evaluate(tmp_path / "features", str(shared_data / "hymenoptera" / "val"))
    assert scores["accuracy"] == pytest.approx(first.metrics["val"]["accuracy"], abs=0.01)


def test_changed_file_is_embedded_again(tmp_path, monkeypatch, shared_data):
    import shutil

    data = tmp_path / "data"
    for name in ("ants", "bees"):
        (data / name).mkdir(parents=True)
        for path in sorted((shared_data / "hymenoptera" / "val" / name).iterdir())[:6]:
            shutil.copy(path, data / name / path.name)
    embedded = []
    real_embed = embeddings._embed
    monkeypatch.setattr(embeddings, "_embed", lambda backbone, dataset, **kw: embedded.append(len(dataset))
                        or real_embed(backbone, dataset, **kw))
    settings = dict(method="features", val=str(data), image_size=96)
    config = build_config(overrides={"train": str(data), "out": tmp_path / "r1", **settings})
    fit(config, progress=False)
    assert sum(embedded) == 12  # train and val are the same files: embedded once
    changed = sorted((data / "ants").iterdir())[0]
    changed.write_bytes((data / "bees" / sorted(p.name for p in (data / "bees").iterdir())[0]).read_bytes())
    embedded.clear()
    fit(build_config(overrides={"train": str(data), "out": tmp_path / "r2", **settings}), progress=False)
    assert sum(embedded) == 0  # its new contents equal a bee already embedded
    changed.write_bytes(changed.read_bytes() + b"\0")
    fit(build_config(overrides={"train": str(data), "out": tmp_path / "r3", **settings}), progress=False)
    assert sum(embedded) == 1  # only the changed file


def test_finetune_runs_and_is_compared_with_features(shared_data, tmp_path):
    tuned = _fit(shared_data, tmp_path / "finetune", method="finetune", epochs=2, head_epochs=1, image_size=160)
    assert len(tuned.history) == 2
    assert tuned.history[0]["train_loss"] > 0 and "val_accuracy" in tuned.history[-1]
    assert tuned.metrics["val"]["accuracy"] > 0.7
