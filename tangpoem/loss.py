"""The training objective: next-character cross-entropy on the shifted slices, padding masked out."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from tangpoem import fastlstm
from tangpoem.model import AdaptiveOutput, PoetryModel


def sequence_loss(
    model: PoetryModel,
    inputs: paddle.Tensor,
    targets: paddle.Tensor,
    mask: paddle.Tensor | None = None,
    *,
    fast: bool = True,
) -> tuple[paddle.Tensor, int]:
    """Mean cross-entropy over the positions where mask is true (all positions when mask is None).

    inputs, targets: int64 [batch, seq_len] (`data[:, :-1]`, `data[:, 1:]`). Returns the loss and
    the number of positions it averaged over.

    fast=True (the default) runs the LSTM through `fastlstm` and the output layer + cross-entropy only
    on the positions that count; fast=False is the plain computation (model.forward on every position).
    Both give the same loss and gradients up to float rounding.
    """
    if fast:
        return _fast_sequence_loss(model, inputs, targets, mask)
    logits, _ = model(inputs)
    flat_targets = targets.reshape([-1])
    if mask is None:
        return F.cross_entropy(logits, flat_targets), int(flat_targets.shape[0])
    weights = mask.reshape([-1]).astype(logits.dtype)
    per_position = F.cross_entropy(logits, flat_targets, reduction="none").reshape([-1])
    count = weights.sum()
    return (per_position * weights).sum() / paddle.clip(count, min=1.0), int(count.item())


def hidden_states(model: PoetryModel, inputs: paddle.Tensor) -> paddle.Tensor:
    """The last LSTM layer's outputs (after the model's dropout), time-major [seq_len, batch, hidden],
    from a zero state: model.forward without the output layer. On the CPU tangpoem's compiled LSTM
    kernels when they are available (`fastlstm`), else nn.LSTM's own kernel."""
    if fastlstm.native_kernels(model.lstm.weight_hh_l0) is not None:
        embeds = model.embed(inputs.T)  # [seq_len, batch, embedding_dim]: each step's rows contiguous
        output = fastlstm.lstm_forward(embeds, model.lstm, model.config.dropout, model.training)
    else:
        output = model.lstm(model.embed(inputs))[0].transpose([1, 0, 2])
    return model.dropout(output)


def _fast_sequence_loss(
    model: PoetryModel, inputs: paddle.Tensor, targets: paddle.Tensor, mask: paddle.Tensor | None
) -> tuple[paddle.Tensor, int]:
    states = hidden_states(model, inputs)  # [seq_len, batch, hidden], time-major
    hidden = states.reshape([-1, states.shape[-1]])
    flat_targets = targets.T.reshape([-1])  # time-major too, to line up with the states
    if mask is not None:
        # the 8,900-way projection is a third of a step: spend it only where the loss looks
        keep = paddle.nonzero(mask.T.reshape([-1])).reshape([-1])
        count = int(keep.shape[0])
        if count == 0:
            return hidden.sum() * 0.0, 0
        if count < flat_targets.shape[0]:
            hidden = paddle.gather(hidden, keep)
            flat_targets = paddle.gather(flat_targets, keep)
    else:
        count = int(flat_targets.shape[0])
    if model.config.output_cutoffs:
        return adaptive_loss(model.adaptive, hidden, flat_targets) / count, count
    return _output_loss(hidden, model.linear, flat_targets) / count, count


def _output_loss(hidden: paddle.Tensor, linear: paddle.nn.Linear, targets: paddle.Tensor) -> paddle.Tensor:
    """Summed cross-entropy of linear(hidden) against targets: on the CPU the fused chunked kernel, on a GPU
    the framework's own."""
    if not fastlstm.use_fast_lstm(hidden):
        return F.cross_entropy(linear(hidden), targets, reduction="sum")
    return fastlstm.linear_cross_entropy(hidden, linear.weight, linear.bias, targets) * hidden.shape[0]


def adaptive_loss(output: AdaptiveOutput, hidden: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
    """Summed -log p(target) under the adaptive softmax, computing only what the targets need: the head on
    every row, cluster k's projection and output only on the rows whose target lies in it."""
    rank = paddle.gather(output.rank, targets)
    head_target = rank
    parts = []
    for k, (start, end, _) in enumerate(output.bounds):
        inside = (rank >= start) & (rank < end)
        head_target = paddle.where(inside, paddle.full_like(rank, output.shortlist + k), head_target)
        rows = paddle.nonzero(inside).reshape([-1])
        if rows.shape[0]:
            projected = output.tail_proj[k](paddle.gather(hidden, rows))
            parts.append(_output_loss(projected, output.tail_out[k], paddle.gather(rank, rows) - start))
    total = _output_loss(hidden, output.head, head_target)
    for part in parts:
        total = total + part
    return total
