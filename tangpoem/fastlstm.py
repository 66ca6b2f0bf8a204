"""The training path on the CPU: the same math as `nn.LSTM` + `nn.Linear` + cross-entropy, rearranged.

Paddle's eager `rnn` op and the full [positions, vocab] logits were most of a training step (see
benchmarks/README.md). Here (the output layer is the default training path on the CPU; the loop LSTM
is opt-in, `LOOP_LSTM_ON_CPU`, as it only beat the `rnn` op on a loaded machine):

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
from paddle import _C_ops
from paddle.autograd import PyLayer

CE_CHUNK_ROWS = 2048  # rows of logits per chunk: 2048 x 8,931 floats = 73 MB; big enough for a fast GEMM


# The hand-written LSTM below wins on a loaded machine and loses at small batches on a quiet one
# (see benchmarks/README.md); which one `PoetryModel.hidden_states` uses on the CPU.
LOOP_LSTM_ON_CPU = False


def use_fast_lstm(t: paddle.Tensor) -> bool:
    """Whether the training path takes the fused output layer + cross-entropy (the CPU; a GPU has
    cuDNN's LSTM and the stock kernels)."""
    return t.place.is_cpu_place()


def _swap_go(t: paddle.Tensor, h: int) -> paddle.Tensor:
    """Paddle's gate order (i, f, g, o) <-> (i, f, o, g), along axis 0.

    (i, f, o, g) lets one sigmoid cover 3H columns and one tanh the last H; the swap is its own inverse.
    """
    return paddle.concat([t[: 2 * h], t[3 * h :], t[2 * h : 3 * h]], axis=0)


def _with_ones(x: paddle.Tensor) -> paddle.Tensor:
    """[n, k] -> [n, k + 1] with a last column of ones (a bias as one more GEMM input)."""
    return paddle.concat([x, paddle.ones([x.shape[0], 1], dtype=x.dtype)], axis=1)


class _LSTMLayer(PyLayer):
    """One LSTM layer over time-major x [T, B, I] from a zero state; returns the outputs [T, B, H]."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh):
        seq, batch, _ = x.shape
        h4 = w_hh.shape[0]
        hid = h4 // 4
        # the bias rides in the input product as an extra input column of ones: Paddle's broadcast add
        # over [T*B, 4H] costs about a third of that product here, the extra GEMM column nothing
        w_ih_p = _swap_go(paddle.concat([w_ih, (b_ih + b_hh).unsqueeze(1)], axis=1), hid)  # [4H, I+1]
        w_hh_t = _swap_go(w_hh, hid).T  # [H, 4H], contiguous for addmm
        x2 = _with_ones(x.reshape([seq * batch, -1]))
        # the input part of every step at once: one [T*B, I+1] x [I+1, 4H] product
        xw = paddle.matmul(x2, w_ih_p, transpose_y=True)
        xws = paddle.unbind(xw.reshape([seq, batch, h4]), axis=0)
        zero = paddle.zeros([batch, hid], dtype=x.dtype)
        h, c = zero, zero
        hs, mults, ofacs, fs = [], [], [], []
        for t in range(seq):
            g = xws[t] if t == 0 else paddle.addmm(xws[t], h, w_hh_t)
            sig = F.sigmoid(g[:, : 3 * hid])
            cand = paddle.tanh(g[:, 3 * hid :])
            i, f, o = sig[:, :hid], sig[:, hid : 2 * hid], sig[:, 2 * hid :]
            c_prev = c
            c = i * cand if t == 0 else f * c + i * cand
            tc = paddle.tanh(c)
            h = o * tc
            hs.append(h)
            # the backward's per-step factors, made here on small cache-resident [B, *] tensors (whole
            # [T, B, *] ops are memory-bound and single-threaded in Paddle: slower than these):
            # d pre-activations = [dc, dc, dh, dc] * mult, mult = [cand, c_prev, tanh c, i] * [s(1-s), 1-cand^2]
            deriv = paddle.concat([sig * (1.0 - sig), 1.0 - cand * cand], axis=1)
            mults.append(paddle.concat([cand, c_prev, tc, i], axis=1) * deriv)
            ofacs.append(o * (1.0 - tc * tc))  # dc += dh * o * (1 - tanh(c)^2)
            fs.append(f.clone())  # let sig go
        out = paddle.stack(hs)
        del hs
        ctx.saved = (x2, w_ih_p, w_hh_t, out, mults, ofacs, fs)
        return out

    @staticmethod
    def backward(ctx, dout):
        x2, w_ih_p, w_hh_t, out, mults, ofacs, fs = ctx.saved
        ctx.saved = None
        seq, batch, hid = out.shape
        douts = paddle.unbind(dout, axis=0)
        dgs = [None] * seq
        dh_next, dc_next = None, None
        for t in range(seq - 1, -1, -1):
            dh = douts[t] if dh_next is None else douts[t] + dh_next
            dc = dh * ofacs[t] if dc_next is None else dh * ofacs[t] + dc_next
            dg = paddle.concat([dc, dc, dh, dc], axis=1) * mults[t]
            mults[t] = None
            dgs[t] = dg
            if t > 0:
                dh_next = paddle.matmul(dg, w_hh_t, transpose_y=True)
                dc_next = dc * fs[t]
        dg_all = paddle.concat(dgs, axis=0)  # [T*B, 4H]
        # weight gradients as one large product each (h_{t-1} is zero at t = 0, so skip that row block)
        h_prev = out[:-1].reshape([(seq - 1) * batch, hid])
        dw_hh = paddle.matmul(dg_all[batch:], h_prev, transpose_x=True)
        dw_ih = _swap_go(paddle.matmul(dg_all, x2, transpose_x=True), hid)  # [4H, I+1]: last column is d bias
        db = dw_ih[:, -1]
        dx = paddle.matmul(dg_all, w_ih_p[:, :-1]).reshape([seq, batch, -1])
        return dx, dw_ih[:, :-1], _swap_go(dw_hh, hid), db, db.clone()  # two tensors: reducers work in place


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


def _softmax_and_loss(logits: paddle.Tensor, labels: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """(softmax, per-row cross-entropy) in one pass over the logits (F.cross_entropy's own kernel)."""
    op = getattr(_C_ops, "cross_entropy_with_softmax", None)
    if op is None:  # not exposed: two passes
        return F.softmax(logits, axis=1), F.cross_entropy(logits, labels, reduction="none")
    return op(logits, labels, False, True, True, -100, -1)  # soft_label, use_softmax, stable, ignore, axis


class _LinearCrossEntropy(PyLayer):
    """Mean over rows of cross_entropy(h @ weight + bias, targets); the gradient is made in the forward pass.

    Per chunk: one GEMM for the logits (bias as an extra input column), Paddle's fused softmax +
    cross-entropy kernel, two GEMMs for the gradients of softmax. The one-hot part of
    d loss / d logits (softmax - one_hot) is applied once at the end as a gather / index_add on
    [n, H]-sized tensors, so nothing but the kernels above touches a [rows, vocab] buffer.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets):
        n = h.shape[0]
        w_aug = paddle.concat([weight, bias.unsqueeze(0)], axis=0)  # [H+1, V]
        h_aug = _with_ones(h)  # [n, H+1]
        labels = targets.unsqueeze(1)
        total = paddle.zeros([], dtype=h.dtype)
        dh_parts = []
        dw_aug = None
        for s in range(0, n, CE_CHUNK_ROWS):
            hc = h_aug[s : s + CE_CHUNK_ROWS]
            logits = paddle.matmul(hc, w_aug)
            softmax, loss = _softmax_and_loss(logits, labels[s : s + CE_CHUNK_ROWS])
            del logits
            total = total + loss.sum()
            dh_parts.append(paddle.matmul(softmax, weight, transpose_y=True))
            part = paddle.matmul(hc, softmax, transpose_x=True)
            dw_aug = part if dw_aug is None else dw_aug.add_(part)
            del softmax
        # minus the one-hot: d logits_ij -= 1 at j = target_i
        dh = paddle.concat(dh_parts, axis=0) if len(dh_parts) > 1 else dh_parts[0]
        dh = dh - paddle.gather(weight.T, targets)
        onehot_part = paddle.index_add(paddle.zeros([w_aug.shape[1], w_aug.shape[0]], h.dtype), targets, 0, h_aug)
        dw_aug = dw_aug - onehot_part.T
        ctx.saved = (dh, dw_aug[:-1], dw_aug[-1], n)
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
    w_aug = paddle.concat([weight, bias.unsqueeze(0)], axis=0)
    for s in range(0, h.shape[0], CE_CHUNK_ROWS):
        logits = paddle.matmul(_with_ones(h[s : s + CE_CHUNK_ROWS]), w_aug)
        total = total + F.cross_entropy(logits, targets[s : s + CE_CHUNK_ROWS], reduction="sum")
    return total / h.shape[0]
