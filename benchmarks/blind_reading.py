"""A blind reading: generated poems shuffled among real ones of the held-out split, scored by a reader
who is not told which is which.

    python benchmarks/blind_reading.py make DIR --npz work/tang_poem.npz --per-source 8 \\
        --source real --source "plain=bundled:rhyme=0" --source "tones=bundled:tones=1,candidates=4"
    python benchmarks/blind_reading.py make DIR --titles --npz work/tangsong.npz --per-source 8 \\
        --source real --source "titled=bundled:"
    (the reader fills DIR/scores.json from DIR/sheet.md, following DIR/instructions.md)
    python benchmarks/blind_reading.py score DIR [--scores DIR/scores-reader1.json --scores DIR/scores-reader2.json]

Every source writes the same forms (七绝 and 五律, half each) from <START> with no start or prefix
words, so only the writer differs; "real" draws poems of those forms from the held-out split. A
source is NAME=CHECKPOINT:OPTIONS, OPTIONS being generation.GenerationConfig fields (rhyme=1, tones=1,
candidates=4, drafts=2, temperature=0.7). The sheet numbers the poems in a random order; the key
(DIR/key.json) says which source wrote each, and the sheet never does.

With --titles (a format-2 npz with titles) every poem is shown under a title: "real" draws held-out
Tang poems and shows their own titles; each other source writes to the titles of other held-out Tang
poems of the same form (the `title` setting), so no title is shown twice. The key records each poem's
title, and the reader also says whether each poem fits its title (fits_title). A source with untitled=1 (a
model that cannot read titles) writes without its titles, and its poems are shown under them all the same.

`score` prints each source's mean score per criterion (1-5: fluency, coherence, meaning, poeticness),
their mean, how often the reader took its poems for a person's and, when the scores say so, how often
a poem fitted its title; plus the poems' rhyme and tone-rule shares (prosody). With several --scores,
one table per reader, then their mean.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from tangpoem.data import PoemData
    from tangpoem.generation import GenerationConfig, Poet

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
TITLED_INSTRUCTIONS = """# Reading Tang-style poems

Below are {n} short Chinese poems in the forms of Tang regulated verse (七绝: four lines of seven
characters; 五律: eight lines of five), each under its title (《...》). Some are by Tang poets, some were
written by machines; you are not told which. Read each poem as a reader of classical Chinese poetry and
score it from 1 (poor) to 5 (excellent) on:

- fluency: does each line read as natural classical Chinese?
- coherence: do the lines hang together (one scene, one mood, one line of thought)?
- meaning: does the poem say something one can understand?
- poeticness: imagery, craft, the feel of a real poem (rhyme and tone included)?

then answer two yes/no questions: does the poem fit its title, that is, is it about what the title
says (fits_title: true for yes, false for no)? And do you think a person wrote it (human: true) or a
machine (false)? Judge each poem on its own. Write DIR/scores.json as one JSON object: {{"1": {{"fluency": 3,
"coherence": 2, "meaning": 2, "poeticness": 2, "fits_title": true, "human": false, "note": "a few words"}},
"2": ...}}, with every poem number.
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
        if key in ("rhyme", "tones", "repeat_guard", "untitled", "plan", "acrostic"):
            options[key] = value == "1"
        else:
            try:
                options[key] = json.loads(value)
            except ValueError:
                options[key] = value  # a string: prefix_words, pattern
    return name, ckpt, options


# ---------------------------------------------------------------- make


def make(args: argparse.Namespace) -> int:
    from tangpoem.errors import TangpoemError

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    try:
        items = titled_items(args, rng) if args.titles else untitled_items(args, rng)
    except TangpoemError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rng.shuffle(items)
    (out / "sheet.md").write_text(sheet_text(items, args.titles), encoding="utf-8")
    instructions = TITLED_INSTRUCTIONS if args.titles else INSTRUCTIONS
    (out / "instructions.md").write_text(instructions.format(n=len(items)), encoding="utf-8")
    head: dict[str, Any] = {"sources": args.source, **({"titles": True} if args.titles else {})}
    key = {str(i): item for i, item in enumerate(items, 1)}
    (out / "key.json").write_text(json.dumps({**head, "key": key}, ensure_ascii=False, indent=1))
    print(f"{len(items)} poems: {out / 'sheet.md'}; instructions: {out / 'instructions.md'}")
    return 0


def untitled_items(args: argparse.Namespace, rng: random.Random) -> list[dict[str, str]]:
    """The poems of a sheet without titles, as every reading before --titles drew them (same seed, same sheet)."""
    from tangpoem.data import load_npz
    from tangpoem.generation import GenerationConfig, Poet
    from tangpoem.prosody import check_poem

    half = args.per_source // 2
    items = []
    for index, spec in enumerate(args.source):
        name, ckpt, options = parse_source(spec)
        if name == "real":
            poems = load_npz(args.npz)
            texts = [t for t, h in zip(poems.texts(), poems.heldout, strict=True) if h]
            for form in FORMS:
                pool = [t for t in texts if check_poem(t).form == form]
                items += [{"source": name, "text": t} for t in rng.sample(pool, half)]
            continue
        poet = Poet.load(ckpt)
        for i, form in enumerate(FORMS):
            # seeds differ between sources too: two sources never open a poem alike side by side
            seed = args.seed + 1000 * i + 100_000 * index
            request = GenerationConfig(**{"form": form, "num_poems": half, "seed": seed, **options})
            items += [{"source": name, "text": p.text} for p in poet.write(request)]
    return items


def titled_items(args: argparse.Namespace, rng: random.Random) -> list[dict[str, str]]:
    """Each source's poems with their titles: "real" shows held-out Tang poems under their own titles, the
    others write to the titles of other held-out Tang poems (source k takes the k-th share of the draws)."""
    from tangpoem.data import load_npz

    half = args.per_source // 2
    draws = draw_titled(load_npz(args.npz), rng, half * len(args.source))
    items = []
    for index, spec in enumerate(args.source):
        name, ckpt, options = parse_source(spec)
        mine = {form: draws[form][index * half : (index + 1) * half] for form in FORMS}
        if name == "real":
            items += [{"source": name, "title": t, "text": x} for form in FORMS for t, x in mine[form]]
        else:
            items += write_to_titles(name, ckpt, options, mine, args.seed + 100_000 * index)
    return items


def draw_titled(poems: PoemData, rng: random.Random, count: int) -> dict[str, list[tuple[str, str]]]:
    """count (title, poem) pairs per form from the held-out Tang poems, no title twice across all forms; a
    TangpoemError when the npz has no titles or too few such poems."""
    from tangpoem.corpus import clean_title
    from tangpoem.errors import TangpoemError
    from tangpoem.prosody import check_poem

    if poems.titles is None:
        build = "python -m tangpoem.data build --collections tang,song --out work/tangsong.npz"
        raise TangpoemError(f"{poems.path} is format 1, without titles: --titles needs a format-2 npz ({build})")
    if "tang" not in poems.collection_names:
        names = ", ".join(poems.collection_names)
        raise TangpoemError(f"{poems.path} holds no Tang poems ({names}): --titles draws held-out Tang poems")
    tang = poems.collection_names.index("tang")
    pools: dict[str, list[tuple[str, str]]] = {form: [] for form in FORMS}
    for row in (poems.heldout & (poems.collection_of_rows() == tang)).nonzero()[0].tolist():
        title = poems.titles[row]
        # the title shown must be the one the model reads: Poet cleans a title as the corpus does
        if not title or clean_title(title) != title:
            continue
        text = poems.decode(poems.data[row])
        form = check_poem(text).form
        if form in pools:
            pools[form].append((title, text))
    used: set[str] = set()  # 送人, 春怨, ... head many poems: the reader is never shown one title twice
    draws = {}
    for form in FORMS:
        pool = pools[form]
        rng.shuffle(pool)
        draws[form] = []
        for title, text in pool:
            if len(draws[form]) == count:
                break
            if title not in used:
                used.add(title)
                draws[form].append((title, text))
        if len(draws[form]) < count:
            raise TangpoemError(f"{poems.path} has {len(draws[form])} held-out titled Tang {form} poems of distinct "
                                f"titles; the sources need {count}: lower --per-source")  # fmt: skip
    return draws


def add_titled_args(parser: argparse.ArgumentParser) -> None:
    """The options of the benchmarks that write to held-out titles (bench_title_guidance.py and the like)."""
    parser.add_argument("--npz", required=True, help="a format-2 npz with titles (the held-out split it defines)")
    parser.add_argument("--model-path", default="bundled")
    parser.add_argument("--per-form", type=int, default=100, help="titles per form (default: 100)")
    parser.add_argument("--seed", type=int, default=7)


def titled_draws(poems: PoemData, args: argparse.Namespace) -> tuple[list[str], list[str], list[str]]:
    """Forms, titles and real poems of args.per_form held-out Tang titles per form, drawn with args.seed."""
    draws = draw_titled(poems, random.Random(args.seed), args.per_form)
    forms, titles, reals = zip(*[(f, t, x) for f in FORMS for t, x in draws[f]], strict=True)
    return list(forms), list(titles), list(reals)


def load_titled(args: argparse.Namespace) -> tuple[PoemData, Poet, list[str], list[str], list[str]]:
    """What a benchmark writing to held-out titles starts from (add_titled_args' options): the process made ready
    for Paddle, the npz, the model, and the drawn forms, titles and real poems (titled_draws)."""
    from tangpoem.data import load_npz
    from tangpoem.device import prepare_command
    from tangpoem.generation import Poet

    prepare_command()
    poems = load_npz(args.npz)
    forms, titles, reals = titled_draws(poems, args)
    return poems, Poet.load(args.model_path), forms, titles, reals


def write_each_title(poet: Poet, forms: list[str], titles: list[str], seed: int,
                     **setting: Any) -> tuple[list[str], list[GenerationConfig], float]:  # fmt: skip
    """One poem to each title in its form, with the setting a benchmark varies (title i gets seed + i, so rows
    differ by the setting alone), all in one batch: the texts, the requests, and milliseconds per poem."""
    from tangpoem.generation import GenerationConfig

    requests = [GenerationConfig(title=t, form=f, seed=seed + i, **setting)
                for i, (f, t) in enumerate(zip(forms, titles, strict=True))]  # fmt: skip
    start = time.perf_counter()
    texts = [result[0].text for result in poet.write_batch(requests)]
    return texts, requests, 1000 * (time.perf_counter() - start) / len(texts)


def write_to_titles(name: str, ckpt: str, options: dict, drawn: dict[str, list[tuple[str, str]]],
                    base_seed: int) -> list[dict]:  # fmt: skip
    """One poem per drawn (title, real poem), written to the title, all decoded in one batch; a TangpoemError
    when the model cannot take one. With keywords=real a poem is also given keywords: a character of each couplet
    of the real poem under that title (the images a reader of the title might ask for)."""
    from tangpoem.errors import TangpoemError
    from tangpoem.generation import GenerationConfig, Poet

    poet = Poet.load(ckpt)
    # untitled=1: a model that cannot read titles writes without one, shown under the drawn title all the same
    # (so that an older model is read beside the titled one on one sheet)
    options = dict(options)
    untitled = bool(options.pop("untitled", False))
    keywords_from_real = options.pop("keywords", "") == "real"
    requests, shown = [], []
    for i, form in enumerate(FORMS):
        for j, (title, text) in enumerate(drawn[form]):
            # poem j gets the seed it would as the j-th of num_poems: seeds still differ between sources
            seed = base_seed + 1000 * i + j
            settings = {"form": form, "seed": seed, **options, "num_poems": 1, "title": "" if untitled else title}
            if keywords_from_real:
                settings["keywords"] = " ".join(couplet_keywords(title, text, random.Random(seed)))
            requests.append(GenerationConfig(**settings))
            shown.append(title)
    results = poet.write_batch(requests)
    for result in results:
        if isinstance(result, TangpoemError):
            raise TangpoemError(f"source {name}: {result}")
    return [{"source": name, "title": t, "text": r[0].text, **({"keywords": r[0].keywords} if r[0].keywords else {})}
            for t, r in zip(shown, results, strict=True)]  # fmt: skip


FUNCTION_CHARACTERS = set("不一无有何自如为知此得未相是与可谁更欲之其而也以于乃兮又亦皆犹即只却还将所者人来去见时中")


def couplet_keywords(title: str, text: str, rng: random.Random) -> list[str]:
    """An image of each couplet of a poem, the keywords a reader might give for it: the couplet's character its
    title calls up most (generation.plan's table), else one of its characters that is not a function word."""
    from tangpoem.generation import split_poem
    from tangpoem.generation.plan import title_associations
    from tangpoem.generation.shapes import LINE_ENDS

    calls = dict(title_associations(title))
    _, couplets = split_poem(text)
    out: list[str] = []
    for couplet in couplets:
        chars = [ch for ch in couplet[:-1] if ch not in FUNCTION_CHARACTERS and ch not in LINE_ENDS and ch not in out]
        called = [ch for ch in chars if ch in calls]
        if called:
            out.append(max(called, key=lambda ch: calls[ch]))
        elif chars:
            out.append(rng.choice(chars))
    return out


def sheet_text(items: list[dict[str, str]], titled: bool) -> str:
    """The numbered poems; with titles, a heading per poem with its title."""
    sheet = ["# Poems", ""]
    for i, item in enumerate(items, 1):
        sheet += [f"### {i}  《{item['title']}》", item["text"], ""] if titled else [f"{i}. {item['text']}"]
    return "\n".join(sheet).rstrip("\n") + "\n"


# ---------------------------------------------------------------- score


def score(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    key = json.loads((out / "key.json").read_text(encoding="utf-8"))["key"]
    paths = [Path(p) for p in args.scores or [out / "scores.json"]]
    readers = []
    for path in paths:
        scores = json.loads(path.read_text(encoding="utf-8"))
        missing = sorted(set(key) - set(scores), key=int)
        if missing:
            print(f"{path} lacks poems {', '.join(missing)}", file=sys.stderr)
            return 2
        readers.append(scores)
    by_source: dict[str, list[str]] = {}
    for poem_id, entry in key.items():
        by_source.setdefault(entry["source"], []).append(poem_id)
    prosody = {source: prosody_shares([key[i]["text"] for i in ids]) for source, ids in by_source.items()}
    fits = any("fits_title" in entry for scores in readers for entry in scores.values())
    tables = [{source: reader_figures(scores, ids) for source, ids in by_source.items()} for scores in readers]
    if len(tables) == 1:  # one reader: the table alone, as before several were read
        print_table(tables[0], by_source, prosody, fits)
        return 0
    for n, (path, table) in enumerate(zip(paths, tables, strict=True), 1):
        print(f"reader {n}: {path}")
        print_table(table, by_source, prosody, fits)
        print()
    print(f"mean over {len(tables)} readers")
    print_table(mean_table(tables), by_source, prosody, fits)
    return 0


def yes(value: Any) -> bool:
    """A reader's yes/no answer: true/false as asked, but "yes"/"no" too (bool("no") would be True)."""
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "true", "y")
    return bool(value)


def reader_figures(scores: dict, ids: list[str]) -> dict[str, float | None]:
    """One reader's figures for one source's poems: each criterion's mean, their mean, the share taken
    for human, and the share judged to fit the title (None when no poem was asked about it)."""
    figures: dict[str, float | None] = {c: statistics.mean(float(scores[i][c]) for i in ids) for c in CRITERIA}
    figures["mean"] = statistics.mean(figures[c] for c in CRITERIA)
    figures["human"] = statistics.mean(yes(scores[i].get("human")) for i in ids)
    judged = [yes(scores[i]["fits_title"]) for i in ids if "fits_title" in scores[i]]
    figures["fits"] = statistics.mean(judged) if judged else None
    return figures


def mean_table(tables: list[dict[str, dict[str, float | None]]]) -> dict[str, dict[str, float | None]]:
    """Each figure's mean over the readers that gave it (every reader scored the same poems)."""
    out: dict[str, dict[str, float | None]] = {}
    for source, figures in tables[0].items():
        out[source] = {}
        for name in figures:
            given = [t[source][name] for t in tables if t[source][name] is not None]
            out[source][name] = statistics.mean(given) if given else None
    return out


def prosody_shares(texts: list[str]) -> tuple[float, float]:
    """The share of poems that rhyme, and of those keeping every tone rule: the reader plays no part."""
    from tangpoem.prosody import check_poem

    checks = [check_poem(t) for t in texts]
    return statistics.mean(c.rhyme for c in checks), statistics.mean(c.all_ok for c in checks)


def print_table(table: dict, by_source: dict[str, list[str]], prosody: dict, fits: bool) -> None:
    head = f"{'source':24} {'n':>3} " + " ".join(f"{c:>10}" for c in CRITERIA)
    print(head + f" {'mean':>6} {'human?':>7}" + (f" {'fits?':>7}" if fits else "") + f" {'rhyme':>6} {'rules':>6}")
    for source, ids in by_source.items():
        f = table[source]
        cells = " ".join(f"{f[c]:10.2f}" for c in CRITERIA)
        fit = (f" {f['fits']:7.0%}" if f["fits"] is not None else f" {'-':>7}") if fits else ""
        rhyme, rules = prosody[source]
        print(f"{source:24} {len(ids):3d} {cells} {f['mean']:6.2f} {f['human']:7.0%}{fit} {rhyme:6.0%} {rules:6.0%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--npz", default="work/tang_poem.npz")
    m.add_argument("--per-source", type=int, default=8)
    m.add_argument("--seed", type=int, default=2026)
    m.add_argument("--source", action="append", required=True)
    titles_help = "show each poem under a title; generated sources write to held-out Tang titles (format-2 npz)"
    m.add_argument("--titles", action="store_true", help=titles_help)
    s = sub.add_parser("score")
    s.add_argument("dir")
    scores_help = "a reader's scores, repeatable: one table per reader, then their mean (default: DIR/scores.json)"
    s.add_argument("--scores", action="append", help=scores_help)
    args = parser.parse_args()
    return make(args) if args.command == "make" else score(args)


if __name__ == "__main__":
    sys.exit(main())
