"""The rules the decoder consults before every character: `Rules.next(state)` gives the one token a poem
must take next or the sorted ids of those it may take; `Rules.check` says why a given token breaks them.

They look only at the poem written so far and at what was given, so they hold for any weights: a form
is enforced, not hoped for. Rhyme and tones come from `tangpoem.prosody` (see `shapes` for the shape).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from tangpoem import prosody
from tangpoem.errors import TangpoemError
from tangpoem.generation.shapes import (
    COMMA,
    EITHER,
    FIRST_LINE_LENGTHS,
    LEVEL,
    LINE_ENDS,
    MAX_GIVEN_LINE,
    OBLIQUE,
    SENTENCE_ENDS,
    STOP,
    Layout,
    Shape,
    VocabClasses,
)  # fmt: skip


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
            raise TangpoemError(f"--tones needs lines of 5 or 7 characters, not {self.line_length}", "tones")
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
                f"characters but --max-gen-len is {self.max_len}",
                "max_gen_len",
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

    def _chars(self, st: PoemState, last: bool | None, extra: tuple[str, ...] = (), eop: bool = False,
               pos: int | None = None) -> np.ndarray:  # fmt: skip
        """The characters allowed at the current position, or at a later one of the line (pos) as far as the poem
        has settled it so far (last: it ends the line; None: not known yet)."""
        tones, groups, first_line = 0, None, False
        if st.tone_options is not None:
            pos = st.line_len if pos is None else pos
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

    def fits(self, st: PoemState, token: int, pos: int) -> bool:
        """Whether token could stand at place pos (from the current one on) of the current line, by the tone
        patterns and the rhyme the poem has settled so far: what a constraint asks before it puts a character
        in now rather than leave it for a later place."""
        if self.unconstrained:
            return True
        given = self.fixed.get((st.lines_done, pos))
        if given is not None:
            return given == token
        ids = self._chars(st, None if st.line_length is None else pos == st.line_length - 1, pos=pos)
        at = int(np.searchsorted(ids, token))
        return at < len(ids) and int(ids[at]) == token

    def rhyme_ahead(self, st: PoemState) -> np.ndarray | None:
        """When the next character is the one before a rhyme (the last but one of an even line whose last place
        is not given): the ids the rhyme may take as far as the poem has settled it, rhymes already used left
        out (what lookahead.py looks toward). Else None, and None when no rhyme is left to look toward (a small
        vocabulary): the rules meet that dead end as they would without the look."""
        if self.unconstrained or not self.rhyme or st.line_length is None or st.line_len != st.line_length - 2:
            return None
        if st.lines_done % 2 == 0 or (st.lines_done, st.line_length - 1) in self.fixed:
            return None
        ids = self._chars(st, True, pos=st.line_length - 1)
        ids = np.setdiff1d(ids, st.rhymes_used, assume_unique=True) if st.rhymes_used else ids
        return ids if len(ids) else None

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
        """The rhyme the line just closed sets: the even lines' shared groups, or line 1's if it rhymes. The
        groups the poets rhymed the character in when they fit (a sampled one's always do), else any of its
        groups (a given character may rhyme by a rare reading)."""
        last = st.tokens[-2]
        bits, groups, usual = int(self.c.tones[last]), int(self.c.groups[last]), int(self.c.usual_groups[last])
        if not bits or not self.c.text[last]:
            return
        rhymes = st.lines_done % 2 == 1 or (st.lines_done == 0 and bits == LEVEL)
        if rhymes and groups:
            if st.rhyme is None:
                st.rhyme = usual or groups
            else:
                st.rhyme = st.rhyme & usual or st.rhyme & groups or st.rhyme
            st.rhymes_used.append(last)
