"""The npz as a `paddle.io.Dataset`, batched by length so no compute goes to padding.

A poem as the network reads it (`PoemRows`): the classic row `<START> body <EOP>`; or, from an npz with
titles (format 2), `<START> <TANG|SONG> title <SEP> body <EOP>`, the style mark of its collection and its
title first, so that the model learns what a poem is about and in whose manner. The loss counts the body
and <EOP> only: the marks and the title are read, never predicted (their targets are padding, which the
loss leaves out). A share of the training poems (`title_dropout`) is shown without its title, `<START>
<TANG> <SEP> body`, so that one model writes with a title and without.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import paddle

from tangpoem.data import SEP, STYLE_MARKS, PoemData
from tangpoem.errors import TangpoemError


class PoemRows:
    """Each poem's token row as the network reads it, with or without its title (see the module docstring)."""

    def __init__(self, poems: PoemData):
        self.poems = poems
        w2i = poems.word2ix
        self.titled = poems.titles is not None and SEP in w2i
        if self.titled:
            self.sep = w2i[SEP]
            # a title's characters the vocabulary lacks (cut as rare) are left out of it
            self.title_ids = [[w2i[ch] for ch in title if ch in w2i] for title in poems.titles]
            marks = [STYLE_MARKS.get(name) for name in poems.collection_names]
            self.style_ids = np.array([w2i.get(m, -1) if m else -1 for m in marks], np.int64)
            self.collection = poems.collection_of_rows()

    def body(self, i: int) -> np.ndarray:
        """<START> body <EOP> of poem i."""
        p = self.poems
        return p.data[i, p.maxlen - int(p.lengths[i]) :].astype(np.int64)

    def head(self, i: int, with_title: bool) -> list[int]:
        """What comes before the body after <START>: style mark, title, <SEP> ([] for an untitled npz)."""
        if not self.titled:
            return []
        title = self.title_ids[i] if with_title else []
        return [int(self.style_ids[self.collection[i]]), *title, self.sep]

    def length(self, i: int, with_title: bool = True) -> int:
        return int(self.poems.lengths[i]) + len(self.head(i, with_title))

    def pair(self, i: int, with_title: bool) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) = (row[:-1], row[1:]); the targets of the head (marks, title) are padding."""
        body, head = self.body(i), self.head(i, with_title)
        row = np.concatenate([body[:1], np.array(head, np.int64), body[1:]]) if head else body
        inputs, targets = row[:-1], row[1:].copy()
        targets[: len(head)] = self.poems.pad_id
        return inputs, targets


class PoemDataset(paddle.io.Dataset):
    """(input, target) = (row[:-1], row[1:]) over one split, as the tutorial slices them; with titles,
    the rows of `PoemRows`, a poem's title left out with probability title_dropout (a draw of its own for
    each (seed, epoch, poem), so a resumed run sees what an uninterrupted one would). collections: the
    indices (into poems.collection_names) of the collections to keep, None for all."""

    def __init__(
        self, poems: PoemData, split: str = "train", title_dropout: float = 0.0, seed: int = 0,
        collections: Sequence[int] | None = None,
    ):  # fmt: skip
        super().__init__()
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"split must be train, heldout or all, not {split!r}")
        keep = {"train": ~poems.heldout, "heldout": poems.heldout, "all": np.ones_like(poems.heldout)}[split]
        if collections is not None:
            keep = keep & np.isin(poems.collection_of_rows(), list(collections))
        self.index = np.flatnonzero(keep)
        self.rows = PoemRows(poems)
        self.title_dropout, self.seed, self.epoch = title_dropout, seed, 0
        self.lengths = np.array([self.rows.length(i) for i in self.index], np.int32) if self.rows.titled else (
            poems.lengths[keep]
        )  # fmt: skip
        self.pad_id = poems.pad_id

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        row = int(self.index[i])
        if not self.rows.titled:  # the classic row as it is: no copy, no draw
            data = self.rows.poems.data[row].astype(np.int64)
            return data[:-1], data[1:]
        with_title = self.title_dropout <= 0 or np.random.default_rng([self.seed, self.epoch, row]).random() >= (
            self.title_dropout
        )  # fmt: skip
        return self.rows.pair(row, with_title)


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
    """Stack (input, target) pairs, padded in front to the longest (rows with titles differ in length),
    and drop the leading columns that are padding in every row."""

    def collate(batch):
        width = max(len(b[0]) for b in batch)
        inputs = np.full((len(batch), width), pad_id, np.int64)
        targets = np.full((len(batch), width), pad_id, np.int64)
        for r, (x, y) in enumerate(batch):
            inputs[r, width - len(x) :], targets[r, width - len(y) :] = x, y
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
    title_dropout: float = 0.0,
    collections: Sequence[int] | None = None,
):
    """A paddle.io.DataLoader over one split (of some collections, None: all); returns (loader, sampler) so
    callers can set the epoch (of both: `loader.dataset.set_epoch` draws which poems go without their
    titles)."""
    if batching not in ("bucket", "padded"):
        raise TangpoemError(f"batching must be 'bucket' or 'padded', not '{batching}'")
    dataset = PoemDataset(poems, split, title_dropout, seed, collections)
    if len(dataset) == 0:
        raise TangpoemError(f"the {split} split of {poems.path or 'the data'} is empty")
    bucket = batching == "bucket"
    sampler = PoemBatchSampler(
        dataset.lengths, batch_size, shuffle=shuffle, bucket=bucket, seed=seed, rank=rank, world_size=world_size
    )
    collate = collate_trimmed(dataset.pad_id) if bucket or dataset.rows.titled else None  # titled rows vary
    loader = paddle.io.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0)
    return loader, sampler


def target_mask(targets: paddle.Tensor | np.ndarray, pad_id: int, start_id: int) -> paddle.Tensor | np.ndarray:
    """Positions that count: not padding, and not the </s> -> <START> step the padding creates."""
    return (targets != pad_id) & (targets != start_id)
