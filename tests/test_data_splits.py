"""Index splits: the validation hold-out, stratified train/validation splits and n examples per class."""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.data import hold_out_indices, load_splits, stratified_split, take_per_class
from transferlab.errors import TransferlabError


def balanced_labels(classes: int = 4, per_class: int = 25) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)


def test_stratified_split_partitions_and_keeps_proportions():
    labels = np.concatenate([np.zeros(60, int), np.ones(30, int), np.full(10, 2)])
    train, val = stratified_split(labels, 0.2, seed=0)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert np.bincount(labels[val]).tolist() == [12, 6, 2]


def test_stratified_split_is_reproducible():
    labels = balanced_labels()
    first = stratified_split(labels, 0.3, seed=1)
    again = stratified_split(labels, 0.3, seed=1)
    other = stratified_split(labels, 0.3, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[1], other[1])


def test_every_class_keeps_a_training_example():
    labels = np.concatenate([np.zeros(2, int), np.ones(100, int)])
    train, val = stratified_split(labels, 0.9, seed=0)
    assert set(labels[train].tolist()) == {0, 1}
    assert len(train) + len(val) == 102 and not set(train) & set(val)


def test_single_example_class_stays_in_training_with_a_warning():
    labels = np.concatenate([balanced_labels(2, 10), [7]])
    with pytest.warns(UserWarning, match="class\\(es\\) 7 have a single example"):
        train, val = stratified_split(labels, 0.2, seed=0)
    assert 20 in train and 7 not in labels[val]


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, True, "0.2"])
def test_fraction_must_be_between_zero_and_one(fraction):
    with pytest.raises(TransferlabError, match=f"strictly between 0 and 1, got {fraction!r}"):
        stratified_split(balanced_labels(), fraction, seed=0)


def test_too_small_validation_set_is_explained():
    with pytest.raises(TransferlabError, match="gives 5 validation examples, fewer than the 10 classes.*at least 0.2"):
        stratified_split(balanced_labels(10, 5), 0.1, seed=0)


def test_too_large_validation_set_is_explained():
    with pytest.raises(TransferlabError, match="fraction 0.9 .* leaves fewer training examples than the 4 classes"):
        stratified_split(balanced_labels(4, 2), 0.9, seed=0)


def test_split_needs_labels():
    with pytest.raises(TransferlabError, match="stratified_split needs labeled data"):
        stratified_split(None, 0.2, seed=0)
    with pytest.raises(TransferlabError, match="every class has one example"):
        with pytest.warns(UserWarning):
            stratified_split(np.arange(5), 0.2, seed=0)


def test_hold_out_with_strata_keeps_class_proportions():
    labels = np.concatenate([np.zeros(60, int), np.ones(30, int), np.full(10, 2)])
    train, val = hold_out_indices(len(labels), 0.2, seed=0, strata=labels)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert np.bincount(labels[val]).tolist() == [12, 6, 2]
    assert np.bincount(labels[train]).tolist() == [48, 24, 8]


def test_hold_out_without_strata_is_seeded_and_partitions():
    train, val = hold_out_indices(50, 0.2, seed=3)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert len(val) == 10 and np.array_equal(np.sort(np.concatenate([train, val])), np.arange(50))
    again = hold_out_indices(50, 0.2, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    others = [hold_out_indices(50, 0.2, seed=seed)[1] for seed in range(4, 9)]
    assert any(not np.array_equal(val, other) for other in others)


@pytest.mark.parametrize(("count", "fraction", "n_val"), [(2, 0.9, 1), (2, 0.1, 1), (3, 0.99, 2), (10, 0.01, 1)])
def test_hold_out_without_strata_never_empties_train_or_validation(count, fraction, n_val):
    train, val = hold_out_indices(count, fraction, seed=0)
    assert len(val) == n_val and len(train) == count - n_val


@pytest.mark.parametrize("count", [0, 1])
def test_hold_out_of_fewer_than_two_examples_names_what(count):
    with pytest.raises(TransferlabError, match=f"{count} texts in reviews.tsv: too few to hold out validation data"):
        hold_out_indices(count, 0.2, seed=0, what="texts in reviews.tsv")


@pytest.mark.parametrize("fraction", [0, 1, 1.5, True])
def test_hold_out_fraction_must_be_between_zero_and_one(fraction):
    with pytest.raises(TransferlabError, match=f"strictly between 0 and 1, got {fraction!r}"):
        hold_out_indices(20, fraction, seed=0)


def test_take_per_class_picks_n_of_each_class():
    labels = np.repeat(np.arange(3), [5, 8, 4])
    picked = take_per_class(labels, 3, seed=0)
    assert picked.dtype == np.int64 and np.all(np.diff(picked) > 0)
    assert np.bincount(labels[picked]).tolist() == [3, 3, 3]
    assert np.array_equal(picked, take_per_class(labels, 3, seed=0))
    others = [take_per_class(labels, 3, seed=seed) for seed in range(1, 6)]
    assert any(not np.array_equal(picked, other) for other in others)


def test_take_per_class_keeps_all_of_a_small_class_and_warns():
    labels = np.repeat(np.arange(3), [5, 2, 4])
    with pytest.warns(UserWarning, match="fewer than 3 examples in class\\(es\\) 1 \\(2\\)"):
        picked = take_per_class(labels, 3, seed=0)
    assert np.bincount(labels[picked]).tolist() == [3, 2, 3]


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_take_per_class_needs_a_positive_integer(n):
    with pytest.raises(TransferlabError, match=f"positive integer, got {n!r}"):
        take_per_class(balanced_labels(), n, seed=0)


def test_splits_on_real_digits():
    digits = load_splits("sklearn-digits")["all"]
    train, val = stratified_split(digits.labels, 0.25, seed=0)
    assert len(val) == round(0.25 * 1797) and len(train) + len(val) == 1797
    few = digits.subset(train[take_per_class(digits.labels[train], 5, seed=0)])
    assert len(few) == 50 and np.bincount(few.labels).tolist() == [5] * 10 and set(few.labels) <= set(range(10))
