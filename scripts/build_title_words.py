#!/usr/bin/env python3
"""Build tangpoem/title_words.tsv: which characters the poets wrote in poems whose titles hold a character
or a two-character word, the table a poem's plan is drawn from (`tangpoem.generation.plan`).

    python scripts/build_title_words.py ../shared/data/chinese-poetry-2.0.1.tgz [--out tangpoem/title_words.tsv]

A title names what a poem is about, and its poets reached for the same images: under 重阳 菊 and 萸, under
塞 军 and 沙, under 夜 灯 and 月. The poems of the corpus (the Tang and Song shi the bundled model reads, their
training split: no held-out poem) are counted: for each title unit u (a character of the title, or two
adjacent ones) seen in at least MIN_TITLES (MIN_TITLES_PAIR) titles, and each character w of the poems' bodies,

    score(u, w) = P(w in the body | u in the title) * log(lift),  lift = P(w | u) / P(w)

the share of u's poems that use w, weighted by how much likelier u makes w: 月 under 夜 scores high, 不
(everywhere) low. Each unit keeps its TOP characters of lift at least MIN_LIFT and score at least MIN_SCORE.

Output (after '#' comment lines), one line per title unit, by code point:

    the unit<TAB>character:score,... (score in thousandths, best first)
"""

from __future__ import annotations

import sys

import numpy as np
from corpus_tables import ROOT, SOURCE_LINE, parse_args, training_poems, write_table

from tangpoem.errors import cli_main
from tangpoem.generation.plan import TITLE_WORDS_FILE, basic_han

OUT = ROOT / "tangpoem" / TITLE_WORDS_FILE
MIN_TITLES = 30  # a unit seen in fewer titles has too few poems to tell its images from chance
MIN_TITLES_PAIR = 100  # two characters: many are numbering or names (其一, 二首) and need more poems
MIN_LIFT = 1.5  # below it a character is as common under the unit as anywhere (不, 一, 人)
MIN_SCORE = 0.05  # weaker associations say nothing of the poem (一 in a title calls up nothing)
TOP = 12


def title_units(title: str) -> set[str]:
    chars = [ch for ch in title if basic_han(ch)]
    return set(chars) | {a + b for a, b in zip(chars, chars[1:], strict=False)}


def title_word_scores(pairs: list[tuple[str, str]]) -> dict[str, list[tuple[str, float]]]:
    """{unit: [(character, score), ...] best first} from (title, body) pairs."""
    units: dict[str, int] = {}
    chars: dict[str, int] = {}
    unit_poems, body_sets = [], []
    for title, body in pairs:
        body_ids = {chars.setdefault(ch, len(chars)) for ch in body if basic_han(ch)}
        if not body_ids:
            continue
        unit_poems.append([units.setdefault(u, len(units)) for u in title_units(title)])
        body_sets.append(np.fromiter(body_ids, np.int64))
    n_chars = len(chars)
    unit_count = np.zeros(len(units), np.int64)
    body_count = np.zeros(n_chars, np.int64)
    keys = []
    for unit_ids, body in zip(unit_poems, body_sets, strict=True):
        body_count[body] += 1
        if unit_ids:
            u = np.array(unit_ids, np.int64)
            unit_count[u] += 1
            keys.append((u[:, None] * n_chars + body[None, :]).ravel())
    key, together = np.unique(np.concatenate(keys), return_counts=True)
    unit_of, char_of = key // n_chars, key % n_chars
    p_char = body_count / len(body_sets)
    p_given = together / unit_count[unit_of]
    lift = p_given / p_char[char_of]
    score = p_given * np.log(lift)
    unit_names, char_names = list(units), list(chars)
    min_titles = np.array([MIN_TITLES if len(u) == 1 else MIN_TITLES_PAIR for u in unit_names])
    keep = (unit_count[unit_of] >= min_titles[unit_of]) & (lift >= MIN_LIFT) & (score >= MIN_SCORE)
    table: dict[str, list[tuple[str, float]]] = {}
    for i in np.flatnonzero(keep)[np.lexsort((-score[keep], unit_of[keep]))]:
        best = table.setdefault(unit_names[unit_of[i]], [])
        if len(best) < TOP:
            best.append((char_names[char_of[i]], float(score[i])))
    return table


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, OUT, argv)
    pairs = [(title, body) for title, body in training_poems(args.corpus) if title]
    table = title_word_scores(pairs)
    header = [
        "# The characters the poets wrote under each title unit (a character or two adjacent ones seen in "
        f"{MIN_TITLES}+ or {MIN_TITLES_PAIR}+ titles):",
        f"# {SOURCE_LINE}.",
        "# score = P(character | unit in the title) * log(lift), in thousandths. Built by "
        "scripts/build_title_words.py; do not edit.",
        "# the unit<TAB>character:score,...",
    ]
    lines = [f"{u}\t" + ",".join(f"{ch}:{round(1000 * s)}" for ch, s in table[u]) for u in sorted(table)]
    write_table(args.out, header + lines)
    print(f"{len(lines):,} title units from {len(pairs):,} titled poems: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
