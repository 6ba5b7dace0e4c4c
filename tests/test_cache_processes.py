"""The feature and weights caches under several processes at once and under processes killed mid-way: results equal a
solo, uninterrupted run, and no partial or duplicate cache file is left to be read."""

import json
import logging
import multiprocessing
import random
import signal
import struct
from pathlib import Path

import pytest
import torch

import cache_workers
from transferlab.cache_files import read_cache_file
from transferlab.embeddings import _shard_problem

pytestmark = pytest.mark.slow

RANDOM_TRIALS = 4  # seeded kill points besides the torn writes; each trial costs two child processes of ~1 s


@pytest.fixture(scope="module")
def context():
    """A forkserver that has imported torch, timm and transferlab once; children fork from it."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(cache_workers.PRELOAD)
    return context


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    """Features of an uninterrupted run alone on an empty cache (in this process)."""
    return cache_workers.embed(tmp_path_factory.mktemp("solo-cache"))


def start(context, cache_dir: Path, out: Path, **options):
    process = context.Process(target=cache_workers.run, args=(cache_dir, out), kwargs=options)
    process.start()
    return process


def finish(process, timeout: float = 300) -> int:
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        pytest.fail(f"child {process.pid} did not finish in {timeout} s")
    return process.exitcode


def assert_same_features(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], msg=lambda m, name=name: f"{name}: {m}")


def assert_cache_sound(cache_dir: Path) -> None:
    """Every shard and weights file reads back whole and passes its digest; nothing else but temporaries."""
    features = list((cache_dir / "features").glob("*/*")) + list((cache_dir / "features").glob("*/.*"))
    weights = list((cache_dir / "weights").glob("*")) + list((cache_dir / "weights").glob(".*"))
    for path in features + weights:
        if path.name.startswith("."):
            assert path.name.endswith(".tmp"), path  # a killed writer's temporary file: never read
            continue
        check = _shard_problem if path.parent.parent.name == "features" else None
        assert read_cache_file(path, check=check) is not None, f"{path} is not a whole, sound cache file"


def test_processes_filling_one_cache_at_once_agree_with_a_solo_run(context, solo, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    barrier = context.Barrier(3)
    outs = [tmp_path / f"out{i}.pt" for i in range(3)]
    processes = [start(context, cache_dir, out, barrier=barrier) for out in outs]
    assert [finish(process) for process in processes] == [0, 0, 0]
    for out in outs:
        assert_same_features(torch.load(out)["features"], solo)
    shards = sorted((cache_dir / "features").glob("*/shard-*.safetensors"))
    assert len(shards) == 2  # one per split, not one per process
    assert not list(cache_dir.rglob("*.tmp"))
    assert len(list((cache_dir / "weights").iterdir())) == 1
    assert_cache_sound(cache_dir)
    with caplog.at_level(logging.INFO, logger="transferlab"):  # a later run reads everything from the shared cache
        assert_same_features(cache_workers.embed(cache_dir), solo)
    counts = [r.getMessage().rsplit(": ", 1)[1] for r in caplog.records if r.getMessage().startswith("features for")]
    assert counts == ["24 cached, 0 to embed", "16 cached, 0 to embed"]


def damage_a_feature(path: Path) -> None:
    """Overwrite the float32 feature in the middle of the shard's features (a plausible value, header intact)."""
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    begin, end = json.loads(data[8:start])["features"]["data_offsets"]
    middle = start + begin + (end - begin) // 8 * 4
    data[middle:middle + 4] = struct.pack("<f", 3.0)
    path.write_bytes(bytes(data))


def test_processes_meeting_one_damaged_shard_at_once_all_recompute(context, solo, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_workers.embed(cache_dir)
    for shard in (cache_dir / "features").glob("*/shard-*.safetensors"):
        damage_a_feature(shard)
    barrier = context.Barrier(3)
    outs = [tmp_path / f"out{i}.pt" for i in range(3)]
    processes = [start(context, cache_dir, out, barrier=barrier) for out in outs]
    assert [finish(process) for process in processes] == [0, 0, 0]
    for out in outs:
        assert_same_features(torch.load(out)["features"], solo)
    assert_same_features(cache_workers.embed(cache_dir), solo)
    assert len(list((cache_dir / "features").glob("*/shard-*.safetensors"))) == 2
    assert_cache_sound(cache_dir)


def test_killed_at_seeded_random_points_a_rerun_equals_an_uninterrupted_run(context, solo, tmp_path):
    dry = tmp_path / "dry.pt"
    assert finish(start(context, tmp_path / "dry-cache", dry)) == 0
    kinds = torch.load(dry)["events"]
    assert kinds.count("write") == kinds.count("rename") == 3 and kinds.count("embed") >= 5  # weights, 2 shards
    writes = [event for event, kind in enumerate(kinds) if kind == "write"]
    others = random.Random(12).sample([event for event in range(len(kinds)) if event not in writes], RANDOM_TRIALS)
    # every write torn at its final name (as a filesystem without atomic rename could leave it), and seeded random
    # points: a chunk being embedded, a file half written to its temporary name, or about to be renamed
    trials = [(event, True) for event in writes] + [(event, False) for event in [*others, *writes[:1]]]
    for trial, (kill_at, torn) in enumerate(trials):
        cache_dir = tmp_path / f"cache{trial}"
        code = finish(start(context, cache_dir, tmp_path / f"killed{trial}.pt", kill_at=kill_at, seed=trial,
                            torn=torn))
        assert code == -signal.SIGKILL, f"trial {trial}: the child was to die at {kinds[kill_at]} event {kill_at}"
        rerun = tmp_path / f"rerun{trial}.pt"
        assert finish(start(context, cache_dir, rerun)) == 0
        assert_same_features(torch.load(rerun)["features"], solo)
        assert_cache_sound(cache_dir)
        assert_same_features(cache_workers.embed(cache_dir), solo)  # and the cache it left reads back right
