"""What titles and the Song poems buy per CPU-minute (issue 20): the same network, the same minutes, three
corpora, scored on the same held-out Tang poems.

    python benchmarks/bench_titles.py --source ../shared/data/chinese-poetry-2.0.1.tgz --minutes 8

Runs, one after another, each `python -m tangpoem.train -c cpu --max-minutes M` (configs/cpu.toml's
network, all threads):
  tang             Tang poems, no titles (the npz format every model so far was trained on)
  tang+song        Tang and Song poems, no titles (--title-dropout 1)
  tang+song+title  Tang and Song poems with their titles (a quarter of them without, --title-dropout 0.25)
then `python -m tangpoem.evaluate` of each on the Tang+Song npz: the held-out Tang poems (the same 1,135
as every earlier figure) without and with their titles, and the held-out Song poems. Prints one table
with steps, characters per second, peak memory of the build and of each run, and the load average; a
quiet machine is needed for the minutes to compare. Files go to work/bench_titles/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from bench_train import cpu_name  # benchmarks/ is on the path when a benchmark runs as a script

ROOT = Path(__file__).resolve().parent.parent
RUNS = {  # name: (npz, extra training flags)
    "tang": ("tang.npz", []),
    "tang+song": ("tangsong.npz", ["--title-dropout", "1"]),
    "tang+song+title": ("tangsong.npz", ["--title-dropout", "0.25"]),
}


def timed(cmd: list[str], log: Path) -> tuple[float, int, str]:
    """Run cmd under /usr/bin/time: (wall seconds, peak RSS in MiB, stderr)."""
    done = subprocess.run(["/usr/bin/time", "-f", "@@ %e %M", *cmd], capture_output=True, text=True, cwd=ROOT)
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode not in (0,):
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log}")
    wall, rss = re.findall(r"@@ ([\d.]+) (\d+)", done.stderr)[-1]
    return float(wall), int(rss) // 1024, done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="chinese-poetry-2.0.1.tgz (it holds the Song poems)")
    parser.add_argument("--minutes", type=float, default=8.0, help="training minutes per run (default: 8)")
    parser.add_argument("--out", default="work/bench_titles", help="folder for npz files, checkpoints and logs")
    args = parser.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    builds = {}
    for name, collections, version in (("tang.npz", "tang", "1"), ("tangsong.npz", "tang,song", "2")):
        cmd = [py, "-m", "tangpoem.data", "build", "--source", str(Path(args.source).resolve()), "--collections",
               collections, "--format-version", version, "--out", str(out / name)]  # fmt: skip
        wall, rss, _ = timed(cmd, out / f"build-{name}.log")
        builds[name] = {"seconds": wall, "peak_rss_mib": rss}
        print(f"build {name}: {wall:.1f} s, peak RSS {rss} MiB", flush=True)
    rows = []
    for name, (npz, flags) in RUNS.items():
        prefix = out / name.replace("+", "_") / "m"
        load_before = os.getloadavg()[0]
        cmd = [py, "-m", "tangpoem.train", "-c", "cpu", "--data-path", str(out / npz), "--model-prefix", str(prefix),
               "--log-dir", str(out / "logs" / name), "--max-minutes", str(args.minutes), "--epoch", "1000",
               "--num-threads", "0", *flags]  # fmt: skip
        wall, rss, err = timed(cmd, out / f"train-{name.replace('+', '_')}.log")
        load_after = os.getloadavg()[0]
        ckpt = re.findall(r"checkpoint: (\S+)", err)[-1]
        speeds = [float(s.replace(",", "")) for s in re.findall(r"tok_s=([\d,]+)", err)]
        ev = subprocess.run([py, "-m", "tangpoem.evaluate", "--json", "--model-path", ckpt, "--data-path",
                             str(out / "tangsong.npz"), "--samples", "0", "--per-form", "0"],
                            capture_output=True, text=True, cwd=ROOT, check=True)  # fmt: skip
        report = json.loads(ev.stdout)
        held = report["heldout"]
        step = report["step"]
        rows.append({
            "run": name, "steps": step, "train_seconds": wall, "peak_rss_mib": rss,
            "chars_per_s": round(sorted(speeds)[len(speeds) // 2]) if speeds else None,
            "load": [round(load_before, 2), round(load_after, 2)],
            "tang_without_titles": held["tang"]["without_titles"], "tang_with_titles": held["tang"].get("with_titles"),
            "song_without_titles": held.get("song", {}).get("without_titles"),
            "song_with_titles": held.get("song", {}).get("with_titles"),
            "heldout_tang_poems": held["tang"]["poems"],
        })  # fmt: skip
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{stamp}, {cpu_name()}, {os.cpu_count()} CPUs, {args.minutes:g} min per run")
    print("| run | steps | chars/s | peak RSS | Tang held out, no title | with title | Song, no title | with title |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for r in rows:
        print(f"| {r['run']} | {r['steps']:,} | {r['chars_per_s']:,} | {r['peak_rss_mib']} MiB | "
              f"{fmt(r['tang_without_titles'])} | {fmt(r['tang_with_titles'])} | {fmt(r['song_without_titles'])} | "
              f"{fmt(r['song_with_titles'])} |")  # fmt: skip
    (out / "results.json").write_text(json.dumps({"when": stamp, "builds": builds, "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
