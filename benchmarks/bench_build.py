"""Corpus builds: wall time, CPU time and peak memory of `python -m tangpoem.data build`, and what they keep.

    python benchmarks/bench_build.py [--source work/chinese-poetry-2.0.1.tgz] [--builds tang tang/2 tang,song]
                                     [--min-char-counts 1 3]

Each build runs in a fresh process (one at a time); its peak resident memory is that process's own
(`os.wait4`), its CPU time user + system. A build is COLLECTIONS[/FORMAT]: `tang` (format 1, the default for
Tang alone), `tang/2` (Tang with titles), `tang,song`. Every build runs once per --min-char-counts value, and
prints the build's own report (poems read, dropped, kept, held out, vocabulary) under its figures. The
header says when, on what CPU and under what load average, which the figures depend on.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_train import cpu_name  # benchmarks/ is on the path when a benchmark runs as a script

ROOT = Path(__file__).resolve().parent.parent


def header() -> str:
    from tangpoem.device import usable_cpus

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    python = platform.python_version()
    return f"{when}; {cpu_name()}, {usable_cpus()} usable CPUs; load average {load}; Python {python}"


def run_build(source: str, build: str, min_count: int, out: Path) -> tuple[dict, str]:
    """One build in a child process: ({wall_s, cpu_s, peak_mib}, its stdout)."""
    collections, _, version = build.partition("/")
    command = [sys.executable, "-m", "tangpoem.data", "build", "--source", source, "--collections", collections,
               "--min-char-count", str(min_count), "--out", str(out)]  # fmt: skip
    if version:
        command += ["--format-version", version]
    with tempfile.TemporaryFile("w+") as stdout:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=subprocess.DEVNULL, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        printed = stdout.read()
    if child.returncode != 0:
        raise SystemExit(f"build {build} (min {min_count}) failed with status {child.returncode}: {printed}")
    # ru_maxrss is in KiB on Linux
    figures = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}
    return figures, printed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(ROOT / "work" / "chinese-poetry-2.0.1.tgz"))
    parser.add_argument("--builds", nargs="+", default=["tang", "tang/2", "tang,song"])
    parser.add_argument("--min-char-counts", nargs="+", type=int, default=[1])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    print(header())
    print(f"source {args.source} ({Path(args.source).stat().st_size / 2**20:.1f} MiB)")
    with tempfile.TemporaryDirectory() as folder:
        for build in args.builds:
            for min_count in args.min_char_counts:
                out = Path(folder) / "bench.npz"
                figures, printed = run_build(args.source, build, min_count, out)
                print(
                    f"\n{build:<10} min-char-count {min_count}: wall {figures['wall_s']:6.1f} s, "
                    f"CPU {figures['cpu_s']:6.1f} s, peak RSS {figures['peak_mib']:6.0f} MiB, "
                    f"npz {out.stat().st_size / 2**20:.1f} MiB"
                )
                print("  " + printed.strip().replace("\n", "\n  "))
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
