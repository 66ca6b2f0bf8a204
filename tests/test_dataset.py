"""The Dataset and its two batching modes, on the real corpus."""

from __future__ import annotations

import numpy as np

from tangpoem.dataset import PoemBatchSampler, PoemDataset, make_loader, target_mask


def test_items_are_the_tutorial_shifted_slices(built_corpus):
    poems, _ = built_corpus
    train, heldout = PoemDataset(poems, "train"), PoemDataset(poems, "heldout")
    assert len(train) + len(heldout) == len(poems.data) and len(heldout) == poems.heldout.sum()
    x, y = train[0]
    row = poems.data[~poems.heldout][0]
    assert x.shape == y.shape == (124,) and (x == row[:-1]).all() and (y == row[1:]).all()


def test_padded_batches_are_the_classic_rows(built_corpus):
    poems, _ = built_corpus
    loader, _ = make_loader(poems, "train", batch_size=16, batching="padded", seed=1)
    x, y = next(iter(loader))
    assert x.shape == y.shape == [16, 124] and str(x.dtype) == "paddle.int64"
    assert (x.numpy()[:, 1:] == y.numpy()[:, :-1]).all()


def test_bucket_batches_waste_almost_nothing_on_padding(built_corpus):
    poems, _ = built_corpus
    loader, sampler = make_loader(poems, "train", batch_size=64, batching="bucket", seed=1)
    useful = computed = 0
    for i, (x, y) in enumerate(loader):
        x, y = x.numpy(), y.numpy()
        assert x.shape == y.shape and x.shape[1] <= 124
        # the longest poem in the batch starts at column 0 with <START>
        assert (x[:, 0] == poems.start_id).any()
        mask = target_mask(y, poems.pad_id, poems.start_id)
        useful += mask.sum()
        computed += mask.size
        if i == 200:
            break
    assert useful / computed >= 0.95
    classic = target_mask(poems.data[:, 1:], poems.pad_id, poems.start_id)
    assert classic.mean() < 0.5  # the classic layout spends over half its positions on padding


def test_sampler_is_deterministic_covers_everything_and_resumes():
    lengths = np.random.default_rng(0).integers(5, 125, size=1000)
    a = PoemBatchSampler(lengths, 32, seed=7)
    b = PoemBatchSampler(lengths, 32, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    batches = a.batches()
    assert batches == b.batches()
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    b.set_epoch(4)
    assert b.batches() != batches  # each epoch its own order
    a.skip = 5
    assert list(a) == batches[5:] and list(a) == batches  # skip applies once


def test_ranks_split_the_batches_evenly():
    lengths = np.arange(1000) % 120 + 5
    ranks = [PoemBatchSampler(lengths, 32, seed=1, rank=r, world_size=3).batches() for r in range(3)]
    assert len({len(r) for r in ranks}) == 1 == len(set(map(len, ranks)))
    seen = [i for r in ranks for batch in r for i in batch]
    assert len(seen) == len(set(seen))  # no poem on two ranks
    assert len(ranks[0]) == len(PoemBatchSampler(lengths, 32, rank=0, world_size=3))
