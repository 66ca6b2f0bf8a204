"""The npz as a `paddle.io.Dataset`, batched by length so no compute goes to padding."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import paddle

from tangpoem.data import PoemData
from tangpoem.errors import TangpoemError


class PoemDataset(paddle.io.Dataset):
    """(input, target) = (row[:-1], row[1:]) over one split, as the tutorial slices them."""

    def __init__(self, poems: PoemData, split: str = "train"):
        super().__init__()
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"split must be train, heldout or all, not {split!r}")
        keep = {"train": ~poems.heldout, "heldout": poems.heldout, "all": np.ones_like(poems.heldout)}[split]
        self.rows = poems.data[keep].astype(np.int64)
        self.lengths = poems.lengths[keep]
        self.pad_id = poems.pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.rows[i]
        return row[:-1], row[1:]


class PoemBatchSampler(paddle.io.BatchSampler):
    """Batches of indices, the same for a given (seed, epoch) on every rank and every run.

    bucket=True groups poems of similar length (sorted within pools of 50 batches, then the batches
    shuffled), so with `collate_trimmed` almost no position is padding. With world_size > 1 each
    rank takes every world_size-th batch, all ranks the same count (DistributedBatchSampler's job).
    """

    POOL_BATCHES = 50

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        bucket: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.bucket = bucket
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0  # batches to leave out of the next iteration (resuming mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket:
            pool = self.batch_size * self.POOL_BATCHES
            sorted_order = []
            for i in range(0, n, pool):
                chunk = order[i : i + pool]
                sorted_order.append(chunk[np.argsort(self.lengths[chunk], kind="stable")])
            order = np.concatenate(sorted_order) if sorted_order else order
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.bucket and self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        per_rank = len(batches) // self.world_size if self.world_size > 1 else len(batches)
        return batches[self.rank :: self.world_size][:per_rank]

    def __iter__(self):
        batches = self.batches()[self.skip :]
        self.skip = 0
        yield from batches

    def __len__(self) -> int:
        n = -(-len(self.lengths) // self.batch_size)
        return n // self.world_size if self.world_size > 1 else n


def collate_trimmed(pad_id: int) -> Callable[[list], tuple[np.ndarray, np.ndarray]]:
    """Stack (input, target) pairs and drop the leading columns that are padding in every row."""

    def collate(batch):
        inputs = np.stack([b[0] for b in batch])
        targets = np.stack([b[1] for b in batch])
        first = int((inputs != pad_id).argmax(axis=1).min())
        return inputs[:, first:], targets[:, first:]

    return collate


def make_loader(
    poems: PoemData,
    split: str,
    batch_size: int,
    batching: str = "bucket",
    shuffle: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
):
    """A paddle.io.DataLoader over one split; returns (loader, sampler) so callers can set the epoch."""
    if batching not in ("bucket", "padded"):
        raise TangpoemError(f"batching must be 'bucket' or 'padded', not '{batching}'")
    dataset = PoemDataset(poems, split)
    if len(dataset) == 0:
        raise TangpoemError(f"the {split} split of {poems.path or 'the data'} is empty")
    bucket = batching == "bucket"
    sampler = PoemBatchSampler(
        dataset.lengths, batch_size, shuffle=shuffle, bucket=bucket, seed=seed, rank=rank, world_size=world_size
    )
    collate = collate_trimmed(dataset.pad_id) if bucket else None
    loader = paddle.io.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0)
    return loader, sampler


def target_mask(targets: paddle.Tensor | np.ndarray, pad_id: int, start_id: int) -> paddle.Tensor | np.ndarray:
    """Positions that count: not padding, and not the </s> -> <START> step the padding creates."""
    return (targets != pad_id) & (targets != start_id)
