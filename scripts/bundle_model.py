"""Turn a trained checkpoint into the model shipped in the package (tangpoem/models/bundled.safetensors).

    python scripts/bundle_model.py work/checkpoints/bundled.params.stepN [--data-path work/tangsong.npz]

Stores the weights compactly (tangpoem.checkpoint.save_compact): int8 per output unit when that costs
less than MAX_LOSS_RISE nats/char on the held-out Tang poems, else float16; refuses a file over
MAX_BYTES. Beside the weights, in the file's metadata: the recipe (the training config), the commit,
steps, minutes, machine and load of the training (each invocation's, and the held-out curve), the corpus
(sha256 of the npz and of the npm tarball it comes from), the vocabulary size and the held-out figures of
the float32 and the stored weights: `heldout` is the Tang poems' without their titles, `heldout_report`
every collection's without and with titles (`python -m tangpoem.evaluate` prints the same).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tangpoem.checkpoint import BUNDLED, load_checkpoint, save_compact  # noqa: E402
from tangpoem.corpus import TARBALL_SHA256, sha256_of  # noqa: E402
from tangpoem.data import load_npz  # noqa: E402
from tangpoem.device import setup_device  # noqa: E402
from tangpoem.errors import TangpoemError, cli_main  # noqa: E402
from tangpoem.evaluate import heldout_report  # noqa: E402

MAX_BYTES = 16 * 1024 * 1024
MAX_LOSS_RISE = 0.01  # nats/char the int8 weights may lose against float32 on the held-out split


def heldout(path: str, poems) -> dict:
    """evaluate's held-out report (per collection, without and with titles)."""
    return heldout_report(load_checkpoint(path).build_model(), poems)


def tang_figure(report: dict) -> float:
    """The figure the bundled models are compared on: the Tang held-out poems, without their titles."""
    return float(report["tang"]["without_titles"])


def commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-path", default="work/tangsong.npz")
    parser.add_argument("--out", default=str(BUNDLED))
    parser.add_argument("--storage", choices=("auto", "int8", "float16"), default="auto")
    args = parser.parse_args(argv)
    setup_device(False, 0, quiet=True)
    ckpt = load_checkpoint(args.checkpoint)
    poems = load_npz(args.data_path)
    if ckpt.vocab != poems.ix2word:
        raise TangpoemError(f"{args.checkpoint} was not trained on {args.data_path}'s vocabulary")
    full_report = heldout(args.checkpoint, poems)
    full = tang_figure(full_report)
    print(f"float32 held-out (Tang, without titles): {full:.4f} nats/char; {full_report}")
    meta = {
        "bundled": {
            "recipe": ckpt.meta.get("config", {}),
            "commit": commit(),
            "steps": ckpt.meta.get("global_step"),
            "epochs": ckpt.meta.get("epoch"),
            "minutes": round(float(ckpt.meta.get("train_seconds", 0)) / 60, 1),
            "machine": ckpt.meta.get("machine", ""),
            "invocations": ckpt.meta.get("invocations", []),
            "curve": ckpt.meta.get("curve", []),
            "collections": ckpt.meta.get("collections", []),
            "corpus": {"npz_sha256": sha256_of(Path(args.data_path)), "npm_tarball_sha256": TARBALL_SHA256},
            "vocab_size": len(ckpt.vocab),
            "heldout_float32": round(full, 4),
            "source_checkpoint": Path(args.checkpoint).name,
        }
    }
    tmp = Path(args.out).with_name(f".candidate-{os.getpid()}.safetensors")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    try:
        for storage in ("int8", "float16") if args.storage == "auto" else (args.storage,):
            save_compact(ckpt, tmp, storage, meta)
            report = heldout(str(tmp), poems)
            stored = tang_figure(report)
            size = tmp.stat().st_size
            print(f"{storage}: held-out {stored:.4f} nats/char ({stored - full:+.4f}), {size / 2**20:.2f} MiB")
            if size <= MAX_BYTES and (args.storage != "auto" or stored - full < MAX_LOSS_RISE):
                meta["bundled"].update(storage=storage, heldout=round(stored, 4), heldout_report=report)
                save_compact(ckpt, args.out, storage, meta)
                print(f"wrote {args.out} ({storage}, {Path(args.out).stat().st_size / 2**20:.2f} MiB)")
                return 0
        raise TangpoemError(f"no storage fits {MAX_BYTES / 2**20:.0f} MiB within {MAX_LOSS_RISE} nats/char")
    finally:
        tmp.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
