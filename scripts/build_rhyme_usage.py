#!/usr/bin/env python3
"""Build tangpoem/rhyme_usage.tsv: in which of its 平水韵 level groups the poets rhymed each character the
table puts in more than one.

    python scripts/build_rhyme_usage.py ../shared/data/chinese-poetry-2.0.1.tgz [--out tangpoem/rhyme_usage.tsv]

The table (tangpoem/pingshui.tsv) lists every reading a rhyme book gives a character, the rare ones and some
slips of the source among them: 平 is in 下平八庚 and also 下平一先, 才 in 上平十灰 and 下平十五咸. A
generator that takes them all writes rhymes no reader hears as rhymes (天 with 平). So the poems of the
corpus (the Tang and Song shi the bundled model reads, their training split: no held-out poem) are counted:
in each regular poem (4 or 8 lines of 5 or 7 characters) whose rhyming characters (the even lines' last,
and the first line's when it rhymes) share exactly one level group, each of them counts one use of that
group. `tangpoem.prosody.usual_level_groups` reads the counts; the checker (`check_poem`) still accepts
every reading of the table, as the poets' own poems need.

Output (after '#' comment lines), one line per character of two or more level groups, by code point:

    the character<TAB>group:uses,group:uses (every level group of the character, 0 when never used)
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict

from corpus_tables import ROOT, parse_args, training_poems, write_table

from tangpoem import prosody
from tangpoem.corpus import TARBALL_SHA256
from tangpoem.errors import cli_main

OUT = ROOT / "tangpoem" / prosody.USAGE_FILE


def rhyme_uses(bodies: list[str]) -> dict[str, Counter]:
    """{character: Counter(group: uses)} over the regular poems whose rhymes share one level group."""
    uses: dict[str, Counter] = defaultdict(Counter)
    for body in bodies:
        lines = prosody.split_lines(body)
        if not lines or len(lines) not in (4, 8) or len(lines[0]) not in (5, 7):
            continue
        if any(len(line) != len(lines[0]) for line in lines):
            continue
        rhymes = [lines[i][-1] for i in range(1, len(lines), 2)]
        groups = [prosody.level_groups(ch) for ch in rhymes]
        if not all(groups):
            continue
        shared = frozenset.intersection(*groups)
        if len(shared) != 1:
            continue
        (group,) = shared
        first = lines[0][-1]
        if prosody.tones(first) == prosody.LEVEL and group in prosody.level_groups(first):
            rhymes.append(first)  # 首句入韵
        for ch in rhymes:
            uses[ch][group] += 1
    return uses


def table_lines(uses: dict[str, Counter]) -> list[str]:
    names = prosody.level_group_names()
    multi = sorted(ch for ch in prosody.table_characters() if len(prosody.level_groups(ch)) > 1)
    return [
        f"{ch}\t" + ",".join(f"{g}:{uses.get(ch, Counter())[g]}" for g in names if g in prosody.level_groups(ch))
        for ch in multi
    ]


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, OUT, argv)
    bodies = [body for _, body in training_poems(args.corpus)]
    uses = rhyme_uses(bodies)
    lines = table_lines(uses)
    header = [
        "# In which of its 平水韵 level groups the poets rhymed each character the table puts in two or more:",
        f"# rhyming uses in the regular poems of chinese-poetry@2.0.1's Tang and Song shi (npm tarball sha256 "
        f"{TARBALL_SHA256}),",
        "# training split. Built by scripts/build_rhyme_usage.py; do not edit.",
        "# the character<TAB>group:uses,...",
    ]
    write_table(args.out, header + lines)
    total = sum(sum(groups.values()) for groups in uses.values())
    print(f"{len(lines):,} characters of two or more level groups; {total:,} rhyming uses counted: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
