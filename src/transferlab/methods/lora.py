"""LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) through PEFT.

Every adapted weight ``W`` (``d_out x d_in``) of the pretrained backbone stays frozen and gains a trainable low-rank
update: ``h = W x + (alpha / r) * B A x`` with ``A`` (``r x d_in``, random) and ``B`` (``d_out x r``, zeros at the
start), so training starts from the pretrained function. Only the ``A``/``B`` matrices and the new head train.

At the end the updates are merged into the weights (``W <- W + (alpha / r) B A``): the returned model has exactly
the backbone's original modules and parameter names, so its run directory loads without PEFT. With
``--lora-save adapter`` the adapter alone (PEFT format) and the head are also written to ``RUN_DIR/adapter``; to
rebuild the model from them, wrap a freshly created pretrained backbone::

    from peft import PeftModel
    backbone = PeftModel.from_pretrained(create_backbone(name), run_dir / "adapter").merge_and_unload()

During training the adapters live inside the backbone (PEFT layers replace the targeted ones in place), so the
Trainer's checkpoints hold the LoRA keys, and ``--resume`` adds the same adapters before loading them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator
from safetensors.torch import save_file
from torch import nn

from transferlab.config import (
    AugmentSettings,
    ExampleSettings,
    FitConfig,
    HeadSettings,
    LabelSettings,
    PretrainedSettings,
    TrainDataSettings,
    TrainingSettings,
    parse_list,
)
from transferlab.data.torch_dataset import make_dataset
from transferlab.engine.distributed import is_main_process, steps_per_epoch
from transferlab.engine.loop import Trainer
from transferlab.engine.optim import build_optimizer, build_scheduler
from transferlab.errors import TransferlabError
from transferlab.fileio import atomic_path
from transferlab.methods.base import (
    MethodResult,
    MethodSpec,
    RunContext,
    Splits,
    register_method,
    train_settings,
)
from transferlab.methods.finetune import build_model
from transferlab.methods.losses import ClassificationObjective
from transferlab.methods.splits import prepare_labeled_splits
from transferlab.models import TransferModel

if TYPE_CHECKING:  # peft imports transformers (about a second): imported only when a LoRA run starts
    from peft import PeftModel

__all__ = [
    "ATTENTION_TARGETS",
    "LoraConfig",
    "train_lora",
    "add_lora",
    "default_lora_targets",
    "check_lora_targets",
    "lora_parameter_counts",
    "save_adapter",
    "merge_lora",
]

log = logging.getLogger("transferlab")

# attention projections LoRA adapts by default, by module name, in order of preference: BERT-like encoders,
# DistilBERT, wav2vec2/HuBERT/CLIP-style encoders (separate q/k/v projections), timm ViTs (one fused projection)
ATTENTION_TARGETS: tuple[tuple[str, ...], ...] = (
    ("query", "value"), ("q_lin", "v_lin"), ("q_proj", "v_proj"), ("qkv",),
)
ADAPTABLE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)  # layer types PEFT's LoRA wraps
ADAPTER_DIR = "adapter"
HEAD_WEIGHTS = "head.safetensors"


class LoraConfig(FitConfig, TrainDataSettings, LabelSettings, ExampleSettings, PretrainedSettings, HeadSettings,
                 TrainingSettings, AugmentSettings):
    """``lora``: low-rank adapters on the frozen pretrained backbone; the adapters and the head train (no freezing
    or L2-SP settings: nothing else trains)."""

    lora_r: int = Field(8, ge=1, description="rank r of the LoRA update")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha (the update is scaled by alpha / r)")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA branch")
    lora_targets: list[str] | None = Field(
        None, description="module names to adapt (e.g. query,value); default: the backbone's attention projections"
    )
    lora_save: Literal["merged", "adapter"] = Field(
        "merged", description="'merged': adapters folded into the weights (loads without PEFT); 'adapter': also save "
        "the adapter alone (adapter/ in the run directory)"
    )

    @field_validator("lora_targets", mode="before")
    @classmethod
    def _parse_lora_targets(cls, value):
        names = parse_list(value)
        if isinstance(value, str) and not names:
            raise ValueError("lora_targets must name at least one module, e.g. 'query,value'")
        return names


def _matches(module_name: str, target: str) -> bool:
    """PEFT's rule for a list of target names: the full module name, or its last dotted parts."""
    return module_name == target or module_name.endswith(f".{target}")


def _adaptable_names(backbone: nn.Module) -> list[str]:
    return [name for name, module in backbone.named_modules() if name and isinstance(module, ADAPTABLE_LAYERS)]


def _some_layer_names(backbone: nn.Module, limit: int = 12) -> str:
    """A few distinct short names (last two dotted parts) of the Linear/Conv/Embedding modules, for messages."""
    short = dict.fromkeys(".".join(name.split(".")[-2:]) for name in _adaptable_names(backbone))
    listed = list(short)[:limit]
    return ", ".join(listed) + (", ..." if len(short) > limit else "") if listed else "none"


def default_lora_targets(backbone: nn.Module) -> list[str]:
    """The attention projections of ``backbone`` that LoRA adapts when ``--lora-targets`` is not given.

    The first set of `ATTENTION_TARGETS` whose every name matches a Linear module of the backbone: ``query,value``
    for BERT-like text encoders, ``q_lin,v_lin`` for DistilBERT, ``q_proj,v_proj`` for wav2vec2-style audio
    encoders, ``qkv`` for timm ViTs.

    Raises:
        TransferlabError: when the backbone has none of them (e.g. a CNN): LoRA then needs ``--lora-targets``.
    """
    layers = _adaptable_names(backbone)
    for names in ATTENTION_TARGETS:
        if all(any(_matches(layer, name) for layer in layers) for name in names):
            return list(names)
    known = "; ".join(",".join(names) for names in ATTENTION_TARGETS)
    name = getattr(backbone, "spec", {}).get("name", type(backbone).__name__)
    raise TransferlabError(
        f"LoRA needs --lora-targets for backbone '{name}': it has none of the attention projections LoRA adapts by "
        f"default ({known}); its Linear/Conv modules include: {_some_layer_names(backbone)}"
    )


def check_lora_targets(backbone: nn.Module, targets: list[str]) -> None:
    """Check that every target names at least one module of ``backbone`` that LoRA can adapt.

    Raises:
        TransferlabError: naming the first target that matches no module, or only modules LoRA cannot wrap
            (e.g. a whole attention block), with the backbone's Linear/Conv module names to choose from.
    """
    modules = dict(backbone.named_modules())
    for target in targets:
        matched = [module for name, module in modules.items() if name and _matches(name, target)]
        if not matched:
            raise TransferlabError(
                f"LoRA target '{target}' matches no module of the backbone; choose among its Linear/Conv modules: "
                f"{_some_layer_names(backbone)}"
            )
        if not any(isinstance(module, ADAPTABLE_LAYERS) for module in matched):
            kinds = ", ".join(sorted({type(module).__name__ for module in matched}))
            raise TransferlabError(
                f"LoRA target '{target}' names {kinds} modules, which LoRA cannot adapt (it adapts Linear, Conv and "
                f"Embedding layers); choose among: {_some_layer_names(backbone)}"
            )


def add_lora(model: TransferModel, *, r: int, alpha: float, dropout: float, targets: list[str] | None) -> "PeftModel":
    """Insert LoRA adapters into ``model.backbone`` in place and freeze every other backbone parameter.

    The backbone keeps its place in ``model`` (its forward is unchanged); the targeted layers become PEFT LoRA
    layers, so parameter names gain ``.base_layer`` and ``.lora_A.default``/``.lora_B.default`` parts until
    `merge_lora`. The head is not touched (it stays trainable).

    Args:
        model: a `TransferModel`.
        r: rank of the updates.
        alpha: scaling; the update is multiplied by ``alpha / r``.
        dropout: dropout on the input of the LoRA branch.
        targets: module names to adapt (PEFT matching: a full name or its last dotted parts); ``None``: the
            backbone's attention projections (`default_lora_targets`).

    Returns:
        the PEFT wrapper of the backbone, kept outside ``model``: for `save_adapter` and `merge_lora`.

    Raises:
        TransferlabError: for targets that match nothing LoRA can adapt, or no targets found by default.
    """
    import peft

    backbone = model.backbone
    targets = list(targets) if targets is not None else default_lora_targets(backbone)
    check_lora_targets(backbone, targets)
    settings = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    try:
        return peft.get_peft_model(backbone, settings)
    except ValueError as err:  # PEFT refuses a layer type it cannot wrap
        raise TransferlabError(f"PEFT cannot add LoRA to targets {', '.join(targets)}: {err}") from err


def lora_parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts of ``model``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_adapter(adapted: "PeftModel", head: nn.Module, path: Path) -> Path:
    """Write the adapter alone in PEFT's format (``adapter_config.json``, ``adapter_model.safetensors``) and the
    head's weights (``head.safetensors``) to ``path``; call before `merge_lora`. Returns ``path``."""
    path = Path(path)
    adapted.save_pretrained(str(path))
    with atomic_path(path / HEAD_WEIGHTS) as tmp:
        save_file({name: value.detach().cpu().contiguous() for name, value in head.state_dict().items()}, str(tmp))
    return path


def merge_lora(adapted: "PeftModel") -> nn.Module:
    """Fold every update into its base weight (``W <- W + (alpha / r) B A``) and put the original layers back.

    The backbone then has its original modules and parameter names again (a run directory of it loads without
    PEFT); its parameters are made trainable again, as in a freshly loaded model. Returns the backbone.
    """
    backbone = adapted.merge_and_unload()
    backbone.requires_grad_(True)
    return backbone


def train_lora(config: LoraConfig, splits: Splits, context: RunContext) -> MethodResult:
    """Train LoRA adapters on the pretrained backbone and a new head through the shared loop; merge at the end.

    ``MethodResult.metrics["lora"]`` holds the rank, alpha, targets, trainable and total parameter counts (during
    training, adapters included) and, with ``--lora-save adapter``, where the adapter was written.
    """
    pretrained = config.pretrained or config.weights is not None
    if not pretrained:
        log.warning("LoRA on a randomly initialised backbone: the frozen base weights are random, so the low-rank "
                    "updates adapt nothing learned; use pretrained weights (or --method scratch)")
    model = build_model(config, splits.classes, pretrained=pretrained)
    targets = config.lora_targets or default_lora_targets(model.backbone)
    # before the Trainer: a --resume checkpoint holds the LoRA keys
    adapted = add_lora(model, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout, targets=targets)
    summary = _summary(model, targets, config)

    groups = [
        {"name": "lora", "params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": config.lr},
        {"name": "head", "params": [p for p in model.head.parameters() if p.requires_grad], "lr": config.lr},
    ]
    optimizer = build_optimizer(config.optimizer, groups, config.weight_decay)
    steps = config.epochs * steps_per_epoch(len(splits.train), config.batch_size)
    scheduler = build_scheduler(config, optimizer, steps)
    train_data = make_dataset(splits.train, model.preprocess, train=True, augment=config.augment)
    val_data = make_dataset(splits.val, model.preprocess) if splits.val is not None else None
    trainer = Trainer(model, ClassificationObjective(), optimizer, scheduler, train_settings(config, context))
    history = trainer.fit(train_data, val_data, resume=config.resume)

    if config.lora_save == "adapter" and is_main_process():
        summary["adapter"] = str(save_adapter(adapted, model.head, context.run_dir / ADAPTER_DIR))
        log.info("LoRA adapter and head saved to %s", summary["adapter"])
    merge_lora(adapted)
    return MethodResult(model=model, history=history, metrics={"lora": summary})


def _summary(model: TransferModel, targets: list[str], config: LoraConfig) -> dict:
    """The ``metrics["lora"]`` entry (logged too): settings and parameter counts with the adapters in place."""
    trainable, total = lora_parameter_counts(model)
    log.info("LoRA r=%d alpha=%g on %s: %s of %s parameters train (%.2f%%)", config.lora_r, config.lora_alpha,
             ",".join(targets), f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout, "targets": list(targets),
            "trainable_parameters": trainable, "total_parameters": total}


register_method(MethodSpec("lora", "low-rank adapters (PEFT) on the frozen pretrained backbone + a new head", LoraConfig,
                           prepare_labeled_splits, train_lora))
