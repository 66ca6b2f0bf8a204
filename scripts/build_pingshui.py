#!/usr/bin/env python3
"""Build tangpoem/pingshui.tsv and tangpoem/pingshui.LICENSE from the 平水韵 table of chinese_word_rhyme.

    python scripts/build_pingshui.py ../shared/data/pingshui [--out-dir tangpoem]

SOURCE is the folder holding Pingshui_Rhyme.json, SOURCE.md and LICENSE (or the JSON file itself, the
other two beside it). The JSON's sha256 must be the one pinned here and listed in SOURCE.md, so the
package data is always the same bytes for the same source.

Output (after '#' comment lines): one line per distinct (tones, level rhyme groups), in the order of the
groups in the table, oblique-only characters last; the characters of a line sorted by code point:

    tone bits<TAB>level rhyme groups, comma-separated (empty for oblique-only)<TAB>the characters

Grouping the characters makes the file 30 kB instead of 112 kB and its loading twice as fast as one
line per character (about 1 ms; tangpoem/prosody.py).

Tone bits: 1 = level (平: the character sits in a group of 上平声部 or 下平声部), 2 = oblique (仄: a group
of 上声部, 去声部 or 入声部), 3 = both readings. Tones come from the rhyme table's classes, not from
Word_Tune.json, which disagrees with the table in places (SOURCE.md). Level groups get their class as
prefix so the 30 names are unique: 上平一东 ... 下平十五咸.

One repair: a group is named after its head character (韵目), which the table lists first in 104 of its
105 groups; 下平声部/一先 lacks 先 itself, so 先 was only oblique (十七霰). The script puts every group's
head character into its group (it adds 先 to 下平一先 and changes nothing else).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

# Pinned from SOURCE.md: charlesix59/chinese_word_rhyme, MIT.
REPOSITORY = "charlesix59/chinese_word_rhyme"
COMMIT = "ff0e9c13fb037c43e0eaa5dc929c0fe4fa2ffb18"
JSON_NAME = "Pingshui_Rhyme.json"
JSON_SHA256 = "fd11164ca1b848eb6b777688d5d6628ce772d72d0a25a0efd12d6b58459c6e2e"

LEVEL_CLASSES = {"上平声部": "上平", "下平声部": "下平"}
OBLIQUE_CLASSES = ("上声部", "去声部", "入声部")
LEVEL, OBLIQUE = 1, 2


class BuildError(Exception):
    pass


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_source(folder: Path) -> Path:
    """The JSON path, after checking its hash against the pinned value and SOURCE.md's."""
    path = folder / JSON_NAME
    if not path.is_file():
        raise BuildError(f"{path} not found; pass the folder holding {JSON_NAME}, SOURCE.md and LICENSE")
    source_md = folder / "SOURCE.md"
    if not source_md.is_file():
        raise BuildError(f"{source_md} not found; it lists the sha256 values the table must have")
    listed = re.search(re.escape(JSON_NAME) + r"\s+([0-9a-f]{64})", source_md.read_text(encoding="utf-8"))
    if not listed:
        raise BuildError(f"{source_md} lists no sha256 for {JSON_NAME}")
    if listed.group(1) != JSON_SHA256:
        raise BuildError(f"{source_md} lists {listed.group(1)} for {JSON_NAME}, this script pins {JSON_SHA256}")
    actual = sha256(path)
    if actual != JSON_SHA256:
        raise BuildError(f"{path} has sha256 {actual}, expected {JSON_SHA256} (SOURCE.md); not the pinned table")
    if not (folder / "LICENSE").is_file():
        raise BuildError(f"{folder / 'LICENSE'} not found; the MIT notice must ship with the table")
    return path


def build_rows(table: dict) -> tuple[list[str], list[str]]:
    """(the 30 level group names in table order, the TSV lines)."""
    unknown = set(table) - set(LEVEL_CLASSES) - set(OBLIQUE_CLASSES)
    if unknown:
        raise BuildError(f"unexpected tone classes {sorted(unknown)}")
    bits: dict[str, int] = {}
    groups: dict[str, list[str]] = {}
    names: list[str] = []
    for cls, rhyme_groups in table.items():
        for group, chars in rhyme_groups.items():
            head = group[-1]  # '一先' -> '先', '入声一屋' -> '屋'
            if head not in chars:
                chars = [head, *chars]
            if cls in LEVEL_CLASSES:
                name = LEVEL_CLASSES[cls] + group
                names.append(name)
            for ch in chars:
                if len(ch) != 1 or not ch.strip():
                    raise BuildError(f"{cls}/{group}: '{ch}' is not one character")
                if cls in LEVEL_CLASSES:
                    bits[ch] = bits.get(ch, 0) | LEVEL
                    mine = groups.setdefault(ch, [])
                    if name not in mine:  # some characters are listed twice in a group
                        mine.append(name)
                else:
                    bits[ch] = bits.get(ch, 0) | OBLIQUE
    if len(names) != 30 or len(set(names)) != 30:
        raise BuildError(f"expected 30 distinct level rhyme groups, found {len(set(names))}")
    order = {name: i for i, name in enumerate(names)}
    rows: dict[tuple[int, tuple[str, ...]], list[str]] = {}
    for ch in sorted(bits):
        key = (bits[ch], tuple(sorted(groups.get(ch, []), key=order.__getitem__)))
        rows.setdefault(key, []).append(ch)
    keys = sorted(rows, key=lambda k: (not k[1], [order[g] for g in k[1]], k[0]))
    lines = [f"{b}\t{','.join(g)}\t{''.join(rows[(b, g)])}" for b, g in keys]
    return names, lines


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8", newline="\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help=f"folder with {JSON_NAME}, SOURCE.md, LICENSE (or the JSON)")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent.parent / "tangpoem")
    args = parser.parse_args(argv)
    folder = args.source.parent if args.source.is_file() else args.source
    try:
        path = check_source(folder)
        names, lines = build_rows(json.loads(path.read_text(encoding="utf-8")))
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    origin = f"{REPOSITORY} commit {COMMIT}, data/{JSON_NAME} (sha256 {JSON_SHA256})"
    header = [
        f"# 平水韵 tones and level rhyme groups, derived by scripts/build_pingshui.py from {origin}.",
        "# MIT licence: see pingshui.LICENSE. Do not edit; rebuild with the script.",
        "# tone bits (1 level 平, 2 oblique 仄, 3 both)<TAB>level rhyme groups<TAB>the characters",
        "# groups: " + " ".join(names),
    ]
    tsv = "\n".join(header + lines) + "\n"
    notice = (
        f"The 平水韵 table in pingshui.tsv is derived from {origin}\n"
        f"(https://github.com/{REPOSITORY}), distributed under the following licence.\n\n"
        + (folder / "LICENSE").read_text(encoding="utf-8").rstrip("\n")
        + "\n"
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out_dir / "pingshui.tsv", tsv)
    write_atomic(args.out_dir / "pingshui.LICENSE", notice)
    chars = sum(len(line.split("\t")[2]) for line in lines)
    both = sum(len(line.split("\t")[2]) for line in lines if line[0] == "3")
    print(f"{chars:,} characters ({both:,} with both tones) in {len(lines)} lines -> {args.out_dir / 'pingshui.tsv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
