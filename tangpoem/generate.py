"""Write poems from a checkpoint: continuation, acrostic, templates and fixed forms, from one decoding loop.

    python -m tangpoem.generate --model-path CKPT --start-words 老夫聊发少年狂,
    python -m tangpoem.generate --model-path CKPT --acrostic --start-words 夜月一帘幽梦春风十里柔情
    python -m tangpoem.generate --model-path CKPT --template "床前明月光，□□□□□。□□□□□，□□□□□。"
    python -m tangpoem.generate --model-path CKPT --form 七绝 --tones --candidates 4 --num-poems 4 --seed 7

Every mode is the same loop (`decode`): feed <START> and the prefix words (their outputs ignored),
then step the LSTM one character at a time for a whole batch of poems, carrying (h, c). Before each
character the `forms.Rules` either force a token (given start words, acrostic heads and template
characters, punctuation at a line end, <EOP> after the last line) or hand the ids of the allowed
tokens (the form's shape, 平水韵 rhyme, 平仄 tone patterns) to the sampler (temperature, top-k, top-p;
greedy at temperature 0; a character already in the poem loses `--repetition-penalty` nats, and
none comes three times in a row). Poem i of a request uses its own random stream seeded with seed + i
and Gumbel-max draws (see `sample`), so a batch gives the same poems as decoding them one by one.

Choosing by the model's own judgement (both off by default, both in the same loop):
- `--drafts N`: every couplet is written N times side by side and the likeliest per character is
  kept before the next couplet starts. The rhyme character is the hardest choice of a left-to-right
  model (it must close the line and fit the rhyme); drafting the whole couplet lets the model's
  probability of the line, rhyme included, choose among several ways to reach it.
- `--candidates K`: K whole poems per poem asked for; the likeliest per character is kept.
"Likeliest" is the mean log-probability the network gives the poem's characters, punctuation and
given characters (unconstrained softmax at temperature 1): how natural the model finds it.

The network runs on one of three interchangeable steps that give the same logits:
`numpy` (default: the checkpoint's weights in plain numpy, the fastest at batch 1 on a CPU),
`eager` (the Paddle model), or Paddle Inference on files from `python -m tangpoem.export`
(`--inference PATH`).
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: its process is set up before Paddle loads (device.prepare_command)
    from tangpoem.device import prepare_command

    prepare_command()

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tangpoem.checkpoint import Checkpoint, load_checkpoint
from tangpoem.config import COMMANDS, ArgumentParser, Config, add_config_args, check_value, parse_config_args
from tangpoem.device import set_blas_threads, usable_cpus
from tangpoem.errors import TangpoemError, cli_main, excerpt
from tangpoem.forms import (
    LINE_ENDS,
    SENTENCE_ENDS,
    Layout,
    PoemState,
    Rules,
    Shape,
    VocabClasses,
    merge_shapes,
    parse_template,
    resolve_shape,
    vocab_classes,
)

if TYPE_CHECKING:  # the numpy generator never imports Paddle
    from tangpoem.model import PoetryModel

ASCII_PUNCT = str.maketrans({",": "，", ".": "。", "?": "？", "!": "！", ";": "；", ":": "："})
BACKENDS = ("numpy", "eager")
TOP_P_CANDIDATES = 256  # top-p first looks among the most likely 256, then 4x more while they fall short
MAX_ROWS = 256  # poems x candidates x drafts decoded at once; larger requests go in chunks (bounded memory)
TONES_BY_DEFAULT = False  # --tones for forms when not asked either way (see README: measured)


# ---------------------------------------------------------------- options and results


@dataclass
class Options:
    """What a request may set; the defaults are Config's, except no prefix words in the Python API.

    rhyme and tones: None means the default: rhyme on for the four forms (a template or acrostic of
    that shape included) and with tones; tones as TONES_BY_DEFAULT.
    """

    prefix_words: str = ""
    form: str = ""
    line_length: int = 0
    lines: int = 0
    rhyme: bool | None = None
    tones: bool | None = None
    pattern: str = ""
    temperature: float = Config.temperature
    top_k: int = Config.top_k
    top_p: float = Config.top_p
    repeat_guard: bool = True
    repetition_penalty: float = Config.repetition_penalty
    candidates: int = Config.candidates
    drafts: int = Config.drafts
    seed: int = Config.seed
    num_poems: int = Config.num_poems
    max_gen_len: int = Config.max_gen_len

    @classmethod
    def from_config(cls, cfg: Config) -> Options:
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    def check(self) -> None:
        """Every value within its Config field's range (the command line checks the same way)."""
        for f in fields(self):
            setattr(self, f.name, check_value(f.name, getattr(self, f.name)))


@dataclass
class Poem:
    text: str
    lines: list[str]  # 句: each with its closing punctuation
    couplets: list[str]  # what the CLI prints, one per line
    seed: int
    ended: str  # 'eop' (the model ended it), 'shape' (last line of the form), 'max_gen_len'
    score: float | None = None  # mean log-probability per character (with --candidates/--drafts)
    rhyme: str = ""  # the 平水韵 group(s) the poem rhymes on (with rhyme)
    pattern: str = ""  # the tone pattern it keeps (with --tones)

    def __str__(self) -> str:
        return "\n".join(self.couplets)


def split_poem(text: str) -> tuple[list[str], list[str]]:
    lines, couplets, line, couplet = [], [], "", ""
    for ch in text:
        line += ch
        couplet += ch
        if ch in LINE_ENDS:
            lines.append(line)
            line = ""
        if ch in SENTENCE_ENDS:
            couplets.append(couplet)
            couplet = ""
    if line:
        lines.append(line)
    if couplet:
        couplets.append(couplet)
    return lines, couplets


# ---------------------------------------------------------------- network steps


class Step(Protocol):
    """Feeds one token per poem and keeps (h, c); returns logits only for the rows that need them.

    get_state/set_state expose (h, c), each [layers, batch, hidden], so the decoder can copy one
    poem's state to others (drafts) or hold a poem still while others catch up.
    """

    def reset(self, batch: int) -> None: ...

    def step(self, ids: np.ndarray, rows: list[int]) -> np.ndarray | None: ...

    def get_state(self) -> tuple[np.ndarray, np.ndarray]: ...

    def set_state(self, h: np.ndarray, c: np.ndarray) -> None: ...


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
        self.out_w = np.ascontiguousarray(w["linear.weight"], dtype=np.float32)  # [H, V]
        self.out_b = w["linear.bias"].astype(np.float32)
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
        top = x if len(rows) == len(x) else x[rows]
        logits = top @ self.out_w
        logits += self.out_b
        return logits


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


EXPORT_FORMAT = "tangpoem-step"  # PATH.meta.json of `tangpoem.export`


def vocab_hash(vocab: list[str]) -> str:
    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


def exported_files(path: str) -> tuple[str, str] | None:
    """The program and parameters `paddle.jit.save` wrote at PATH (3.x: .json, 2.x: .pdmodel)."""
    for program in (path + ".json", path + ".pdmodel"):
        if os.path.isfile(program) and os.path.isfile(path + ".pdiparams"):
            return program, path + ".pdiparams"
    return None


def file_record(path: str) -> dict[str, Any]:
    """Size and sha256 of an exported file, as the export's meta file records them."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


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


def make_step(ckpt: Checkpoint, backend: str = "numpy", inference: str = "", num_threads: int = 1) -> Step:
    """The network step to decode with, on num_threads CPU threads (0: one per usable CPU).

    The command's default is 1: at batch 1 a second BLAS thread halves the numpy step on an idle
    machine (about 1.0 vs 1.9 ms), but when another process holds a core the two threads wait on each
    other and the step takes 20-30 ms (measured on the project machine); one thread is never that slow.
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


# ---------------------------------------------------------------- sampling


def sample(
    logits: np.ndarray,
    allowed: list[np.ndarray],
    banned: list[list[int]],
    rngs: list[np.random.Generator],
    temperature: float,
    top_k: int,
    top_p: float,
    used: list[list[int]] | None = None,
    penalty: float = 0.0,
) -> np.ndarray:
    """One token per row of logits [b, V], among that row's allowed ids, drawn with that row's rng.

    The draw is Gumbel-max: each sampled step takes one 64-bit number from the poem's own stream, makes
    from it a uniform number per token id (`_uniforms_by_id`), and picks argmax(logit / T + Gumbel noise)
    over the allowed, top-k and top-p set, which samples from softmax(logits / T) on that set. Why not
    the usual inverse CDF: a batch of rows is computed by a different BLAS kernel (gemm) than one row
    (gemv), so logits differ in the last bit;
    with an inverse CDF over a sorted, cut-off distribution such a difference moves every later
    boundary (a token entering the nucleus, two near-equal tokens swapping places) and changes the
    draw about once per thousand steps. With Gumbel-max a last-bit change only matters if it swaps
    the two best perturbed scores, so a batch writes the same poems as decoding one by one.
    Rows are computed independently (no cross-row reductions); softmax and filters in float64.

    `banned` ids are removed; `used` ids (characters the poem already has) lose `penalty` nats
    before temperature and filters: Tang verse avoids repeating a character (律诗 forbids 重字),
    and a small model, greedy above all, otherwise loops on one line.
    """
    out = np.empty(len(allowed), dtype=np.int64)
    for r, ids in enumerate(allowed):
        x = logits[r, ids].astype(np.float64)
        if penalty and used and used[r]:
            x[_positions(ids, used[r])] -= penalty
        if banned[r]:
            drop = _positions(ids, banned[r])
            if len(drop) and len(drop) < len(ids):  # never ban the last allowed token
                ids, x = np.delete(ids, drop), np.delete(x, drop)
        if temperature <= 0:
            out[r] = ids[int(np.argmax(x))]
            continue
        x /= temperature
        if 0 < top_k < len(x):
            part = np.argpartition(x, len(x) - top_k)[len(x) - top_k :]
            ids, x = ids[part], x[part]
        if top_p < 1:
            keep = _nucleus(x, top_p)
            ids, x = ids[keep], x[keep]
        # Gumbel noise -log(-log(U)): one draw from the stream per step, so it stays aligned whatever the set
        u = _uniforms_by_id(int(rngs[r].integers(0, 2**63)), ids)
        out[r] = ids[int(np.argmax(x - np.log(-np.log(u))))]
    return out


def _positions(ids: np.ndarray, tokens: list[int]) -> np.ndarray:
    """Where tokens sit in the sorted ids (those that are there)."""
    tokens = np.array(sorted(set(tokens)), dtype=ids.dtype)  # a poem's few dozen: np.unique costs 10x more
    at = np.searchsorted(ids, tokens)
    hit = at < len(ids)
    hit[hit] = ids[at[hit]] == tokens[hit]
    return at[hit]


_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _uniforms_by_id(key: int, ids: np.ndarray) -> np.ndarray:
    """Uniform numbers in (0, 1), one per token id, from one 64-bit key (splitmix64 of key + id): a token
    gets the same number whatever else is allowed, and only the tokens in play cost anything (drawing
    one number per vocabulary entry took longer than the rest of a sampled step)."""
    with np.errstate(over="ignore"):
        z = (ids.astype(np.uint64) + np.uint64(key)) * _MIX[0]
        z = (z ^ (z >> np.uint64(30))) * _MIX[1]
        z = (z ^ (z >> np.uint64(27))) * _MIX[2]
        z ^= z >> np.uint64(31)
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _nucleus(x: np.ndarray, top_p: float) -> np.ndarray:
    """Indices (in id order) of the smallest most-likely set holding top_p of softmax(x)'s probability.

    Gumbel-max needs the set, not its order, so this finds the threshold from values alone: a partition
    (linear) of the most likely 256 logits, then 4x more until they hold top_p, and a sort of only those;
    ties at the threshold are all kept. Only the normaliser needs every token: its exponentials are
    float32 (numpy's float64 exp has no SIMD loop on AVX2 machines: it was a fifth of a sampled step),
    summed in float64; the candidates' probabilities are float64.
    """
    n, k = len(x), TOP_P_CANDIDATES
    top = x.max()
    mass = top_p * np.exp((x - top).astype(np.float32)).sum(dtype=np.float64)  # top_p of the normaliser
    candidates = x
    while k < n:
        candidates = np.partition(x, n - k)[n - k :]
        if np.exp(candidates - top).sum() >= mass:
            break
        k *= 4
    else:
        candidates = x
    candidates = np.sort(candidates)[::-1]
    count = min(int(np.searchsorted(np.cumsum(np.exp(candidates - top)), mass)) + 1, len(candidates))
    return np.flatnonzero(x >= candidates[count - 1])


def _log_probs(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """log softmax(logits)[token] per row, in float64: the model's own judgement of each choice."""
    x = logits.astype(np.float64)
    top = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - top).sum(axis=1)) + top[:, 0]
    return x[np.arange(len(x)), tokens] - lse


class _Scores:
    """Per-row sums of log-probabilities: the whole poem's, and the current couplet's (for drafts)."""

    def __init__(self, n: int):
        self.total, self.count = np.zeros(n), np.zeros(n, np.int64)
        self.part, self.part_count = np.zeros(n), np.zeros(n, np.int64)

    def add(self, rows: list[int], logp: np.ndarray) -> None:
        self.total[rows] += logp
        self.count[rows] += 1
        self.part[rows] += logp
        self.part_count[rows] += 1

    def mean(self, rows, part: bool = False) -> np.ndarray:
        s, n = (self.part, self.part_count) if part else (self.total, self.count)
        return s[rows] / np.maximum(n[rows], 1)

    def copy_row(self, dst: int, src: int) -> None:
        for a in (self.total, self.count, self.part, self.part_count):
            a[dst] = a[src]


@dataclass
class Job:
    """One request to the decoder: its rules, the tokens it primes with and is given, its poems' seeds."""

    rules: Rules
    prime: list[int]  # <START> + prefix words: fed first, outputs ignored
    given: list[int]  # start words: forced before the rules decide
    seeds: list[int]  # one poem per seed
    opts: Options

    @property
    def widths(self) -> tuple[int, int]:
        """(candidates, drafts) per poem; greedy decoding would write them all alike, so one of each."""
        return (self.opts.candidates, self.opts.drafts) if self.opts.temperature > 0 else (1, 1)

    @property
    def rows(self) -> int:
        k, r = self.widths
        return len(self.seeds) * k * r


def decode(step: Step, jobs: list[Job]) -> list[list[tuple[PoemState, float | None]]]:
    """Decode every poem of every job as one batch: one network step per character for all of them.

    Each job primes its rows (outputs ignored), forces its given tokens, then samples under its rules
    until every poem ends. A poem has K candidates of R drafts, one row each: row (p * K + k) * R + r
    of its job. The R drafts of a candidate start each couplet from the same state; when all have
    closed it (or ended), the likeliest couplet is copied to the others. At the end the likeliest of
    the K candidates is the poem. Returns, per job and poem, its state and mean log-probability per
    character (None when nothing was compared).
    """
    batch = _Batch(step, jobs)
    while not batch.done:
        actions = batch.next_actions()  # per row: a forced token, the ids it may sample, or None
        logits, rows = batch.step_network(actions)
        chosen = batch.choose(actions, logits, rows)
        batch.advance(actions, chosen)
        batch.keep_likeliest_drafts()
    return batch.results()


class _Batch:
    """The rows of one decode: each row's poem state, random stream, scores, and what it feeds next."""

    def __init__(self, step: Step, jobs: list[Job]):
        self.step, self.jobs = step, jobs
        self.job_of = np.concatenate([np.full(job.rows, j) for j, job in enumerate(jobs)])
        self.first_row = np.cumsum([0] + [job.rows for job in jobs])
        n = int(self.first_row[-1])
        self.states = [jobs[j].rules.new_state() for j in self.job_of]
        self.rngs = [
            np.random.default_rng(seed if k == r == 0 else [seed, k, r])
            for job in jobs
            for seed in job.seeds
            for k in range(job.widths[0])
            for r in range(job.widths[1])
        ]
        self.scoring = [job.widths != (1, 1) for job in jobs]  # only then is a log-probability needed
        self.drafts = [list(range(a, a + job.widths[1])) for job, f in zip(jobs, self.first_row, strict=False)
                       for a in range(int(f), int(f) + job.rows, job.widths[1]) if job.widths[1] > 1]  # fmt: skip
        self.scores = _Scores(n)
        self.waiting = np.zeros(n, dtype=bool)  # drafts that closed their couplet, held until the others have
        self.feed = _prime(step, jobs, self.first_row)
        self.pad = jobs[0].rules.c.pad

    @property
    def done(self) -> bool:
        return all(st.done for st in self.states)

    def next_actions(self) -> list[Any]:
        actions: list[Any] = []
        for i, st in enumerate(self.states):
            job = self.jobs[self.job_of[i]]
            if st.done or self.waiting[i]:
                actions.append(None)
            elif len(st.tokens) < len(job.given):
                actions.append(job.given[len(st.tokens)])
            else:
                actions.append(job.rules.next(st))
        return actions

    def step_network(self, actions: list[Any]) -> tuple[np.ndarray | None, list[int]]:
        """Feed every row; logits only for rows that sample or whose forced token is scored (the output
        layer is most of a step). A waiting draft does not move: its state is put back."""
        rows = [i for i, a in enumerate(actions) if isinstance(a, np.ndarray) or (a is not None and self._scored(i))]
        held = self.step.get_state() if self.waiting.any() else None
        logits = self.step.step(self.feed, rows)
        if held is not None:
            h, c = self.step.get_state()
            h[:, self.waiting], c[:, self.waiting] = held[0][:, self.waiting], held[1][:, self.waiting]
            self.step.set_state(h, c)
        return logits, rows

    def _scored(self, i: int) -> bool:
        """Row i's next token counts in its poem's score (its job compares, and it is past the start words)."""
        job = self.jobs[self.job_of[i]]
        return self.scoring[self.job_of[i]] and len(self.states[i].tokens) >= len(job.given)

    def choose(self, actions: list[Any], logits: np.ndarray | None, rows: list[int]) -> dict[int, int]:
        """Each row's token: the forced one, or a draw with its job's sampler settings; scores updated."""
        chosen = {i: int(a) for i, a in enumerate(actions) if a is not None and not isinstance(a, np.ndarray)}
        at = {row: k for k, row in enumerate(rows)}
        for j, job in enumerate(self.jobs):
            mine = [i for i in rows if self.job_of[i] == j and isinstance(actions[i], np.ndarray)]
            if mine:
                o, states = job.opts, self.states
                picks = sample(
                    logits[[at[i] for i in mine]], [actions[i] for i in mine],
                    [job.rules.banned(states[i], o.repeat_guard) for i in mine], [self.rngs[i] for i in mine],
                    o.temperature, o.top_k, o.top_p, [states[i].tokens for i in mine], o.repetition_penalty,
                )  # fmt: skip
                chosen.update(zip(mine, picks.tolist(), strict=True))
        scored = [i for i in rows if self._scored(i)]
        if scored:
            tokens = np.array([chosen[i] for i in scored])
            self.scores.add(scored, _log_probs(logits[[at[i] for i in scored]], tokens))
        return chosen

    def advance(self, actions: list[Any], chosen: dict[int, int]) -> None:
        """Each row takes its token; a draft that closed its couplet waits for the others."""
        for i, st in enumerate(self.states):
            if actions[i] is None:
                if st.done:
                    self.feed[i] = self.pad
                continue
            job = self.jobs[self.job_of[i]]
            lines_before = st.lines_done
            job.rules.advance(st, chosen[i])
            self.feed[i] = self.pad if st.done else chosen[i]  # <EOP> is never fed back as text
            couplet_closed = st.lines_done > lines_before and st.lines_done % 2 == 0
            if couplet_closed and not st.done and job.widths[1] > 1:
                self.waiting[i] = True

    def keep_likeliest_drafts(self) -> None:
        if self.drafts:
            _choose_drafts(self.step, self.drafts, self.states, self.scores, self.waiting, self.feed)

    def results(self) -> list[list[tuple[PoemState, float | None]]]:
        """Per job, per poem: the likeliest candidate's state and mean log-probability."""
        out = []
        for j, job in enumerate(self.jobs):
            k_count, r_count = job.widths
            poems = []
            for p in range(len(job.seeds)):
                first = int(self.first_row[j]) + p * k_count * r_count
                candidates = list(range(first, first + k_count * r_count, r_count))
                best = candidates[int(np.argmax(self.scores.mean(candidates)))] if k_count > 1 else first
                poems.append((self.states[best], float(self.scores.mean([best])[0]) if self.scoring[j] else None))
            out.append(poems)
        return out


def _prime(step: Step, jobs: list[Job], first_row: np.ndarray) -> np.ndarray:
    """Feed every job's prime but its last token (their outputs are not needed); jobs that share a prime
    are fed together. Returns the tokens the first step of the loop feeds: each prime's last."""
    n = int(first_row[-1])
    feed = np.empty(n, dtype=np.int64)
    by_prime: dict[tuple[int, ...], list[int]] = {}
    for j, job in enumerate(jobs):
        rows = range(int(first_row[j]), int(first_row[j + 1]))
        by_prime.setdefault(tuple(job.prime), []).extend(rows)
        feed[list(rows)] = job.prime[-1]

    def feed_prime(prime: tuple[int, ...], count: int) -> None:
        step.reset(count)
        for tok in prime[:-1]:
            step.step(np.full(count, tok, dtype=np.int64), [])

    if len(by_prime) == 1:  # the usual case: the rows' states are the step's own, nothing to gather
        feed_prime(next(iter(by_prime)), n)
        return feed
    h = c = None
    for prime, rows in by_prime.items():
        feed_prime(prime, len(rows))
        hp, cp = step.get_state()
        if h is None:
            h = np.zeros((hp.shape[0], n, hp.shape[2]), hp.dtype)
            c = np.zeros_like(h)
        h[:, rows], c[:, rows] = hp, cp
    step.reset(n)
    step.set_state(h, c)
    return feed


def _choose_drafts(step: Step, groups: list[list[int]], states: list[PoemState], scores: _Scores,
                   waiting: np.ndarray, feed: np.ndarray) -> None:  # fmt: skip
    """Where every draft of a candidate has closed its couplet (or ended), keep the likeliest couplet."""
    state = None
    for group in groups:
        if all(states[i].done for i in group):
            waiting[group] = False
            continue
        if not all(waiting[i] or states[i].done for i in group):
            continue
        best = group[int(np.argmax(scores.mean(group, part=True)))]
        if state is None:
            state = step.get_state()
        h, c = state
        for i in group:
            if i != best:
                states[i] = states[best].copy()
                h[:, i], c[:, i] = h[:, best], c[:, best]
                feed[i] = feed[best]
                scores.copy_row(i, best)
            scores.part[i], scores.part_count[i] = 0.0, 0
        waiting[group] = False
    if state is not None:
        step.set_state(*state)


# ---------------------------------------------------------------- the API


def normalise(text: str) -> str:
    """ASCII punctuation to full width, traditional to simplified (the corpus's OpenCC t2s), no spaces."""
    from tangpoem.corpus import to_simplified

    return "".join(to_simplified(text.translate(ASCII_PUNCT)).split())


class Poet:
    """Poems from one checkpoint: `Poet.load(path)`, then `continue_poem`, `acrostic` or `fill`."""

    def __init__(self, vocab: list[str], step: Step, backend: str = "numpy", ckpt: Checkpoint | None = None):
        try:
            self.classes: VocabClasses = vocab_classes(vocab)
        except KeyError as err:
            raise TangpoemError(f"the model's vocabulary lacks the special token {err}") from None
        self.vocab = vocab
        self.step = step
        self.backend = backend
        self.ckpt = ckpt

    @classmethod
    def load(cls, path: str | None = None, backend: str = "numpy", inference: str = "", num_threads: int = 1) -> Poet:
        """A checkpoint's poet; path None: the configured checkpoint (`choose_model`), else the bundled one."""
        ckpt = load_checkpoint(path if path is not None else choose_model(Config()))
        step = make_step(ckpt, backend, inference, num_threads)
        return cls(ckpt.vocab, step, "inference" if inference else backend, ckpt)

    @classmethod
    def from_model(cls, model: PoetryModel, vocab: list[str]) -> Poet:
        """A Poet on a live Paddle model (the trainer's samples), through the same decoder."""
        return cls(vocab, EagerStep(model), "eager")

    # -- input checks

    def encode(self, text: str, what: str) -> list[int]:
        missing = [ch for ch in dict.fromkeys(text) if ch not in self.classes.word2ix]
        if missing:
            named = ", ".join(f"'{ch}' (U+{ord(ch):04X})" for ch in missing[:8])
            named += f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            raise TangpoemError(f"{what}: not in the model's vocabulary: {named}; use other characters")
        return [self.classes.word2ix[ch] for ch in text]

    def log_probs(self, text: str, prefix_words: str = "") -> np.ndarray:
        """The log-probability the model gives each token of text (after <START> and the prefix words)."""
        prime = [self.classes.start, *self.encode(normalise(prefix_words), "prefix words")]
        tokens = self.encode(normalise(text), "text")
        if not tokens:
            raise TangpoemError("nothing to score: the text is empty")
        self.step.reset(1)
        for tok in prime[:-1]:
            self.step.step(np.array([tok]), [])
        out, feed = np.empty(len(tokens)), prime[-1]
        for i, tok in enumerate(tokens):
            out[i] = _log_probs(self.step.step(np.array([feed]), [0]), np.array([tok]))[0]
            feed = tok
        return out

    def score(self, text: str, prefix_words: str = "") -> float:
        """The mean log-probability per token the model gives text: the figure --candidates and
        --drafts choose by."""
        return float(self.log_probs(text, prefix_words).mean())

    # -- the three modes

    def continue_poem(self, start_words: str = "", **options: Any) -> list[Poem]:
        """Poems that begin with start_words (teacher forced) and go on under the options' form."""
        return self.write("continue", start_words, Options(**options))

    def acrostic(self, heads: str, **options: Any) -> list[Poem]:
        """Poems whose i-th line begins with the i-th character of heads, each used once, in order."""
        return self.write("acrostic", heads, Options(**options))

    def fill(self, template: str, **options: Any) -> list[Poem]:
        """Poems that keep the template's characters and fill its blanks (□ _ ＿), e.g. to write again
        the lines of a poem one did not keep: '床前明月光，□□□□□。□□□□□，□□□□□。'."""
        return self.write("template", template, Options(**options))

    def write(self, mode: str, text: str, opts: Options, unconstrained: bool = False) -> list[Poem]:
        """mode 'continue' (text: start words), 'acrostic' (heads) or 'template'."""
        return self._decode([self.job(mode, text, opts, unconstrained)])[0]

    def write_batch(self, requests: list[tuple[str, str, Options]]) -> list[list[Poem] | TangpoemError]:
        """Several requests (mode, text, options) decoded together, as one batch: each one's poems, or
        the TangpoemError that refused it. The poems are those `write` gives each alone (same seed,
        same result): rows never influence each other."""
        jobs: list[Job] = []
        out: list[list[Poem] | TangpoemError] = []
        for mode, text, opts in requests:
            try:
                jobs.append(self.job(mode, text, opts))
                out.append([])
            except TangpoemError as err:
                out.append(err)
        results = iter(self._decode(jobs))
        return [err if isinstance(err, TangpoemError) else next(results) for err in out]

    def job(self, mode: str, text: str, opts: Options, unconstrained: bool = False) -> Job:
        """The decoder's job for a request, or a TangpoemError saying what in it cannot be written."""
        opts.check()
        shape = resolve_shape(opts.form, opts.line_length, opts.lines)
        prefix = self.encode(normalise(opts.prefix_words), "prefix words")
        layout, given, text = Layout(), [], normalise(text)
        if mode == "acrostic":
            layout = self._heads(text, shape)
            shape = merge_shapes(Shape(lines=max(shape.lines or 0, len(layout.fixed))), shape, "the acrostic")
        elif mode == "template":
            layout = parse_template(text, self.classes)
            shape = merge_shapes(layout.shape, shape, "the template")
        elif mode == "continue":
            given = self.encode(text, "start words")
        else:
            raise TangpoemError(f"unknown mode '{mode}': continue, acrostic or template")
        if shape.lines and shape.line_length and shape.lines * (shape.line_length + 1) > opts.max_gen_len:
            need = shape.lines * (shape.line_length + 1)
            raise TangpoemError(f"the poem needs {need} characters but --max-gen-len is {opts.max_gen_len}")
        tones = (TONES_BY_DEFAULT and shape.is_form) if opts.tones is None else opts.tones
        rhyme = (shape.is_form or tones) if opts.rhyme is None else opts.rhyme  # regulated verse rhymes
        if opts.pattern and not tones:
            raise TangpoemError("--pattern names a tone pattern: use it with --tones")
        rules = Rules(self.classes, shape, layout, rhyme, tones, opts.pattern, opts.max_gen_len, unconstrained)
        self._check_given(rules, given, text)
        seeds = [opts.seed + i for i in range(opts.num_poems)]
        return Job(rules, [self.classes.start, *prefix], given, seeds, opts)

    def _decode(self, jobs: list[Job]) -> list[list[Poem]]:
        """Decode the jobs in batches of at most MAX_ROWS rows (a large job is split by its poems)."""
        pieces: list[tuple[int, Job]] = []  # (job index, a part of its poems)
        for j, job in enumerate(jobs):
            per_batch = max(1, MAX_ROWS // (job.rows // len(job.seeds)))
            for first in range(0, len(job.seeds), per_batch):
                pieces.append((j, replace(job, seeds=job.seeds[first : first + per_batch])))
        poems: list[list[Poem]] = [[] for _ in jobs]
        batch: list[tuple[int, Job]] = []
        for piece in [*pieces, None]:
            if batch and (piece is None or sum(p.rows for _, p in batch) + piece[1].rows > MAX_ROWS):
                for (j, part), results in zip(batch, decode(self.step, [p for _, p in batch]), strict=True):
                    poems[j] += [self._poem(part.rules, st, seed, score)
                                 for (st, score), seed in zip(results, part.seeds, strict=True)]  # fmt: skip
                batch = []
            if piece is not None:
                batch.append(piece)
        return poems

    def _heads(self, text: str, shape: Shape) -> Layout:
        words = "".join(ch for ch in text if ch not in "，。？！；：、")
        if not words:
            raise TangpoemError("the acrostic phrase is empty: give its head characters with --start-words")
        heads = self.encode(words, "acrostic heads")
        bad = [self.vocab[t] for t in heads if not self.classes.text[t]]
        if bad:
            raise TangpoemError(f"acrostic heads must be Chinese characters, not {' '.join(bad)}")
        if shape.lines is not None and len(heads) > shape.lines:
            what = f"--form {shape.name}" if shape.name else f"--lines {shape.lines}"
            raise TangpoemError(f"{len(heads)} head characters but {what} has only {shape.lines} lines")
        return Layout(Shape(lines=len(heads)), {(i, 0): t for i, t in enumerate(heads)}, "the acrostic heads")

    def _check_given(self, rules: Rules, given: list[int], words: str) -> None:
        """Start words are forced, not sampled: they must already obey the rules, or we say where not."""
        st = rules.new_state()
        words = excerpt(words)
        for i, token in enumerate(given):
            if st.done and st.ended == "max_gen_len":
                raise TangpoemError(f"--max-gen-len {rules.max_len} is shorter than the start words '{words}'")
            if st.done:
                raise TangpoemError(f"the start words '{words}' go on after the poem's last line ('{words[i:]}')")
            why = rules.check(st, token)
            if why:
                hint = "change --start-words, or pass --start-words '' to let the model begin"
                raise TangpoemError(f"the start words '{words}' do not fit: {why}; {hint}")
            rules.advance(st, token)

    def _poem(self, rules: Rules, st: PoemState, seed: int, score: float | None) -> Poem:
        text = "".join(self.vocab[t] for t in st.tokens)
        if st.ended == "max_gen_len":  # cut back to the last whole couplet, else the last whole line
            last = max(text.rfind(p) for p in SENTENCE_ENDS)
            if last < 0:
                last = max(text.rfind(p) for p in LINE_ENDS)
            text = text[: last + 1] if last >= 0 else text
        lines, couplets = split_poem(text)
        rhyme = self.classes.group_label(st.rhyme) if rules.rhyme and st.rhyme else ""
        pattern = "/".join(dict.fromkeys(rules.patterns[p][0] for p in sorted(st.patterns))) if st.patterns else ""
        return Poem(text, lines, couplets, seed, st.ended, score, rhyme, pattern)


def choose_model(cfg: Config, quiet: bool = False) -> str:
    """The checkpoint to write with when none is named: the configured model_path if it exists, else the
    newest checkpoint of the configured model_prefix, else the newest of any prefix in its folder
    (work/checkpoints: a model the user trained, with whatever config, is never shadowed), else the model
    shipped in the package, with one line saying so and how to train one's own."""
    if Path(cfg.model_path).is_file():
        return cfg.model_path
    from tangpoem.checkpoint import folder_checkpoints, latest_checkpoint

    latest = latest_checkpoint(cfg.model_prefix)
    if latest is None:
        found = folder_checkpoints(Path(cfg.model_prefix).parent)
        latest = max(found, key=lambda p: Path(p).stat().st_mtime) if found else None
    if latest is not None:
        if not quiet:
            print(f"note: {cfg.model_path} does not exist; using your newest checkpoint {latest}", file=sys.stderr)
        return latest
    if not quiet:
        print(
            f"note: no checkpoint at {cfg.model_path}; writing with the bundled model (--model-path bundled). "
            "Train your own: python -m tangpoem.train -c cpu",
            file=sys.stderr,
        )
    return "bundled"


# ---------------------------------------------------------------- CLI

SETTINGS = COMMANDS["tangpoem.generate"]
DEFAULTS = {"num_threads": 1}  # see make_step: one BLAS thread is never slow, two can be


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m tangpoem.generate", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    add_config_args(parser, SETTINGS, DEFAULTS)
    parser.add_argument("--json", action="store_true", help="one JSON object per poem (poem, lines, settings, seed)")
    parser.add_argument("--backend", choices=BACKENDS, default="numpy", help="how to run the network (default: numpy)")
    parser.add_argument("--inference", metavar="PATH", default="", help="run PATH from `tangpoem.export` instead")
    cfg, args = parse_config_args(parser, argv)
    if cfg.acrostic and cfg.template:
        raise TangpoemError("--acrostic and --template are two modes: give one")
    if "start_words" not in vars(args) and cfg.start_words == Config.start_words and not cfg.template:
        # the tutorial's start words (a 7-character line) are its default continuation, not acrostic heads
        # nor a fit for a 5-character form: then the model begins (or, for an acrostic, asks for the heads)
        length = resolve_shape(cfg.form, cfg.line_length, cfg.lines).line_length
        if cfg.acrostic or length not in (None, 7):
            cfg.start_words = ""
    model = cfg.model_path if "model_path" in vars(args) else choose_model(cfg)  # a named one must exist
    poet = Poet.load(model, args.backend, args.inference, cfg.num_threads)
    opts = Options.from_config(cfg)
    mode, text = (
        ("template", cfg.template) if cfg.template else ("acrostic" if cfg.acrostic else "continue", cfg.start_words)
    )
    poems = poet.write(mode, text, opts)
    settings = {"mode": mode, "text": text, **asdict(opts), "model_path": model, "backend": poet.backend}
    for i, poem in enumerate(poems):
        if args.json:
            record = {"poem": poem.text, "lines": poem.lines, "couplets": poem.couplets, "seed": poem.seed}
            record.update(ended=poem.ended, score=poem.score, rhyme=poem.rhyme, pattern=poem.pattern, settings=settings)
            print(json.dumps(record, ensure_ascii=False))
        else:
            if i:
                print()
            print(poem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
