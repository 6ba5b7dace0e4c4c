"""The unsupervised domain-adaptation methods: each one settings model, one loss factory and one registry entry.

Every method trains with `transferlab.methods.adaptation.train.train_adaptation` (source cross-entropy plus
``trade_off`` times its loss, checkpoint chosen without target labels); they differ in the loss and its settings.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from pydantic import BaseModel, Field

from transferlab.config import (
    AugmentSettings,
    ExampleSettings,
    FinetuneSettings,
    FitConfig,
    HeadSettings,
    LabelSettings,
    PretrainedSettings,
    SplitSettings,
    TrainingSettings,
)
from transferlab.methods.adaptation.modules import (
    CDANLoss,
    CORALLoss,
    DANLoss,
    DANNLoss,
    MCCLoss,
    MDDLoss,
    SelfTrainingLoss,
)
from transferlab.methods.adaptation.selection import DEFAULT_SCORER, SCORERS
from transferlab.methods.adaptation.train import (
    LossFactory,
    prepare_adaptation_splits,
    train_adaptation,
)
from transferlab.methods.base import MethodSpec, register_method

__all__ = ["ADAPTATION_METHODS", "ADAPTATION_RECIPE", "AdaptationConfig"]

# the bottleneck head of TLlib / CDAN / MDD / MCC code (linear + batch norm over both domains + ReLU, 256 features the
# losses align); on MNIST -> USPS it lifted CDAN from 90.8 to 93.7 % (docs/benchmarks.md)
ADAPTATION_RECIPE = {"head": "bottleneck", "head_hidden": [256]}


class AdaptationConfig(FitConfig, SplitSettings, LabelSettings, ExampleSettings, PretrainedSettings, HeadSettings,
                       TrainingSettings, AugmentSettings, FinetuneSettings):
    """``source-only``, and what every adaptation method takes: labeled --source, unlabeled --target, and the
    label-free checkpoint scorer."""

    source: str = Field(description="labeled source-domain data spec (split into train and validation unless --val)")
    target: str = Field(description="target-domain data; labels, if any, are used only for reporting")
    selection: Literal[SCORERS] = Field(
        DEFAULT_SCORER, description="label-free checkpoint scorer: source-accuracy, dev, iwv, entropy, snd; 'oracle' "
        "reads target labels (reported as an oracle run)"
    )
    selection_samples: int = Field(2000, ge=10, description="target examples the scorers use each epoch (a sample)")
    selection_all_scorers: bool = Field(
        False, description="log every label-free scorer each epoch, to compare their picks afterwards; iwv and dev fit "
        "a domain classifier every epoch, so by default they run only when --selection chooses one of them"
    )
    steps_per_epoch: int | None = Field(None, ge=1,
                                        description="steps per epoch; default: one pass over the larger domain")


class _TradeOff(BaseModel):
    trade_off: float = Field(1.0, ge=0, description="weight of the adaptation loss: CE_source + trade_off * L_adapt")


class _Discriminator(BaseModel):
    discriminator_hidden: int = Field(1024, ge=1, description="hidden width of DANN/CDAN discriminators, MDD's head")


class DANNConfig(AdaptationConfig, _TradeOff, _Discriminator):
    pass


class CDANConfig(DANNConfig):
    cdan_entropy: bool = Field(True, description="CDAN+E: weight confident examples more in the discriminator loss")


class StatisticsConfig(AdaptationConfig, _TradeOff):
    """DAN and CORAL: distribution statistics, no settings of their own."""


class MCCConfig(AdaptationConfig, _TradeOff):
    mcc_temperature: float = Field(2.5, gt=0, description="temperature of MCC's softmax")


class MDDConfig(AdaptationConfig, _TradeOff, _Discriminator):
    mdd_margin: float = Field(4.0, gt=0, description="margin gamma of MDD")


class SelfTrainingConfig(AdaptationConfig, _TradeOff):
    pseudo_label_threshold: float = Field(0.9, gt=0, lt=1, description="self-training: minimum confidence")
    consistency: bool = Field(False, description="self-training: pseudo-labels from plain, loss on augmented views")


def _register(name: str, summary: str, settings: type[AdaptationConfig], make_loss: LossFactory) -> str:
    register_method(MethodSpec(name, summary, settings, prepare_adaptation_splits,
                               partial(train_adaptation, make_loss=make_loss), ADAPTATION_RECIPE))
    return name


ADAPTATION_METHODS = (
    _register("source-only", "adaptation baseline: source cross-entropy alone, same loop and selection",
              AdaptationConfig, lambda config, features, classes: None),
    _register("dann", "domain-adversarial training (Ganin et al. 2016)", DANNConfig,
              lambda config, features, classes: DANNLoss(features, config.discriminator_hidden)),
    _register("cdan", "conditional adversarial adaptation (Long et al. 2018)", CDANConfig,
              lambda config, features, classes: CDANLoss(features, classes, config.discriminator_hidden,
                                                         config.cdan_entropy)),
    _register("dan", "multi-kernel MMD between domains (Long et al. 2015)", StatisticsConfig,
              lambda config, features, classes: DANLoss()),
    _register("coral", "correlation alignment (Sun & Saenko 2016)", StatisticsConfig,
              lambda config, features, classes: CORALLoss()),
    _register("mcc", "minimum class confusion (Jin et al. 2020)", MCCConfig,
              lambda config, features, classes: MCCLoss(config.mcc_temperature)),
    _register("mdd", "margin disparity discrepancy (Zhang et al. 2019)", MDDConfig,
              lambda config, features, classes: MDDLoss(features, classes, config.discriminator_hidden,
                                                        config.mdd_margin)),
    _register("self-training", "confident pseudo-labels on the target (optionally on augmented views)",
              SelfTrainingConfig, lambda config, features, classes: SelfTrainingLoss(config.pseudo_label_threshold)),
)
