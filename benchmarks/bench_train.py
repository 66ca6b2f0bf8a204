"""Training-step speed: tangpoem (Paddle) against a PyTorch reference of the identical network.

    python benchmarks/bench_train.py --data work/tang_poem.npz            # full run (~10 min)
    python benchmarks/bench_train.py --data work/tang_poem.npz --quick    # smoke test (~1 min)

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
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
    # worker-only
    p.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--embedding-dim", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--hidden-dim", type=int, default=512, help=argparse.SUPPRESS)
    p.add_argument("--num-layers", type=int, default=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        (torch_worker if args.worker == "torch" else paddle_worker)(args)
        return 0

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
