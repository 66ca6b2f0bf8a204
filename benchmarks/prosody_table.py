"""The README's table of what the rules do: real held-out poems beside one checkpoint's under several settings.

    python benchmarks/prosody_table.py --model-path work/checkpoints/cpu.params.stepN --per-form 16

Runs `python -m tangpoem.evaluate --json` once per setting (the same code a user runs) and prints one
markdown table over the four forms together: well formed, 平水韵 rhyme, every rule (rhyme and a standard tone
pattern), each tone rule, lines copied from the training split, poems with a repeated line, distinct-2; plus
sample poems of each setting with their seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = {  # row label: evaluate flags
    "no rules (the network alone)": ["--samples", "64", "--per-form", "0"],
    "form only (--no-rhyme)": ["--no-rhyme"],
    "rhyme (the forms' default)": [],
    "rhyme, --drafts 4": ["--drafts", "4"],
    "rhyme + --tones": ["--tones"],
    "rhyme + --tones --candidates 4": ["--tones", "--candidates", "4"],
}
COLUMNS = [  # (header, getter)
    ("well formed", lambda f: f["well_formed"]),
    ("rhyme", lambda f: f["rhyme"]),
    ("every rule", lambda f: f["all_rules"]),
    ("二四六", lambda f: f["rules"]["二四六"]),
    ("粘对", lambda f: f["rules"]["粘对"]),
    ("no 三平尾", lambda f: f["rules"]["三平尾"]),
    ("no 孤平", lambda f: f["rules"]["孤平"]),
    ("copied lines", lambda f: f["copied_lines"]),
    ("repeated line", lambda f: f["repeated_line"]),
]


def evaluate(argv: list[str]) -> dict:
    from tangpoem.evaluate import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main([*argv, "--json"])
    if status != 0:
        raise SystemExit(f"evaluate {' '.join(argv)} failed ({status})")
    return json.loads(out.getvalue())


def merged_reference(reference: dict[str, dict]) -> dict:
    """The four forms' reference figures as one column, weighted by their numbers of poems."""
    total = sum(f["poems"] for f in reference.values())

    def mean(get) -> float:
        return sum(get(f) * f["poems"] for f in reference.values()) / total

    return {
        "poems": total, "well_formed": mean(lambda f: f["well_formed"]), "rhyme": mean(lambda f: f["rhyme"]),
        "all_rules": mean(lambda f: f["all_rules"]), "copied_lines": mean(lambda f: f["copied_lines"]),
        "repeated_line": mean(lambda f: f["repeated_line"]),
        "rules": {k: mean(lambda f, k=k: f["rules"][k]) for k in next(iter(reference.values()))["rules"]},
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--data-path", default="work/tang_poem.npz")
    parser.add_argument("--per-form", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=2, help="sample poems to print per setting")
    args = parser.parse_args()
    common = ["--model-path", args.model_path, "--data-path", args.data_path, "--seed", str(args.seed),
              "--no-use-gpu", "--samples", "0", "--per-form", str(args.per_form)]  # fmt: skip
    rows, samples, report = [], {}, {}
    for label, flags in SETTINGS.items():
        report = evaluate([*common, *flags])
        figures = report["figures"]
        key = "no rules" if "no rules" in figures else "generated"
        rows.append((label, figures[key]))
        samples[label] = report.get("samples") or report.get("generated") or []
    rows.insert(0, ("real poems, held-out split", merged_reference(report["reference"])))
    print(f"checkpoint {report.get('checkpoint')} (step {report.get('step')}), held-out {report['cross_entropy']:.3f}")
    print("| poems | n | " + " | ".join(h for h, _ in COLUMNS) + " |")
    print("| --- " * (len(COLUMNS) + 2) + "|")
    for label, f in rows:
        print(f"| {label} | {f['poems']} | " + " | ".join(f"{get(f):.0%}" for _, get in COLUMNS) + " |")
    print()
    for label, texts in samples.items():
        for text in texts[: args.samples]:
            print(f"{label}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
