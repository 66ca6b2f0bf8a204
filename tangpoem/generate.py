"""Write poems from a checkpoint: continuation, acrostic and fixed forms, from one decoding loop.

    python -m tangpoem.generate --model-path CKPT --start-words 老夫聊发少年狂,
    python -m tangpoem.generate --model-path CKPT --acrostic --start-words 夜月一帘幽梦春风十里柔情
    python -m tangpoem.generate --model-path CKPT --form 七绝 --rhyme --num-poems 4 --seed 7 --json

Every mode is the same loop (`decode`): feed <START> and the prefix words (their outputs ignored),
then step the LSTM one character at a time for a whole batch of poems, carrying (h, c). Before each
character the `forms.Rules` either force a token (given start words, acrostic heads, punctuation at
a line end, <EOP> after the last line) or hand the ids of the allowed tokens to the sampler
(temperature, top-k, top-p; greedy at temperature 0; a character already in the poem loses
`--repetition-penalty` nats, and none comes three times in a row). Poem i of a request uses its own random
stream seeded with seed + i and Gumbel-max draws (see `sample`), so a batch gives the same poems as
decoding them one by one.

The network runs on one of three interchangeable steps that give the same logits:
`numpy` (default: the checkpoint's weights in plain numpy, the fastest at batch 1 on a CPU),
`eager` (the Paddle model), or Paddle Inference on files from `python -m tangpoem.export`
(`--inference PATH`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import numpy as np

from tangpoem.checkpoint import Checkpoint, load_checkpoint
from tangpoem.config import Config, add_config_args, config_from_args
from tangpoem.device import set_blas_threads
from tangpoem.errors import TangpoemError, cli_main
from tangpoem.forms import LINE_ENDS, SENTENCE_ENDS, PoemState, Rules, VocabClasses, resolve_shape, vocab_classes

ASCII_PUNCT = str.maketrans({",": "，", ".": "。", "?": "？", "!": "！", ";": "；", ":": "："})
BACKENDS = ("numpy", "eager")
REPETITION_PENALTY = 1.0  # nats off the logit of a character the poem already has (see `sample`)
TOP_P_CANDIDATES = 256  # top-p first looks among the most likely 256, then 4x more while they fall short


# ---------------------------------------------------------------- options and results


@dataclass
class Options:
    """What a request may set; the defaults are Config's, except no prefix words in the Python API."""

    prefix_words: str = ""
    form: str = ""
    line_length: int = 0
    lines: int = 0
    rhyme: bool = False
    temperature: float = Config.temperature
    top_k: int = Config.top_k
    top_p: float = Config.top_p
    repeat_guard: bool = True
    repetition_penalty: float = REPETITION_PENALTY
    seed: int = Config.seed
    num_poems: int = Config.num_poems
    max_gen_len: int = Config.max_gen_len

    @classmethod
    def from_config(cls, cfg: Config) -> Options:
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls) if hasattr(cfg, f.name)})

    def check(self) -> None:
        if self.temperature < 0:
            raise TangpoemError(f"--temperature must be 0 (greedy) or more, not {self.temperature}")
        if self.top_k < 0:
            raise TangpoemError(f"--top-k must be 0 (off) or more, not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise TangpoemError(f"--top-p must be in (0, 1] (1 is off), not {self.top_p}")
        if self.num_poems < 1:
            raise TangpoemError(f"--num-poems must be at least 1, not {self.num_poems}")
        if self.repetition_penalty < 0:
            raise TangpoemError(f"--repetition-penalty must be 0 (off) or more, not {self.repetition_penalty}")
        if self.max_gen_len < 1:
            raise TangpoemError(f"--max-gen-len must be at least 1, not {self.max_gen_len}")


@dataclass
class Poem:
    text: str
    lines: list[str]  # 句: each with its closing punctuation
    couplets: list[str]  # what the CLI prints, one per line
    seed: int
    ended: str  # 'eop' (the model ended it), 'shape' (last line of the form), 'max_gen_len'

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
    """Feeds one token per poem and keeps (h, c); returns logits only for the rows that need them."""

    def reset(self, batch: int) -> None: ...

    def step(self, ids: np.ndarray, rows: list[int]) -> np.ndarray | None: ...


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

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        h = np.stack([xh[:, -self.hidden :] for xh in self.xh])
        return h, self.c.copy()

    def _input0(self, ids: np.ndarray) -> np.ndarray:
        for t in ids[~self.known[ids]].tolist():
            if not self.known[t]:  # one row at a time: the same bits whichever batch asks first
                self.input0[t] = self.embedding[t] @ self.wih0 + self.bias0
                self.known[t] = True
        return self.input0[ids]

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
    """The Paddle model itself, one token per call, under no_grad."""

    def __init__(self, ckpt: Checkpoint):
        import paddle

        self.paddle = paddle
        self.model = ckpt.build_model()
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


def make_step(ckpt: Checkpoint, backend: str = "numpy", inference: str = "", num_threads: int = 0) -> Step:
    """The network step to decode with. num_threads 0 means: 1 for numpy, one per core for Paddle.

    Why one BLAS thread for numpy: at batch 1 a second thread halves the step on an idle machine
    (about 1.0 vs 1.9 ms), but when another process holds a core the two threads wait on each other
    and the step takes 20-30 ms (measured on the project machine); one thread is never that slow.
    """
    if inference:
        from tangpoem.export import InferenceStep

        return InferenceStep(inference, ckpt, num_threads)
    if backend == "numpy":
        set_blas_threads(num_threads if num_threads > 0 else 1)
        return NumpyStep(ckpt)
    if backend == "eager":
        from tangpoem.device import setup_device

        setup_device(False, num_threads)
        return EagerStep(ckpt)
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

    The draw is Gumbel-max: each sampled step takes V exponentials from the poem's own stream, one per
    token id, and picks argmax(logit / T + Gumbel noise) over the allowed, top-k and top-p set, which
    samples from softmax(logits / T) on that set. Why not the usual inverse CDF: a batch of rows is
    computed by a different BLAS kernel (gemm) than one row (gemv), so logits differ in the last bit;
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
    vocab = logits.shape[1]
    for r, ids in enumerate(allowed):
        x = logits[r, ids].astype(np.float64)
        if penalty and used and used[r]:
            seen = np.zeros(vocab, dtype=bool)
            seen[used[r]] = True
            x[seen[ids]] -= penalty
        if banned[r]:
            keep = ~np.isin(ids, banned[r])
            if keep.any():  # never ban the last allowed token
                ids, x = ids[keep], x[keep]
        if temperature <= 0:
            out[r] = ids[int(np.argmax(x))]
            continue
        x /= temperature
        if 0 < top_k < len(x):
            part = np.argpartition(x, len(x) - top_k)[len(x) - top_k :]
            ids, x = ids[part], x[part]
        if top_p < 1:
            p = np.exp(x - x.max())
            p /= p.sum()
            keep = _nucleus(p, top_p)
            ids, x = ids[keep], x[keep]
        # Gumbel noise -log(E), E ~ Exp(1): always V draws, so the stream stays aligned whatever the set.
        e = rngs[r].standard_exponential(vocab)[ids]
        with np.errstate(divide="ignore"):
            score = x - np.log(e)
        out[r] = ids[int(np.argmax(score))]
    return out


def _nucleus(p: np.ndarray, top_p: float) -> np.ndarray:
    """Indices (in id order) of the smallest most-likely set holding top_p of the probability.

    Gumbel-max needs the set, not its order, so this finds the probability threshold from values
    alone: a partition (linear) of the most likely 256, then 4x more until they hold top_p, and a
    sort of only those values; ties at the threshold are all kept.
    """
    n, k = len(p), TOP_P_CANDIDATES
    top = p
    while k < n:
        top = np.partition(p, n - k)[n - k :]
        if top.sum() >= top_p:
            break
        k *= 4
    else:
        top = p
    top = np.sort(top)[::-1]
    count = min(int(np.searchsorted(np.cumsum(top), top_p)) + 1, len(top))
    return np.flatnonzero(p >= top[count - 1])


def repeat_ban(tokens: list[int]) -> list[int]:
    """No character three times in a row (reduplication like 萋萋 is fine; 山山山 is a loop)."""
    if len(tokens) >= 2 and tokens[-1] == tokens[-2]:
        return [tokens[-1]]
    return []


# ---------------------------------------------------------------- the loop


def decode(
    step: Step,
    rules: Rules,
    prime: list[int],
    given: list[int],
    seeds: list[int],
    opts: Options,
) -> list[PoemState]:
    """Feed `prime` (outputs ignored), force `given`, then sample under `rules` until every poem ends."""
    batch = len(seeds)
    states = [rules.new_state() for _ in seeds]
    rngs = [np.random.default_rng(s) for s in seeds]
    step.reset(batch)
    for tok in prime[:-1]:
        step.step(np.full(batch, tok, dtype=np.int64), [])
    feed = np.full(batch, prime[-1], dtype=np.int64)
    pad = rules.c.pad
    while True:
        actions: list[Any] = []
        for st in states:
            if st.done:
                actions.append(None)
            elif len(st.tokens) < len(given):
                actions.append(given[len(st.tokens)])
            else:
                actions.append(rules.next(st))
        rows = [i for i, a in enumerate(actions) if isinstance(a, np.ndarray)]
        logits = step.step(feed, rows)  # only rows that sample need the output layer
        chosen: dict[int, int] = {}
        if rows:
            banned = [repeat_ban(states[i].tokens) if opts.repeat_guard else [] for i in rows]
            used = [states[i].tokens for i in rows]  # punctuation is never in the allowed set with text
            picks = sample(
                logits, [actions[i] for i in rows], banned, [rngs[i] for i in rows],
                opts.temperature, opts.top_k, opts.top_p, used, opts.repetition_penalty,
            )  # fmt: skip
            chosen = dict(zip(rows, picks.tolist(), strict=True))
        for i, st in enumerate(states):
            if actions[i] is None:
                feed[i] = pad
                continue
            token = chosen[i] if i in chosen else int(actions[i])
            rules.advance(st, token)
            feed[i] = pad if st.done else token  # <EOP> is never fed back as text
        if all(st.done for st in states):
            return states


# ---------------------------------------------------------------- the API


def normalise(text: str) -> str:
    """ASCII punctuation to full width, traditional to simplified (the corpus's OpenCC t2s), no spaces."""
    from tangpoem.corpus import to_simplified

    return "".join(to_simplified(text.translate(ASCII_PUNCT)).split())


class Poet:
    """Poems from one checkpoint: `Poet.load(path)`, then `continue_poem(...)` or `acrostic(...)`."""

    def __init__(self, ckpt: Checkpoint, step: Step, backend: str = "numpy"):
        self.ckpt = ckpt
        self.vocab = ckpt.vocab
        self.classes: VocabClasses = vocab_classes(ckpt.vocab)
        self.step = step
        self.backend = backend

    @classmethod
    def load(cls, path: str, backend: str = "numpy", inference: str = "", num_threads: int = 0) -> Poet:
        ckpt = load_checkpoint(path)
        try:
            classes = vocab_classes(ckpt.vocab)
        except KeyError as err:
            raise TangpoemError(f"{path}: the vocabulary lacks the special token {err}") from None
        del classes
        return cls(ckpt, make_step(ckpt, backend, inference, num_threads), "inference" if inference else backend)

    # -- input checks

    def encode(self, text: str, what: str) -> list[int]:
        missing = [ch for ch in dict.fromkeys(text) if ch not in self.classes.word2ix]
        if missing:
            named = ", ".join(f"'{ch}' (U+{ord(ch):04X})" for ch in missing)
            raise TangpoemError(f"{what}: not in the model's vocabulary: {named}; use other characters")
        return [self.classes.word2ix[ch] for ch in text]

    # -- the two modes

    def continue_poem(self, start_words: str = "", **options: Any) -> list[Poem]:
        """Poems that begin with start_words (teacher forced) and go on under the options' form."""
        return self._write(start_words, acrostic=False, opts=Options(**options))

    def acrostic(self, heads: str, **options: Any) -> list[Poem]:
        """Poems whose i-th line begins with the i-th character of heads, each used once, in order."""
        return self._write(heads, acrostic=True, opts=Options(**options))

    def write(self, cfg: Config) -> list[Poem]:
        """What the command line asks for: continuation or acrostic per cfg.acrostic."""
        return self._write(cfg.start_words, acrostic=cfg.acrostic, opts=Options.from_config(cfg))

    def _write(self, words: str, acrostic: bool, opts: Options) -> list[Poem]:
        opts.check()
        shape = resolve_shape(opts.form, opts.line_length, opts.lines)
        c = self.classes
        words = normalise(words)
        prefix = self.encode(normalise(opts.prefix_words), "prefix words")
        heads: list[int] | None = None
        given: list[int] = []
        if acrostic:
            words = "".join(ch for ch in words if ch not in "，。？！；：、")
            if not words:
                raise TangpoemError("the acrostic phrase is empty: give its head characters with --start-words")
            heads = self.encode(words, "acrostic heads")
            bad = [self.vocab[t] for t in heads if not c.text[t]]
            if bad:
                raise TangpoemError(f"acrostic heads must be Chinese characters, not {' '.join(bad)}")
        else:
            given = self.encode(words, "start words")
        rules = Rules(c, shape, heads=heads, rhyme=opts.rhyme, max_len=opts.max_gen_len)
        if shape.lines and shape.line_length and shape.lines * (shape.line_length + 1) > opts.max_gen_len:
            need = shape.lines * (shape.line_length + 1)
            raise TangpoemError(f"the form needs {need} characters but --max-gen-len is {opts.max_gen_len}")
        self._check_given(rules, given, words)
        seeds = [opts.seed + i for i in range(opts.num_poems)]
        states = decode(self.step, rules, [c.start, *prefix], given, seeds, opts)
        return [self._poem(st, seed) for st, seed in zip(states, seeds, strict=True)]

    def _check_given(self, rules: Rules, given: list[int], words: str) -> None:
        """Start words are forced, not sampled: they must already obey the form, or we say where not."""
        st = rules.new_state()
        for i, token in enumerate(given):
            if st.done:
                raise TangpoemError(f"the start words '{words}' go on after the poem's last line ('{words[i:]}')")
            why = rules.check(st, token)
            if why:
                hint = "change --start-words, or pass --start-words '' to let the model begin"
                raise TangpoemError(f"the start words '{words}' do not fit: {why}; {hint}")
            rules.advance(st, token)

    def _poem(self, st: PoemState, seed: int) -> Poem:
        text = "".join(self.vocab[t] for t in st.tokens)
        if st.ended == "max_gen_len":  # cut back to the last whole couplet, else the last whole line
            last = max(text.rfind(p) for p in SENTENCE_ENDS)
            if last < 0:
                last = max(text.rfind(p) for p in LINE_ENDS)
            text = text[: last + 1] if last >= 0 else text
        lines, couplets = split_poem(text)
        return Poem(text, lines, couplets, seed, st.ended)


# ---------------------------------------------------------------- CLI


def _settings(cfg: Config, args: argparse.Namespace, poet: Poet) -> dict[str, Any]:
    keys = ["start_words", "acrostic", *(f.name for f in fields(Options)), "model_path"]
    out = {k: getattr(cfg, k) for k in keys if hasattr(cfg, k)}
    out["repeat_guard"] = not args.no_repeat_guard
    out["repetition_penalty"] = args.repetition_penalty
    out["backend"] = poet.backend
    return out


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tangpoem.generate", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    add_config_args(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per poem (poem, lines, settings, seed)")
    parser.add_argument("--backend", choices=BACKENDS, default="numpy", help="how to run the network (default: numpy)")
    parser.add_argument("--inference", metavar="PATH", default="", help="run PATH from `tangpoem.export` instead")
    parser.add_argument("--no-repeat-guard", action="store_true", help="allow a character three times in a row")
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        default=REPETITION_PENALTY,
        metavar="NATS",
        help="lower the logit of characters the poem already has by this much (0: off; default: %(default)s)",
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    poet = Poet.load(cfg.model_path, args.backend, args.inference, cfg.num_threads)
    options = asdict(Options.from_config(cfg))
    options["repeat_guard"] = not args.no_repeat_guard
    options["repetition_penalty"] = args.repetition_penalty
    write = poet.acrostic if cfg.acrostic else poet.continue_poem
    poems = write(cfg.start_words, **options)
    settings = _settings(cfg, args, poet)
    for i, poem in enumerate(poems):
        if args.json:
            record = {"poem": poem.text, "lines": poem.lines, "couplets": poem.couplets, "seed": poem.seed}
            record.update(ended=poem.ended, settings=settings)
            print(json.dumps(record, ensure_ascii=False))
        else:
            if i:
                print()
            print(poem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
