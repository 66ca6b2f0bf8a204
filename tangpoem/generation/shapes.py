"""What a poem may look like: its shape (forms, line lengths), given characters (templates, heads), the
vocabulary's token classes. The rules that the decoder consults (`rules.Rules`) are built from these.

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

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from tangpoem import prosody
from tangpoem.data import EOP, PAD, START
from tangpoem.errors import TangpoemError
from tangpoem.prosody import FORMS, form_name, is_hanzi

COMMA, STOP = "，", "。"
LINE_ENDS = ("，", "。", "？", "！")  # the only punctuation a generated poem uses
SENTENCE_ENDS = ("。", "？", "！")
BLANKS = ("□", "_", "＿")  # a template's slots for the model to fill
FIRST_LINE_LENGTHS = (5, 7)  # a first line the model writes has the length of a Tang verse line
MAX_GIVEN_LINE = 15  # start words may set another length, up to this
LEVEL, OBLIQUE, EITHER = prosody.LEVEL, prosody.OBLIQUE, prosody.LEVEL | prosody.OBLIQUE


@dataclass(frozen=True)
class Shape:
    """Line length and number of lines; None means the model (or the acrostic heads) decide."""

    line_length: int | None = None
    lines: int | None = None
    name: str = ""  # the form's name, for messages and --json

    @property
    def is_form(self) -> bool:
        return (self.line_length, self.lines) in FORMS.values()


def resolve_shape(form: str = "", line_length: int = 0, lines: int = 0) -> Shape:
    """--form, or --line-length/--lines; one clear TangpoemError for a bad combination."""
    form = form.strip()
    if line_length < 0 or lines < 0:
        raise TangpoemError("--lines and --line-length cannot be negative (0 lets the model choose)", "lines")
    if form:
        name = form_name(form)
        length, count = FORMS[name]
        if line_length and line_length != length:
            raise TangpoemError(f"--form {name} has {length}-character lines, not --line-length {line_length}", "form")
        if lines and lines != count:
            raise TangpoemError(f"--form {name} has {count} lines, not --lines {lines}", "form")
        return Shape(length, count, name)
    if line_length and not 2 <= line_length <= MAX_GIVEN_LINE:
        raise TangpoemError(
            f"--line-length must be 2 to {MAX_GIVEN_LINE} (5 and 7 are classical), not {line_length}", "line_length"
        )
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

        def group_bits(groups_of: Callable[[str], frozenset[str]]) -> np.ndarray:
            return np.array([sum(bit[g] for g in groups_of(w)) if t else 0
                             for w, t in zip(vocab, self.text, strict=True)], dtype=np.int64)  # fmt: skip

        self.groups = group_bits(prosody.level_groups)
        # what a sampled rhyme may be: the groups the poets rhymed each character in (a given one may be any)
        self.usual_groups = group_bits(prosody.usual_level_groups)
        self.group_sizes = [int(((self.usual_groups >> i) & 1).sum()) for i in range(len(groups))]
        self._masks: dict[tuple, np.ndarray] = {}

    def mask(self, text: bool = False, punct: tuple[str, ...] = (), eop: bool = False, tones: int = 0,
             groups: int | None = None, first_line: bool = False, everything: bool = False) -> np.ndarray:  # fmt: skip
        """The allowed token ids, sorted, cached: built once per kind, shared read-only by every poem.

        tones: characters with one of these tone classes (0: any character, also those the table lacks);
        groups: level characters that poets rhymed in one of these rhyme groups (bits: `usual_groups`), or, with
        first_line, those and any character that can be oblique (line 1 may rhyme or end oblique).
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
                    rhymes = (self.usual_groups & groups) != 0
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
