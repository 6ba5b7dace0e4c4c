"""``--ema``: the loop validates, keeps and saves an exponential moving average of the weights."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from transferlab.api import build_config
from transferlab.engine.loop import Trainer, TrainSettings
from transferlab.errors import TransferlabError


def _objective(model, batch):
    inputs, labels = batch
    loss = nn.functional.cross_entropy(model(inputs), labels)
    return {"loss": loss, "parts": {}}


def _train(ema_decay, steps_seen=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    data = TensorDataset(torch.randn(96, 6), torch.randint(0, 3, (96,)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    if steps_seen is not None:  # every weight and buffer after every step
        optimizer.register_step_post_hook(
            lambda *_: steps_seen.append({k: v.detach().clone() for k, v in model.state_dict().items()}))
    trainer = Trainer(model, _objective, optimizer, None, TrainSettings(epochs=1, batch_size=16, progress=False,
                                                                        ema_decay=ema_decay))
    trainer.fit(data, None)
    return model


def test_the_kept_weights_are_the_moving_average_of_every_step():
    steps = []
    raw = _train(None, steps)
    decay = 0.9
    expected = {k: v.clone() for k, v in steps[0].items()}
    for weights in steps[1:]:
        for name, value in weights.items():
            if value.is_floating_point():
                expected[name] = decay * expected[name] + (1 - decay) * value
    averaged = _train(decay).state_dict()
    assert len(steps) == 6
    for name, value in expected.items():
        if value.is_floating_point():  # BatchNorm's running statistics are averaged too
            torch.testing.assert_close(averaged[name], value)
    assert not torch.allclose(averaged["3.weight"], raw.state_dict()["3.weight"])  # not the last weights


@pytest.mark.parametrize("decay", [0, 1, 1.5])
def test_an_ema_decay_outside_0_1_is_refused(decay):
    with pytest.raises(TransferlabError, match="ema"):
        build_config(overrides={"train": "sklearn-digits", "method": "finetune", "ema": decay, "out": "x"})


def test_ema_is_refused_where_nothing_trains_by_gradient_steps():
    with pytest.raises(TransferlabError, match="ema"):
        build_config(overrides={"train": "sklearn-digits", "method": "features", "ema": 0.999, "out": "x"})
