"""The training objective: next-character cross-entropy on the shifted slices, padding masked out."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from tangpoem.model import PoetryModel


def sequence_loss(
    model: PoetryModel, inputs: paddle.Tensor, targets: paddle.Tensor, mask: paddle.Tensor | None = None
) -> tuple[paddle.Tensor, int]:
    """Mean cross-entropy over the positions where mask is true (all positions when mask is None).

    inputs, targets: int64 [batch, seq_len] (`data[:, :-1]`, `data[:, 1:]`). Returns the loss and
    the number of positions it averaged over.
    """
    logits, _ = model(inputs)
    flat_targets = targets.reshape([-1])
    if mask is None:
        return F.cross_entropy(logits, flat_targets), int(flat_targets.shape[0])
    weights = mask.reshape([-1]).astype(logits.dtype)
    per_position = F.cross_entropy(logits, flat_targets, reduction="none").reshape([-1])
    count = weights.sum()
    return (per_position * weights).sum() / paddle.clip(count, min=1.0), int(count.item())
