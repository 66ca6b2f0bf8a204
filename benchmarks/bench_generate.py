"""Generation speed: one LSTM step at batch 1 and 32, and a whole poem, for each way of running the step.

    python benchmarks/bench_generate.py                 # the tutorial's network, ~2 min
    python benchmarks/bench_generate.py --quick         # fewer steps and rounds
    python benchmarks/bench_generate.py --json out.json

The network is the tutorial's (emb 256, 3x512 LSTM, vocabulary 8,931 like the cleaned corpus) with
random weights: speed does not depend on the values. Paths measured:
- eager: the Paddle model under no_grad, one [B, 1] call per step (the tutorial's way);
- numpy: `generate.NumpyStep`, the checkpoint's weights in numpy (the generator's default);
- inference: the step exported by `tangpoem.export` run by a Paddle Inference predictor,
  IR optimisation on, oneDNN off (`inference`) and on (`inference-onednn`);
each with 1 and 2 CPU threads (`PATH:THREADS`): on this shared 2-core machine a second thread helps
only while nobody else is computing.
Rounds alternate the paths so a load spike on this shared machine hits all of them; the median
and the best round are reported, and the load average before and after: compare within one run.
"CPU ms b1" is the process's CPU time per step (all its threads): for a 1-thread path it is about
what the step costs on an idle core, whatever the load.
"Step" times include the output layer and moving the logits to numpy (what a sampled character
costs); "poem" is `Poet` writing a 七绝 after <START> and a 10-character prefix (43 steps, the
form's rules included), greedy and sampled (temperature 0.8, top-p 0.9). Random weights give a
flat distribution, so top-p has to sort most of the vocabulary: "sampled" is the worst case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

import numpy as np

PREFIX = "欲穷千里目，更上一层楼"
CONSTRAINTS = {  # name: (temperature, options)
    "greedy, no rules but the form": (0.0, {}),
    "greedy, rhyme": (0.0, {"rhyme": True}),
    "greedy, rhyme + tones": (0.0, {"rhyme": True, "tones": True}),
    "sampled, rhyme + tones": (0.8, {"rhyme": True, "tones": True}),
    "sampled, rhyme + tones, --candidates 4": (0.8, {"rhyme": True, "tones": True, "candidates": 4}),
    "sampled, rhyme + tones, --drafts 4": (0.8, {"rhyme": True, "tones": True, "drafts": 4}),
    "sampled, rhyme + tones, --candidates 4 --drafts 4": (
        0.8,
        {"rhyme": True, "tones": True, "candidates": 4, "drafts": 4},
    ),
}


def make_checkpoint(directory: str, vocab_size: int, emb: int, hidden: int, layers: int) -> str:
    import paddle

    from tangpoem.checkpoint import save_checkpoint
    from tangpoem.data import SPECIALS
    from tangpoem.model import ModelConfig, PoetryModel

    # Punctuation, the prefix's characters, then CJK ideographs: the rules need real characters.
    chars = list(dict.fromkeys("，。？！" + PREFIX.replace("，", "")))
    code = 0x4E00
    while len(chars) < vocab_size - len(SPECIALS):
        if chr(code) not in chars:
            chars.append(chr(code))
        code += 1
    paddle.seed(0)
    model = PoetryModel(ModelConfig(vocab_size, emb, hidden, layers))
    path = os.path.join(directory, "bench.ckpt")
    save_checkpoint(path, model, chars + list(SPECIALS))
    return path


def time_steps(step, batch: int, steps: int) -> tuple[float, float]:
    """Wall and CPU (all threads of the process) seconds per step, logits for every row each step."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 8000, size=(steps + 5, batch))
    rows = list(range(batch))
    step.reset(batch)
    for t in range(steps + 5):  # warm-up, and NumpyStep's per-token cache holds these ids
        step.step(ids[t], rows)
    step.reset(batch)
    start, cpu = time.perf_counter(), time.process_time()
    for t in range(5, steps + 5):
        step.step(ids[t], rows)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def time_poem(poet, poems: int, temperature: float, **options) -> tuple[float, float, int]:
    """Wall and CPU seconds per 七绝 with priming, and the number of steps one poem takes."""
    options = {"rhyme": False, **options}
    poet.write(prefix_words=PREFIX, form="七绝", seed=0, temperature=temperature, **options)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(poems):
        (poem,) = poet.write(
            start_words="", prefix_words=PREFIX, form="七绝", seed=i, temperature=temperature, **options
        )
    steps = 1 + len(PREFIX) + len(poem.text) - 1  # <START> + prefix + every poem token but the last
    return (time.perf_counter() - start) / poems, (time.process_time() - cpu) / poems, steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=8931)
    parser.add_argument(
        "--paths",
        default="eager:1,eager:2,numpy:1,numpy:2,inference:1,inference:2,inference-onednn:1,inference-onednn:2",
        help="PATH:THREADS, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--checkpoints", nargs="*", default=[], metavar="CKPT",
        help="also time a 七绝 on the numpy step with these checkpoints (e.g. bundled and its float32 source)",
    )  # fmt: skip
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    steps1, steps32, poems = (50, 10, 3) if args.quick else (200, 40, 10)

    from tangpoem.checkpoint import load_checkpoint
    from tangpoem.device import set_blas_threads, set_threads, setup_device
    from tangpoem.export import export_step
    from tangpoem.generation import Poet
    from tangpoem.generation.steps import EagerStep, InferenceStep, NumpyStep

    setup_device(False, 1, quiet=True)
    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="bench_generate_")
    ckpt = load_checkpoint(make_checkpoint(tmp, args.vocab, 256, 512, 3))
    export = os.path.join(tmp, "step")
    export_step(ckpt, export)
    paths = args.paths.split(",")
    steps, prepare = {}, {}
    for p in paths:
        kind, n = p.split(":")
        n = int(n)
        if kind == "eager":
            steps[p], prepare[p] = EagerStep(ckpt.build_model()), lambda n=n: set_threads(n)
        elif kind == "numpy":
            steps[p], prepare[p] = NumpyStep(ckpt), lambda n=n: set_blas_threads(n)
        elif kind.startswith("inference"):
            steps[p] = InferenceStep(export, ckpt, n, onednn=kind.endswith("onednn"))
            prepare[p] = lambda: None
        else:
            parser.error(f"unknown path {p}")
    keys = ("b1", "cpu1", "b32", "greedy", "cpu_greedy", "sampled")
    results: dict[str, dict[str, list[float]]] = {p: {k: [] for k in keys} for p in paths}
    poem_steps = 0
    for r in range(rounds):
        for p in paths if r % 2 == 0 else reversed(paths):
            prepare[p]()
            step = steps[p]
            wall, cpu = time_steps(step, 1, steps1)
            results[p]["b1"].append(wall * 1e3)
            results[p]["cpu1"].append(cpu * 1e3)
            results[p]["b32"].append(32 / time_steps(step, 32, steps32)[0])
            seconds, cpu, poem_steps = time_poem(Poet(ckpt.vocab, step, p, ckpt), poems, 0.0)
            results[p]["greedy"].append(seconds * 1e3)
            results[p]["cpu_greedy"].append(cpu * 1e3)
            seconds, _, poem_steps = time_poem(Poet(ckpt.vocab, step, p, ckpt), poems, 0.8)
            results[p]["sampled"].append(seconds * 1e3)
    # What the rules and the choosing cost: the default numpy step, one thread, batch 1.
    set_blas_threads(1)
    rules_poet = Poet(ckpt.vocab, NumpyStep(ckpt), "numpy", ckpt)
    variants = {name: [] for name in CONSTRAINTS}
    for _ in range(rounds):
        for name, (temperature, options) in CONSTRAINTS.items():
            variants[name].append(time_poem(rules_poet, poems, temperature, **options)[0] * 1e3)
    others = {}
    for path in args.checkpoints:
        other = load_checkpoint(path)
        poet = Poet(other.vocab, NumpyStep(other), "numpy", other)
        others[path] = [time_poem(poet, poems, 0.8, rhyme=True)[0] * 1e3 for _ in range(rounds)]
    load_after = os.getloadavg()

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    import paddle

    print(f"{when}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"paddle {paddle.__version__}, numpy {np.__version__}; network emb 256, 3x512 LSTM, vocabulary {args.vocab}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; median of {rounds} rounds")
    print("median (best) of the rounds")
    head = f"{'path:threads':20} {'ms/char b1':>14} {'CPU ms b1':>10} {'chars/s b32':>14} {'ms/poem greedy':>16}"
    head += f" {'CPU ms':>7} {'ms/poem sampled':>16}"
    print(head)
    summary = {}
    for p in paths:
        r = results[p]
        b1, b32, greedy, sampled = (statistics.median(r[k]) for k in ("b1", "b32", "greedy", "sampled"))
        best = (min(r["b1"]), max(r["b32"]), min(r["greedy"]), min(r["sampled"]))
        summary[p] = {"ms_per_char_b1": b1, "chars_per_s_b32": b32, "ms_per_poem_greedy": greedy}
        cpu1, cpu_poem = statistics.median(r["cpu1"]), statistics.median(r["cpu_greedy"])
        summary[p].update(ms_per_poem_sampled=sampled, poem_steps=poem_steps, best=best, cpu_ms_b1=cpu1)
        summary[p].update(cpu_ms_per_poem_greedy=cpu_poem)
        cells = [f"{b1:.2f} ({best[0]:.2f})", f"{b32:.0f} ({best[1]:.0f})", f"{greedy:.1f} ({best[2]:.1f})"]
        cells.append(f"{sampled:.1f} ({best[3]:.1f})")
        print(f"{p:20} {cells[0]:>14} {cpu1:10.2f} {cells[1]:>14} {cells[2]:>16} {cpu_poem:7.1f} {cells[3]:>16}")
    print(f"(a 七绝 with <START> and a {len(PREFIX)}-character prefix is {poem_steps} steps)")
    print("\nrules and choosing, numpy:1, batch 1: ms per 七绝, median (best)")
    for name, times in variants.items():
        print(f"  {name:42} {statistics.median(times):8.1f} ({min(times):.1f})")
        summary[f"rules: {name}"] = statistics.median(times)
    for path, times in others.items():
        print(f"  {path:42} {statistics.median(times):8.1f} ({min(times):.1f})  sampled, rhyme")
        summary[f"checkpoint: {path}"] = statistics.median(times)
    shutil.rmtree(tmp, ignore_errors=True)  # the random checkpoint and its export
    if args.json:
        record = {"when": when, "load": [load_before, load_after], "rounds": results, "summary": summary}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
