"""Helpers shared by the benchmark scripts (run as ``python bench/NAME.py``, which puts this folder on the path)."""

from __future__ import annotations

import statistics
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def mean_std(values: list[float], digits: int = 3) -> str:
    """``mean ± sample std`` of ``values`` (std 0 for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"
