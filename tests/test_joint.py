"""Joint source + target training: L_S + lambda * L_T on MNIST (source) and USPS (target)."""

import pytest
import torch
from safetensors.torch import load_file

import transferlab
from transferlab.api import fit
from transferlab.api import build_config
from transferlab.engine.domains import DomainPairLoader
from transferlab.errors import TransferlabError
from transferlab.methods.joint import joint_loss


def _joint(shared_data, out, **settings):
    return build_config(overrides={
        "method": "joint", "backbone": "lenet", "source": f"mnist:{shared_data / 'mnist'}@test",
        "train": f"usps:{shared_data / 'usps'}@train", "labels_per_class": 5, "epochs": 2, "steps_per_epoch": 40,
        "batch_size": 32, "lr": 3e-3, "out": out, **settings,
    })


def test_joint_loss_is_the_seed_formula():
    assert joint_loss(torch.tensor(2.0), torch.tensor(3.0), 0.5).item() == pytest.approx(3.5)


def test_pair_loader_draws_both_domains_in_ratio():
    source = torch.utils.data.TensorDataset(torch.zeros(100, 1), torch.zeros(100, dtype=torch.long))
    target = torch.utils.data.TensorDataset(torch.ones(10, 1), torch.ones(10, dtype=torch.long))
    pairs = DomainPairLoader(source, target, batch_size=8, source_share=0.75)
    assert (pairs.source_batch, pairs.target_batch, len(pairs)) == (6, 2, 17)
    steps = list(pairs.epoch_loader(epoch=0, seed=1))
    assert len(steps) == 17 and all(len(s[0][1]) == 6 and len(s[1][1]) == 2 for s in steps)
    assert all(s[0][0].sum() == 0 and s[1][0].sum() == 2 for s in steps)  # each batch from its own domain
    again = list(pairs.epoch_loader(epoch=0, seed=1))
    assert all(torch.equal(a[1][0], b[1][0]) for a, b in zip(steps, again))  # (seed, epoch) fixes the order


def test_joint_training_logs_both_losses_and_saves_the_target_model(shared_data, tmp_path):
    result = fit(_joint(shared_data, tmp_path / "joint", **{"lambda": 2.0, "lambda_warmup_epochs": 2}),
                 progress=False)
    first, last = result.history
    assert first["train_lambda"] == pytest.approx(1.0) and last["train_lambda"] == pytest.approx(2.0)
    for row in result.history:
        assert row["train_loss"] == pytest.approx(row["train_source_ce"] + row["train_lambda"] * row["train_target_ce"],
                                                  rel=1e-5)
    assert last["train_source_ce"] < first["train_source_ce"]
    assert result.metrics["val"]["accuracy"] > 0.5  # 10 classes; 80 steps of a small CNN
    weights = load_file(str(tmp_path / "joint" / "model.safetensors"))
    assert not any(key.startswith("source_head") for key in weights)
    model = transferlab.load(tmp_path / "joint")
    assert model.classes == [str(d) for d in range(10)]


def test_different_label_spaces_get_separate_heads(shared_data, tmp_path):
    # target: the digits 0 and 1 only, relabelled as words; source keeps its ten digit classes
    import numpy as np
    from PIL import Image

    from transferlab.data import load_data

    usps = load_data(f"usps:{shared_data / 'usps'}@test", split_preference=("test",))
    for digit, name in ((0, "zero"), (1, "one")):
        folder = tmp_path / "target" / name
        folder.mkdir(parents=True)
        for i in np.flatnonzero(usps.labels == digit)[:12]:
            Image.fromarray(usps.pixels[i]).save(folder / f"{i}.png")
    config = _joint(shared_data, tmp_path / "run", train=str(tmp_path / "target"), labels_per_class=None,
                    epochs=1, steps_per_epoch=10)
    result = fit(config, progress=False)
    assert result.model.classes == ["one", "zero"]
    assert result.model.head[-1].out_features == 2

    with pytest.raises(TransferlabError, match="one shared head needs the same classes"):
        fit(_joint(shared_data, tmp_path / "run2", train=str(tmp_path / "target"), labels_per_class=None,
                   separate_heads=False), progress=False)


def test_joint_bad_inputs(shared_data, tmp_path):
    with pytest.raises(TransferlabError, match="missing required setting 'source'"):
        build_config(overrides={"method": "joint", "train": "sklearn-digits", "out": tmp_path / "x"})
    with pytest.raises(TransferlabError, match="invalid 'lambda'"):
        _joint(shared_data, tmp_path / "x", **{"lambda": -0.5})
    same = _joint(shared_data, tmp_path / "x", source=f"usps:{shared_data / 'usps'}@train")
    with pytest.raises(TransferlabError, match="hold the same examples"):
        fit(same, progress=False)
