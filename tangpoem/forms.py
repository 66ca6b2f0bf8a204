"""What a poem may look like while it is being written: forms, acrostic heads, line lengths, rhyme.

The decoder asks `Rules.next(state)` before every character of every poem and gets either one
token id it must take (an acrostic head, the punctuation at the end of a line, <EOP> after the last
line) or the sorted ids of the tokens it may sample from. The rules only ever look at
the poem written so far, so they hold for any weights: a form is enforced, not hoped for.

The shape of every poem:
- a line (句) is a run of Chinese characters closed by one punctuation mark;
- line 1, 3, 5, ... end in '，'; line 2, 4, ... end in '。' (forms, --line-length/--lines, acrostic)
  or one of '。？！' (free continuation, the model picks); no other punctuation, no special token inside the text;
- every line has the length of the first one (given by the form or --line-length, else chosen by
  the model within MIN_LINE..MAX_LINE);
- the poem ends after its last line when the number of lines is known (form, --lines, acrostic),
  else when the model predicts <EOP> after an even line.

Rhyme (`--rhyme`) is an approximation: the last characters of the even lines must share a rhyme
group of the modern 中华新韵 (14 groups, from the final of the character's Mandarin reading, by
pypinyin: its main reading, or its level ones if the main one is oblique) and have a level tone
(平: Mandarin tones 1 and 2). Middle Chinese rhymes (平水韵) differ,
and old entering-tone characters that became level in Mandarin count as level here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from tangpoem.data import EOP, PAD, START
from tangpoem.errors import TangpoemError

COMMA, STOP = "，", "。"
LINE_ENDS = ("，", "。", "？", "！")  # the only punctuation a generated poem uses
SENTENCE_ENDS = ("。", "？", "！")
# Bounds for a first line whose length the model chooses: 99.4% of the corpus's first lines have
# 3 to 7 characters (5: 53%, 7: 40%). Given start words may set a longer one.
MIN_LINE, MAX_LINE = 3, 7
MAX_GIVEN_LINE = 15

FORMS = {"五绝": (5, 4), "七绝": (7, 4), "五律": (5, 8), "七律": (7, 8)}
FORM_ALIASES = {
    "wujue": "五绝",
    "qijue": "七绝",
    "wulv": "五律",
    "qilv": "七律",
    "wulu": "五律",
    "qilu": "七律",
    "wulü": "五律",
    "qilü": "七律",
    "五言绝句": "五绝",
    "七言绝句": "七绝",
    "五言律诗": "五律",
    "七言律诗": "七律",
    "五絕": "五绝",
    "七絕": "七绝",
    "五律詩": "五律",
}


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


def resolve_shape(form: str = "", line_length: int = 0, lines: int = 0) -> Shape:
    """--form, or --line-length/--lines; one clear TangpoemError for a bad combination."""
    form = form.strip()
    if form:
        name = form if form in FORMS else FORM_ALIASES.get(form.lower())
        if name is None:
            known = ", ".join(f"{k} ({a})" for k, a in zip(FORMS, ("wujue", "qijue", "wulv", "qilv"), strict=True))
            raise TangpoemError(f"unknown form '{form}'; known forms: {known}")
        length, count = FORMS[name]
        if line_length and line_length != length:
            raise TangpoemError(f"--form {name} has {length}-character lines, not --line-length {line_length}")
        if lines and lines != count:
            raise TangpoemError(f"--form {name} has {count} lines, not --lines {lines}")
        return Shape(length, count, name)
    if line_length and not 2 <= line_length <= 15:
        raise TangpoemError(f"--line-length must be 2 to 15 (5 and 7 are classical), not {line_length}")
    if lines < 0 or line_length < 0:
        raise TangpoemError("--lines and --line-length cannot be negative (0 lets the model choose)")
    return Shape(line_length or None, lines or None)


# ---------------------------------------------------------------- rhyme

# 中华新韵: finals (after removing the initial; y/w spellings and j/q/x+u resolved) -> group.
_RHYME_GROUPS = {
    "麻": ("a", "ia", "ua"),
    "波": ("o", "e", "uo"),
    "皆": ("ie", "ve", "ue"),
    "开": ("ai", "uai"),
    "微": ("ei", "ui", "uei"),
    "豪": ("ao", "iao"),
    "尤": ("ou", "iu", "iou"),
    "寒": ("an", "ian", "uan", "van"),
    "文": ("en", "in", "un", "uen", "vn"),
    "唐": ("ang", "iang", "uang"),
    "庚": ("eng", "ing", "ong", "iong", "ueng"),
    "齐": ("i", "v", "er"),
    "支": (),  # the -i of zhi chi shi ri zi ci si, told apart by the initial
    "姑": ("u",),
}
_FINAL_GROUP = {final: group for group, finals in _RHYME_GROUPS.items() for final in finals}
_INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "r", "z", "c", "s")
_Y_W = {
    "yi": "i", "ya": "ia", "ye": "ie", "yao": "iao", "you": "iou", "yan": "ian", "yin": "in", "yang": "iang",
    "ying": "ing", "yong": "iong", "yu": "v", "yue": "ve", "yuan": "van", "yun": "vn", "yo": "o",
    "wu": "u", "wa": "ua", "wo": "uo", "wai": "uai", "wei": "uei", "wan": "uan", "wen": "uen", "wang": "uang",
    "weng": "ueng",
}  # fmt: skip


def rhyme_group(syllable: str) -> str | None:
    """'shuang' -> '唐', 'zhi' -> '支', 'ju' -> '齐' (ü); None for anything unrecognised."""
    s = syllable.lower().replace("ü", "v")
    if s in _Y_W:
        return _FINAL_GROUP.get(_Y_W[s])
    for initial in _INITIALS:
        if s.startswith(initial) and len(s) > len(initial):
            final = s[len(initial) :]
            if final == "i" and initial in ("zh", "ch", "sh", "r", "z", "c", "s"):
                return "支"
            if initial in ("j", "q", "x") and final.startswith("u"):
                final = "v" + final[1:]
            return _FINAL_GROUP.get(final)
    return _FINAL_GROUP.get(s)  # no initial: a, e, ai, ou, er, ...


def level_rhymes(ch: str) -> frozenset[str]:
    """Rhyme groups the character can close a rhyming line with; empty if it has no level reading.

    Its main reading (pypinyin lists it first) decides when that reading is level: 身 is shen1 (文),
    not also juan1 (寒) as in 身毒. A character whose main reading is oblique rhymes by its level
    readings, e.g. 看 kan4 -> kan1 (寒), common in Tang verse.
    """
    from pypinyin import Style, pinyin

    readings = [r for r in pinyin(ch, style=Style.TONE3, heteronym=True, neutral_tone_with_five=True)[0] if r]
    level = [r for r in readings if r[-1] in "12"]
    if not level:
        return frozenset()
    if readings[0] in level:
        level = readings[:1]
    return frozenset(g for g in (rhyme_group(r[:-1]) for r in level) if g)


# ---------------------------------------------------------------- vocabulary classes


class VocabClasses:
    """Token classes of one vocabulary: Chinese characters, each line-end mark, rhyme groups (lazily)."""

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
        self._masks: dict[tuple, np.ndarray] = {}
        self._rhymes: list[frozenset[str]] | None = None

    def mask(self, text: bool = False, punct: tuple[str, ...] = (), eop: bool = False, rhyme=None) -> np.ndarray:
        """The allowed token ids, sorted, cached: built once per kind, shared read-only by every poem."""
        key = (text, punct, eop, rhyme)
        ids = self._masks.get(key)
        if ids is None:
            m = np.zeros(self.size, dtype=bool)
            if text:
                m |= self.text if rhyme is None else self._rhyme_mask(rhyme)
            for p in punct:
                if p in self.punct:
                    m[self.punct[p]] = True
            if eop:
                m[self.eop] = True
            ids = np.flatnonzero(m)
            ids.flags.writeable = False
            self._masks[key] = ids
        return ids

    def rhymes(self, token: int) -> frozenset[str]:
        if self._rhymes is None:
            self._rhymes = [level_rhymes(w) if t else frozenset() for w, t in zip(self.vocab, self.text, strict=True)]
        return self._rhymes[token]

    def _rhyme_mask(self, groups: frozenset[str] | str) -> np.ndarray:
        """'level': any character with a level reading; a set of groups: characters sharing one."""
        self.rhymes(0)
        if groups == "level":
            return np.array([bool(r) for r in self._rhymes], dtype=bool)
        return np.array([bool(r & groups) for r in self._rhymes], dtype=bool)


@lru_cache(maxsize=4)
def _classes_for(vocab: tuple[str, ...]) -> VocabClasses:
    return VocabClasses(list(vocab))


def vocab_classes(vocab: list[str]) -> VocabClasses:
    return _classes_for(tuple(vocab))


# ---------------------------------------------------------------- per-poem state and the rules


@dataclass
class PoemState:
    tokens: list[int] = field(default_factory=list)  # the poem so far, punctuation included
    line_len: int = 0  # characters in the current line
    lines_done: int = 0
    line_length: int | None = None  # set by the shape, or by the first line
    rhyme: frozenset[str] | None = None  # rhyme groups still shared by the even lines so far
    last_punct: str = ""
    done: bool = False
    ended: str = ""  # 'eop', 'shape' (last line written), 'max_gen_len'


class Rules:
    """The constraints of one request; every poem of a batch carries its own PoemState."""

    def __init__(
        self,
        classes: VocabClasses,
        shape: Shape,
        heads: list[int] | None = None,
        rhyme: bool = False,
        max_len: int = 200,
    ):
        self.c = classes
        self.line_length = shape.line_length
        self.heads = heads or []
        self.lines = len(self.heads) if heads and shape.lines is None else shape.lines
        if self.lines is not None and heads and len(heads) > self.lines:
            what = f"--form {shape.name}" if shape.name else f"--lines {self.lines}"
            raise TangpoemError(f"{len(heads)} head characters but {what} has only {self.lines} lines")
        self.rhyme = rhyme
        self.max_len = max_len
        # Forms, --line-length/--lines and acrostics alternate '，'/'。' strictly; free continuation
        # may close a couplet with ？ or ！ as well.
        free = shape.line_length is None and shape.lines is None and not heads
        self.even_ends = SENTENCE_ENDS if free else (STOP,)

    def new_state(self) -> PoemState:
        return PoemState(line_length=self.line_length)

    def _line_end(self, st: PoemState) -> tuple[str, ...]:
        if self.lines is not None and st.lines_done == self.lines - 1:
            return (STOP,)
        return (COMMA,) if st.lines_done % 2 == 0 else self.even_ends

    def next(self, st: PoemState) -> int | np.ndarray:
        """The one token the poem must take next, or the sorted ids of the tokens it may take."""
        c = self.c
        if st.line_len == 0:  # at the start of a line
            if self.lines is not None and st.lines_done >= self.lines:
                return c.eop
            if st.lines_done < len(self.heads):
                return self.heads[st.lines_done]
            if self.lines is None and st.tokens:
                at_couplet_end = st.last_punct in SENTENCE_ENDS and st.lines_done >= 2
                room = self.max_len - len(st.tokens) >= (st.line_length or MIN_LINE) + 1
                if at_couplet_end and not room:
                    return c.eop
                return c.mask(text=True, eop=at_couplet_end)
            return c.mask(text=True)
        if st.line_length is None:  # the first line, its length the model's choice
            if st.line_len >= MAX_LINE:
                ends = self._line_end(st)
                return c.punct[ends[0]] if len(ends) == 1 else c.mask(punct=ends)
            return c.mask(text=True, punct=self._line_end(st) if st.line_len >= MIN_LINE else ())
        if st.line_len >= st.line_length:
            ends = self._line_end(st)
            return c.punct[ends[0]] if len(ends) == 1 else c.mask(punct=ends)
        if self.rhyme and st.lines_done % 2 == 1 and st.line_len == st.line_length - 1:
            return c.mask(text=True, rhyme="level" if st.rhyme is None else st.rhyme)
        return c.mask(text=True)

    def check(self, st: PoemState, token: int) -> str | None:
        """Why a given (not sampled) token breaks the rules, or None. Given text may close its first
        line at any length and use any of ，。？！ in free continuation."""
        allowed = self.next(st)
        if isinstance(allowed, np.ndarray):
            at = int(np.searchsorted(allowed, token))
            if at < len(allowed) and allowed[at] == token:
                return None
        elif allowed == token:
            return None
        w = self.c.vocab[token]
        line = st.lines_done + 1
        if token in self.c.id_punct:
            if st.line_len == 0:
                return f"line {line} cannot start with '{w}'"
            if st.line_length is not None and st.line_len != st.line_length:
                return f"line {line} has {st.line_len} characters but lines here have {st.line_length}"
            ends = self._line_end(st)
            free = self.even_ends != (STOP,) and (self.lines is None or st.lines_done < self.lines - 1)
            if w in ends or (free and w in LINE_ENDS):
                return None
            return f"line {line} must end in '{'/'.join(ends)}', not '{w}'"
        if not self.c.text[token]:
            return f"'{w}' is not a Chinese character or one of {''.join(LINE_ENDS)}"
        if st.line_length is not None and st.line_len >= st.line_length:
            return f"line {line} is longer than {st.line_length} characters"
        if st.line_length is None and st.line_len >= MAX_LINE:
            if st.line_len < MAX_GIVEN_LINE:
                return None
            return f"line {line} is longer than {MAX_GIVEN_LINE} characters"
        if self.lines is not None and st.lines_done >= self.lines:
            return f"the text goes on after the last of the {self.lines} lines"
        if self.rhyme and st.line_len == (st.line_length or 0) - 1:
            return f"'{w}' ends line {line} but does not rhyme on a level tone (--rhyme)"
        return f"'{w}' does not fit here"

    def advance(self, st: PoemState, token: int) -> None:
        c = self.c
        if token == c.eop:
            st.done, st.ended = True, "eop"
            return
        st.tokens.append(token)
        punct = c.id_punct.get(token)
        if punct is not None:
            if st.line_length is None:
                st.line_length = st.line_len
            st.lines_done += 1
            st.line_len = 0
            st.last_punct = punct
            if self.lines is not None and st.lines_done >= self.lines:
                st.done, st.ended = True, "shape"
        else:
            st.line_len += 1
            if self.rhyme and st.lines_done % 2 == 1 and st.line_len == st.line_length:
                groups = c.rhymes(token)
                st.rhyme = groups if st.rhyme is None else (st.rhyme & groups)
        if not st.done and self.lines is None and len(st.tokens) >= self.max_len:
            st.done, st.ended = True, "max_gen_len"
