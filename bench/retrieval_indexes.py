"""Benchmark: FAISS index kinds behind ``transferlab index``, and ``transferlab embed`` throughput.

1. Indexes (`transferlab.unsupervised.index.build_index`, the code ``transferlab index`` runs) over
   (a) real embeddings: MNIST train + test (70,000 digits) through EfficientNet-Lite0 at 32 px, and
   (b) synthetic vectors: 200,000 x 384 (MiniLM's width) drawn around 2,000 Gaussian centres, since the real data
       here has fewer than 100,000 examples.
   For flat (exact), hnsw and ivf: build seconds, query latency p50 / p99 of single queries (1,000 held-out
   queries, k = 10, one thread as a serving process would), batch queries/s, recall@10 against exact search.
2. ``embed`` throughput on hymenoptera (397 photos): `embed_data` with an empty cache against the plain PyTorch loop
   of ``bench/feature_throughput.py`` (fp32, ``no_grad``, batch 32), images/s and their ratio; and a rerun of
   ``embed`` served from the cache.

Run alone on the machine (timings). Usage:  python bench/retrieval_indexes.py [--skip-mnist] [--synthetic 200000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from _common import DATA, cpu_model, machine_line
from feature_throughput import plain_loop

from transferlab.backbones import create_backbone
from transferlab.data import load_splits
from transferlab.unsupervised import BackboneSource, embed_data
from transferlab.unsupervised.index import INDEX_KINDS, build_index
from transferlab.unsupervised.projection import l2_normalise


def index_rows(name: str, gallery: np.ndarray, queries: np.ndarray) -> None:
    gallery, queries = l2_normalise(gallery), l2_normalise(queries)
    exact = faiss.IndexFlatIP(gallery.shape[1])
    exact.add(gallery)
    _, truth = exact.search(queries, 10)
    print(f"\n{name}: {len(gallery):,} x {gallery.shape[1]} gallery, {len(queries):,} queries, k = 10")
    print("| kind | parameters | build s | p50 ms | p99 ms | batch queries/s | recall@10 vs exact |")
    print("|---|---|---|---|---|---|---|")
    for kind in INDEX_KINDS:
        started = time.perf_counter()
        index, params = build_index(gallery, kind)
        build = time.perf_counter() - started
        faiss.omp_set_num_threads(1)
        latencies = []
        for query in queries:
            started = time.perf_counter()
            index.search(query[None], 10)
            latencies.append((time.perf_counter() - started) * 1000)
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        started = time.perf_counter()
        _, found = index.search(queries, 10)
        batch = len(queries) / (time.perf_counter() - started)
        recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
        p50, p99 = np.percentile(latencies, [50, 99])
        described = ", ".join(f"{key} {value}" for key, value in params.items()) or "exact"
        print(f"| {kind} | {described} | {build:.2f} | {p50:.3f} | {p99:.3f} | {batch:,.0f} | {recall:.4f} |")


def mnist_embeddings() -> np.ndarray:
    started = time.perf_counter()
    embeddings = embed_data(f"mnist:{DATA / 'mnist'}", BackboneSource("efficientnet_lite0", image_size=32),
                            progress=False)
    seconds = time.perf_counter() - started
    print(f"embedded MNIST ({len(embeddings):,} digits, EfficientNet-Lite0 at 32 px, {embeddings.info['precision']}) in "
          f"{seconds:.0f} s: {len(embeddings) / seconds:.0f} images/s")
    return embeddings.vectors


def synthetic(n: int, dim: int = 384, centres: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim)).astype(np.float32)
    return means[rng.integers(0, centres, n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)


def embed_throughput() -> None:
    spec = str(DATA / "hymenoptera")
    data = [split for split in load_splits(spec).values()]
    count = sum(len(split) for split in data)
    backbone = create_backbone("efficientnet_lite0")
    plain_seconds = sum(plain_loop(backbone, split)[1] for split in data)
    started = time.perf_counter()
    embeddings = embed_data(spec, BackboneSource("efficientnet_lite0"), progress=False)
    embed_seconds = time.perf_counter() - started
    started = time.perf_counter()
    embed_data(spec, BackboneSource("efficientnet_lite0"), progress=False)
    cached_seconds = time.perf_counter() - started
    print(f"\nembed throughput, hymenoptera ({count} photos, EfficientNet-Lite0 at 224 px):")
    print(f"  plain PyTorch loop (fp32, no_grad, batch 32): {count / plain_seconds:.1f} images/s")
    print(f"  transferlab embed ({embeddings.info['precision']}, empty cache): {count / embed_seconds:.1f} images/s "
          f"({plain_seconds / embed_seconds:.2f}x the plain loop)")
    print(f"  transferlab embed again (served from the cache): {cached_seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--synthetic", type=int, default=200_000)
    args = parser.parse_args()
    print(machine_line())
    print(f"CPU: {cpu_model()}; faiss {faiss.__version__}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TRANSFERLAB_CACHE"] = str(Path(tmp) / "cache")  # empty: every embedding is computed
        embed_throughput()
        if not args.skip_mnist:
            vectors = mnist_embeddings()
            index_rows("MNIST train + test through EfficientNet-Lite0", vectors[1000:], vectors[:1000])
    vectors = synthetic(args.synthetic + 1000)
    index_rows("synthetic Gaussian mixture", vectors[1000:], vectors[:1000])


if __name__ == "__main__":
    main()
