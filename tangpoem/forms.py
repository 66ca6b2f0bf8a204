"""What a poem may look like while it is being written: shape, given characters, rhyme and tones.

The decoder asks `Rules.next(state)` before every character of every poem and gets either one token
id it must take (a given character, the punctuation at the end of a line, <EOP> after the last line)
or the sorted ids of the tokens it may sample from. The rules look only at the poem written so far
and at what was given, so they hold for any weights: a form is enforced, not hoped for.

The shape of every poem:
- a line (句) is a run of Chinese characters closed by one punctuation mark;
- lines 1, 3, 5, ... end in '，'; lines 2, 4, ... in '。' (forms, --line-length/--lines, acrostic,
  templates, which may also close an even line with '？' or '！'), or in one of '。？！' (free
  continuation, the model picks);
- every line has the length of the first one: given by the form, --line-length or a template, or set
  by the start words, else chosen by the model: 5 or 7, the lines of Tang verse;
- the poem ends after its last line when the number of lines is known (form, --lines, acrostic,
  template), else when the model predicts <EOP> after an even line, or at --max-gen-len.

Given characters: start words are fed first (`Poet`), acrostic heads and template characters sit at
fixed (line, position) slots (`Layout`); all must obey the same rules, and what no rule admits is
refused up front with the character and its place.

Rhyme and tones (平水韵 and the 平仄 patterns of regulated verse) come from `tangpoem.prosody`:
- rhyme: the even lines end on level (平) characters sharing one rhyme group, no rhyme character
  twice; line 1 ends oblique (仄) or rhymes too (首句入韵); odd lines after the first end oblique;
- tones: every line keeps one of the standard patterns of its form (平起/仄起, first line rhymed or
  not), tracked as the set of (pattern, admitted tone string) pairs that the characters so far still
  fit; a character fits a position if one of its tone classes is the one a live string has there.
Characters the 平水韵 table lacks are never chosen where rhyme or tones constrain the character (their
tone is unknown); given ones are taken as fitting either tone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from tangpoem import prosody
from tangpoem.data import EOP, PAD, START
from tangpoem.errors import TangpoemError

COMMA, STOP = "，", "。"
LINE_ENDS = ("，", "。", "？", "！")  # the only punctuation a generated poem uses
SENTENCE_ENDS = ("。", "？", "！")
BLANKS = ("□", "_", "＿")  # a template's slots for the model to fill
FIRST_LINE_LENGTHS = (5, 7)  # a first line the model writes has the length of a Tang verse line
MAX_GIVEN_LINE = 15  # start words may set another length, up to this
LEVEL, OBLIQUE, EITHER = prosody.LEVEL, prosody.OBLIQUE, prosody.LEVEL | prosody.OBLIQUE

FORMS = {"五绝": (5, 4), "七绝": (7, 4), "五律": (5, 8), "七律": (7, 8)}
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


@dataclass(frozen=True)
class Shape:
    """Line length and number of lines; None means the model (or the acrostic heads) decide."""

    line_length: int | None = None
    lines: int | None = None
    name: str = ""  # the form's name, for messages and --json

    @property
    def is_form(self) -> bool:
        return (self.line_length, self.lines) in FORMS.values()


def form_name(form: str) -> str:
    name = form if form in FORMS else FORM_ALIASES.get(form.lower())
    if name is None:
        known = ", ".join(f"{k} ({a})" for k, a in zip(FORMS, ("wujue", "qijue", "wulv", "qilv"), strict=True))
        raise TangpoemError(f"unknown form '{form}'; known forms: {known}")
    return name


def resolve_shape(form: str = "", line_length: int = 0, lines: int = 0) -> Shape:
    """--form, or --line-length/--lines; one clear TangpoemError for a bad combination."""
    form = form.strip()
    if line_length < 0 or lines < 0:
        raise TangpoemError("--lines and --line-length cannot be negative (0 lets the model choose)")
    if form:
        name = form_name(form)
        length, count = FORMS[name]
        if line_length and line_length != length:
            raise TangpoemError(f"--form {name} has {length}-character lines, not --line-length {line_length}")
        if lines and lines != count:
            raise TangpoemError(f"--form {name} has {count} lines, not --lines {lines}")
        return Shape(length, count, name)
    if line_length and not 2 <= line_length <= MAX_GIVEN_LINE:
        raise TangpoemError(f"--line-length must be 2 to {MAX_GIVEN_LINE} (5 and 7 are classical), not {line_length}")
    shape = Shape(line_length or None, lines or None)
    return replace(shape, name=_form_of(shape))


def _form_of(shape: Shape) -> str:
    return next((n for n, lc in FORMS.items() if lc == (shape.line_length, shape.lines)), "")


def merge_shapes(given: Shape, asked: Shape, what: str) -> Shape:
    """A template's or heads' shape with --form/--line-length/--lines: they must agree."""
    length = given.line_length or asked.line_length
    lines = given.lines or asked.lines
    if given.line_length and asked.line_length and given.line_length != asked.line_length:
        raise TangpoemError(f"{what} has {given.line_length}-character lines, but {asked.line_length} were asked for")
    if given.lines and asked.lines and given.lines != asked.lines:
        raise TangpoemError(f"{what} has {given.lines} lines, but {asked.lines} were asked for")
    shape = Shape(length, lines)
    return replace(shape, name=_form_of(shape))


# ---------------------------------------------------------------- vocabulary classes


class VocabClasses:
    """Token classes of one vocabulary: Chinese characters, line-end marks, tone classes, rhyme groups."""

    def __init__(self, vocab: list[str]):
        self.vocab = vocab
        self.word2ix = {w: i for i, w in enumerate(vocab)}
        self.size = len(vocab)
        self.eop = self.word2ix[EOP]
        self.start = self.word2ix[START]
        self.pad = self.word2ix[PAD]
        self.text = np.array([is_hanzi(w) for w in vocab], dtype=bool)
        self.punct = {p: self.word2ix[p] for p in LINE_ENDS if p in self.word2ix}
        if COMMA not in self.punct or STOP not in self.punct:
            raise TangpoemError("the checkpoint's vocabulary lacks '，' or '。': it was not trained on poems")
        self.id_punct = {i: p for p, i in self.punct.items()}
        # 平水韵 classes: tone bits (0: not in the table) and the level rhyme groups as one bit each
        self.tones = np.array([prosody.tones(w) if t else 0 for w, t in zip(vocab, self.text, strict=True)], np.int8)
        groups = sorted({g for w, t in zip(vocab, self.text, strict=True) if t for g in prosody.level_groups(w)})
        self.group_names = groups
        bit = {g: 1 << i for i, g in enumerate(groups)}
        self.groups = np.array(
            [sum(bit[g] for g in prosody.level_groups(w)) if t else 0 for w, t in zip(vocab, self.text, strict=True)],
            dtype=np.int64,
        )
        self.group_sizes = [int(((self.groups >> i) & 1).sum()) for i in range(len(groups))]
        self._masks: dict[tuple, np.ndarray] = {}

    def mask(self, text: bool = False, punct: tuple[str, ...] = (), eop: bool = False, tones: int = 0,
             groups: int | None = None, first_line: bool = False, everything: bool = False) -> np.ndarray:  # fmt: skip
        """The allowed token ids, sorted, cached: built once per kind, shared read-only by every poem.

        tones: characters with one of these tone classes (0: any character, also those the table lacks);
        groups: level characters in one of these rhyme groups (bits), or, with first_line, those and any
        character that can be oblique (line 1 may rhyme or end oblique).
        """
        key = (text, punct, eop, tones, groups, first_line, everything)
        ids = self._masks.get(key)
        if ids is None:
            if everything:  # unconstrained: anything the model can write, <EOP> included
                m = np.ones(self.size, dtype=bool)
                m[[self.start, self.pad]] = False
            else:
                m = np.zeros(self.size, dtype=bool)
            if text:
                chars = self.text.copy()
                if tones:
                    chars &= (self.tones & tones) != 0
                if groups is not None:
                    rhymes = (self.groups & groups) != 0
                    chars &= (rhymes | ((self.tones & OBLIQUE) != 0)) if first_line else rhymes
                m |= chars
            for p in punct:
                if p in self.punct:
                    m[self.punct[p]] = True
            if eop:
                m[self.eop] = True
            ids = np.flatnonzero(m)
            ids.flags.writeable = False
            self._masks[key] = ids
        return ids

    def groups_with(self, members: int) -> int:
        """The rhyme groups (bits) with at least this many characters in the vocabulary."""
        return sum(1 << i for i, n in enumerate(self.group_sizes) if n >= members)

    def group_label(self, bits: int) -> str:
        return "/".join(g for i, g in enumerate(self.group_names) if bits >> i & 1)


@lru_cache(maxsize=4)
def _classes_for(vocab: tuple[str, ...]) -> VocabClasses:
    return VocabClasses(list(vocab))


def vocab_classes(vocab: list[str]) -> VocabClasses:
    return _classes_for(tuple(vocab))


# ---------------------------------------------------------------- what is given


@dataclass
class Layout:
    """Characters given at fixed places before decoding: acrostic heads, a template's characters."""

    shape: Shape = field(default_factory=Shape)
    fixed: dict[tuple[int, int], int] = field(default_factory=dict)  # (line, position) -> token id
    what: str = ""  # "the template", "the acrostic heads": for messages


def parse_template(text: str, classes: VocabClasses) -> Layout:
    """'床前明月光，□□□□□。' -> 2 lines of 5 with line 1 given; blanks are □ _ ＿. The text is normalised."""
    lines: list[str] = []
    line = ""
    for ch in text:
        line += ch
        if ch in LINE_ENDS:
            lines.append(line)
            line = ""
    if line:
        raise TangpoemError(f"the template must end each line with one of {''.join(LINE_ENDS)}: '{line}' has none")
    if not lines:
        raise TangpoemError("the template is empty: write the poem with □ (or _) where the model should write")
    bodies = [ln[:-1] for ln in lines]
    lengths = {len(b) for b in bodies}
    if len(lengths) != 1 or 0 in lengths:
        raise TangpoemError(f"the template's lines must all have the same length, not {sorted(len(b) for b in bodies)}")
    length = lengths.pop()
    if not 2 <= length <= MAX_GIVEN_LINE:
        raise TangpoemError(f"the template's lines have {length} characters; lines must have 2 to {MAX_GIVEN_LINE}")
    fixed: dict[tuple[int, int], int] = {}
    for i, ln in enumerate(lines):
        end = ln[-1]
        want = SENTENCE_ENDS if i % 2 == 1 or i == len(lines) - 1 else (COMMA,)  # the last line closes the poem
        if end not in want:
            raise TangpoemError(f"line {i + 1} of the template must end in {'/'.join(want)}, not '{end}'")
        fixed[(i, length)] = classes.punct[end]
        for j, ch in enumerate(ln[:-1]):
            if ch in BLANKS:
                continue
            if not is_hanzi(ch):
                raise TangpoemError(
                    f"the template has '{ch}' at line {i + 1}, character {j + 1}: use Chinese characters or □"
                )
            if ch not in classes.word2ix:
                raise TangpoemError(
                    f"the template's '{ch}' (U+{ord(ch):04X}) is not in the model's vocabulary; use another character"
                )
            fixed[(i, j)] = classes.word2ix[ch]
    return Layout(Shape(length, len(lines)), fixed, "the template")


# ---------------------------------------------------------------- per-poem state and the rules


@dataclass
class PoemState:
    tokens: list[int] = field(default_factory=list)  # the poem so far, punctuation included
    line_len: int = 0  # characters in the current line
    lines_done: int = 0
    line_length: int | None = None  # set by the shape, or by the first line
    last_punct: str = ""
    done: bool = False
    ended: str = ""  # 'eop', 'shape' (last line written), 'max_gen_len'
    rhyme: int | None = None  # rhyme groups (bits) still shared by the rhyming lines; None: not yet chosen
    rhymes_used: list[int] = field(default_factory=list)
    tone_options: list[tuple[int, str]] | None = None  # (pattern, tone string) the current line still fits
    patterns: frozenset[int] | None = None  # patterns the finished lines fit (None: no tone rules)

    def copy(self) -> PoemState:
        return replace(self, tokens=list(self.tokens), rhymes_used=list(self.rhymes_used),
                       tone_options=None if self.tone_options is None else list(self.tone_options))  # fmt: skip


def _fits(tone_bits: int, mark: str) -> bool:
    """Whether a character of these tone classes fits 'P' (平) or 'Z' (仄); unknown (0) fits either."""
    return not tone_bits or bool(tone_bits & (LEVEL if mark == "P" else OBLIQUE))


class Rules:
    """The constraints of one request; every poem of a batch carries its own PoemState."""

    def __init__(
        self,
        classes: VocabClasses,
        shape: Shape,
        layout: Layout | None = None,
        rhyme: bool = False,
        tones: bool = False,
        pattern: str = "",
        max_len: int = 200,
        unconstrained: bool = False,
    ):
        self.c = classes
        self.layout = layout or Layout()
        self.fixed = self.layout.fixed
        self.line_length = shape.line_length
        self.lines = shape.lines
        self.shape_name = shape.name or (f"{shape.line_length}-character" if shape.line_length else "")
        self.rhyme, self.tones = rhyme, tones
        self.max_len = max_len
        self.unconstrained = unconstrained
        # Forms, --line-length/--lines, acrostics and templates alternate '，'/'。' strictly; free
        # continuation may close a couplet with ？ or ！ as well.
        free = shape.line_length is None and shape.lines is None and not self.fixed
        self.even_ends = SENTENCE_ENDS if free else (STOP,)
        if tones and self.line_length is not None and self.line_length not in FIRST_LINE_LENGTHS:
            raise TangpoemError(f"--tones needs lines of 5 or 7 characters, not {self.line_length}")
        self.first_lengths = (self.line_length,) if self.line_length else self._free_lengths()
        self.patterns = self._patterns(pattern) if tones else []
        # A poem's rhyme group is chosen at its first rhyme: only among groups with a different character
        # for every rhyming line (no 重韵), so the choice never leaves the poem without a rhyme to go to.
        rhyming_lines = (self.lines or 8) // 2 + 1
        self.open_groups = classes.groups_with(rhyming_lines) or classes.groups_with(1)
        self.start_rhyme = self._check_given_rhymes() if rhyme else None
        self.start_patterns = self._check_given_tones() if tones else None

    # -- set-up: what the given characters leave open

    def _free_lengths(self) -> tuple[int, ...]:
        """Lengths the model may give the first line: 5 or 7, if the poem still fits --max-gen-len."""
        lines = self.lines or 2
        fit = tuple(n for n in FIRST_LINE_LENGTHS if lines * (n + 1) <= self.max_len)
        if not fit:
            raise TangpoemError(
                f"{lines} lines of {FIRST_LINE_LENGTHS[0]} characters need {lines * (FIRST_LINE_LENGTHS[0] + 1)} "
                f"characters but --max-gen-len is {self.max_len}"
            )
        return fit

    def _patterns(self, name: str) -> list[tuple[str, int, tuple[tuple[str, ...], ...]]]:
        """(name, line length, admitted tone strings per line) of every pattern still possible."""
        lines = self.lines or 2 * (self.max_len // (2 * (min(self.first_lengths) + 1)) + 1)
        found = []
        for length in self.first_lengths:
            chosen = [prosody.pattern(length, lines, name)] if name else prosody.poem_patterns(length, lines)
            found += [(p.name, length, p.admitted) for p in chosen]
        return found

    def _where(self, line: int, pos: int) -> str:
        return f"line {line + 1}, character {pos + 1}"

    def _check_given_rhymes(self) -> int | None:
        """The rhyme groups the given line-end characters leave; refuse those no rhyme admits."""
        c, groups = self.c, None
        for (line, pos), token in sorted(self.fixed.items()):
            if self.line_length is None or pos != self.line_length - 1 or not c.text[token]:
                continue
            ch, bits = c.vocab[token], int(c.tones[token])
            if line % 2 == 1:  # an even line: it must rhyme
                if bits and not bits & LEVEL:
                    raise TangpoemError(
                        f"{self.layout.what} ends line {line + 1} with '{ch}', an oblique (仄) character, but the "
                        "even lines must rhyme on a level (平) one; change it, or pass --no-rhyme"
                    )
                if bits:
                    new = int(c.groups[token]) if groups is None else groups & int(c.groups[token])
                    if not new:
                        raise TangpoemError(
                            f"{self.layout.what}'s rhyme characters do not share a 平水韵 group ('{ch}' of line "
                            f"{line + 1} is {c.group_label(int(c.groups[token]))}); change one, or pass --no-rhyme"
                        )
                    groups = new
            elif line > 0 and bits == LEVEL:
                raise TangpoemError(
                    f"{self.layout.what} ends line {line + 1} with '{ch}', a level (平) character, but the odd lines "
                    "after the first end oblique (仄) when the poem rhymes; change it, or pass --no-rhyme"
                )
        first = self.fixed.get((0, (self.line_length or 0) - 1))
        if first is not None and self.line_length and int(c.tones[first]) == LEVEL and groups is not None:
            if not groups & int(c.groups[first]):
                raise TangpoemError(
                    f"{self.layout.what} ends line 1 with the level (平) '{c.vocab[first]}', which does not rhyme with "
                    "the even lines (line 1 ends oblique or rhymes); change it, or pass --no-rhyme"
                )
        return groups

    def _check_given_tones(self) -> frozenset[int]:
        """The patterns every given character fits, each line's admitted strings narrowed to them."""
        c = self.c
        narrowed = [[list(strings) for strings in lines] for _, _, lines in self.patterns]
        alive = set(range(len(self.patterns)))
        for (line, pos), token in sorted(self.fixed.items()):
            if not c.text[token]:
                continue
            bits = int(c.tones[token])
            for p in list(alive):
                if line >= len(narrowed[p]):
                    alive.discard(p)
                    continue
                strings = [s for s in narrowed[p][line] if pos < len(s) and _fits(bits, s[pos])]
                narrowed[p][line] = strings
                if not strings:
                    alive.discard(p)
            if not alive:
                tone = {LEVEL: "level (平)", OBLIQUE: "oblique (仄)"}.get(bits, "")
                raise TangpoemError(
                    f"no {self.shape_name} tone pattern admits the {tone} '{c.vocab[token]}' at "
                    f"{self._where(line, pos)} of {self.layout.what} (with the characters given before it); "
                    "change it, or leave out --tones"
                )
        self.patterns = [
            (n, length, tuple(tuple(s) for s in narrowed[i])) for i, (n, length, _) in enumerate(self.patterns)
        ]
        return frozenset(alive)

    def new_state(self) -> PoemState:
        st = PoemState(line_length=self.line_length, rhyme=self.start_rhyme)
        if self.tones:
            st.patterns = self.start_patterns
            st.tone_options = self._line_options(st)
        return st

    def _line_options(self, st: PoemState) -> list[tuple[int, str]]:
        line = st.lines_done
        return [
            (p, s) for p in sorted(st.patterns) if line < len(self.patterns[p][2]) for s in self.patterns[p][2][line]
        ]

    # -- the rules

    def _line_end(self, st: PoemState) -> tuple[str, ...]:
        given = self.fixed.get((st.lines_done, st.line_len))
        if given is not None and given in self.c.id_punct:
            return (self.c.id_punct[given],)
        if self.lines is not None and st.lines_done == self.lines - 1:
            return (STOP,)
        return (COMMA,) if st.lines_done % 2 == 0 else self.even_ends

    def _end_token(self, st: PoemState) -> int | np.ndarray:
        ends = self._line_end(st)
        return self.c.punct[ends[0]] if len(ends) == 1 else self.c.mask(punct=ends)

    def _chars(self, st: PoemState, last: bool | None, extra: tuple[str, ...] = (), eop: bool = False) -> np.ndarray:
        """The characters allowed at the current position (last: it ends the line; None: not known yet)."""
        tones, groups, first_line = 0, None, False
        if st.tone_options is not None:
            pos = st.line_len
            marks = {s[pos] for _, s in st.tone_options if pos < len(s)}
            tones = (LEVEL if "P" in marks else 0) | (OBLIQUE if "Z" in marks else 0)
        if self.rhyme and last:
            line = st.lines_done
            if line % 2 == 1:  # an even line: a level character of the poem's rhyme
                tones = (tones or EITHER) & LEVEL
                groups = st.rhyme if st.rhyme is not None else self.open_groups
            elif line > 0:
                tones = (tones or EITHER) & OBLIQUE
            else:  # line 1: oblique, or rhyming (首句入韵)
                tones = tones or EITHER  # a character the table knows
                groups, first_line = (st.rhyme if st.rhyme is not None else self.open_groups), True
        return self.c.mask(text=True, punct=extra, eop=eop, tones=tones, groups=groups, first_line=first_line)

    def next(self, st: PoemState) -> int | np.ndarray:
        """The one token the poem must take next, or the sorted ids of the tokens it may take."""
        c = self.c
        if self.unconstrained:
            return c.mask(everything=True)
        line, pos = st.lines_done, st.line_len
        if pos == 0:  # at the start of a line
            if self.lines is not None and line >= self.lines:
                return c.eop
            given = self.fixed.get((line, 0))
            if given is not None:
                return given
            if self.lines is None and st.tokens:
                at_couplet_end = st.last_punct in SENTENCE_ENDS and line >= 2
                room = self.max_len - len(st.tokens) >= (st.line_length or min(self.first_lengths)) + 1
                if at_couplet_end and not room:
                    return c.eop
                return self._chars(st, st.line_length == 1, eop=at_couplet_end)
            return self._chars(st, st.line_length == 1)
        if st.line_length is not None:
            if pos >= st.line_length:
                return self._end_token(st)
            given = self.fixed.get((line, pos))
            if given is not None:
                return given
            return self._chars(st, pos == st.line_length - 1)
        # the first line, its length the model's choice
        lengths = self.first_lengths
        if st.tone_options is not None:
            lengths = tuple(n for n in lengths if any(len(s) == n for _, s in st.tone_options))
        if pos >= max(lengths):
            return self._end_token(st)
        return self._chars(st, None, self._line_end(st) if pos in lengths else ())

    def banned(self, st: PoemState, repeat_guard: bool = True) -> list[int]:
        """Tokens a sampled character must not be: a third repeat in a row, a rhyme already used (重韵)."""
        out = []
        if repeat_guard and len(st.tokens) >= 2 and st.tokens[-1] == st.tokens[-2]:
            out.append(st.tokens[-1])
        if self.rhyme and st.lines_done % 2 == 1 and st.line_length is not None and st.line_len == st.line_length - 1:
            out.extend(st.rhymes_used)
        return out

    def check(self, st: PoemState, token: int) -> str | None:
        """Why a given (not sampled) token breaks the rules, or None. Given text may close its first
        line at any length and use any of ，。？！ in free continuation; given characters the 平水韵
        table lacks fit either tone."""
        c = self.c
        w = c.vocab[token]
        line = st.lines_done + 1
        if token in c.id_punct:
            if st.line_len == 0:
                return f"line {line} cannot start with '{w}'"
            if st.line_length is not None and st.line_len != st.line_length:
                return f"line {line} has {st.line_len} characters but lines here have {st.line_length}"
            ends = self._line_end(st)
            free = self.even_ends != (STOP,) and (self.lines is None or st.lines_done < self.lines - 1)
            if not (w in ends or (free and w in LINE_ENDS)):
                return f"line {line} must end in '{'/'.join(ends)}', not '{w}'"
            if st.tone_options is not None and not any(len(s) == st.line_len for _, s in st.tone_options):
                return f"line {line} ends after {st.line_len} characters, but --tones needs 5 or 7"
            return None
        if not c.text[token]:
            return f"'{w}' is not a Chinese character or one of {''.join(LINE_ENDS)}"
        if self.lines is not None and st.lines_done >= self.lines:
            return f"the text goes on after the last of the {self.lines} lines"
        limit = st.line_length if st.line_length is not None else MAX_GIVEN_LINE
        if st.line_len >= limit:
            return f"line {line} is longer than {limit} characters"
        bits = int(c.tones[token])
        where = self._where(st.lines_done, st.line_len)
        if st.tone_options is not None:
            if not any(st.line_len < len(s) and _fits(bits, s[st.line_len]) for _, s in st.tone_options):
                tone = {LEVEL: "level (平)", OBLIQUE: "oblique (仄)"}.get(bits, "")
                return f"no {self.shape_name} tone pattern admits the {tone} '{w}' at {where} (--tones)"
        last = st.line_length is not None and st.line_len == st.line_length - 1
        if self.rhyme and last and bits:
            if st.lines_done % 2 == 1 and not bits & LEVEL:
                return f"'{w}' ends line {line} but is oblique (仄): the even lines rhyme on a level (平) character"
            if st.lines_done % 2 == 1 and st.rhyme is not None and not st.rhyme & int(c.groups[token]):
                return f"'{w}' ends line {line} but does not rhyme with the poem's {c.group_label(st.rhyme)} (--rhyme)"
            if st.lines_done >= 2 and st.lines_done % 2 == 0 and bits == LEVEL:
                return f"'{w}' ends line {line} but is level (平): odd lines after the first end oblique (--rhyme)"
        return None

    def advance(self, st: PoemState, token: int) -> None:
        c = self.c
        if token == c.eop:
            st.done, st.ended = True, "eop"
            return
        st.tokens.append(token)
        punct = c.id_punct.get(token)
        if self.unconstrained:
            pass
        elif punct is not None:
            if st.line_length is None:
                st.line_length = st.line_len
            if self.rhyme:
                self._rhyme_line_end(st)
            if st.tone_options is not None:
                st.patterns = frozenset(p for p, s in st.tone_options if len(s) == st.line_len)
            st.lines_done += 1
            st.line_len = 0
            st.last_punct = punct
            if st.tone_options is not None:
                st.tone_options = self._line_options(st)
            if self.lines is not None and st.lines_done >= self.lines:
                st.done, st.ended = True, "shape"
        else:
            if st.tone_options is not None:
                bits, pos = int(c.tones[token]), st.line_len
                st.tone_options = [(p, s) for p, s in st.tone_options if pos < len(s) and _fits(bits, s[pos])]
            st.line_len += 1
        if not st.done and self.lines is None and len(st.tokens) >= self.max_len:
            st.done, st.ended = True, "max_gen_len"

    def _rhyme_line_end(self, st: PoemState) -> None:
        """The rhyme the line just closed sets: the even lines' shared groups, or line 1's if it rhymes."""
        last = st.tokens[-2]
        bits, groups = int(self.c.tones[last]), int(self.c.groups[last])
        if not bits or not self.c.text[last]:
            return
        rhymes = st.lines_done % 2 == 1 or (st.lines_done == 0 and bits == LEVEL)
        if rhymes and groups:
            st.rhyme = groups if st.rhyme is None else (st.rhyme & groups or st.rhyme)
            st.rhymes_used.append(last)
