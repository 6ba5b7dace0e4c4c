"""Fast feature extraction with a frozen backbone, and an on-disk cache of the embeddings.

Cache key: the backbone's architecture spec, a digest of its weights, its preprocessing, the precision and the
engine (``torch``, or ``onnx``: `transferlab.engine.onnx_features`), and each image's content digest. A changed
file gets a new digest and is embedded again; an unchanged one is read from the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from transferlab.backbones.base import Backbone
from transferlab.cache_files import read_cache_file, write_cache_file
from transferlab.data.torch_dataset import make_dataset
from transferlab.engine.batches import to_device
from transferlab.engine.distributed import (
    collate_fn_of,
    gather_in_order,
    is_main_process,
    make_loader,
    world_size,
)
from transferlab.engine.inference import predict_logits
from transferlab.engine.onnx_features import OnnxFeatures, choose_feature_engine
from transferlab.engine.precision import autocast
from transferlab.engine.progress import progress_bar
from transferlab.engine.sampling import lengths_of
from transferlab.fileio import cache_root

__all__ = ["FeatureCache", "backbone_fingerprint", "cache_root", "default_num_workers", "extract_features"]

log = logging.getLogger("transferlab")


def default_num_workers(data) -> int:
    """Decoding processes: none for in-memory data (pixels, texts); for files, every core but the one running the
    model."""
    if getattr(data, "paths", None) is None:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


_fingerprints: weakref.WeakKeyDictionary[Backbone, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def backbone_fingerprint(backbone: Backbone) -> str:
    """A digest of what determines the features: architecture spec, preprocessing and every weight tensor.

    Remembered per backbone while its tensors are the same objects at the same version (PyTorch bumps a tensor's
    version on every in-place change), so embedding train, val and test hashes the weights once.
    """
    state = backbone.state_dict(keep_vars=True)
    key = (json.dumps(backbone.spec, sort_keys=True, default=str), json.dumps(backbone.preprocess.to_dict()),
           tuple((name, id(t), t._version) for name, t in state.items()))
    remembered = _fingerprints.get(backbone)
    if remembered is not None and remembered[0] == key:
        return remembered[1]
    fingerprint = _hash_backbone(backbone)
    _fingerprints[backbone] = (key, fingerprint)
    return fingerprint


def _hash_backbone(backbone: Backbone) -> str:
    digest = hashlib.sha1()
    digest.update(json.dumps(backbone.spec, sort_keys=True, default=str).encode())
    digest.update(json.dumps(backbone.preprocess.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Embeddings of one backbone fingerprint, stored as safetensors shards (``digests`` + ``features``).

    Each shard is a `cache_files` file: written atomically and checked against its content digest on read. A shard
    that fails the digest, cannot be read, or holds non-finite features or a different number of rows than keys is
    reported once, deleted and its examples embedded again. A shard is named after the keys it holds, so processes
    embedding the same examples at once write one shard, not copies of it.
    """

    def __init__(self, key: str, root: Path | None = None):
        self.directory = (root or cache_root()) / "features" / key
        self._rows: dict[bytes, torch.Tensor] | None = None

    def _load(self) -> dict[bytes, torch.Tensor]:
        if self._rows is None:
            self._rows = {}
            for shard in sorted(self.directory.glob("shard-*.safetensors")):
                tensors = read_cache_file(shard, check=_shard_problem)
                if tensors is not None:
                    for key, row in zip(tensors["digests"].numpy(), tensors["features"], strict=True):
                        self._rows[key.tobytes()] = row
        return self._rows

    def lookup(self, digests: list[str]) -> list[torch.Tensor | None]:
        rows = self._load()
        return [rows.get(bytes.fromhex(d)) for d in digests]

    def add(self, digests: list[str], features: torch.Tensor) -> None:
        """Store the rows of ``features`` under ``digests`` (one per row); rows with NaN or inf are not stored."""
        if len(digests) != len(features):
            raise ValueError(f"{len(digests)} digests for {len(features)} feature rows")
        if not digests or not is_main_process():
            return
        finite = _finite_rows(features)
        if not finite.all():
            digests = [digest for digest, ok in zip(digests, finite.tolist(), strict=True) if ok]
            features = features[torch.from_numpy(finite)]
            if not digests:
                return
        keys = [bytes.fromhex(d) for d in digests]
        shard = self.directory / f"shard-{hashlib.sha256(b''.join(sorted(keys))).hexdigest()[:32]}.safetensors"
        try:
            write_cache_file(shard, {"digests": torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8)
                                     .view(len(digests), -1), "features": features})
        except OSError as exc:
            log.warning("could not write the feature cache shard %s (the features are not cached): %s", shard, exc)
            return
        rows = self._load()
        for key, row in zip(keys, features, strict=True):
            rows[key] = row


def _shard_problem(tensors: dict[str, torch.Tensor]) -> str | None:
    """Why a shard's tensors cannot be feature rows, or None when they can."""
    keys, features = tensors.get("digests"), tensors.get("features")
    if keys is None or features is None:
        return f"it holds tensors {sorted(tensors)}, not 'digests' and 'features'"
    if keys.dtype != torch.uint8 or keys.dim() != 2 or features.dim() < 2:
        return f"its tensors have shapes digests {tuple(keys.shape)}, features {tuple(features.shape)}"
    if len(keys) != len(features):
        return f"it has {len(features)} feature rows for {len(keys)} keys"
    if not _finite_rows(features).all():
        return "its features contain NaN or infinite values"
    return None


def _finite_rows(features: torch.Tensor) -> np.ndarray:
    """Which rows hold only finite values. In numpy: a small torch op waits for torch's worker threads, which on a
    busy machine took 40-90 ms here instead of 0.2 ms."""
    return np.isfinite(features.detach().cpu().float().flatten(1).numpy()).all(axis=1)


CPU_CHUNK = 8
"""Images per forward pass on CPU: small batches keep a lane's activations in cache (measured fastest here)."""


def _embed(backbone: Backbone, dataset, *, batch_size: int, precision: str, device: torch.device, num_workers: int,
           progress: bool, engine: str = "torch") -> torch.Tensor:
    """Embed every item of ``dataset``: on a single-process CPU run in `_embed_cpu`'s lanes, elsewhere (GPU, or
    sharded under torchrun) through a DataLoader with ``num_workers`` decoding processes. ``engine`` ``onnx``
    (checked by the caller: CPU, one process) runs the lanes' forward passes with onnxruntime."""
    if device.type == "cpu" and world_size() == 1:
        onnx = _onnx_features(backbone, dataset) if engine == "onnx" and len(dataset) else None
        return _embed_cpu(backbone, dataset, batch_size=batch_size, precision=precision, progress=progress, onnx=onnx)
    return _embed_loader(backbone, dataset, batch_size=batch_size, precision=precision, device=device,
                         num_workers=num_workers, progress=progress)


def _onnx_features(backbone: Backbone, dataset) -> OnnxFeatures:
    """The ``onnx`` engine of ``backbone``, exported (once per fingerprint) and checked on the first items."""
    example = _inputs_of(dataset, range(min(2, len(dataset))))
    return OnnxFeatures(backbone, backbone_fingerprint(backbone), example)


def _inputs_of(dataset, positions: Sequence[int]):
    """The model inputs of the items at ``positions``, batched (padded by the dataset's collate where it has one)."""
    collate = collate_fn_of(dataset)
    items = [dataset[p] for p in positions]
    return collate(items)[0] if collate is not None else torch.stack([inputs for inputs, _ in items])


def _embed_cpu(backbone: Backbone, dataset, *, batch_size: int, precision: str, progress: bool,
               onnx: OnnxFeatures | None = None) -> torch.Tensor:
    """One lane (thread) per torch thread; each lane decodes a chunk of images, then embeds it with one torch thread
    (or, given ``onnx``, one onnxruntime thread).

    PIL decoding and torch kernels release the GIL, so decoding overlaps compute on every core without worker
    processes (measured on 2 cores: 1.6x the throughput of a DataLoader with a decoding process).
    """
    chunk = max(1, min(batch_size, CPU_CHUNK))
    order = _longest_first(dataset)
    chunks = [order[start : start + chunk] for start in range(0, len(dataset), chunk)]
    threads = torch.get_num_threads()
    lanes = max(1, min(threads, len(chunks)))
    backbone.eval()
    cpu = torch.device("cpu")

    def embed(positions: Sequence[int]) -> torch.Tensor:
        inputs = _inputs_of(dataset, positions)
        if onnx is not None:
            return onnx(inputs)
        with torch.inference_mode(), autocast(precision, cpu):
            return backbone(to_device(inputs, cpu, channels_last=True)).float()

    torch.set_num_threads(max(1, threads // lanes))  # threads started from here on inherit it
    bar = progress_bar(total=len(dataset), desc="embedding", enabled=progress)
    pool = ThreadPoolExecutor(lanes, thread_name_prefix="transferlab-embed")
    try:
        outputs = []
        for positions, future in [(positions, pool.submit(embed, positions)) for positions in chunks]:
            outputs.append(future.result())
            bar.update(len(positions))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error (a bad file), drop the chunks not started
        bar.close()
        torch.set_num_threads(threads)
    if not outputs:
        return torch.empty(0, backbone.num_features)
    features = torch.empty(len(dataset), outputs[0].shape[1])
    features[torch.as_tensor(order)] = torch.cat(outputs)  # back in dataset order
    return features


def _longest_first(dataset) -> Sequence[int]:
    """The order to embed ``dataset`` in: texts longest first, so each chunk pads little (random chunks of SST-2
    are mostly padding); the dataset's own order for items of one size (images) or unknown lengths (audio)."""
    lengths = lengths_of(dataset)
    if lengths is None:
        return range(len(dataset))
    return sorted(range(len(dataset)), key=lambda i: -lengths[i])


def _embed_loader(backbone: Backbone, dataset, *, batch_size: int, precision: str, device: torch.device,
                  num_workers: int, progress: bool) -> torch.Tensor:
    if len(dataset) == 0:
        return torch.empty(0, backbone.num_features)
    # under torchrun each process embeds its share; every process gets all rows, in order
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, shard=True)
    mine = predict_logits(backbone.to(device), loader, precision, device, "embedding" if progress else None)[0]
    return gather_in_order(mine.cpu(), len(dataset))


def extract_features(
    backbone: Backbone,
    data,
    *,
    batch_size: int = 32,
    precision: str = "fp32",
    device: torch.device | None = None,
    num_workers: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
    engine: str = "torch",
) -> torch.Tensor:
    """Embed every example of ``data`` (`ImageData`, `TextData` or `AudioData`) with the frozen ``backbone``: ``(N, backbone.num_features)`` float32.

    Runs under ``inference_mode`` with channels-last inputs and optional bf16 autocast; only images missing from
    the cache are embedded. On CPU, threads decode and embed small chunks in parallel (``num_workers`` unused); on
    a GPU or under torchrun, ``num_workers`` decoding processes feed ``batch_size`` batches.

    ``engine``: ``torch``, or ``onnx``: the backbone exported once to ONNX and run by onnxruntime (CPU, fp32, one
    process; `transferlab.engine.onnx_features`), cached apart from torch's features; refused in one line
    (`TransferlabError`) where it does not apply. ``auto``: whichever of the two is faster here
    (`transferlab.engine.onnx_features.choose_feature_engine`; callers embedding several datasets in one run
    choose once for all of them and pass the choice).
    """
    device = device or torch.device("cpu")
    engine = choose_feature_engine(engine, backbone, precision, device, world_size(), len(data))
    workers = default_num_workers(data) if num_workers is None else num_workers
    dataset = make_dataset(data, backbone.preprocess)
    if not use_cache:
        return _embed(backbone, dataset, batch_size=batch_size, precision=precision, device=device,
                      num_workers=workers, progress=progress, engine=engine)
    engine_suffix = "" if engine == "torch" else f"-{engine}"  # torch's key as before: its caches stay valid
    cache = FeatureCache(f"{backbone_fingerprint(backbone)[:24]}-{precision}{engine_suffix}")
    digests = [data.content_digest(i) for i in range(len(data))]
    found = cache.lookup(digests)
    missing = [i for i, row in enumerate(found) if row is None]
    log.info("features for %s: %d cached, %d to embed", data.name, len(data) - len(missing), len(missing))
    if missing:
        new = _embed(backbone, Subset(dataset, missing), batch_size=batch_size, precision=precision,
                     device=device, num_workers=workers, progress=progress, engine=engine)
        cache.add([digests[i] for i in missing], new)
        for i, row in zip(missing, new, strict=True):
            found[i] = row
    return torch.stack(found) if found else torch.empty(0, backbone.num_features)
