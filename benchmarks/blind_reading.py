"""A blind reading: generated poems shuffled among real ones of the held-out split, scored by a reader
who is not told which is which.

    python benchmarks/blind_reading.py make DIR --npz work/tang_poem.npz --per-source 8 \\
        --source real --source "plain=bundled:rhyme=0" --source "tones=bundled:tones=1,candidates=4"
    (the reader fills DIR/scores.json from DIR/sheet.md, following DIR/instructions.md)
    python benchmarks/blind_reading.py score DIR [--scores DIR/scores-reader2.json]

Every source writes the same forms (七绝 and 五律, half each) from <START> with no start or prefix
words, so only the writer differs; "real" draws poems of those forms from the held-out split. A
source is NAME=CHECKPOINT:OPTIONS, OPTIONS being generation.GenerationConfig fields (rhyme=1, tones=1,
candidates=4, drafts=2, temperature=0.7). The sheet numbers the poems in a random order; the key
(DIR/key.json) says which source wrote each, and the sheet never does. `score` prints each source's
mean score per criterion (1-5: fluency, coherence, meaning, poeticness), their mean, and how often
the reader took its poems for a person's; plus the poems' rhyme and tone-rule shares (prosody).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CRITERIA = ("fluency", "coherence", "meaning", "poeticness")
FORMS = ("七绝", "五律")
INSTRUCTIONS = """# Reading Tang-style poems

Below are {n} short Chinese poems in the forms of Tang regulated verse (七绝: four lines of seven
characters; 五律: eight lines of five). Some are by Tang poets, some were written by machines; you are
not told which. Read each poem as a reader of classical Chinese poetry and score it from 1 (poor) to
5 (excellent) on:

- fluency: does each line read as natural classical Chinese?
- coherence: do the lines hang together (one scene, one mood, one line of thought)?
- meaning: does the poem say something one can understand?
- poeticness: imagery, craft, the feel of a real poem (rhyme and tone included)?

and say whether you think a person wrote it (true) or a machine (false). Judge each poem on its own.
Write DIR/scores.json as one JSON object: {{"1": {{"fluency": 3, "coherence": 2, "meaning": 2,
"poeticness": 2, "human": false, "note": "a few words"}}, "2": ...}}, with every poem number.
"""


def parse_source(text: str) -> tuple[str, str, dict]:
    """'name=ckpt:a=1,b=2' -> (name, ckpt, {a: 1, b: 2}); 'real' -> ('real', '', {})."""
    if text == "real":
        return "real", "", {}
    name, rest = text.split("=", 1)
    ckpt, _, opts = rest.partition(":")
    options = {}
    for item in filter(None, opts.split(",")):
        key, value = item.split("=", 1)
        if key in ("rhyme", "tones", "repeat_guard"):
            options[key] = value == "1"
        else:
            try:
                options[key] = json.loads(value)
            except ValueError:
                options[key] = value  # a string: prefix_words, pattern
    return name, ckpt, options


def make(args: argparse.Namespace) -> int:
    from tangpoem.data import load_npz
    from tangpoem.generation import GenerationConfig, Poet
    from tangpoem.prosody import check_poem

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    half = args.per_source // 2
    items = []  # (source, text)
    for index, spec in enumerate(args.source):
        name, ckpt, options = parse_source(spec)
        if name == "real":
            poems = load_npz(args.npz)
            texts = [t for t, h in zip(poems.texts(), poems.heldout, strict=True) if h]
            for form in FORMS:
                pool = [t for t in texts if check_poem(t).form == form]
                items += [(name, t) for t in rng.sample(pool, half)]
            continue
        poet = Poet.load(ckpt)
        for i, form in enumerate(FORMS):
            # seeds differ between sources too: two sources never open a poem alike side by side
            seed = args.seed + 1000 * i + 100_000 * index
            request = GenerationConfig(**{"form": form, "num_poems": half, "seed": seed, **options})
            items += [(name, p.text) for p in poet.write(request)]
    rng.shuffle(items)
    sheet = ["# Poems", ""] + [f"{i}. {text}" for i, (_, text) in enumerate(items, 1)]
    (out / "sheet.md").write_text("\n".join(sheet) + "\n", encoding="utf-8")
    (out / "instructions.md").write_text(INSTRUCTIONS.format(n=len(items)), encoding="utf-8")
    key = {str(i): {"source": s, "text": t} for i, (s, t) in enumerate(items, 1)}
    (out / "key.json").write_text(json.dumps({"sources": args.source, "key": key}, ensure_ascii=False, indent=1))
    print(f"{len(items)} poems: {out / 'sheet.md'}; instructions: {out / 'instructions.md'}")
    return 0


def score(args: argparse.Namespace) -> int:
    from tangpoem.prosody import check_poem

    out = Path(args.dir)
    key = json.loads((out / "key.json").read_text(encoding="utf-8"))["key"]
    scores = json.loads(Path(args.scores or out / "scores.json").read_text(encoding="utf-8"))
    missing = sorted(set(key) - set(scores), key=int)
    if missing:
        print(f"scores.json lacks poems {', '.join(missing)}", file=sys.stderr)
        return 2
    by_source: dict[str, list[str]] = {}
    for poem_id, entry in key.items():
        by_source.setdefault(entry["source"], []).append(poem_id)
    head = f"{'source':24} {'n':>3} " + " ".join(f"{c:>10}" for c in CRITERIA)
    print(head + f" {'mean':>6} {'human?':>7} {'rhyme':>6} {'rules':>6}")
    for source, ids in by_source.items():
        means = [statistics.mean(float(scores[i][c]) for i in ids) for c in CRITERIA]
        human = statistics.mean(bool(scores[i].get("human")) for i in ids)
        checks = [check_poem(key[i]["text"]) for i in ids]
        rhyme = statistics.mean(c.rhyme for c in checks)
        rules = statistics.mean(c.all_ok for c in checks)
        cells = " ".join(f"{m:10.2f}" for m in means)
        print(f"{source:24} {len(ids):3d} {cells} {statistics.mean(means):6.2f} {human:7.0%} {rhyme:6.0%} {rules:6.0%}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--npz", default="work/tang_poem.npz")
    m.add_argument("--per-source", type=int, default=8)
    m.add_argument("--seed", type=int, default=2026)
    m.add_argument("--source", action="append", required=True)
    s = sub.add_parser("score")
    s.add_argument("dir")
    s.add_argument("--scores", help="a reader's scores (default: DIR/scores.json)")
    args = parser.parse_args()
    return make(args) if args.command == "make" else score(args)


if __name__ == "__main__":
    sys.exit(main())
