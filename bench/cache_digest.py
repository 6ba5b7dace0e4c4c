"""Benchmark: what checking the caches' content digests costs.

Fills a fresh cache with ``fit --method features`` on hymenoptera (the feature shards of train and val, and the
converted EfficientNet-Lite0 weights), then times, as the minimum of ``--repeats`` runs:
  * SHA-256 of each cache file's tensors (`tensors_digest`), and its throughput;
  * reading each file with the check (`read_cache_file`) against a plain safetensors `load_file`;
  * the whole cached re-run of ``fit --method features`` (the number docs/benchmarks.md calls "cached re-run").

Usage:  python bench/cache_digest.py [--data ../shared/data/hymenoptera] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from _common import DATA, machine_line
from safetensors.torch import load_file

from transferlab.api import build_config, fit
from transferlab.cache_files import read_cache_file, tensors_digest


def best_of(repeats: int, step) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA / "hymenoptera"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    print(machine_line())
    print(next((line.strip() for line in cpu.splitlines() if line.startswith("Model name")), "CPU model unknown"))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TRANSFERLAB_CACHE"] = str(Path(tmp) / "cache")

        def features_run(attempt: int) -> None:
            fit(build_config(overrides={"train": args.data, "method": "features", "out": Path(tmp) / f"run{attempt}"}),
                progress=False)

        features_run(0)
        files = sorted((Path(tmp) / "cache").rglob("*.safetensors"))
        total_hash = total_read = total_plain = 0.0
        for path in files:
            tensors = load_file(str(path))
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            hashing = best_of(args.repeats, lambda: tensors_digest(tensors))
            checked = best_of(args.repeats, lambda: read_cache_file(path))
            plain = best_of(args.repeats, lambda: load_file(str(path)))
            total_hash, total_read, total_plain = total_hash + hashing, total_read + checked, total_plain + plain
            print(f"{path.parent.name[:12]}/{path.name[:22]}: {size / 1e6:6.2f} MB, sha256 {hashing * 1e3:6.2f} ms "
                  f"({size / hashing / 1e9:.2f} GB/s); read with check {checked * 1e3:6.2f} ms, "
                  f"plain load_file {plain * 1e3:6.2f} ms")
        print(f"all {len(files)} files: sha256 {total_hash * 1e3:.1f} ms; read with check {total_read * 1e3:.1f} ms "
              f"vs plain {total_plain * 1e3:.1f} ms (+{(total_read - total_plain) * 1e3:.1f} ms)")
        attempts = iter(range(1, 10 ** 6))
        rerun = best_of(args.repeats, lambda: features_run(next(attempts)))
        print(f"cached re-run of fit --method features: {rerun:.3f} s (best of {args.repeats})")


if __name__ == "__main__":
    main()
