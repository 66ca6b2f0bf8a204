"""The training path on the CPU: the same math as `nn.LSTM` + `nn.Linear` + cross-entropy, rearranged.

Paddle's eager `rnn` op and the full [positions, vocab] logits were most of a training step (see
benchmarks/README.md). Here:

- `lstm_layer`: per layer, one large matrix product for the input part of all time steps, then a
  loop with only the [batch, hidden] x [hidden, 4 hidden] recurrent product per step; its backward
  is hand-written so the weight gradients are again one large product each, not one per step.
- `linear_cross_entropy`: the output projection and cross-entropy over only the positions that
  count, in row chunks; the gradient is formed in the same pass, so the [positions, vocab] logits,
  softmax and their gradients are never all in memory at once.

Parameters are the `nn.LSTM` / `nn.Linear` ones, used as they are: the state_dict does not change.
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle.autograd import PyLayer

CE_CHUNK_ROWS = 2048  # rows of logits per chunk: 2048 x 8,931 floats = 73 MB; big enough for a fast GEMM


def _swap_go(t: paddle.Tensor, h: int) -> paddle.Tensor:
    """Paddle's gate order (i, f, g, o) <-> (i, f, o, g), along axis 0.

    (i, f, o, g) lets one sigmoid cover 3H columns and one tanh the last H; the swap is its own inverse.
    """
    return paddle.concat([t[: 2 * h], t[3 * h :], t[2 * h : 3 * h]], axis=0)


class _LSTMLayer(PyLayer):
    """One LSTM layer over time-major x [T, B, I] from a zero state; returns the outputs [T, B, H]."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh):
        seq, batch, _ = x.shape
        h4 = w_hh.shape[0]
        hid = h4 // 4
        w_ih_p, w_hh_p = _swap_go(w_ih, hid), _swap_go(w_hh, hid)
        bias = _swap_go(b_ih + b_hh, hid)
        x2 = x.reshape([seq * batch, -1])
        # the input part of every step at once: one [T*B, I] x [I, 4H] product
        xw = paddle.matmul(x2, w_ih_p, transpose_y=True) + bias
        xws = paddle.unbind(xw.reshape([seq, batch, h4]), axis=0)
        zero = paddle.zeros([batch, hid], dtype=x.dtype)
        h, c = zero, zero
        hs, cs, tcs, sigs, cands = [], [], [], [], []
        for t in range(seq):
            g = xws[t] if t == 0 else xws[t] + paddle.matmul(h, w_hh_p, transpose_y=True)
            sig = F.sigmoid(g[:, : 3 * hid])
            cand = paddle.tanh(g[:, 3 * hid :])
            i, f, o = sig[:, :hid], sig[:, hid : 2 * hid], sig[:, 2 * hid :]
            c = i * cand if t == 0 else f * c + i * cand
            tc = paddle.tanh(c)
            h = o * tc
            hs.append(h)
            cs.append(c)
            tcs.append(tc)
            sigs.append(sig)
            cands.append(cand)
        out = paddle.stack(hs)
        ctx.saved = (x2, w_ih_p, w_hh_p, out, cs, tcs, sigs, cands, zero)
        return out

    @staticmethod
    def backward(ctx, dout):
        x2, w_ih_p, w_hh_p, out, cs, tcs, sigs, cands, zero = ctx.saved
        seq, batch, hid = out.shape
        douts = paddle.unbind(dout, axis=0)
        dgs = [None] * seq
        dh_next, dc_next = None, None
        for t in range(seq - 1, -1, -1):
            sig, cand, tc = sigs[t], cands[t], tcs[t]
            i, f, o = sig[:, :hid], sig[:, hid : 2 * hid], sig[:, 2 * hid :]
            dh = douts[t] if dh_next is None else douts[t] + dh_next
            dc = dh * o * (1.0 - tc * tc)
            if dc_next is not None:
                dc = dc + dc_next
            c_prev = cs[t - 1] if t > 0 else zero
            dsig = paddle.concat([dc * cand, dc * c_prev, dh * tc], axis=1) * sig * (1.0 - sig)
            dcand = dc * i * (1.0 - cand * cand)
            dg = paddle.concat([dsig, dcand], axis=1)
            dgs[t] = dg
            if t > 0:
                dh_next = paddle.matmul(dg, w_hh_p)
                dc_next = dc * f
        dg_all = paddle.concat(dgs, axis=0)  # [T*B, 4H]
        # weight gradients as one large product each (h_{t-1} is zero at t = 0, so skip that row block)
        h_prev = out[:-1].reshape([(seq - 1) * batch, hid])
        dw_hh = paddle.matmul(dg_all[batch:], h_prev, transpose_x=True)
        dw_ih = paddle.matmul(dg_all, x2, transpose_x=True)
        db = _swap_go(dg_all.sum(axis=0), hid)
        dx = paddle.matmul(dg_all, w_ih_p).reshape([seq, batch, -1])
        return dx, _swap_go(dw_ih, hid), _swap_go(dw_hh, hid), db, db


def lstm_layer(x: paddle.Tensor, w_ih, w_hh, b_ih, b_hh) -> paddle.Tensor:
    """LSTM layer from a zero state; x [T, B, I] time-major -> outputs [T, B, H]."""
    return _LSTMLayer.apply(x, w_ih, w_hh, b_ih, b_hh)


def lstm_forward(x: paddle.Tensor, lstm: paddle.nn.LSTM, dropout: float = 0.0, training: bool = True):
    """A (unidirectional) `nn.LSTM` stack from zero states with its own parameters; x [T, B, I] -> [T, B, H]."""
    for layer in range(lstm.num_layers):
        if layer > 0 and dropout > 0.0 and training:
            x = F.dropout(x, dropout)  # as nn.LSTM: between layers, not after the last
        x = lstm_layer(
            x,
            getattr(lstm, f"weight_ih_l{layer}"),
            getattr(lstm, f"weight_hh_l{layer}"),
            getattr(lstm, f"bias_ih_l{layer}"),
            getattr(lstm, f"bias_hh_l{layer}"),
        )
    return x


def _chunk_logits(h: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    logits = paddle.matmul(h, weight)
    logits.add_(bias)
    return logits


class _LinearCrossEntropy(PyLayer):
    """Mean over rows of cross_entropy(h @ weight + bias, targets); the gradient is made in the forward pass."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets):
        n = h.shape[0]
        total = paddle.zeros([], dtype=h.dtype)
        dh_parts = []
        dw = paddle.zeros_like(weight)
        db = paddle.zeros_like(bias)
        for s in range(0, n, CE_CHUNK_ROWS):
            hc, tc = h[s : s + CE_CHUNK_ROWS], targets[s : s + CE_CHUNK_ROWS].unsqueeze(1)
            logits = _chunk_logits(hc, weight, bias)
            lse = paddle.logsumexp(logits, axis=1, keepdim=True)
            total = total + (lse - paddle.take_along_axis(logits, tc, axis=1)).sum()
            # d(sum of losses)/d logits = softmax - one_hot, built in place in the logits buffer
            grad = logits.subtract_(lse).exp_()
            grad.put_along_axis_(tc, -1.0, 1, reduce="add")
            dh_parts.append(paddle.matmul(grad, weight, transpose_y=True))
            dw.add_(paddle.matmul(hc, grad, transpose_x=True))
            db.add_(grad.sum(axis=0))
            del logits, grad
        ctx.saved = (paddle.concat(dh_parts, axis=0) if len(dh_parts) > 1 else dh_parts[0], dw, db, n)
        return total / n

    @staticmethod
    def backward(ctx, g):
        dh, dw, db, n = ctx.saved
        scale = g / n
        return dh * scale, dw * scale, db * scale, None


def linear_cross_entropy(
    h: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, targets: paddle.Tensor
) -> paddle.Tensor:
    """mean_i cross_entropy(h_i @ weight + bias, targets_i) for h [n, H], weight [H, V] (nn.Linear's), n >= 1.

    With gradients off (evaluation) only the loss is computed, chunk by chunk.
    """
    needs_grad = paddle.is_grad_enabled() and not (h.stop_gradient and weight.stop_gradient and bias.stop_gradient)
    if needs_grad:
        return _LinearCrossEntropy.apply(h, weight, bias, targets)
    total = paddle.zeros([], dtype=h.dtype)
    for s in range(0, h.shape[0], CE_CHUNK_ROWS):
        logits = _chunk_logits(h[s : s + CE_CHUNK_ROWS], weight, bias)
        total = total + F.cross_entropy(logits, targets[s : s + CE_CHUNK_ROWS], reduction="sum")
    return total / h.shape[0]
