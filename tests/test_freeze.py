import pytest
from torch import nn

from transferlab.errors import TransferlabError
from transferlab.methods.freeze import (
    GradualUnfreezing,
    discriminative_param_groups,
    frozen_parameter_names,
    set_requires_grad,
)

GROUPS = [
    ("backbone.stem", ["backbone.stem.weight"]),
    ("backbone.blocks.0", ["backbone.blocks.0.weight"]),
    ("backbone.blocks.1", ["backbone.blocks.1.weight"]),
    ("head", ["head.weight"]),
]


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.stem = nn.Linear(2, 2, bias=False)
        self.backbone.blocks = nn.ModuleList([nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)])
        self.head = nn.Linear(2, 2, bias=False)


def test_freeze_choices():
    assert frozen_parameter_names("none", GROUPS) == set()
    assert frozen_parameter_names("all", GROUPS) == {"backbone.stem.weight", "backbone.blocks.0.weight",
                                                     "backbone.blocks.1.weight"}
    assert frozen_parameter_names("2", GROUPS) == {"backbone.stem.weight", "backbone.blocks.0.weight"}
    assert frozen_parameter_names("backbone.blocks.*", GROUPS) == {"backbone.blocks.0.weight",
                                                                  "backbone.blocks.1.weight"}
    assert frozen_parameter_names("re:stem", GROUPS) == {"backbone.stem.weight"}


def test_freeze_errors_name_the_value():
    with pytest.raises(TransferlabError, match=r"--freeze 9 asks for more groups than the backbone has \(3:"):
        frozen_parameter_names("9", GROUPS)
    with pytest.raises(TransferlabError, match="matches no parameter"):
        frozen_parameter_names("decoder.*", GROUPS)
    with pytest.raises(TransferlabError, match="regular expression"):
        frozen_parameter_names("re:(", GROUPS)


def test_discriminative_rates_rise_geometrically_to_the_head():
    model = Toy()
    groups = discriminative_param_groups(model, GROUPS, lr=1.0, ratio=8.0, exclude={"backbone.stem.weight"})
    rates = {g["name"]: g["lr"] for g in groups}
    assert "backbone.stem" not in rates
    assert rates["head"] == pytest.approx(1.0)
    assert rates["backbone.blocks.1"] == pytest.approx(8.0 ** (-1 / 3))
    assert rates["backbone.blocks.0"] == pytest.approx(8.0 ** (-2 / 3))
    with pytest.raises(TransferlabError, match="nothing to train"):
        discriminative_param_groups(model, GROUPS, 1.0, 2.0, exclude={n for _, ns in GROUPS for n in ns})


def test_gradual_unfreezing_depends_only_on_epoch():
    model = Toy()
    trainable = {"backbone.blocks.1.weight"}
    set_requires_grad(model, {"backbone.stem.weight"}, False)
    hook = GradualUnfreezing(trainable, head_epochs=2)
    hook(model, 0)
    assert not model.backbone.blocks[1].weight.requires_grad and model.head.weight.requires_grad
    hook(model, 2)
    assert model.backbone.blocks[1].weight.requires_grad
    assert not model.backbone.stem.weight.requires_grad
    assert hook.state_at(1) == "head-only" and hook.state_at(2) == "unfrozen"
