"""The training objective: next-character cross-entropy on the shifted slices, padding masked out."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from tangpoem import fastlstm
from tangpoem.model import PoetryModel


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
    if not fastlstm.use_fast_lstm(inputs):  # GPU: the framework's own fused kernels, on the kept rows only
        return F.cross_entropy(model.linear(hidden), flat_targets), count
    return fastlstm.linear_cross_entropy(hidden, model.linear.weight, model.linear.bias, flat_targets), count
