"""How often poems rhyme on a reading the poets rarely used (天 with 平, 诗 with 台): the share of poems whose
rhyming characters share no level group of `prosody.usual_level_groups`, per form, the forms' defaults.

    python benchmarks/bench_rare_rhymes.py [--model-path bundled] [--per-form 100] [--seed 100] [--checkout DIR]

--checkout DIR writes the poems with the tangpoem of another checkout (an older commit's generator, in a
subprocess); they are always judged by this checkout's tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tangpoem import prosody  # noqa: E402

WRITE = """
import json, sys
from tangpoem.generation import Poet
model, per_form, seed, forms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
poet = Poet.load(model)
print(json.dumps({f: [p.text for p in poet.write(form=f, num_poems=per_form, seed=seed)] for f in forms}))
"""


def write(checkout: Path, model: str, per_form: int, seed: int) -> dict[str, list[str]]:
    """Poems of every form, written by the tangpoem of `checkout`."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    args = [sys.executable, "-c", WRITE, model, str(per_form), str(seed), ",".join(prosody.FORMS)]
    done = subprocess.run(args, cwd=checkout, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def rhymes_on_a_rare_reading(text: str) -> bool:
    rhymes = prosody.rhyme_characters(prosody.split_lines(text))
    return not frozenset.intersection(*(prosody.usual_level_groups(ch) for ch in rhymes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default="bundled")
    parser.add_argument("--per-form", type=int, default=100)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="whose generator writes (default: this one)")
    args = parser.parse_args()
    total = rare = 0
    for form, poems in write(args.checkout.resolve(), args.model_path, args.per_form, args.seed).items():
        found = [text for text in poems if rhymes_on_a_rare_reading(text)]
        total, rare = total + len(poems), rare + len(found)
        print(f"{form}: {len(found)} of {len(poems)} rhyme on a rare reading {' '.join(found[:2])}")
    print(f"all: {rare} of {total} ({rare / total:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
