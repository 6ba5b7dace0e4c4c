"""Mixed precision on CPU and GPU: bf16 autocast where the hardware runs it fast, fp32 otherwise."""

from __future__ import annotations

import contextlib
import functools

import torch

from transferlab.engine.distributed import local_rank

__all__ = ["autocast", "default_device", "resolve_precision"]


def default_device() -> torch.device:
    """The GPU of this process's local rank (torchrun) when there are GPUs, else the CPU."""
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


@functools.lru_cache(maxsize=1)
def _cpu_has_fast_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``"auto"`` into ``"bf16"`` or ``"fp32"`` for this device; pass explicit choices through."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if _cpu_has_fast_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    """A context manager running the forward pass in ``precision`` (already resolved) on ``device``."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
