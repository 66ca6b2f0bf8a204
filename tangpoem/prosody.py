"""Tang prosody: the 平水韵 rhyme table, the 平仄 rules of 近体诗, the standard patterns, a poem checker.

The table (`pingshui.tsv`, built by `scripts/build_pingshui.py` from charlesix59/chinese_word_rhyme,
MIT, see `pingshui.LICENSE`) gives each of 8,232 simplified characters its tones and its level rhyme
groups. A character's tone comes from the classes of the groups it sits in: 上平/下平 -> level (平),
上/去/入 -> oblique (仄); 886 characters have both readings (看 思 过 重 行 ...) and fit either tone.
Entering-tone characters (白 国 十 一 月) are oblique, as in Tang verse, although Mandarin made some
of them level.

Tone strings spell one tone per character: 'P' (平) and 'Z' (仄). A line's tones as the text allows
them are bitmasks per character (LEVEL | OBLIQUE for two-class characters); a rule holds for a poem
when some choice of tones for its two-class characters satisfies it.

Characters the table lacks count as wildcards: either tone, any rhyme group. The table has gaps:
common characters such as 溪 啼 迹 沉 遍 扫 炉 昂 讲 are missing, as are variant forms the corpus keeps
(疎 劒 鴈 慙 簷). Measured on the cleaned npz: 1.32% of its character tokens (33,930 of
2,566,846; 2,228 of the 8,906 characters of its vocabulary), touching 41.1% of its poems (37.4% of
those in the four forms; 1.4% of their even lines end on one). Counting them as wildcards changes
little: in the four forms, poems with an unknown character keep every rule about as often as poems
without (五律 56.8% vs 55.7%, 七绝 73.5% vs 73.3%), so it neither punishes the table's gaps nor
favours the poems that meet them. A decoder that consults this module must not choose them where a
tone or a rhyme is required (`tones(ch) == 0`).

Rules (for lines of 5 or 7 characters):
- 二四六分明: the 2nd and 4th characters differ in tone; in 7-character lines the 4th and 6th too.
- 三平尾 (a fault): the last three characters are all level.
- 孤平 (a fault): a line ending level whose penultimate is oblique and whose last five characters
  have their 1st and 3rd oblique (平平仄仄平 -> 仄平仄仄平).
- rhyme (押韵): even lines end level and share one level rhyme group; line 1 ends oblique, or level
  in that group (首句入韵); later odd lines end oblique.
- 粘对: the 2nd characters of a couplet's two lines differ (对); line 2k+1's 2nd has the tone of
  line 2k's (粘).

The standard patterns (格律) of a form are fixed by line length, number of lines, the tone of line
1's 2nd character (平起/仄起) and whether line 1 rhymes (首句入韵); each line of a pattern admits every
tone string that agrees with its base line at positions 2, 4, 6 and the last, with neither 三平尾 nor
孤平 (positions 1, 3, 5 are free where those allow).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from itertools import product
from pathlib import Path

from tangpoem.errors import TangpoemError

LEVEL = 1  # 平
OBLIQUE = 2  # 仄
BOTH = LEVEL | OBLIQUE
TONE_BIT = {"P": LEVEL, "Z": OBLIQUE}

# The base lines (标准句式) A B C D; 7-character lines put two characters of the opposite tone in front.
BASE_LINES = {
    5: {"A": "ZZPPZ", "B": "PPZZP", "C": "PPPZZ", "D": "ZZZPP"},
    7: {"A": "PPZZPPZ", "B": "ZZPPZZP", "C": "ZZPPPZZ", "D": "PPZZZPP"},
}
PATTERN_NAMES = ("平起入韵", "平起不入韵", "仄起入韵", "仄起不入韵")
RULES = ("rhyme", "二四六", "粘对", "三平尾", "孤平")  # the per-rule booleans of PoemCheck, in this order
TABLE_FILE = "pingshui.tsv"  # package data, written by scripts/build_pingshui.py
USAGE_FILE = "rhyme_usage.tsv"  # package data, written by scripts/build_rhyme_usage.py
# A level group a character was rhymed in fewer than this share of its uses in the corpus is a rare reading
# (平 in 下平一先: 4 of 2,379) or a slip of the table: the generator does not rhyme on it. Characters used
# fewer than RARE_READING_MIN_USES times keep every group: too few poems to tell.
RARE_READING_SHARE = 0.05
RARE_READING_MIN_USES = 20
CLAUSE = re.compile(r"([^，。！？；,.!?;]+)([，。！？；,.!?;])")


# ---------------------------------------------------------------- the table


_UNKNOWN: tuple[int, frozenset[str]] = (0, frozenset())

# ---------------------------------------------------------------- the four regulated forms

FORMS = {"五绝": (5, 4), "七绝": (7, 4), "五律": (5, 8), "七律": (7, 8)}  # name: (characters per line, lines)
FORM_ALIASES = {
    "wujue": "五绝", "qijue": "七绝", "wulv": "五律", "qilv": "七律", "wulu": "五律", "qilu": "七律",
    "wulü": "五律", "qilü": "七律", "五言绝句": "五绝", "七言绝句": "七绝", "五言律诗": "五律", "七言律诗": "七律",
    "五絕": "五绝", "七絕": "七绝", "五律詩": "五律",
}  # fmt: skip


def is_hanzi(ch: str) -> bool:
    """A Chinese character (CJK unified ideographs, extensions, compatibility), not a mark like □."""
    if len(ch) != 1:
        return False
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x3FFFF or 0xF900 <= o <= 0xFAFF


def form_name(form: str) -> str:
    name = form if form in FORMS else FORM_ALIASES.get(form.lower())
    if name is None:
        known = ", ".join(f"{k} ({a})" for k, a in zip(FORMS, ("wujue", "qijue", "wulv", "qilv"), strict=True))
        raise TangpoemError(f"unknown form '{form}'; known forms: {known}", "form")
    return name


@cache
def _table() -> tuple[dict[str, tuple[int, frozenset[str]]], tuple[str, ...]]:
    """({character: (tone bits, level groups)}, the 30 group names), read once, lazily: ~2 ms of CPU in a
    new process (benchmarks/bench_prosody.py). A plain path beside this file, not importlib.resources,
    whose first use costs another ~4 ms; the package is always installed as files (Paddle cannot be
    imported from a zip either)."""
    text = (Path(__file__).resolve().parent / TABLE_FILE).read_text(encoding="utf-8")
    table: dict[str, tuple[int, frozenset[str]]] = {}
    names: tuple[str, ...] = ()
    for line in text.splitlines():
        if line.startswith("#"):
            if line.startswith("# groups: "):
                names = tuple(line[len("# groups: ") :].split())
            continue
        bits, groups, chars = line.split("\t")
        # One shared value per line; a plain loop beats dict.fromkeys + update here (measured).
        value = (int(bits), frozenset(groups.split(",")) if groups else frozenset())
        for ch in chars:
            table[ch] = value
    return table, names


def tones(ch: str) -> int:
    """LEVEL, OBLIQUE, LEVEL | OBLIQUE (both readings), or 0 when the table lacks the character."""
    return _table()[0].get(ch, _UNKNOWN)[0]


def level_groups(ch: str) -> frozenset[str]:
    """The level rhyme groups of a character ('上平一东' ... '下平十五咸'); empty if none or unknown."""
    return _table()[0].get(ch, _UNKNOWN)[1]


def table_characters() -> list[str]:
    """Every character of the table."""
    return list(_table()[0])


@cache
def _usage() -> dict[str, dict[str, int]]:
    """{character: {level group: rhyming uses}} for the characters of two or more level groups."""
    usage: dict[str, dict[str, int]] = {}
    for line in (Path(__file__).resolve().parent / USAGE_FILE).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            continue
        ch, counts = line.split("\t")
        usage[ch] = {group: int(n) for group, n in (item.split(":") for item in counts.split(","))}
    return usage


def usual_level_groups(ch: str) -> frozenset[str]:
    """The level groups the poets rhymed a character in: its groups, less those it was rhymed in fewer than
    RARE_READING_SHARE of its uses (rhyme_usage.tsv). What the generator rhymes on; the checker takes all."""
    groups = level_groups(ch)
    uses = _usage().get(ch) if len(groups) > 1 else None
    total = sum(uses.values()) if uses else 0
    if total < RARE_READING_MIN_USES:
        return groups
    return frozenset(g for g in groups if uses.get(g, 0) >= RARE_READING_SHARE * total)


def level_group_names() -> tuple[str, ...]:
    """The 30 level rhyme groups in the table's order."""
    return _table()[1]


def known(ch: str) -> bool:
    return ch in _table()[0]


# ---------------------------------------------------------------- line rules on definite tone strings


def distinct_246(tone: str) -> bool:
    """二四六分明: positions 2 and 4 differ; in 7-character lines 4 and 6 too."""
    if tone[1] == tone[3]:
        return False
    return len(tone) < 7 or tone[3] != tone[5]


def three_level_tail(tone: str) -> bool:
    """三平尾 (a fault): the last three are all level."""
    return tone[-3:] == "PPP"


def lone_level(tone: str) -> bool:
    """孤平 (a fault): ends level, penultimate oblique, and the last five have their 1st and 3rd oblique."""
    return tone[-1] == "P" and tone[-2] == "Z" and tone[-5] == "Z" and tone[-3] == "Z"


# ---------------------------------------------------------------- patterns


@dataclass(frozen=True)
class Pattern:
    """One standard pattern of a form: its base line per line and the tone strings each line admits."""

    name: str  # 平起入韵 平起不入韵 仄起入韵 仄起不入韵
    line_length: int
    base: tuple[str, ...]  # per line, over 'P'/'Z'
    admitted: tuple[tuple[str, ...], ...]  # per line, every admitted tone string (the base among them)

    @property
    def lines(self) -> int:
        return len(self.base)

    @property
    def first_line_rhymes(self) -> bool:
        return self.base[0][-1] == "P"


@cache
def admitted_strings(base: str) -> tuple[str, ...]:
    """Every tone string agreeing with base at positions 2, 4, 6 and the last, without 三平尾 or 孤平,
    in the order of the free positions counted from 'P'."""
    n = len(base)
    fixed = {1, 3, n - 1} | ({5} if n == 7 else set())
    free = [i for i in range(n) if i not in fixed]
    out = []
    for choice in product("PZ", repeat=len(free)):
        tone = list(base)
        for i, t in zip(free, choice, strict=True):
            tone[i] = t
        s = "".join(tone)
        if not three_level_tail(s) and not lone_level(s):
            out.append(s)
    return tuple(out)


def _base_line(line_length: int, second: str, last: str) -> str:
    # (2nd tone, last tone) tells the four base lines apart, at either length.
    (line,) = [b for b in BASE_LINES[line_length].values() if b[1] == second and b[-1] == last]
    return line


@cache
def poem_patterns(line_length: int, lines: int) -> tuple[Pattern, ...]:
    """The four standard patterns of a form (line_length 5 or 7, an even number of lines >= 2), in the
    order of PATTERN_NAMES. Cached: the same objects every call."""
    if line_length not in BASE_LINES or lines < 2 or lines % 2:
        raise TangpoemError(
            f"tone patterns need an even number of lines of 5 or 7 characters, not {lines} of {line_length}; "
            "use a form (五绝 七绝 五律 七律) or --line-length 5/7 with an even --lines",
            "tones",
        )
    patterns = []
    for name in PATTERN_NAMES:
        second = "P" if name.startswith("平") else "Z"
        bases = []
        for i in range(lines):
            if i > 0:  # 对 inside a couplet, 粘 across couplets
                prev = bases[-1][1]
                second = ("Z" if prev == "P" else "P") if i % 2 else prev
            rhymes = i % 2 == 1 or (i == 0 and name.endswith("入韵") and not name.endswith("不入韵"))
            bases.append(_base_line(line_length, second, "P" if rhymes else "Z"))
        patterns.append(Pattern(name, line_length, tuple(bases), tuple(admitted_strings(b) for b in bases)))
    return tuple(patterns)


def pattern(line_length: int, lines: int, name: str) -> Pattern:
    """A pattern by name ('仄起不入韵'); TangpoemError naming the four for any other name."""
    for p in poem_patterns(line_length, lines):
        if p.name == name.strip():
            return p
    raise TangpoemError(f"unknown tone pattern '{name}'; the patterns are {', '.join(PATTERN_NAMES)}", "pattern")


# ---------------------------------------------------------------- the checker


def fits(tone: str, masks: tuple[int, ...] | list[int]) -> bool:
    """Does a definite tone string agree with the characters' tone masks (0 = unknown: either)?"""
    return all((m == 0) or (TONE_BIT[t] & m) for t, m in zip(tone, masks, strict=True))


def _can(mask: int, tone: str) -> bool:
    return mask == 0 or bool(mask & TONE_BIT[tone])


def _line_246(m: list[int]) -> bool:
    # Positions 2, 4 (, 6) must alternate: try both starting tones.
    idx = (1, 3, 5) if len(m) == 7 else (1, 3)
    return any(all(_can(m[i], "PZ"[(k + s) % 2]) for k, i in enumerate(idx)) for s in (0, 1))


def _line_no_three_level(m: list[int]) -> bool:
    return any(_can(x, "Z") for x in m[-3:])


def _line_no_lone_level(m: list[int]) -> bool:
    return _can(m[-1], "Z") or _can(m[-2], "P") or _can(m[-5], "P") or _can(m[-3], "P")


def _nian_dui(seconds: list[int]) -> bool:
    # The 2nd tones of lines 1.. must run t, ~t, ~t, t, t, ~t, ... for one t.
    for start in "PZ":
        t, ok = start, True
        for i, m in enumerate(seconds):
            if i > 0 and i % 2 == 1:
                t = "Z" if t == "P" else "P"
            if not _can(m, t):
                ok = False
                break
        if ok:
            return True
    return False


def rhyme_characters(lines: list[str]) -> list[str]:
    """The characters that rhyme in a poem of these lines: the even lines' last, and line 1's when it can
    only be level (then it must rhyme, `_rhyme`: 首句入韵)."""
    rhymes = [line[-1] for line in lines[1::2]]
    first = lines[0][-1]
    return [*rhymes, first] if known(first) and not tones(first) & OBLIQUE else rhymes


def _rhyme(ends: list[str]) -> tuple[bool, frozenset[str] | None]:
    """(rhyme holds, the level groups the even lines share; None when unknown characters leave it open)."""
    shared: frozenset[str] | None = None  # None: no constraint yet (only unknown characters so far)
    for ch in ends[1::2]:
        if not known(ch):
            continue
        if not tones(ch) & LEVEL:
            return False, frozenset()
        g = level_groups(ch)
        shared = g if shared is None else shared & g
        if not shared:
            return False, frozenset()
    for ch in ends[2::2]:  # odd lines after the first end oblique
        if known(ch) and not tones(ch) & OBLIQUE:
            return False, shared if shared is not None else frozenset()
    first = ends[0]
    if known(first) and not tones(first) & OBLIQUE:  # level only: it must rhyme with the rest
        if shared is not None:
            shared = shared & level_groups(first)
            if not shared:
                return False, frozenset()
        else:
            shared = level_groups(first)
    return True, shared


@dataclass(frozen=True)
class PoemCheck:
    """What check_poem found. The rule fields say the rule holds (for 三平尾 and 孤平: no line has
    the fault); all are False when the text is not an even number of 5- or 7-character lines."""

    text: str
    form: str | None  # 五绝 七绝 五律 七律, or None
    lines: tuple[str, ...]  # the clauses, punctuation dropped
    rhyme: bool = False
    distinct_246: bool = False  # 二四六分明 in every line
    nian_dui: bool = False  # 粘对
    no_three_level: bool = False  # no 三平尾
    no_lone_level: bool = False  # no 孤平
    tones_ok: bool = False  # every line admitted by one standard pattern
    patterns: tuple[str, ...] = ()  # every standard pattern that admits the poem
    rhyme_groups: tuple[str, ...] = ()  # the level groups the rhyme can be in (empty: unknown or none)
    unknown: tuple[str, ...] = ()  # characters the table lacks (counted as wildcards)

    @property
    def regular(self) -> bool:
        """An even number (>= 2) of lines of equal length 5 or 7: the rules apply."""
        return bool(self.lines) and len(self.lines) % 2 == 0 and len(self.lines[0]) in (5, 7)

    @property
    def pattern(self) -> str | None:
        return self.patterns[0] if self.patterns else None

    @property
    def all_ok(self) -> bool:
        """Rhyme and a standard pattern: every rule of 近体诗 holds."""
        return self.rhyme and self.tones_ok

    def rules(self) -> dict[str, bool]:
        """The per-rule breakdown under the names of RULES (True: the rule holds / the fault is absent)."""
        return dict(
            zip(
                RULES,
                (self.rhyme, self.distinct_246, self.nian_dui, self.no_three_level, self.no_lone_level),
                strict=True,
            )
        )


def split_lines(text: str) -> list[str] | None:
    """The clauses of a poem (text between punctuation marks), or None when the text is not made of
    Chinese characters closed by punctuation."""
    text = "".join(text.split())
    parts = CLAUSE.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        return None
    lines = [body for body, _ in parts]
    if not all(is_hanzi(ch) for line in lines for ch in line):
        return None
    return lines


FORM_NAMES = {(5, 4): "五绝", (7, 4): "七绝", (5, 8): "五律", (7, 8): "七律"}  # (line length, lines) -> form


def check_poem(text: str) -> PoemCheck:
    """Check a poem against the rules of 近体诗 (module docstring). Any even number of lines of 5 or
    7 characters is checked (a 排律 too); `form` names only 五绝 七绝 五律 七律."""
    lines = split_lines(text)
    if lines is None:
        return PoemCheck(text, None, ())
    lines_t = tuple(lines)
    n, length = len(lines), len(lines[0])
    unknown = tuple(sorted({ch for line in lines for ch in line if not known(ch)}))
    if n % 2 or length not in (5, 7) or any(len(line) != length for line in lines):
        return PoemCheck(text, None, lines_t, unknown=unknown)
    form = FORM_NAMES.get((length, n))
    masks = [[tones(ch) for ch in line] for line in lines]
    rhyme, groups = _rhyme([line[-1] for line in lines])
    admitted = [
        p.name
        for p in poem_patterns(length, n)
        if all(any(fits(s, m) for s in ok) for ok, m in zip(p.admitted, masks, strict=True))
    ]
    # Two-class or unknown characters may let a pattern with and one without 首句入韵 both fit: put
    # the one the rhyme agrees with first (line 1 rhymes when its last character can be in the group).
    first = lines[0][-1]
    first_rhymes = rhyme and (not known(first) or not groups or bool(level_groups(first) & groups))
    admitted.sort(key=lambda name: (name.endswith("不入韵") == first_rhymes, PATTERN_NAMES.index(name)))
    order = {g: i for i, g in enumerate(level_group_names())}
    return PoemCheck(
        text,
        form,
        lines_t,
        rhyme=rhyme,
        distinct_246=all(_line_246(m) for m in masks),
        nian_dui=_nian_dui([m[1] for m in masks]),
        no_three_level=all(_line_no_three_level(m) for m in masks),
        no_lone_level=all(_line_no_lone_level(m) for m in masks),
        tones_ok=bool(admitted),
        patterns=tuple(admitted),
        rhyme_groups=tuple(sorted(groups or (), key=order.__getitem__)) if rhyme else (),
        unknown=unknown,
    )


def tone_string(line: str) -> str:
    """The tones of a line as the table gives them: 'P', 'Z', '*' (both) or '?' (unknown)."""
    return "".join({LEVEL: "P", OBLIQUE: "Z", BOTH: "*"}.get(tones(ch), "?") for ch in line)
