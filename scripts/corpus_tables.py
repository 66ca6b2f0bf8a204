"""What the scripts that build the package's tables from the corpus share (build_rhyme_usage.py,
build_title_words.py): their command line, and the poems they count, the Tang and Song shi of the training split
(no held-out poem) of chinese-poetry@2.0.1, the exact tarball, so that a table is always built from the same text."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tangpoem.corpus import TARBALL_SHA256, sha256_of  # noqa: E402
from tangpoem.data import SEP, build_poems  # noqa: E402
from tangpoem.errors import TangpoemError  # noqa: E402

SOURCE_LINE = f"chinese-poetry@2.0.1's Tang and Song shi (npm tarball sha256 {TARBALL_SHA256}), training split"


def parse_args(doc: str, out: Path, argv: list[str] | None) -> argparse.Namespace:
    """`corpus` (the tarball, or a folder of its poet.tang/song.*.json) and `--out` (default: the shipped table)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("corpus", help="chinese-poetry-2.0.1.tgz (or a folder of its poet.tang/song.*.json)")
    parser.add_argument("--out", default=str(out))
    args = parser.parse_args(argv)
    if Path(args.corpus).is_file() and sha256_of(Path(args.corpus)) != TARBALL_SHA256:
        raise TangpoemError(f"{args.corpus} is not chinese-poetry-2.0.1.tgz (its sha256 differs); give that tarball")
    return args


def training_poems(corpus: str) -> list[tuple[str, str]]:
    """(title, body) of every Tang and Song poem of the training split, as cleaned for the npz ('' for no title)."""
    poems, _ = build_poems(corpus, collections=("tang", "song"))
    sep = poems.word2ix[SEP]
    out = []
    for i in (~poems.heldout).nonzero()[0]:
        ids = poems.data[i].tolist()
        out.append((poems.titles[i], poems.decode(ids[ids.index(sep) + 1 :] if sep in ids else ids)))
    return out


def write_table(path: str, lines: list[str]) -> None:
    """Written to a temporary name and renamed: a table is never left half-written."""
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
