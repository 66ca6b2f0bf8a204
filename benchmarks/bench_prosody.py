"""Prosody speed: loading the 平水韵 table, building the patterns, checking poems.

    python benchmarks/bench_prosody.py [--data work/tang_poem.npz] [--runs 20]

- load: a fresh process reads `tangpoem/pingshui.tsv` on the first `tones()` call (the first call
  after `import tangpoem.prosody`); measured in --runs new processes, wall and CPU time of that call
  alone (the import of the module is reported apart);
- patterns: `poem_patterns` for the four forms, first call (then cached);
- lookups: `tones` + `level_groups` for every character of the npz's vocabulary (what a decoder does
  once per vocabulary);
- check: `check_poem` per poem over the real poems of the npz's held-out split.
CPU time is the process's (all threads); on a shared machine it is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import json, time
t0, c0 = time.perf_counter(), time.process_time()
import tangpoem.prosody as P
t1, c1 = time.perf_counter(), time.process_time()
P.tones("东")
t2, c2 = time.perf_counter(), time.process_time()
for length, lines in ((5, 4), (7, 4), (5, 8), (7, 8)):
    P.poem_patterns(length, lines)
t3, c3 = time.perf_counter(), time.process_time()
print(json.dumps({"import_ms": 1e3 * (t1 - t0), "load_ms": 1e3 * (t2 - t1), "load_cpu_ms": 1e3 * (c2 - c1),
                  "patterns_ms": 1e3 * (t3 - t2), "patterns_cpu_ms": 1e3 * (c3 - c2)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT / "work" / "tang_poem.npz"))
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    cold = []
    for _ in range(args.runs):
        done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, check=True)
        cold.append(json.loads(done.stdout))
    for key in ("import_ms", "load_ms", "load_cpu_ms", "patterns_ms", "patterns_cpu_ms"):
        values = [r[key] for r in cold]
        print(f"{key:16} median {statistics.median(values):7.2f}  best {min(values):7.2f}  ({args.runs} processes)")

    from tangpoem import prosody
    from tangpoem.data import load_npz

    poems = load_npz(args.data)
    vocab = poems.ix2word
    c0 = time.process_time()
    for ch in vocab:
        prosody.tones(ch)
        prosody.level_groups(ch)
    print(f"lookups          {1e3 * (time.process_time() - c0):7.2f} ms CPU for {len(vocab):,} characters")
    texts = [poems.decode(row) for row in poems.data[poems.heldout]]
    c0 = time.process_time()
    checks = [prosody.check_poem(t) for t in texts]
    per = 1e6 * (time.process_time() - c0) / len(texts)
    in_form = sum(bool(c.form) for c in checks)
    print(f"check_poem       {per:7.1f} us CPU per poem ({len(texts):,} held-out poems, {in_form} in a form)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
