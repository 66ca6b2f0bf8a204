"""A poem's plan: a keyword per line drawn from what its title called up in the poets' poems.

The title's units (two adjacent characters the table knows, else single characters: 重阳 is a festival, 阳
alone the sun) each bring the characters the poets wrote under them (tangpoem/title_words.tsv, built by
scripts/build_title_words.py); their scores add up, and each poem draws its keywords from the best
PLAN_POOL, likelier by score, without repeats, with its own seed, and keeps them best first (the opening
line sets the scene). `keywords.Keywords` then pulls each line toward its keyword. A title the table
knows nothing of gives no plan.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

TITLE_WORDS_FILE = "title_words.tsv"  # package data beside prosody's tables
PLAN_POOL = 8  # keywords are drawn from the title's this many best characters
PLAN_PULL = 2.5  # nats toward a planned keyword: read blind, stronger pulls bent the lines (benchmarks/README.md)


def basic_han(ch: str) -> bool:
    """A character of the basic CJK block: what the table's units and characters are made of."""
    return len(ch) == 1 and "\u4e00" <= ch <= "\u9fff"


@lru_cache(maxsize=1)
def title_words() -> dict[str, dict[str, float]]:
    """{title unit: {character: score}} (tangpoem/title_words.tsv)."""
    table: dict[str, dict[str, float]] = {}
    path = Path(__file__).resolve().parent.parent / TITLE_WORDS_FILE
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            unit, scored = line.split("\t")
            table[unit] = {ch: int(s) / 1000 for ch, s in (item.split(":") for item in scored.split(","))}
    return table


def title_associations(title: str) -> list[tuple[str, float]]:
    """The characters the title calls up, best first: the scores of its units added up."""
    table, chars = title_words(), [ch for ch in title if basic_han(ch)]
    units, covered = [], set()
    for i in range(len(chars) - 1):
        if chars[i] + chars[i + 1] in table:
            units.append(chars[i] + chars[i + 1])
            covered |= {i, i + 1}
    units += [ch for i, ch in enumerate(chars) if i not in covered and ch in table]
    total: dict[str, float] = {}
    for unit in units:
        for ch, score in table[unit].items():
            total[ch] = total.get(ch, 0.0) + score
    return sorted(total.items(), key=lambda item: (-item[1], item[0]))


def plan_keywords(title: str, count: int, seed: int, known: frozenset[str] | set[str] | None = None) -> list[str]:
    """`count` keywords for a poem on this title (fewer when the title calls up fewer), drawn with `seed`;
    only characters in `known` (the model's vocabulary) when given."""
    pool = [(ch, s) for ch, s in title_associations(title) if known is None or ch in known][:PLAN_POOL]
    if not pool or count <= 0:
        return []
    weights = np.array([s for _, s in pool])
    rng = np.random.default_rng([seed, 7])  # its own stream: the sampler's draws stay those of the seed
    picked = rng.choice(len(pool), size=min(count, len(pool)), replace=False, p=weights / weights.sum())
    return [pool[i][0] for i in sorted(picked)]  # the strongest image first: the opening line sets the scene
