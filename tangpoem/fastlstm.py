"""The training path on the CPU: the same math as `nn.LSTM` + `nn.Linear` + cross-entropy, rearranged.

Paddle's eager `rnn` op, the full [positions, vocab] logits and Paddle's one-thread softmax were most
of a training step (see benchmarks/README.md). Here:

- `lstm_forward`: per layer, one large matrix product for the input part of all time steps; the
  recurrence and its backward run in tangpoem's compiled kernels (kernels.c, via native.py); the
  weight gradients are again one large product each.
- `linear_cross_entropy`: the output projection and cross-entropy over only the positions that
  count, in row chunks; the gradient is formed in the same pass, so the [positions, vocab] logits,
  softmax and their gradients are never all in memory at once.

When the kernels cannot be built (no C compiler, a Paddle wheel without oneDNN) the LSTM is Paddle's
`rnn` op and the softmax Paddle's own: same results, slower. Parameters are the `nn.LSTM` /
`nn.Linear` ones, used as they are: the state_dict does not change.
"""

from __future__ import annotations

import ctypes

import paddle
import paddle.nn.functional as F
from paddle import _C_ops
from paddle.autograd import PyLayer

from tangpoem import native
from tangpoem.device import cpu_threads

CE_CHUNK_ROWS = 2048  # rows of logits per chunk: 2048 x 8,931 floats = 73 MB; big enough for a fast GEMM

# tangpoem's compiled CPU kernels (native.py) when they build here; False forces Paddle's own ops
USE_NATIVE = True


def use_fast_lstm(t: paddle.Tensor) -> bool:
    """Whether the training path takes the fused output layer + cross-entropy (the CPU; a GPU has
    cuDNN's LSTM and the stock kernels)."""
    return t.place.is_cpu_place()


def native_kernels(t: paddle.Tensor) -> ctypes.CDLL | None:
    """The compiled kernels if float tensor t should use them (CPU, float32, built), else None."""
    if not (USE_NATIVE and use_fast_lstm(t) and t.dtype == paddle.float32):
        return None
    return native.kernels()


def _with_ones(x: paddle.Tensor) -> paddle.Tensor:
    """[n, k] -> [n, k + 1] with a last column of ones (a bias as one more GEMM input)."""
    return paddle.concat([x, paddle.ones([x.shape[0], 1], dtype=x.dtype)], axis=1)


def _ptr(t: paddle.Tensor, dtype=paddle.float32) -> int:
    """The address of t's data for the C kernels, which read it as a dense row-major CPU array of dtype.
    A real check, not an assert (`python -O` drops those): anything else would be read out of bounds."""
    if not (t.is_contiguous() and t.place.is_cpu_place() and t.dtype == dtype):
        raise ValueError(f"native kernels take contiguous CPU {dtype} tensors, got {t.dtype} on {t.place}"
                         f"{'' if t.is_contiguous() else ', not contiguous'}")  # fmt: skip
    return t.data_ptr()


def _gemm(a: paddle.Tensor, b: paddle.Tensor, ta: bool = False, tb: bool = False) -> paddle.Tensor:
    """op(a) @ op(b) for 2-D float32 CPU tensors, by the kernels' sgemm (oneDNN): paddle.matmul goes
    to MKL, which takes a slow generic path on AMD processors (a third of oneDNN's speed here)."""
    a, b = a.contiguous(), b.contiguous()
    m, k = (a.shape[1], a.shape[0]) if ta else (a.shape[0], a.shape[1])
    n = b.shape[0] if tb else b.shape[1]
    out = paddle.empty([m, n], dtype=a.dtype)
    native.kernels().gemm(
        int(ta), int(tb), m, n, k, 1.0, _ptr(a), a.shape[1], _ptr(b), b.shape[1], 0.0, _ptr(out), n, cpu_threads()
    )
    return out


class _LSTMLayer(PyLayer):
    """One LSTM layer over time-major x [T, B, I] from a zero state; returns the outputs [T, B, H].

    The input part of every step is one [T*B, I] x [I, 4H] product; kernels.c runs the recurrence (a
    [B, H] x [H, 4H] product and the fused cell per step) and its backward; the weight gradients are
    again one large product each, not one per step.
    """

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh):
        seq, batch, _ = x.shape
        hid = w_hh.shape[1]
        kernels, threads = native.kernels(), cpu_threads()
        x2 = x.reshape([seq * batch, -1]).contiguous()
        gates = _gemm(x2, w_ih, tb=True)  # becomes the activated gates, in place
        bias = (b_ih + b_hh).contiguous()
        h = paddle.empty([seq, batch, hid], dtype=x.dtype)
        c = paddle.empty([seq, batch, hid], dtype=x.dtype)
        kernels.lstm_forward(seq, batch, hid, _ptr(gates), _ptr(w_hh), _ptr(bias), _ptr(h), _ptr(c), threads)
        ctx.saved = (x2, w_ih, w_hh, gates, c, h)
        return h

    @staticmethod
    def backward(ctx, dout):
        x2, w_ih, w_hh, gates, c, h = ctx.saved
        ctx.saved = None
        seq, batch, hid = h.shape
        dh = dout.contiguous().clone()  # the kernel adds into it: not the autograd engine's tensor
        dgates = paddle.empty([seq * batch, 4 * hid], dtype=dh.dtype)
        status = native.kernels().lstm_backward(
            seq, batch, hid, _ptr(gates), _ptr(c), _ptr(w_hh), _ptr(dh), _ptr(dgates), cpu_threads()
        )
        native.check(status)
        del dh, gates, c
        if seq > 1:  # h_{t-1} is zero at t = 0: that block adds nothing
            h_prev = h.reshape([seq * batch, hid])[:-batch]
            dw_hh = _gemm(dgates[batch:], h_prev, ta=True)
        else:
            dw_hh = paddle.zeros_like(w_hh)
        dw_ih = _gemm(dgates, x2, ta=True)
        db = _gemm(paddle.ones([1, seq * batch], dtype=dgates.dtype), dgates).reshape([-1])
        dx = _gemm(dgates, w_ih).reshape([seq, batch, -1])
        return dx, dw_ih, dw_hh, db, db.clone()  # two tensors: the gradient reducers work in place


def lstm_forward(x: paddle.Tensor, lstm: paddle.nn.LSTM, dropout: float = 0.0, training: bool = True) -> paddle.Tensor:
    """A (unidirectional) `nn.LSTM` stack from zero states with its own parameters, on the native
    kernels (`native_kernels(x)` must not be None); x [T, B, I] time-major -> [T, B, H]."""
    for layer in range(lstm.num_layers):
        if layer > 0 and dropout > 0.0 and training:
            x = F.dropout(x, dropout)  # as nn.LSTM: between layers, not after the last
        x = _LSTMLayer.apply(
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


def _linear_xent_native(kernels, h, weight, bias, targets):
    """(summed loss, dh, dweight, dbias) of the output layer + cross-entropy, in kernels.c: per chunk of
    rows one GEMM for the logits, softmax + cross-entropy + softmax - one_hot in one pass on all threads,
    two GEMMs for the gradients (the weight's accumulated in place)."""
    n, hid = h.shape
    vocab = weight.shape[1]
    h, labels = h.contiguous(), targets.astype("int64").contiguous()
    dh = paddle.empty([n, hid], dtype=h.dtype)
    dw, db = paddle.zeros([hid, vocab], dtype=h.dtype), paddle.zeros([vocab], dtype=h.dtype)
    scratch = paddle.empty([min(n, CE_CHUNK_ROWS), vocab], dtype=h.dtype)
    total = ctypes.c_double()
    status = kernels.linear_xent(
        n, hid, vocab, _ptr(h), _ptr(weight), _ptr(bias), _ptr(labels, paddle.int64),
        _ptr(dh), _ptr(dw), _ptr(db), _ptr(scratch), CE_CHUNK_ROWS, cpu_threads(), ctypes.byref(total),
    )  # fmt: skip
    native.check(status, labels, vocab)  # a target id outside [0, vocab): refused by the kernel
    return total.value, dh, dw, db


def _linear_xent_paddle(h, weight, bias, targets):
    """The same on Paddle's ops: per chunk, one GEMM for the logits (bias as an extra input column),
    Paddle's softmax + cross-entropy kernel, two GEMMs for the gradients of softmax; the one-hot part
    of softmax - one_hot is applied once at the end as a gather / index_add on [n, H]-sized tensors."""
    w_aug = paddle.concat([weight, bias.unsqueeze(0)], axis=0)  # [H+1, V]
    h_aug = _with_ones(h)  # [n, H+1]
    labels = targets.unsqueeze(1)
    total = paddle.zeros([], dtype=h.dtype)
    dh_parts = []
    dw_aug = None
    for s in range(0, h.shape[0], CE_CHUNK_ROWS):
        hc = h_aug[s : s + CE_CHUNK_ROWS]
        logits = paddle.matmul(hc, w_aug)
        softmax, loss = _softmax_and_loss(logits, labels[s : s + CE_CHUNK_ROWS])
        del logits
        total = total + loss.sum()
        dh_parts.append(paddle.matmul(softmax, weight, transpose_y=True))
        part = paddle.matmul(hc, softmax, transpose_x=True)
        dw_aug = part if dw_aug is None else dw_aug.add_(part)
        del softmax
    dh = paddle.concat(dh_parts, axis=0) if len(dh_parts) > 1 else dh_parts[0]
    dh = dh - paddle.gather(weight.T, targets)  # minus the one-hot: d logits_ij -= 1 at j = target_i
    onehot_part = paddle.index_add(paddle.zeros([w_aug.shape[1], w_aug.shape[0]], h.dtype), targets, 0, h_aug)
    dw_aug = dw_aug - onehot_part.T
    return total, dh, dw_aug[:-1], dw_aug[-1]


class _LinearCrossEntropy(PyLayer):
    """Mean over rows of cross_entropy(h @ weight + bias, targets); the gradient is made in the forward
    pass, chunk by chunk, so the [rows, vocab] logits and softmax are never all in memory at once."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets):
        n = h.shape[0]
        kernels = native_kernels(h)
        if kernels is not None:
            total, dh, dw, db = _linear_xent_native(kernels, h, weight, bias, targets)
            total = paddle.full([], total, dtype=h.dtype)
        else:
            total, dh, dw, db = _linear_xent_paddle(h, weight, bias, targets)
        ctx.saved = (dh, dw, db, n)
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
