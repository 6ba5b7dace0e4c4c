"""Load a local weights file (safetensors or a plain torch state dict) into a module, safely and loudly; keep
converted weights in the cache."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from transferlab.cache_files import read_cache_file, write_cache_file
from transferlab.errors import TransferlabError

__all__ = ["cached_conversion", "load_weights_file", "read_state_dict"]

logger = logging.getLogger("transferlab")

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
# Checkpoints often wrap the state dict: {"state_dict": ...} (Lightning, many repos) or {"model": ...} (timm, DeiT).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
# Top-level names of classification heads; such keys are dropped quietly when the backbone has no such module.
HEAD_NAMES = frozenset({"fc", "classifier", "head", "heads", "last_linear", "_fc"})
# A transferlab run directory's weights: "backbone.*" and "head.*" keys; the backbone part is what loads here.
RUN_WEIGHTS = "model.safetensors"
RUN_BACKBONE_PREFIX = "backbone."


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or ``.pth``/``.pt``/``.bin`` without unpickling arbitrary objects.

    Torch files are read with ``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` or ``{"model": ...}``
    wrapper is unwrapped and a ``module.`` prefix (from DistributedDataParallel) is stripped. A transferlab run
    directory (or its ``model.safetensors``) gives its backbone's weights, so a run can start another one.

    Raises:
        TransferlabError: naming the file, when it is missing, of an unknown type, unreadable, or not a state dict.
    """
    path = Path(path)
    if path.is_dir() and (path / RUN_WEIGHTS).is_file():  # a transferlab run directory
        path = path / RUN_WEIGHTS
    if not path.is_file():
        raise TransferlabError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise TransferlabError(f"could not read safetensors weights file {path}: {err}") from err
    elif suffix in TORCH_SUFFIXES:
        state = _unwrap(_torch_load(path), path)
    else:
        raise TransferlabError(
            f"unsupported weights file type '{suffix}' for {path}; "
            f"use .safetensors or one of {', '.join(TORCH_SUFFIXES)}"
        )
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if any(key.startswith(RUN_BACKBONE_PREFIX) for key in state):  # a transferlab model: keep its backbone
        state = {key.removeprefix(RUN_BACKBONE_PREFIX): value for key, value in state.items()
                 if key.startswith(RUN_BACKBONE_PREFIX)}
    return state


def load_weights_file(module: nn.Module, path: str | Path) -> None:
    """Copy the tensors of a weights file into ``module``, matching by name and checking shapes.

    Keys are matched directly, or with the module's first-level prefix added (a timm/torchvision file into a
    transferlab backbone that wraps the model as ``model``) or a common first-level prefix removed. Classifier
    keys (``fc``, ``classifier``, ``head``, ...) the module does not have are dropped and logged at info level;
    other missing and unexpected keys are logged as warnings.

    Args:
        module: the module to load into (a `Backbone` or a plain ``nn.Module``).
        path: the weights file.

    Raises:
        TransferlabError: naming the file, when it cannot be read, a tensor's shape differs from the module's, or
            none of its keys match the module.
    """
    state = read_state_dict(path)
    target = module.state_dict()
    names = _align_keys(list(state), target)  # module key -> file key
    matched = [key for key in names if key in target]
    if not matched:
        raise TransferlabError(
            f"weights file {path} does not fit this architecture: none of its {len(state)} keys "
            f"({_few(state)}) match the model's ({_few(target)})"
        )
    wrong = [key for key in matched if state[names[key]].shape != target[key].shape]
    if wrong:
        details = ", ".join(
            f"{names[key]}: file {tuple(state[names[key]].shape)} vs model {tuple(target[key].shape)}"
            for key in wrong[:3]
        )
        raise TransferlabError(
            f"weights file {path} does not fit this architecture: {len(wrong)} tensors have other shapes ({details})"
        )
    unexpected = [names[key] for key in names if key not in target]
    heads = [key for key in unexpected if HEAD_NAMES.intersection(key.split("."))]
    unexpected = [key for key in unexpected if key not in heads]
    missing = [key for key in target if key not in names and not key.endswith("num_batches_tracked")]
    if heads:
        logger.info("dropped %d classifier keys of %s: %s", len(heads), path, _few(heads))
    if unexpected:
        logger.warning("ignored %d keys of %s the model does not have: %s", len(unexpected), path, _few(unexpected))
    if missing:
        logger.warning("%s lacks %d model keys (kept as initialised): %s", path, len(missing), _few(missing))
    module.load_state_dict({key: state[names[key]] for key in matched}, strict=False)


def cached_conversion(
    path: Path, convert: Callable[[], dict[str, torch.Tensor]], expected: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Weights converted once by ``convert()`` and kept at ``path`` (in the cache) for the next time.

    The cached file is a `cache_files` file: its content digest is checked on read, and one that fails it, cannot be
    read, or whose tensors differ in names or shapes from ``expected`` (the model's state dict) is reported with a
    warning naming it and converted again. A cache that cannot be written only costs the conversion next time.
    """
    def problem(state: dict[str, torch.Tensor]) -> str | None:
        if {k: v.shape for k, v in state.items()} != {k: v.shape for k, v in expected.items()}:
            return "its tensors do not match the model's names and shapes"
        return None

    state = read_cache_file(path, check=problem)
    if state is not None:
        return state
    state = convert()
    try:
        write_cache_file(path, state)
    except OSError as exc:
        logger.debug("could not cache converted weights at %s: %s", path, exc)
    return state


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise TransferlabError(
            f"{path} is not a plain weights file: it holds pickled Python objects, which transferlab does not "
            "unpickle (torch.load weights_only=True). Save a state dict, torch.save(model.state_dict(), path), "
            "or a .safetensors file"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise TransferlabError(f"could not read weights file {path}: {err}") from err


def _unwrap(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((obj[key] for key in WRAPPER_KEYS if isinstance(obj.get(key), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        found = f"a {type(obj).__name__}"
        if isinstance(obj, Mapping):
            bad = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
            found = f"a dict whose value at {bad[0]!r} is a {type(obj[bad[0]]).__name__}" if bad else "an empty dict"
        raise TransferlabError(f"{path} is not a state dict of tensors (found {found})")
    return obj


def _is_tensor_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in obj.items())


def _align_keys(keys: list[str], target: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Map module keys to file keys: as they are, with a module prefix added, or with a shared prefix removed.

    Returns the renaming that matches the most keys of ``target`` (the plain one on ties).
    """
    candidates = [{key: key for key in keys}]
    for prefix in sorted({key.split(".", 1)[0] + "." for key in target if "." in key}):
        candidates.append({prefix + key: key for key in keys})
    if len({key.split(".", 1)[0] for key in keys}) == 1 and all("." in key for key in keys):
        candidates.append({key.split(".", 1)[1]: key for key in keys})
    return max(candidates, key=lambda candidate: sum(key in target for key in candidate))


def _few(keys: Iterable[str], n: int = 4) -> str:
    keys = list(keys)
    more = f", ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
