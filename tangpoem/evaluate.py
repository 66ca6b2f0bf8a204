"""How good a checkpoint is: held-out cross-entropy (padding excluded), perplexity, figures of poems.

    python -m tangpoem.evaluate --model-path CKPT [--data-path NPZ] [--samples 8] [--temperature 0.8] [--json]
    python -m tangpoem.evaluate --poems FILE [--data-path NPZ] [--json]   (one poem a line; no checkpoint)

The held-out split is the npz's (about 2% of the poems, chosen by a hash of each poem's text). For
scale, on that split: unigram 6.60, bigram 5.58, trigram 5.37 nats per character.

A poem counts as well formed when it has an even number of lines, all 5 or all 7 characters long,
ending alternately in ， and 。. The poems are sampled from <START> at --temperature (plain softmax
sampling: no top-k/top-p, no form rules; this measures the network, not the generator's constraints).
Also here: the small decoders the trainer uses for its logged samples (greedy continuation, plain
sampling); the full generator is `tangpoem.generate`.

Figures of a list of poems (`poem_figures`), printed for the sampled poems or the --poems file and,
as the reference, for the real poems of the held-out split in each of 五绝 七绝 五律 七律. Shares are
of all the poems given (a poem that is not an even number of 5- or 7-character lines keeps no rule):
- well formed: as above; rhyme: 平水韵 rhyme (`tangpoem.prosody`); all rules: rhyme and every line
  admitted by one standard tone pattern; per rule: rhyme, 二四六分明, 粘对, no 三平尾, no 孤平, pattern;
- copied lines: clauses of 5 or more characters found verbatim among the training split's clauses
  (share of the lines, and of the poems with at least one);
- poems with a repeated character (重字: a doubled word such as 萧萧, its only two uses side by side, does
  not count), with a repeated line; distinct-2: distinct character bigrams
  (within a line) over all bigrams of all the poems (it falls as the number of poems grows, so
  compare lists of similar size);
- unknown characters: poems with a character the 平水韵 table lacks (it counts as either tone).
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: its process is set up before Paddle loads (device.prepare_command)
    from tangpoem.device import prepare_command

    prepare_command()

import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import paddle

from tangpoem.checkpoint import load_checkpoint, resolve_model
from tangpoem.config import COMMANDS, ArgumentParser, Config, add_config_args, parse_config_args
from tangpoem.data import PAD, SEP, PoemData, load_npz
from tangpoem.dataset import PoemRows, target_mask
from tangpoem.device import setup_device
from tangpoem.errors import TangpoemError, cli_main
from tangpoem.loss import sequence_loss
from tangpoem.model import PoetryModel
from tangpoem.prosody import FORMS, RULES, check_poem, is_hanzi

if TYPE_CHECKING:
    from tangpoem.generation import Poet

EVAL_BATCH_SIZE = 128  # the masked mean does not depend on it; large batches are just faster
LINE = re.compile(r"([^，。！？；]+)([，。！？；])")
REFERENCE_FORMS = tuple(FORMS)  # the four regulated forms
MIN_COPIED = 5  # shorter clauses (三字句) recur in real poems by chance


def heldout_batches(
    poems: PoemData, max_poems: int = 0, batch_size: int = EVAL_BATCH_SIZE, seed: int = 0, titles: bool = True,
    collections: Sequence[int] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """(inputs, targets) of the held-out poems (of some collections, None: all; a random max_poems of them, 0:
    all), grouped by exact length so that every poem starts at <START> from the zero state, as the
    generator reads it. titles: with their titles, as `dataset.PoemRows` lays them out (an npz with
    titles), else without; the body's characters, which alone are scored, are the same either way.

    (The npz pads in front; a poem behind padding would be scored from another state.)
    """
    keep = poems.heldout if collections is None else poems.heldout & np.isin(poems.collection_of_rows(), collections)
    index = np.flatnonzero(keep)
    if max_poems and max_poems < len(index):
        index = np.sort(np.random.default_rng(seed).choice(index, max_poems, replace=False))
    rows = PoemRows(poems)
    pairs = [rows.pair(int(i), titles) for i in index]
    by_length: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for pair in pairs:
        by_length.setdefault(len(pair[0]), []).append(pair)
    batches = []
    for length in sorted(by_length):
        same = by_length[length]
        for i in range(0, len(same), batch_size):
            chunk = same[i : i + batch_size]
            batches.append((np.stack([x for x, _ in chunk]), np.stack([y for _, y in chunk])))
    return batches


def reencode(poems: PoemData, vocab: list[str]) -> tuple[PoemData, int]:
    """The npz's poems in a model's vocabulary (one trained on another build: Tang only, Tang and Song),
    each token mapped by its text, so that any model is scored on the same held-out poems. Held-out poems
    with a character the vocabulary lacks leave the held-out split; returns how many did."""
    word2ix = {w: i for i, w in enumerate(vocab)}
    table = np.array([word2ix.get(w, -1) for w in poems.ix2word], np.int64)
    data = table[poems.data]
    unknown = (data < 0).any(axis=1)
    titles = poems.titles
    if titles is None and SEP in word2ix:  # a model that reads titles, poems that have none
        titles = [""] * len(poems.data)
    moved = PoemData(np.where(data < 0, word2ix[PAD], data).astype(np.int32), list(vocab), poems.heldout & ~unknown,
                     poems.lengths, poems.path, titles=titles, collections=poems.collections,
                     collection_names=poems.collection_names)  # fmt: skip
    return moved, int((poems.heldout & unknown).sum())


def heldout_report(model: PoetryModel, poems: PoemData) -> dict[str, dict[str, float | int]]:
    """Per collection: held-out poems, characters scored, nats/char of the bodies without their titles and,
    for a model that reads titles, with them (the difference is what the title tells the model)."""
    titled = PoemRows(poems).titled
    out = {}
    for c, name in enumerate(poems.collection_names):
        entry: dict[str, float | int] = {}
        for titles in (False, True) if titled else (False,):
            batches = heldout_batches(poems, titles=titles, collections=[c])
            nats, count = heldout_loss(model, batches, poems.pad_id, poems.start_id)
            entry.update(poems=sum(len(x) for x, _ in batches), characters=count)
            entry["with_titles" if titles else "without_titles"] = round(nats, 6)
        if entry["poems"]:
            out[name] = entry
    return out


def heldout_loss(
    model: PoetryModel, batches: Iterable, pad_id: int, start_id: int, max_batches: int = 0
) -> tuple[float, int]:
    """Mean next-character cross-entropy in nats over the non-padding positions of up to max_batches
    (inputs, targets) batches (0: all); returns (nats per character, characters counted)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with paddle.no_grad():
        for i, (inputs, targets) in enumerate(batches):
            if max_batches and i >= max_batches:
                break
            inputs, targets = paddle.to_tensor(inputs), paddle.to_tensor(targets)
            loss, n = sequence_loss(model, inputs, targets, target_mask(targets, pad_id, start_id))
            total += loss.item() * n  # sum, not mean of means: batches differ in length
            count += n
    if was_training:
        model.train()
    return (total / count if count else float("nan")), count


def well_formed(text: str) -> bool:
    """Even number of lines (>= 2), all 5 or all 7 characters, ending ，。，。…"""
    lines = LINE.findall(text)
    if not lines or "".join(a + b for a, b in lines) != text or len(lines) % 2:
        return False
    lengths = {len(body) for body, _ in lines}
    ends_ok = all(end == ("，" if i % 2 == 0 else "。") for i, (_, end) in enumerate(lines))
    return ends_ok and len(lengths) == 1 and lengths.pop() in (5, 7)


def greedy_continue(model: PoetryModel, vocab: list[str], start: str, max_len: int = 64) -> str:
    """start + the model's most likely poem after it (up to max_len more characters), through the
    generator's one decoding loop with its shape rules and no repetition penalty: what the trainer
    logs. Characters of start that the vocabulary lacks are skipped."""
    from tangpoem.generation import Poet, normalise

    poet = Poet.from_model(model, vocab)
    start = "".join(ch for ch in normalise(start) if ch in poet.classes.word2ix)
    options = dict(temperature=0, repetition_penalty=0, repeat_guard=False, max_gen_len=len(start) + max_len)
    try:
        return poet.write(start_words=start, **options)[0].text
    except TangpoemError as err:  # start words that break the shape rules: say so in the log
        return f"{start} ({err})"


def sample_poems(
    model: PoetryModel, vocab: list[str], n: int, temperature: float = 1.0, seed: int = 0, max_len: int = 200
) -> list[str]:
    """n poems sampled from <START> as one batch, with no rules at all (any token, <EOP> any time) and
    plain softmax sampling (no top-k/top-p, no penalty): what the network alone writes. Temperature 0
    is greedy. The generator's one decoding loop, unconstrained."""
    from tangpoem.generation import GenerationConfig, Poet

    request = GenerationConfig(temperature=temperature, top_p=1.0, top_k=0, repetition_penalty=0, repeat_guard=False,
                               seed=seed, num_poems=n, max_gen_len=max_len)  # fmt: skip
    return [p.text for p in Poet.from_model(model, vocab).write(request, unconstrained=True)]


# ---------------------------------------------------------------- figures of poems


def _clauses(text: str) -> list[str]:
    return [body for body, _ in LINE.findall(text)]


def training_lines(poems: PoemData, min_chars: int = MIN_COPIED) -> frozenset[str]:
    """Every clause of min_chars or more characters in the training split (rows not held out)."""
    lines: set[str] = set()
    for row in poems.data[~poems.heldout]:
        lines.update(c for c in _clauses(poems.decode(row)) if len(c) >= min_chars)
    return frozenset(lines)


def poem_figures(texts: list[str], train_lines: frozenset[str] | set[str]) -> dict:
    """The figures of the module docstring for a list of poems: shares in [0, 1], plus counts."""
    n = len(texts)
    checks = [check_poem(t) for t in texts]
    lines = [_clauses(t) for t in texts]
    long_lines = [[c for c in ls if len(c) >= MIN_COPIED] for ls in lines]
    copied = [sum(c in train_lines for c in ls) for ls in long_lines]
    bigrams = [c[i : i + 2] for ls in lines for c in ls for i in range(len(c) - 1)]
    n_long = sum(len(ls) for ls in long_lines)

    def share(count: int, total: int = n) -> float:
        return count / total if total else 0.0

    rules = {rule: share(sum(c.rules()[rule] for c in checks)) for rule in RULES}
    rules["格律"] = share(sum(c.tones_ok for c in checks))
    return {
        "poems": n,
        "well_formed": share(sum(well_formed(t) for t in texts)),
        "forms": {f: sum(c.form == f for c in checks) for f in REFERENCE_FORMS},
        "rhyme": rules["rhyme"],
        "all_rules": share(sum(c.all_ok for c in checks)),
        "rules": rules,
        "lines": n_long,
        "copied_lines": share(sum(copied), n_long),
        "poems_with_copied_line": share(sum(k > 0 for k in copied)),
        "repeated_character": share(sum(repeated_characters(t) > 0 for t in texts)),
        "repeated_line": share(sum(_repeats(ls) for ls in lines)),
        "distinct_2": share(len(set(bigrams)), len(bigrams)),
        "unknown_characters": share(sum(bool(c.unknown) for c in checks)),
    }


def repeated_characters(text: str) -> int:
    """How many characters a poem writes more than once (重字), a doubled word (萧萧: a character's only two
    uses, side by side) not counted: regulated verse avoids the one and uses the other."""
    places: dict[str, list[int]] = {}
    for i, ch in enumerate(text):
        if is_hanzi(ch):
            places.setdefault(ch, []).append(i)
    return sum(len(p) > 2 or (len(p) == 2 and p[1] - p[0] > 1) for p in places.values())


def _repeats(items: list[str]) -> bool:
    return len(set(items)) < len(items)


def reference_figures(poems: PoemData, train_lines: frozenset[str] | set[str]) -> dict[str, dict]:
    """poem_figures of the held-out split's real poems, one entry per form of REFERENCE_FORMS."""
    by_form: dict[str, list[str]] = {f: [] for f in REFERENCE_FORMS}
    for row in poems.data[poems.heldout]:
        text = poems.decode(row)
        form = check_poem(text).form
        if form in by_form:
            by_form[form].append(text)
    return {f: poem_figures(texts, train_lines) for f, texts in by_form.items()}


def read_poems_file(path: str | Path) -> list[str]:
    """One poem a line (blank lines skipped, spaces removed); TangpoemError for a missing, unreadable,
    non-UTF-8 or empty file."""
    path = Path(path)
    if not path.is_file():
        raise TangpoemError(f"poems file {path} not found; give a UTF-8 text file with one poem a line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TangpoemError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise TangpoemError(f"cannot read {path}: {err.strerror}") from None
    poems = ["".join(line.split()) for line in text.lstrip("\ufeff").splitlines()]
    poems = [p for p in poems if p]
    if not poems:
        raise TangpoemError(f"{path} holds no poems; write one poem a line")
    return poems


FIGURE_ROWS = (  # (label, getter, percent?)
    ("poems", lambda f: f["poems"], False),
    ("well formed", lambda f: f["well_formed"], True),
    ("rhyme (平水韵)", lambda f: f["rhyme"], True),
    ("all rules", lambda f: f["all_rules"], True),
    ("  二四六", lambda f: f["rules"]["二四六"], True),
    ("  粘对", lambda f: f["rules"]["粘对"], True),
    ("  no 三平尾", lambda f: f["rules"]["三平尾"], True),
    ("  no 孤平", lambda f: f["rules"]["孤平"], True),
    ("  pattern", lambda f: f["rules"]["格律"], True),
    ("copied lines", lambda f: f["copied_lines"], True),
    ("  poems", lambda f: f["poems_with_copied_line"], True),
    ("repeated char", lambda f: f["repeated_character"], True),
    ("repeated line", lambda f: f["repeated_line"], True),
    ("distinct-2", lambda f: f["distinct_2"], False),
    ("unknown chars", lambda f: f["unknown_characters"], True),
)


def figures_table(columns: dict[str, dict]) -> str:
    """The figures of several lists of poems side by side, one column each."""

    def width(s: str) -> int:  # CJK characters take two columns in a terminal
        return sum(2 if ord(ch) > 0x2E80 else 1 for ch in s)

    def pad(s: str, w: int, right: bool = True) -> str:
        fill = " " * max(0, w - width(s))
        return fill + s if right else s + fill

    names = list(columns)
    w = max(9, *(width(n) + 1 for n in names))
    out = [pad("", 16, False) + "".join(pad(n, w) for n in names)]
    for label, get, percent in FIGURE_ROWS:
        cells = []
        for name in names:
            value = get(columns[name])
            if not columns[name]["poems"] and label != "poems":
                cells.append("-")  # no poems of that form: no share
                continue
            cells.append(f"{value:.1%}" if percent else (f"{value:,}" if isinstance(value, int) else f"{value:.3f}"))
        out.append(pad(label, 16, False) + "".join(pad(c, w) for c in cells))
    return "\n".join(out)


def figure_columns(texts: list[str], label: str, train_lines: frozenset[str]) -> dict[str, dict]:
    """The figures of all the poems, then of each form among them."""
    columns = {label: poem_figures(texts, train_lines)}
    for form in REFERENCE_FORMS:
        subset = [t for t in texts if check_poem(t).form == form]
        if subset and len(subset) < len(texts):
            columns[f"{label} {form}"] = poem_figures(subset, train_lines)
    return columns


SETTINGS = COMMANDS["tangpoem.evaluate"]


def generated_poems(poet: Poet, cfg: Config, per_form: int) -> list[str]:
    """per_form poems in each of the four forms, written by the generator with the command's settings."""
    from tangpoem.generation import GenerationConfig

    texts = []
    for form in REFERENCE_FORMS:
        request = replace(GenerationConfig.from_config(cfg), start_words="", acrostic=False, template="", form=form,
                          num_poems=per_form, line_length=0, lines=0)  # fmt: skip
        texts += [p.text for p in poet.write(request)]
    return texts


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m tangpoem.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=8, help="poems sampled with no rules (default: 8)")
    parser.add_argument("--per-form", type=int, default=16, help="poems the generator writes per form (default: 16)")
    parser.add_argument("--poems", metavar="FILE", help="figures of the poems in FILE (one a line); no checkpoint")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_config_args(parser, SETTINGS, {"num_threads": 0, "prefix_words": ""})  # no priming: the network's own
    cfg, args = parse_config_args(parser, argv)
    for name, hi in (("samples", 10_000), ("per_form", 1_000)):
        if not 0 <= getattr(args, name) <= hi:
            raise TangpoemError(f"--{name.replace('_', '-')} must be between 0 and {hi}, not {getattr(args, name)}")
    report: dict = {"data_path": cfg.data_path}
    columns: dict[str, dict] = {}
    texts = read_poems_file(args.poems) if args.poems else []
    poems = load_npz(cfg.data_path)
    train = training_lines(poems)
    if args.poems:
        report["poems_file"] = args.poems
        columns = figure_columns(texts, "poems", train)
    else:
        ckpt = load_checkpoint(resolve_model(cfg, named="model_path" in vars(args)))
        skipped = 0
        if ckpt.vocab != poems.ix2word:  # another build's model: score the same poems in its vocabulary
            poems, skipped = reencode(poems, ckpt.vocab)
            if not poems.heldout.any():
                raise TangpoemError(f"{ckpt.path}'s vocabulary lacks a character of every held-out poem of "
                                    f"{cfg.data_path}; evaluate it on the npz it was trained on")  # fmt: skip
        setup_device(cfg.use_gpu, cfg.num_threads, quiet=True)
        model = ckpt.build_model()
        per_collection = heldout_report(model, poems)
        first = per_collection.get("tang") or next(iter(per_collection.values()))
        nats, count = first["without_titles"], first["characters"]
        step, epochs = ckpt.meta.get("global_step", "?"), ckpt.meta.get("epoch", "?")
        report.update(
            checkpoint=str(ckpt.path),
            step=step,
            epochs=epochs,
            heldout_poems=first["poems"],
            heldout_characters=count,
            heldout_skipped=skipped,
            cross_entropy=nats,
            perplexity=round(math.exp(nats), 3),
            heldout=per_collection,
        )
        if not args.json:
            print(f"checkpoint     {ckpt.path} (step {step}, epochs {epochs})")
            for name, e in per_collection.items():
                titled = f", with titles {e['with_titles']:.4f}" if "with_titles" in e else ""
                print(f"held out {name:<5} {e['poems']:,} poems, {e['characters']:,} characters: "
                      f"{e['without_titles']:.4f} nats/char without titles{titled}")  # fmt: skip
            if skipped:
                print(f"               ({skipped:,} held-out poems left out: characters the model does not know)")
            print(f"cross-entropy  {nats:.4f} nats/char, perplexity {math.exp(nats):.1f}")
        if args.samples > 0:
            texts = sample_poems(model, ckpt.vocab, args.samples, cfg.temperature, cfg.seed, cfg.max_gen_len)
            good = sum(well_formed(p) for p in texts)
            report.update(samples=texts, temperature=cfg.temperature, seed=cfg.seed)
            if not args.json:
                print(
                    f"well formed    {good}/{len(texts)} poems sampled with no rules ({good / len(texts):.0%}), "
                    f"temperature {cfg.temperature}, seed {cfg.seed}"
                )
                for text in texts:
                    print(f"  {'+' if well_formed(text) else '-'} {text}")
            columns.update(figure_columns(texts, "no rules", train))
        if args.per_form > 0:
            from tangpoem.generation import GenerationConfig, Poet, make_step

            poet = Poet(ckpt.vocab, make_step(ckpt, num_threads=cfg.num_threads), ckpt=ckpt)
            texts = generated_poems(poet, cfg, args.per_form)
            report["generated"] = texts
            settings = GenerationConfig.from_config(cfg).to_dict()
            report["settings"] = {k: v for k, v in settings.items() if k not in ("form", "start_words", "acrostic",
                                                                                  "template")}  # fmt: skip
            columns.update(figure_columns(texts, "generated", train))
    reference = reference_figures(poems, train)
    report.update(figures=columns, reference=reference)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return 0
    print()
    print(f"figures (reference: real poems of the held-out split of {cfg.data_path})")
    print(figures_table({**columns, **{f"ref {f}": v for f, v in reference.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
