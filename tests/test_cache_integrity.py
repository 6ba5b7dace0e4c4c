"""The feature cache and the converted-weights cache never hand back damaged data: a shard or weights file that fails
its content digest, is unreadable, holds non-finite features or fewer rows than keys is reported once (naming the
file), dropped and recomputed."""

import json
import logging
import os
import random
import struct
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from transferlab.backbones import create_backbone
from transferlab.data import load_data
from transferlab.embeddings import FeatureCache, extract_features
from transferlab.fileio import cache_root


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("efficientnet_lite0", image_size=32)


@pytest.fixture(scope="module")
def digits():
    return load_data("sklearn-digits", split_preference=("all",)).subset(np.arange(24))


@pytest.fixture(scope="module")
def reference(backbone, digits):
    return extract_features(backbone, digits, use_cache=False, progress=False)


def shards() -> list:
    return sorted((cache_root() / "features").glob("*/shard-*.safetensors"))


def zero_tensor(path, name: str) -> None:
    """Overwrite one tensor's bytes with zeros, leaving the safetensors header intact."""
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    begin, end = json.loads(data[8:start])[name]["data_offsets"]
    data[start + begin:start + end] = bytes(end - begin)
    path.write_bytes(bytes(data))


def warnings_naming(caplog, path) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and str(path) in r.getMessage()]


def test_zeroed_features_in_a_shard_are_detected_and_recomputed(backbone, digits, reference, caplog):
    extract_features(backbone, digits, progress=False)
    [shard] = shards()
    zero_tensor(shard, "features")
    with caplog.at_level(logging.INFO, logger="transferlab"):
        again = extract_features(backbone, digits, progress=False)
        third = extract_features(backbone, digits, progress=False)
    torch.testing.assert_close(again, reference)
    torch.testing.assert_close(third, reference)
    assert len(warnings_naming(caplog, shard)) == 1  # once, naming the shard
    assert any("0 cached, 24 to embed" in r.getMessage() for r in caplog.records)


def test_zeroed_converted_weights_are_detected_and_converted_again(caplog):
    fresh = create_backbone("efficientnet_lite0").state_dict()
    [converted] = (cache_root() / "weights").glob("*.safetensors")
    zero_tensor(converted, "conv_stem.weight")
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        again = create_backbone("efficientnet_lite0").state_dict()
        create_backbone("efficientnet_lite0")
    for key, value in fresh.items():
        torch.testing.assert_close(again[key], value, rtol=0, atol=0)
    assert len(warnings_naming(caplog, converted)) == 1
    from transferlab.cache_files import read_cache_file

    assert read_cache_file(converted) is not None  # rewritten whole


@pytest.mark.parametrize("seed", range(6))
def test_randomly_damaged_shard_bytes_never_reach_the_features(backbone, digits, reference, seed):
    extract_features(backbone, digits, progress=False)
    [shard] = shards()
    data = bytearray(shard.read_bytes())
    rng = random.Random(seed)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    shard.write_bytes(bytes(data))
    torch.testing.assert_close(extract_features(backbone, digits, progress=False), reference)


@pytest.mark.parametrize("how", ["truncated", "empty", "not safetensors"])
def test_unreadable_shard_is_recomputed(backbone, digits, reference, how, caplog):
    extract_features(backbone, digits, progress=False)
    [shard] = shards()
    data = shard.read_bytes()
    shard.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "not safetensors": b"garbage"}[how])
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        torch.testing.assert_close(extract_features(backbone, digits, progress=False), reference)
    assert len(warnings_naming(caplog, shard)) == 1


def write_shard(path, tensors: dict, *, digest: bool) -> None:
    """A shard as an older transferlab wrote it (no digest), or with a valid digest over wrong contents."""
    if digest:
        from transferlab import cache_files  # imported here so the other tests also run against the old cache

        cache_files.write_cache_file(path, tensors)
    else:
        save_file(tensors, str(path))


@pytest.mark.parametrize("digest", [False, True], ids=["legacy", "digested"])
@pytest.mark.parametrize("fault", ["fewer rows than keys", "nan", "inf"])
def test_inconsistent_shard_is_dropped_and_recomputed(backbone, digits, reference, tmp_path, fault, digest, caplog):
    key = "k" * 20
    directory = FeatureCache(key, root=tmp_path).directory
    directory.mkdir(parents=True)
    keys = torch.from_numpy(np.frombuffer(b"".join(bytes.fromhex(digits.content_digest(i)) for i in range(24)),
                                          dtype=np.uint8).copy()).view(24, -1)
    features = reference.clone()
    if fault == "fewer rows than keys":
        features = features[:20]
    else:
        features[3, 5] = float(fault)
    shard = directory / "shard-bad.safetensors"
    write_shard(shard, {"digests": keys, "features": features}, digest=digest)
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        found = FeatureCache(key, root=tmp_path).lookup([digits.content_digest(i) for i in range(24)])
    assert found == [None] * 24
    assert not shard.exists()  # dropped: the next run does not meet it again
    assert len(warnings_naming(caplog, shard)) == 1


def test_sound_shards_are_kept_beside_a_damaged_one(tmp_path, caplog):
    cache = FeatureCache("key", root=tmp_path)
    cache.add(["aa" * 20, "bb" * 20], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    cache.add(["cc" * 20], torch.tensor([[5.0, 6.0]]))
    first, second = sorted(cache.directory.glob("shard-*.safetensors"), key=lambda p: p.stat().st_size)
    zero_tensor(second, "features")
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        found = FeatureCache("key", root=tmp_path).lookup(["aa" * 20, "bb" * 20, "cc" * 20])
    assert found[0] is None and found[1] is None and torch.equal(found[2], torch.tensor([5.0, 6.0]))
    assert len(warnings_naming(caplog, second)) == 1 and not warnings_naming(caplog, first)


def test_non_finite_features_are_not_cached(tmp_path):
    cache = FeatureCache("key", root=tmp_path)
    cache.add(["aa" * 20, "bb" * 20], torch.tensor([[1.0, float("nan")], [3.0, 4.0]]))
    found = FeatureCache("key", root=tmp_path).lookup(["aa" * 20, "bb" * 20])
    assert found[0] is None and torch.equal(found[1], torch.tensor([3.0, 4.0]))


def test_unwritable_cache_only_costs_speed(backbone, digits, reference, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        torch.testing.assert_close(extract_features(backbone, digits, progress=False), reference)
        create_backbone("efficientnet_lite0", image_size=32)  # the converted weights are not cached either
    assert any(str(blocker) in r.getMessage() for r in caplog.records)


def test_a_killed_writers_temporary_file_is_never_read_and_swept_once_stale(tmp_path, caplog):
    cache = FeatureCache("key", root=tmp_path)
    cache.directory.mkdir(parents=True)
    fresh, stale = (cache.directory / f".shard-{name}.safetensors.x1y2z3.tmp" for name in ("fresh", "stale"))
    for leftover in (fresh, stale):
        leftover.write_bytes(b"half a shard")
    os.utime(stale, (time.time() - 2 * 3600,) * 2)
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        cache.add(["aa" * 20], torch.tensor([[1.0, 2.0]]))
        assert torch.equal(FeatureCache("key", root=tmp_path).lookup(["aa" * 20])[0], torch.tensor([1.0, 2.0]))
    assert not caplog.records
    assert fresh.exists() and not stale.exists()  # a fresh one may be another process's write in progress
