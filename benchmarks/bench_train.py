"""Training-step speed: tangpoem (Paddle) against a PyTorch reference of the identical network.

    python benchmarks/bench_train.py --data work/tang_poem.npz            # full run (~10 min)
    python benchmarks/bench_train.py --data work/tang_poem.npz --quick    # smoke test (~1 min)
    python benchmarks/bench_train.py --data work/tangsong.npz --learn 3   # full vs adaptive softmax (~15 min)

Each framework runs in its own subprocess, so peak RSS is that framework's own, and the driver
alternates their steps one by one (paddle, torch, torch, paddle, ...), so a load spike on this
shared machine hits both. One step is what tangpoem's trainer does: `loss.sequence_loss` (forward
+ masked cross-entropy), backward, global-norm clip 1.0, Adam 1e-3; PyTorch does the same with
`nn.Embedding -> nn.LSTM(batch_first) -> nn.Linear`.

Reported per run:
- tok/s: positions computed per second on random ids [batch, 124] with every position counted
  (same work for both frameworks); "ratio" = paddle / torch of the medians, "paired" = the median
  over steps of torch time / paddle time for the two steps that ran back to back;
- chars/s: real-corpus target characters learned per second (positions that count under
  `dataset.target_mask`): tangpoem on its length-bucketed, trimmed batches; PyTorch on the
  classic padded [batch, 124] rows;
- useful share: counted targets / computed positions over a whole epoch of the train split, for
  tangpoem's bucketed batches and for the classic padded layout;
- peak RSS of each worker process.
PyTorch is an optional benchmark dependency: `pip install torch==2.13.0` (the pinned CPU wheel).

`--learn MINUTES` (3 when given bare) is another question: what an equal share of wall time buys, full softmax
against adaptive softmax (cutoffs 2000,6000, div 4), in tangpoem and in PyTorch
(`nn.AdaptiveLogSoftmaxWithLoss` on the targets remapped to frequency rank, `train.frequency_ranks`, as
tangpoem's `AdaptiveOutput.set_ranks`). The network and batch size are configs/bundled.toml's; Adam at a constant
5e-3, clip 1.0, dropout 0. One helper process writes the batches once: an epoch of tangpoem's bucketed, trimmed
train batches in the trainer's order, with `dataset.target_mask`, and 2,000 held-out poems (`heldout_batches`);
every run reads that file, so all train on the same batches in the same order and are scored on the same poems.
The runs go one after the other, each in its own process with both cores, for the same wall minutes from its
first step. Reported per run (paddle-full, paddle-adaptive, torch-full, torch-adaptive; `--frameworks`,
`--outputs` choose): steps, chars/s (counted target characters / training seconds), the training loss of the
last 200 steps, held-out nats/char after the minutes (masked mean -log p), peak RSS, and the 1-minute load
average at the start and end of the timed minutes (at the start it still holds the previous run's tail).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

SEQ = 124  # the classic rows: 125 tokens -> 124 (input, target) positions


@dataclass
class Net:
    name: str
    embedding_dim: int
    hidden_dim: int
    num_layers: int
    batch_size: int = 0  # a config's own batch size, run besides --batch-sizes


SEED_NET = Net("seed 256/3x512", 256, 512, 3)


def load_cpu_net() -> list[Net]:
    """The small networks: configs/cpu.toml's when it exists, and 128/1x256 + 128/2x256 otherwise."""
    path = Path(__file__).resolve().parent.parent / "configs" / "cpu.toml"
    if path.is_file():
        import tomllib

        values = tomllib.loads(path.read_text(encoding="utf-8"))
        e, h, n = values.get("embedding_dim", 256), values.get("hidden_dim", 512), values.get("num_layers", 3)
        return [Net(f"cpu.toml {e}/{n}x{h}", e, h, n, int(values.get("batch_size", 0)))]
    return [Net("small 128/1x256", 128, 256, 1), Net("small 128/2x256", 128, 256, 2)]


def load(path: str):
    from tangpoem.data import load_npz

    return load_npz(path)


def padded_batches(poems, batch_size: int, count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Classic rows (left-padded to 124) as the tutorial feeds them, a random sample of `count` batches."""
    rows = poems.data[~poems.heldout].astype(np.int64)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        idx = rng.choice(len(rows), batch_size, replace=False)
        out.append((rows[idx, :-1], rows[idx, 1:]))
    return out


def bucketed_batches(poems, batch_size: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` of tangpoem's own batches (make_loader, bucketed + trimmed), picked at evenly spaced
    quantiles of their length so the sample's mean length matches the epoch's."""
    from tangpoem.dataset import make_loader

    loader, _ = make_loader(poems, "train", batch_size, batching="bucket", shuffle=True, seed=0)
    batches = [(np.asarray(x), np.asarray(y)) for x, y in loader]
    batches = [b for b in batches if b[0].shape[0] == batch_size] or batches
    batches.sort(key=lambda b: b[0].shape[1])
    picks = np.linspace(0, len(batches) - 1, count + 2)[1:-1].round().astype(int) if count < len(batches) else None
    return [batches[i] for i in picks] if picks is not None else batches


def useful_share(poems, batch_size: int, batching: str) -> tuple[float, float]:
    """(counted targets / computed positions, mean computed length) over one epoch of the train split."""
    from tangpoem.dataset import make_loader, target_mask

    loader, _ = make_loader(poems, "train", batch_size, batching=batching, shuffle=True, seed=0)
    useful = computed = 0
    lengths = []
    for _, y in loader:
        y = np.asarray(y)
        useful += int(target_mask(y, poems.pad_id, poems.start_id).sum())
        computed += y.size
        lengths.append(y.shape[1])
    return useful / computed, float(np.mean(lengths))


# --------------------------------------------------------------------------- workers


def serve(step, phases: dict[str, list]) -> None:
    """Worker loop: the driver sends `PHASE INDEX` lines, gets back `seconds counted` for that one step,
    so the two frameworks' steps interleave in time; `done` answers with the peak RSS."""
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "done":
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, flush=True)
            return
        x, y, m = phases[cmd[0]][int(cmd[1])]
        t0 = time.perf_counter()
        step(x, y, m)
        print(time.perf_counter() - t0, int(m.sum()), x.shape[1], flush=True)


def synthetic(vocab: int, batch_size: int, count: int, reserved: int = 3):
    """Random ids below the three special tokens, every position counted."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        ids = rng.integers(0, vocab - reserved, size=(batch_size, SEQ + 1), dtype=np.int64)
        out.append((ids[:, :-1], ids[:, 1:], np.ones((batch_size, SEQ), dtype=bool)))
    return out


def with_mask(batches, poems):
    from tangpoem.dataset import target_mask

    return [(x, y, target_mask(y, poems.pad_id, poems.start_id)) for x, y in batches]


def paddle_worker(args) -> dict:
    from tangpoem.device import prepare_command

    prepare_command()  # as tangpoem.train: idle OpenMP threads sleep (set before Paddle loads)
    import paddle

    from tangpoem.device import set_threads
    from tangpoem.loss import sequence_loss
    from tangpoem.model import ModelConfig, PoetryModel
    from tangpoem.train import clip_grad_norm

    set_threads(args.threads)
    paddle.seed(0)
    poems = load(args.data)
    cfg = ModelConfig(poems.vocab_size, args.embedding_dim, args.hidden_dim, args.num_layers)
    model = PoetryModel(cfg)
    fast = args.worker != "plain"
    # the trainer's own clipping on the fast path; the plain path keeps Paddle's (as before this work)
    clip = None if fast else paddle.nn.ClipGradByGlobalNorm(1.0)
    opt = paddle.optimizer.Adam(1e-3, parameters=model.parameters(), grad_clip=clip)

    def step(x, y, m):
        loss, _ = sequence_loss(model, paddle.to_tensor(x), paddle.to_tensor(y), paddle.to_tensor(m), fast=fast)
        loss.backward()
        if fast:
            clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.clear_grad()
        loss.item()  # wait for the step, as the trainer's logging does

    n = args.warmup + args.steps
    real = with_mask(bucketed_batches(poems, args.batch_size, n), poems)
    serve(step, {"syn": synthetic(poems.vocab_size, args.batch_size, n), "real": real})


def torch_worker(args) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    poems = load(args.data)
    V, E, H, L = poems.vocab_size, args.embedding_dim, args.hidden_dim, args.num_layers

    class Ref(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = nn.Embedding(V, E)
            self.lstm = nn.LSTM(E, H, L, batch_first=True)
            self.linear = nn.Linear(H, V)

        def forward(self, x):
            out, _ = self.lstm(self.embeddings(x))
            return self.linear(out.reshape(-1, H))

    model = Ref()
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step(x, y, m):
        logits = model(torch.from_numpy(x))
        w = torch.from_numpy(m).reshape(-1).float()
        per = nn.functional.cross_entropy(logits, torch.from_numpy(y).reshape(-1), reduction="none")
        loss = (per * w).sum() / w.sum().clamp(min=1.0)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()

    n = args.warmup + args.steps
    # "real": the classic layout, the same [batch, 124] work as "syn" but most targets are padding
    real = with_mask(padded_batches(poems, args.batch_size, n), poems)
    serve(step, {"syn": synthetic(V, args.batch_size, n), "real": real})


class Worker:
    """One framework in its own process (so its peak RSS is its own), stepped by the driver."""

    def __init__(self, framework: str, net: Net, batch_size: int, args):
        cmd = [sys.executable, __file__, "--worker", framework, "--data", args.data, "--threads", str(args.threads)]
        cmd += ["--batch-size", str(batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += ["--embedding-dim", str(net.embedding_dim), "--hidden-dim", str(net.hidden_dim)]
        cmd += ["--num-layers", str(net.num_layers)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        if framework == "ops":
            env["TANGPOEM_NATIVE"] = "0"
        self.framework = framework
        self.stderr = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty worker cannot block
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env
        )
        self.times: dict[str, list[float]] = {"syn": [], "real": []}
        self.counted: dict[str, int] = {"syn": 0, "real": 0}
        self.lengths: list[int] = []

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.seek(0)
            sys.exit(f"{self.framework} worker failed:\n{self.stderr.read()[-3000:]}")
        return line

    def wait_ready(self) -> None:
        while self._read().strip() != "ready":
            pass

    def step(self, phase: str, i: int, timed: bool) -> None:
        self.proc.stdin.write(f"{phase} {i}\n")
        self.proc.stdin.flush()
        seconds, counted, length = self._read().split()
        if timed:
            self.times[phase].append(float(seconds))
            self.counted[phase] += int(counted)
            if phase == "real":
                self.lengths.append(int(length))

    def finish(self) -> float:
        self.proc.stdin.write("done\n")
        self.proc.stdin.flush()
        peak = float(self._read())
        self.proc.wait()
        return peak


def run_pair(frameworks: list[str], net: Net, batch_size: int, args) -> dict[str, dict]:
    """Start one worker per framework, then alternate their steps (order flipped every step)."""
    workers = [Worker(f, net, batch_size, args) for f in frameworks]
    for w in workers:
        w.wait_ready()
    for phase in ("syn", "real"):
        for i in range(args.warmup + args.steps):
            for w in workers if i % 2 == 0 else workers[::-1]:
                # idle OpenMP threads of the other process spin for a while (Intel OpenMP: 200 ms) and
                # would steal a core from this step: let them go to sleep first
                time.sleep(args.gap)
                w.step(phase, i, timed=i >= args.warmup)
    out = {}
    if len(workers) == 2:  # steps i ran back to back: their ratio depends less on the load than either
        ta, tb = workers[0].times["syn"], workers[1].times["syn"]
        out["paired"] = statistics.median(b / a for a, b in zip(ta, tb, strict=True))
    for w in workers:
        med = statistics.median(w.times["syn"])
        out[w.framework] = {
            "tok_s": batch_size * SEQ / med,
            "chars_s": w.counted["real"] / sum(w.times["real"]),
            "real_len": float(np.mean(w.lengths)),
            "rss": w.finish(),
        }
    return out


# --------------------------------------------------------------------------- learn mode: equal wall minutes

LEARN_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "bundled.toml"
LEARN_FRAMEWORKS = ("paddle", "torch")
OUTPUTS = ("full", "adaptive")
RESULT = "RESULT "  # a learn worker's stdout line with its numbers (JSON): Paddle may print lines of its own
CLIP = 1.0
TAIL_STEPS = 200  # the training loss reported is the counted-weighted mean over the last steps
CHUNK = 4096  # rows per full-softmax logits block in PyTorch: 200 MB at 12,278 characters, not ~1 GB per eval batch

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # inputs, targets (int64 [batch, seq]), mask (bool [batch, seq])


@dataclass
class LearnShape:
    embedding_dim: int = 256
    hidden_dim: int = 512
    num_layers: int = 1
    batch_size: int = 32


def load_learn_shape(path: Path) -> LearnShape:
    """The network and batch size of a recipe (configs/bundled.toml), and only those: the learning rate is constant
    and dropout 0 here, so the two output layers differ in nothing but themselves."""
    shape = LearnShape()
    if not path.is_file():
        return shape
    import tomllib

    values = tomllib.loads(path.read_text(encoding="utf-8"))
    return LearnShape(
        int(values.get("embedding_dim", shape.embedding_dim)),
        int(values.get("hidden_dim", shape.hidden_dim)),
        int(values.get("num_layers", shape.num_layers)),
        int(values.get("batch_size", shape.batch_size)),
    )


def pack(batches: list[Batch], prefix: str, vocab: int) -> dict[str, np.ndarray]:
    """Batches of differing shapes as flat arrays plus their shapes, so that one npz carries them to every worker;
    ids as uint16 when the vocabulary allows: 5 bytes a position, not 17 (an epoch of Tang + Song: ~90 MB)."""
    dtype = np.uint16 if vocab <= 1 << 16 else np.int32
    return {
        f"{prefix}_x": np.concatenate([x.ravel() for x, _, _ in batches]).astype(dtype),
        f"{prefix}_y": np.concatenate([y.ravel() for _, y, _ in batches]).astype(dtype),
        f"{prefix}_m": np.concatenate([m.ravel() for _, _, m in batches]).astype(bool),
        f"{prefix}_shape": np.array([x.shape for x, _, _ in batches], np.int64),
    }


class PackedBatches:
    """pack()'s batches read back; batch i is (inputs, targets, mask)."""

    def __init__(self, arrays: dict[str, np.ndarray], prefix: str):
        self.x, self.y, self.m = (arrays[f"{prefix}_{k}"] for k in "xym")
        self.shapes = arrays[f"{prefix}_shape"]
        sizes = self.shapes.prod(axis=1)
        self.ends = np.cumsum(sizes)
        self.starts = self.ends - sizes

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> Batch:
        s, e = int(self.starts[i]), int(self.ends[i])
        shape = (int(self.shapes[i, 0]), int(self.shapes[i, 1]))
        return (self.x[s:e].astype(np.int64).reshape(shape), self.y[s:e].astype(np.int64).reshape(shape),
                self.m[s:e].reshape(shape))  # fmt: skip

    def stream(self) -> Iterator[Batch]:
        """The batches in the file's order, then in a new order each further epoch, the same in every worker
        (the trainer would also rebucket; an epoch of Tang + Song at batch 32 is 9,474 steps, ~25 minutes here)."""
        for epoch in itertools.count():
            order = np.arange(len(self)) if epoch == 0 else np.random.default_rng([0, epoch]).permutation(len(self))
            for i in order:
                yield self[int(i)]


class LearnData:
    """The file learn_data_worker writes: vocabulary size, frequency ranks, train and held-out batches."""

    def __init__(self, path: str):
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}  # read once: an NpzFile reads a key again at every access
        self.vocab = int(arrays["vocab_size"])
        self.rank = arrays["rank"].astype(np.int64)
        self.train = PackedBatches(arrays, "train")
        self.heldout = PackedBatches(arrays, "eval")


def learn_data_worker(args) -> None:
    """Write the batches of every learn run to args.learn_data (see LearnData): one epoch of tangpoem's bucketed,
    trimmed train batches in the trainer's order (titles always shown: title_dropout 0), with their
    `dataset.target_mask`, and args.eval_poems held-out poems as `evaluate.heldout_batches` groups them (each poem
    from <START> and the zero state). Here, not in the workers, so that the PyTorch process never loads Paddle."""
    from tangpoem.device import prepare_command

    prepare_command()
    from tangpoem.dataset import make_loader, target_mask
    from tangpoem.evaluate import heldout_batches
    from tangpoem.train import frequency_ranks

    poems = load(args.data)
    pad, start, vocab = poems.pad_id, poems.start_id, poems.vocab_size
    loader, _ = make_loader(poems, "train", args.batch_size, batching="bucket", shuffle=True, seed=0)
    pairs = [(np.asarray(x), np.asarray(y)) for x, y in loader]
    train = [(x, y, np.asarray(target_mask(y, pad, start))) for x, y in pairs]
    held = [(x, y, np.asarray(target_mask(y, pad, start))) for x, y in heldout_batches(poems, args.eval_poems)]
    np.savez(args.learn_data, vocab_size=vocab, rank=frequency_ranks(poems), **pack(train, "train", vocab),
             **pack(held, "eval", vocab))  # fmt: skip


def learn_loop(
    step: Callable[[np.ndarray, np.ndarray, np.ndarray], float], train: PackedBatches, minutes: float
) -> dict:
    """Train until `minutes` of wall time have passed since the first step (the step under way finishes, and the
    seconds counted are the real ones). step returns the batch's mean loss."""
    budget = minutes * 60
    losses: list[tuple[float, int]] = []
    batches = train.stream()
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < budget:
        x, y, m = next(batches)
        losses.append((step(x, y, m), int(m.sum())))
    seconds = time.perf_counter() - t0
    chars = sum(n for _, n in losses)
    tail = losses[-TAIL_STEPS:]
    return {
        "steps": len(losses),
        "seconds": seconds,
        "chars": chars,
        "chars_s": chars / seconds,
        "epochs": len(losses) / len(train),
        "train_nats": sum(loss * n for loss, n in tail) / max(1, sum(n for _, n in tail)),
        "load_start": load_start,
        "load_end": os.getloadavg(),
    }


def evaluate_heldout(nll_sum: Callable[[np.ndarray, np.ndarray, np.ndarray], float], heldout: PackedBatches) -> dict:
    """Masked mean -log p(target) in nats over the held-out batches: a sum over characters, not a mean of batch
    means (the batches differ in length)."""
    t0 = time.perf_counter()
    total, count = 0.0, 0
    for i in range(len(heldout)):
        x, y, m = heldout[i]
        total += nll_sum(x, y, m)
        count += int(m.sum())
    return {
        "heldout_nats": total / count if count else math.nan,
        "heldout_chars": count,
        "eval_seconds": time.perf_counter() - t0,
    }


def report(result: dict) -> None:
    result["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(RESULT + json.dumps(result), flush=True)


def paddle_learn_worker(args) -> None:
    from tangpoem.device import prepare_command

    prepare_command()  # as tangpoem.train: idle OpenMP threads sleep (set before Paddle loads)
    import paddle

    from tangpoem import native
    from tangpoem.config import parse_cutoffs
    from tangpoem.device import set_threads
    from tangpoem.loss import sequence_loss
    from tangpoem.model import ModelConfig, PoetryModel
    from tangpoem.train import clip_grad_norm

    set_threads(args.threads)
    paddle.seed(0)
    data = LearnData(args.learn_data)
    cutoffs = parse_cutoffs(args.cutoffs, data.vocab) if args.output == "adaptive" else []
    cfg = ModelConfig(data.vocab, args.embedding_dim, args.hidden_dim, args.num_layers, output_cutoffs=cutoffs)
    model = PoetryModel(cfg)
    if cutoffs:  # as the trainer: the clusters follow the training poems' character frequencies
        model.adaptive.set_ranks(paddle.to_tensor(data.rank))
    opt = paddle.optimizer.Adam(args.lr, parameters=model.parameters())
    native.kernels()  # the C kernels are compiled on first use (then cached): not inside the timed minutes

    def step(x: np.ndarray, y: np.ndarray, m: np.ndarray) -> float:
        loss, _ = sequence_loss(model, paddle.to_tensor(x), paddle.to_tensor(y), paddle.to_tensor(m))
        loss.backward()
        clip_grad_norm(model.parameters(), CLIP)  # the trainer's own clip, as in the per-step mode's fast path
        opt.step()
        opt.clear_grad()
        return loss.item()

    def nll_sum(x: np.ndarray, y: np.ndarray, m: np.ndarray) -> float:
        loss, count = sequence_loss(model, paddle.to_tensor(x), paddle.to_tensor(y), paddle.to_tensor(m))
        return loss.item() * count

    model.train()
    result = learn_loop(step, data.train, args.learn)
    model.eval()
    with paddle.no_grad():
        result |= evaluate_heldout(nll_sum, data.heldout)
    result["parameters"] = sum(int(np.prod(p.shape)) for p in model.parameters())
    report(result)


def torch_learn_worker(args) -> None:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = LearnData(args.learn_data)
    V, E, H, L = data.vocab, args.embedding_dim, args.hidden_dim, args.num_layers
    cutoffs = [int(c) for c in args.cutoffs.split(",")] if args.output == "adaptive" else []
    rank = torch.from_numpy(data.rank)

    class Ref(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = nn.Embedding(V, E)
            self.lstm = nn.LSTM(E, H, L, batch_first=True)
            # head_bias: tangpoem's head is an nn.Linear with a bias. The one difference left: PyTorch's cluster
            # outputs have no bias, tangpoem's have (10,278 numbers at this vocabulary)
            self.out = (
                nn.AdaptiveLogSoftmaxWithLoss(H, V, cutoffs=cutoffs, div_value=4.0, head_bias=True)
                if cutoffs
                else nn.Linear(H, V)
            )

        def nll_sum(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            """Summed -log p(target) over the positions of m; the output layer runs on those rows only, as in
            tangpoem's sequence_loss."""
            out, _ = self.lstm(self.embeddings(x))
            keep = m.reshape(-1)
            hidden, targets = out.reshape(-1, H)[keep], y.reshape(-1)[keep]
            if cutoffs:  # .output: log p of each row's target, only the clusters the targets need computed
                return -self.out(hidden, rank[targets]).output.sum()
            total = hidden.new_zeros(())
            for i in range(0, len(targets), CHUNK):
                total = total + F.cross_entropy(
                    self.out(hidden[i : i + CHUNK]), targets[i : i + CHUNK], reduction="sum"
                )
            return total

    model = Ref()
    opt = torch.optim.Adam(model.parameters(), args.lr)  # betas and eps: the same defaults as Paddle's Adam

    def step(x: np.ndarray, y: np.ndarray, m: np.ndarray) -> float:
        total = model.nll_sum(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m))
        loss = total / max(1, int(m.sum()))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        return loss.item()

    def nll_sum(x: np.ndarray, y: np.ndarray, m: np.ndarray) -> float:
        return model.nll_sum(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m)).item()

    model.train()
    result = learn_loop(step, data.train, args.learn)
    model.eval()
    with torch.no_grad():
        result |= evaluate_heldout(nll_sum, data.heldout)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    report(result)


def run_learn(framework: str, output: str, shape: LearnShape, learn_data: str, args) -> dict:
    """One run in its own process, alone on the machine; its numbers, or {"error": the end of its stderr}."""
    cmd = [sys.executable, __file__, "--worker", framework, "--learn", str(args.learn), "--learn-data", learn_data]
    cmd += ["--output", output, "--cutoffs", args.cutoffs, "--lr", str(args.lr), "--threads", str(args.threads)]
    cmd += ["--batch-size", str(shape.batch_size), "--embedding-dim", str(shape.embedding_dim)]
    cmd += ["--hidden-dim", str(shape.hidden_dim), "--num-layers", str(shape.num_layers), "--data", args.data]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a chatty worker cannot block
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
        if proc.returncode or not lines:
            err.seek(0)
            return {"error": err.read()[-3000:] or f"exit status {proc.returncode}"}
    return json.loads(lines[-1][len(RESULT) :])


def load_text(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def learn_main(args) -> int:
    """The --learn mode: prepare the batches, then the runs one after the other; a table, and JSON to --out."""
    from tangpoem.config import parse_cutoffs
    from tangpoem.errors import TangpoemError

    frameworks = args.frameworks.split(",")
    outputs = args.outputs.split(",")
    if not set(frameworks) <= set(LEARN_FRAMEWORKS) or not set(outputs) <= set(OUTPUTS):
        sys.exit(f"--learn takes --frameworks from {','.join(LEARN_FRAMEWORKS)} and --outputs from {','.join(OUTPUTS)}")
    if "torch" in frameworks and importlib.util.find_spec("torch") is None:
        print("# torch is not installed: the torch runs are skipped (`pip install torch==2.13.0` for them)")
        frameworks.remove("torch")
    if not frameworks:
        return 1
    if not Path(args.data).is_file():
        sys.exit(f"{args.data} not found; build it with `python -m tangpoem.data build --out {args.data}`")
    shape = load_learn_shape(Path(args.learn_config))
    runs = [(f, o) for f in frameworks for o in outputs]

    started = datetime.now(timezone.utc)
    print(f"# bench_train --learn  {started:%Y-%m-%d %H:%M} UTC  host {platform.node()}")
    print(f"# cpu: {cpu_name()} x{os.cpu_count()}; threads {args.threads}; {versions()}")
    print(
        f"# network ({args.learn_config}): embedding {shape.embedding_dim}, {shape.num_layers}-layer LSTM "
        f"{shape.hidden_dim}, batch {shape.batch_size}; Adam {args.lr:g} constant, clip {CLIP:g}, dropout 0; "
        f"adaptive: cutoffs {args.cutoffs}, div 4"
    )
    print(f"# {len(runs)} runs of {args.learn:g} wall minutes each, one after the other; load average at start: "
          f"{load_text(os.getloadavg())}", flush=True)  # fmt: skip

    meta: dict = {
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "host": platform.node(),
        "cpu": f"{cpu_name()} x{os.cpu_count()}",
        "versions": versions(),
        "data": args.data,
        "minutes": args.learn,
        "threads": args.threads,
        "network": asdict(shape),
        "lr": args.lr,
        "clip": CLIP,
        "cutoffs": args.cutoffs,
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench_learn.") as tmp:
        learn_data = str(Path(tmp) / "batches.npz")
        cmd = [sys.executable, __file__, "--worker", "learn-data", "--data", args.data, "--learn-data", learn_data]
        cmd += ["--batch-size", str(shape.batch_size), "--eval-poems", str(args.eval_poems)]
        prep = subprocess.run(cmd, capture_output=True, text=True)
        if prep.returncode:
            sys.exit(f"preparing the batches failed:\n{prep.stderr[-3000:]}")
        with np.load(learn_data) as f:
            vocab, train_shapes, eval_chars = int(f["vocab_size"]), f["train_shape"], int(f["eval_m"].sum())
            eval_poems = int(f["eval_shape"][:, 0].sum())
        if "adaptive" in outputs:
            try:
                parse_cutoffs(args.cutoffs, vocab)
            except TangpoemError as err:
                sys.exit(str(err))
        print(
            f"# data: {args.data}: vocab {vocab:,}; {len(train_shapes):,} train batches (one epoch, bucketed, mean "
            f"length {train_shapes[:, 1].mean():.1f}); held-out: {eval_poems:,} poems, {eval_chars:,} characters"
        )
        meta |= {"vocab": vocab, "train_batches": len(train_shapes), "eval_poems": eval_poems, "eval_chars": eval_chars}

        print(
            f"\n{'run':16s} {'steps':>6s} {'train s':>8s} {'chars/s':>9s} {'epochs':>6s} {'train nats':>10s} "
            f"{'held-out nats/char':>18s} {'RSS':>7s}  load start -> end (1, 5, 15 min)",
            flush=True,
        )
        for framework, output in runs:
            name = f"{framework}-{output}"
            result = run_learn(framework, output, shape, learn_data, args)
            meta["runs"][name] = result
            if "error" in result:
                print(f"{name:16s} failed:\n{result['error']}", flush=True)
                continue
            print(
                f"{name:16s} {result['steps']:6,d} {result['seconds']:8.1f} {result['chars_s']:9,.0f} "
                f"{result['epochs']:6.2f} {result['train_nats']:10.3f} {result['heldout_nats']:18.3f} "
                f"{result['rss_gb']:5.2f}GB  {load_text(result['load_start'])} -> {load_text(result['load_end'])}",
                flush=True,
            )

    done = {name: r for name, r in meta["runs"].items() if "error" not in r}
    print()
    for framework in frameworks:  # what the adaptive softmax buys within one framework
        full, adaptive = done.get(f"{framework}-full"), done.get(f"{framework}-adaptive")
        if full and adaptive:
            print(
                f"# {framework}: adaptive / full chars/s {adaptive['chars_s'] / full['chars_s']:.2f}x; held-out "
                f"{adaptive['heldout_nats'] - full['heldout_nats']:+.3f} nats/char"
            )
    for output in outputs:  # tangpoem against the reference, for each output layer
        mine, ref = done.get(f"paddle-{output}"), done.get(f"torch-{output}")
        if mine and ref:
            print(
                f"# {output}: paddle / torch chars/s {mine['chars_s'] / ref['chars_s']:.2f}x; held-out "
                f"{mine['heldout_nats'] - ref['heldout_nats']:+.3f} nats/char"
            )
    print(f"# load average at end: {load_text(os.getloadavg())}")
    if args.out:
        Path(args.out).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        print(f"# wrote {args.out}")
    return 0 if len(done) == len(runs) else 1


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def versions() -> str:
    out = [f"python {platform.python_version()}"]
    for mod in ("paddle", "torch", "numpy"):
        try:
            v = subprocess.run(
                [sys.executable, "-c", f"import {mod}; print({mod}.__version__)"], capture_output=True, text=True
            ).stdout.strip()
        except OSError:
            v = "?"
        out.append(f"{mod} {v or 'missing'}")
    return ", ".join(out)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


FRAMEWORKS = ["paddle", "ops", "plain", "torch"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="work/tang_poem.npz", help="npz from `python -m tangpoem.data build`")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps per phase (median / sum)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--gap", type=float, default=0.5, help="seconds of rest before each step (see run_pair)")
    p.add_argument("--batch-sizes", default="32,128")
    p.add_argument("--nets", default="seed,small", help="seed and/or small (configs/cpu.toml when present)")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 steps, 1 warm-up, batch 8, small net")
    p.add_argument(
        "--frameworks",
        default="paddle,torch",
        help="the two to compare: paddle (tangpoem's training path), ops (the same without tangpoem's C kernels, "
        "TANGPOEM_NATIVE=0), plain (tangpoem's plain path: nn.LSTM, full logits, Paddle's clip), torch",
    )
    p.add_argument(
        "--learn",
        type=float,
        nargs="?",
        const=3.0,
        metavar="MINUTES",
        help="instead: full vs adaptive softmax, each run trained for MINUTES of wall time (default 3), then scored "
        "on held-out poems; --frameworks then takes paddle and/or torch",
    )
    p.add_argument("--outputs", default="full,adaptive", help="--learn: the output layers to run (full, adaptive)")
    p.add_argument("--cutoffs", default="2000,6000", help="--learn: the adaptive softmax's cutoffs (frequency ranks)")
    p.add_argument("--lr", type=float, default=5e-3, help="--learn: Adam's learning rate, constant")
    p.add_argument("--eval-poems", type=int, default=2000, help="--learn: held-out poems scored (0: all)")
    p.add_argument(
        "--learn-config", default=str(LEARN_CONFIG), help="--learn: the recipe whose network and batch size run"
    )
    p.add_argument("--out", help="--learn: also write the numbers to this JSON file")
    # worker-only
    p.add_argument("--worker", choices=[*FRAMEWORKS, "learn-data"], help=argparse.SUPPRESS)
    p.add_argument("--learn-data", help=argparse.SUPPRESS)
    p.add_argument("--output", choices=OUTPUTS, default="full", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--embedding-dim", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--hidden-dim", type=int, default=512, help=argparse.SUPPRESS)
    p.add_argument("--num-layers", type=int, default=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker == "learn-data":
        learn_data_worker(args)
        return 0
    if args.worker and args.learn is not None:
        (torch_learn_worker if args.worker == "torch" else paddle_learn_worker)(args)
        return 0
    if args.worker:
        (torch_worker if args.worker == "torch" else paddle_worker)(args)
        return 0
    if args.learn is not None:
        return learn_main(args)

    if args.quick:
        args.steps, args.warmup, args.batch_sizes, args.nets = 2, 1, "8", "small"
    if not Path(args.data).is_file():
        sys.exit(f"{args.data} not found; build it with `python -m tangpoem.data build --out {args.data}`")
    frameworks = args.frameworks.split(",")
    if len(frameworks) != 2 or not set(frameworks) <= set(FRAMEWORKS):
        sys.exit(f"--frameworks takes two of {', '.join(FRAMEWORKS)}")
    nets = ([SEED_NET] if "seed" in args.nets else []) + (load_cpu_net() if "small" in args.nets else [])
    if args.quick:
        nets = [Net("tiny 32/1x64", 32, 64, 1)]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    print(f"# bench_train  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  host {platform.node()}")
    print(f"# cpu: {cpu_name()} x{os.cpu_count()}; threads {args.threads}; {versions()}")
    print(f"# steps {args.steps} timed after {args.warmup} warm-up; steps of the two frameworks alternate; seq {SEQ}")
    print(f"# load average at start: {load_avg()}")

    poems = load(args.data)
    print(f"# corpus: {args.data}: {len(poems.data):,} poems, vocab {poems.vocab_size:,}")
    print("\n## useful (counted) target positions / computed positions, one epoch of the train split")
    for b in sorted(set(batch_sizes) | {n.batch_size for n in nets if n.batch_size}):
        bucket, blen = useful_share(poems, b, "bucket")
        padded, _ = useful_share(poems, b, "padded")
        print(f"batch {b:4d}: tangpoem bucketed {bucket:6.1%} (mean length {blen:5.1f})   classic padded {padded:6.1%}")

    a, b = frameworks
    print(f"\n## training step (median); chars/s = real-corpus targets learned per second; ratio = {a} / {b}")
    print(
        f"{'network':22s} {'batch':>5s} {a + ' tok/s':>12s} {b + ' tok/s':>12s} {'ratio':>6s} {'paired':>6s} "
        f"{a + ' chars/s':>14s} {b + ' chars/s':>14s} {'ratio':>6s} {a + ' RSS':>10s} {b + ' RSS':>10s}  load"
    )
    for net in nets:
        for batch in batch_sizes + ([net.batch_size] if net.batch_size and net.batch_size not in batch_sizes else []):
            runs = run_pair(frameworks, net, batch, args)
            ra, rb = runs[a], runs[b]
            print(
                f"{net.name:22s} {batch:5d} {ra['tok_s']:12,.0f} {rb['tok_s']:12,.0f} {ra['tok_s'] / rb['tok_s']:6.2f} "
                f"{runs['paired']:6.2f} {ra['chars_s']:14,.0f} {rb['chars_s']:14,.0f} "
                f"{ra['chars_s'] / rb['chars_s']:6.2f} {ra['rss']:8.2f}GB {rb['rss']:8.2f}GB  {load_avg()}",
                flush=True,
            )
    print(f"\n# load average at end: {load_avg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
