"""The network, one token per poem per call: three interchangeable steps that give the same logits.

`numpy` (default: the checkpoint's weights in plain numpy, the fastest at batch 1 on a CPU), `eager`
(the Paddle model), or Paddle Inference on files from `python -m tangpoem.export` (`inference`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tangpoem.checkpoint import Checkpoint
from tangpoem.device import set_blas_threads, usable_cpus
from tangpoem.errors import TangpoemError
from tangpoem.export import EXPORT_FORMAT, exported_files, file_record, vocab_hash

if TYPE_CHECKING:  # the numpy generator never imports Paddle
    from tangpoem.model import PoetryModel

BACKENDS = ("numpy", "eager")


class Step(Protocol):
    """Feeds one token per poem and keeps (h, c); returns logits only for the rows that need them.

    get_state/set_state expose (h, c), each [layers, batch, hidden], so the decoder can copy one
    poem's state to others (drafts) or hold a poem still while others catch up.
    """

    def reset(self, batch: int) -> None: ...

    def step(self, ids: np.ndarray, rows: list[int]) -> np.ndarray | None: ...

    def get_state(self) -> tuple[np.ndarray, np.ndarray]: ...

    def set_state(self, h: np.ndarray, c: np.ndarray) -> None: ...

    def peek(self, rows: np.ndarray, ids: np.ndarray) -> np.ndarray: ...


def peek_rows(step: Step, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The logits after feeding ids[j] to a copy of row rows[j]'s state, every row's own state left as it was:
    a look one character ahead (lookahead.py). Rows may repeat."""
    h, c = step.get_state()
    step.set_state(h[:, rows], c[:, rows])
    try:
        return step.step(np.asarray(ids, dtype=np.int64), list(range(len(rows))))
    finally:
        step.set_state(h, c)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Per row, in place (z: a float array of its own), returned."""
    z -= z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def numpy_output(ckpt: Checkpoint) -> Callable[[np.ndarray], np.ndarray]:
    """The output layer in numpy: hidden [rows, H] -> logits [rows, V] (log-probabilities for an adaptive
    softmax, as model.AdaptiveOutput computes them)."""
    w, cfg = ckpt.weights, ckpt.model_config
    if not cfg.output_cutoffs:
        out_w = np.ascontiguousarray(w["linear.weight"], dtype=np.float32)  # [H, V]
        out_b = w["linear.bias"].astype(np.float32)

        def full(hidden: np.ndarray) -> np.ndarray:
            logits = hidden @ out_w
            logits += out_b
            return logits

        return full
    shortlist, rank = cfg.output_cutoffs[0], w["adaptive.rank"]
    head_w, head_b = np.ascontiguousarray(w["adaptive.head.weight"]), w["adaptive.head.bias"]
    tails = [(np.ascontiguousarray(w[f"adaptive.tail_proj.{k}.weight"] @ w[f"adaptive.tail_out.{k}.weight"]),
              w[f"adaptive.tail_out.{k}.bias"]) for k in range(len(cfg.clusters()))]  # fmt: skip

    def adaptive(hidden: np.ndarray) -> np.ndarray:
        head = log_softmax(hidden @ head_w + head_b)
        parts = [head[:, :shortlist]]
        for k, (tail_w, tail_b) in enumerate(tails):  # the projection folded in: one product per cluster
            parts.append(log_softmax(hidden @ tail_w + tail_b) + head[:, shortlist + k, None])
        return np.concatenate(parts, axis=1)[:, rank]

    return adaptive


class NumpyStep:
    """The LSTM step in numpy from the checkpoint's weights: no framework overhead per step.

    Layer 0's input term (embedding @ W_ih + biases) depends on the token alone: it is computed once
    per token id and cached, so that layer multiplies only h. Layers above do one matmul of [x, h]
    with [W_ih; W_hh]. Gates are reordered i, f, o, g so one sigmoid covers three of them; the output
    layer only runs for rows that sample. Same maths as paddle.nn.LSTM (tested against eager).
    """

    def __init__(self, ckpt: Checkpoint):
        w = ckpt.weights
        cfg = ckpt.model_config
        self.hidden = H = cfg.hidden_dim
        self.num_layers = cfg.num_layers
        order = np.r_[0:H, H : 2 * H, 3 * H : 4 * H, 2 * H : 3 * H]  # paddle's i, f, g, o -> i, f, o, g
        self.layers = []  # (weights for [x, h] or for h alone, bias, input width)
        for k in range(self.num_layers):
            wih, whh = w[f"lstm.weight_ih_l{k}"][order], w[f"lstm.weight_hh_l{k}"][order]
            bias = (w[f"lstm.bias_ih_l{k}"] + w[f"lstm.bias_hh_l{k}"])[order].astype(np.float32)
            if k == 0:
                self.embedding = np.asarray(w["embeddings.weight"], dtype=np.float32)
                self.wih0 = np.ascontiguousarray(wih.T, dtype=np.float32)  # [E, 4H]
                self.bias0 = bias
                self.layers.append((np.ascontiguousarray(whh.T, dtype=np.float32), None, 0))
            else:
                joint = np.concatenate([wih, whh], axis=1).T  # [in + H, 4H]
                self.layers.append((np.ascontiguousarray(joint, dtype=np.float32), bias, wih.shape[1]))
        vocab = self.embedding.shape[0]
        self.input0 = np.empty((vocab, 4 * H), np.float32)  # filled lazily, token by token
        self.known = np.zeros(vocab, dtype=bool)
        self.output = numpy_output(ckpt)
        self.reset(1)

    def reset(self, batch: int) -> None:
        H = self.hidden
        # One [x, h] buffer per layer: h is written straight into its right half, no concatenation.
        self.xh = [np.zeros((batch, n_in + H), np.float32) for _, _, n_in in self.layers]
        self.c = np.zeros((self.num_layers, batch, H), np.float32)

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        h = np.stack([xh[:, -self.hidden :] for xh in self.xh])
        return h, self.c.copy()

    def set_state(self, h: np.ndarray, c: np.ndarray) -> None:
        if h.shape[1] != self.c.shape[1]:
            self.reset(h.shape[1])
        for k, xh in enumerate(self.xh):
            xh[:, -self.hidden :] = h[k]
        self.c[...] = c

    def peek(self, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return peek_rows(self, rows, ids)

    def _input0(self, ids: np.ndarray) -> np.ndarray:
        for t in ids[~self.known[ids]].tolist():
            if not self.known[t]:  # one row at a time: the same bits whichever batch asks first
                self.input0[t] = self.embedding[t] @ self.wih0 + self.bias0
                self.known[t] = True
        return self.input0[ids]

    def fill_input_table(self) -> None:
        """Every token's first-layer input now, not as characters first appear: a server's memory is then
        flat from its first request. Row by row, as step() fills it, so the poems are the same."""
        self._input0(np.arange(len(self.known)))

    def step(self, ids: np.ndarray, rows: list[int]) -> np.ndarray | None:
        H = self.hidden
        x = None
        for k, (weights, bias, n_in) in enumerate(self.layers):
            xh = self.xh[k]
            if k == 0:
                gates = xh @ weights
                gates += self._input0(ids)
            else:
                xh[:, :n_in] = x
                gates = xh @ weights
                gates += bias
            sig = gates[:, : 3 * H]
            np.multiply(sig, 0.5, out=sig)  # sigmoid(x) = 0.5 * tanh(x / 2) + 0.5: one ufunc pass
            np.tanh(sig, out=sig)
            sig *= 0.5
            sig += 0.5
            g = np.tanh(gates[:, 3 * H :])
            c = self.c[k]
            c *= sig[:, H : 2 * H]
            g *= sig[:, :H]
            c += g
            h = xh[:, n_in:]
            np.tanh(c, out=h)
            h *= sig[:, 2 * H : 3 * H]
            x = h
        if not rows:
            return None
        return self.output(x if len(rows) == len(x) else x[rows])


class EagerStep:
    """The Paddle model itself, one token per call, under no_grad (also: a model being trained)."""

    def __init__(self, model: PoetryModel):
        import paddle

        self.paddle = paddle
        self.model = model
        self.hidden = None

    def reset(self, batch: int) -> None:
        self.hidden = self.model.zero_state(batch)

    def step(self, ids: np.ndarray, rows: list[int]) -> np.ndarray | None:
        paddle = self.paddle
        with paddle.no_grad():
            x = paddle.to_tensor(ids.reshape(-1, 1).astype(np.int64))
            logits, self.hidden = self.model(x, self.hidden)
        if not rows:
            return None
        out = logits.numpy()
        return out if len(rows) == len(out) else out[rows]

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.hidden[0].numpy(), self.hidden[1].numpy()

    def set_state(self, h: np.ndarray, c: np.ndarray) -> None:
        self.hidden = (self.paddle.to_tensor(h), self.paddle.to_tensor(c))

    def peek(self, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return peek_rows(self, rows, ids)


class InferenceStep:
    """The step exported by `tangpoem.export`, run by a Paddle Inference predictor; (h, c) in numpy."""

    def __init__(self, path: str, ckpt: Checkpoint, num_threads: int = 1, ir_optim: bool = True, onednn: bool = False):
        import paddle.inference as pi

        files = exported_files(path)
        if files is None:
            raise TangpoemError(
                f"no exported step at {path} ({path}.json or .pdmodel, and .pdiparams); "
                f"write one with `python -m tangpoem.export --model-path CKPT --out {path}`"
            )
        try:
            meta = json.loads(Path(path + ".meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
            raise TangpoemError(f"{path}.meta.json is missing or not a tangpoem export; export the step again")
        if meta.get("vocab_sha256") != vocab_hash(ckpt.vocab) or meta.get("model") != ckpt.model_config.to_dict():
            raise TangpoemError(
                f"the step at {path} was exported from {meta.get('checkpoint', 'another checkpoint')}, "
                f"whose model or vocabulary differs from {ckpt.path}; export this checkpoint or pass that one"
            )
        for suffix, want in meta.get("files", {}).items():  # Paddle runs a truncated .pdiparams without a word
            if not os.path.isfile(path + suffix) or file_record(path + suffix) != want:
                raise TangpoemError(
                    f"the exported step at {path} cannot be loaded ({path}{suffix} is not the file the export "
                    f"wrote: damaged or replaced); export it again with "
                    f"`python -m tangpoem.export --model-path {ckpt.path} --out {path}`"
                )
        config = pi.Config(*files)
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(num_threads)
        config.switch_ir_optim(ir_optim)
        if onednn:
            config.enable_mkldnn()
        else:
            config.disable_mkldnn()
        config.disable_glog_info()
        try:
            self.predictor = pi.create_predictor(config)
        except (RuntimeError, ValueError, OSError) as err:  # a truncated or foreign file: Paddle says it in C++
            reason = str(err).strip().splitlines()[0][:200]
            raise TangpoemError(
                f"the exported step at {path} cannot be loaded ({reason}); export it again with "
                f"`python -m tangpoem.export --model-path {ckpt.path} --out {path}`"
            ) from None
        names = self.predictor.get_input_names()
        self.inputs = {n: self.predictor.get_input_handle(n) for n in names}
        self.outputs = [self.predictor.get_output_handle(n) for n in self.predictor.get_output_names()]
        self.shape = (ckpt.model_config.num_layers, ckpt.model_config.hidden_dim)
        self.reset(1)

    def reset(self, batch: int) -> None:
        layers, hidden = self.shape
        self.h = np.zeros((layers, batch, hidden), np.float32)
        self.c = np.zeros((layers, batch, hidden), np.float32)

    def step(self, ids: np.ndarray, rows: list[int]) -> np.ndarray | None:
        self.inputs["ids"].copy_from_cpu(np.ascontiguousarray(ids.reshape(-1, 1), dtype=np.int64))
        self.inputs["h"].copy_from_cpu(self.h)
        self.inputs["c"].copy_from_cpu(self.c)
        self.predictor.run()
        logits_h, h_h, c_h = self.outputs
        self.h = h_h.copy_to_cpu()
        self.c = c_h.copy_to_cpu()
        if not rows:
            return None
        out = logits_h.copy_to_cpu()
        return out if len(rows) == len(out) else out[rows]

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.h.copy(), self.c.copy()

    def set_state(self, h: np.ndarray, c: np.ndarray) -> None:
        self.h, self.c = np.ascontiguousarray(h), np.ascontiguousarray(c)

    def peek(self, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return peek_rows(self, rows, ids)


def make_step(ckpt: Checkpoint, backend: str = "numpy", inference: str = "", num_threads: int = 1) -> Step:
    """The network step to decode with, on num_threads CPU threads (0: one per usable CPU).

    The command's default is 1: at batch 1 a second BLAS thread halves the numpy step on an idle
    machine (about 1.0 vs 1.9 ms), but when another process holds a core the two threads wait on each
    other and the step takes 20-30 ms (benchmarks/README.md); one thread is never that slow.
    """
    threads = num_threads if num_threads > 0 else usable_cpus()
    if inference:
        return InferenceStep(inference, ckpt, threads)
    if backend == "numpy":
        set_blas_threads(threads)
        return NumpyStep(ckpt)
    if backend == "eager":
        from tangpoem.device import setup_device

        setup_device(False, threads)
        return EagerStep(ckpt.build_model())
    raise TangpoemError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
