"""SEED.md section 5 as a named recipe: frozen VGG16 body -> Flatten -> Dense(1024, ReLU) -> Dense(classes), Adam."""

from torch import nn

from transferlab.api import fit
from transferlab.api import build_config


def test_seed_recipe_trains_only_the_new_head(tmp_path):
    # random VGG16 weights at a small input size: the recipe's structure, not its pretrained accuracy
    config = build_config(overrides={"train": "sklearn-digits", "method": "seed-recipe", "pretrained": False,
                                     "image_size": 32, "epochs": 2, "labels_per_class": 8, "out": tmp_path / "run"})
    result = fit(config, progress=False)
    model = result.model
    assert model.backbone.spec["name"] in ("torchvision:vgg16", "vgg16")
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(512, 1024), (1024, 10)]  # 512 x 1 x 1 at 32 px
    assert any(isinstance(m, nn.ReLU) for m in model.head.modules())
    assert result.history and all(row["train_loss"] > 0 for row in result.history)
    assert config.optimizer == "adam"
    assert not any(p.requires_grad for p in model.backbone.parameters())  # the body stayed frozen
    assert all(p.requires_grad for p in model.head.parameters())


def test_a_fully_frozen_backbone_embeds_each_image_once(tmp_path, monkeypatch):
    from transferlab import embeddings

    calls = []
    real_embed = embeddings._embed
    monkeypatch.setattr(embeddings, "_embed", lambda backbone, dataset, **kw: calls.append(len(dataset))
                        or real_embed(backbone, dataset, **kw))
    config = build_config(overrides={"train": "sklearn-digits", "method": "seed-recipe", "pretrained": False,
                                     "image_size": 32, "epochs": 3, "labels_per_class": 8, "out": tmp_path / "run"})
    result = fit(config, progress=False)
    assert len(result.history) == 3
    assert calls[:2] == [64, 16]  # train and val (held out of the 8 x 10 labels) embedded once, not once per epoch
