"""Keywords: words the poem writes in the order given, one line each; a `decoder.Preference` and, for the
keywords a user gives, a `decoder.Constraint` too.

Keyword k is due in line `due[k]` (spread evenly over the poem; one per line when there are as many as lines).
While the line is due and has not written it, its next character gains `nats` on its logit: the model still
chooses where in the line it fits. Given keywords are also forced: a line that has not written its keyword
takes it at the last place where the rules (`Rules.fits`: the tone pattern, the rhyme) allow it, a place
ending before the line's last character first (the last is the rhyme's); only a word the rules refuse at
every place left in the line moves to the next line. A plan's keywords (force=False) are only pulled toward:
one its line did not take is let go. Only what the poem has written is read, so drafts and candidates need
no state of their own.
"""

from __future__ import annotations

import numpy as np

from tangpoem.generation.rules import PoemState, Rules

KEYWORD_SEPARATORS = " ,，、;；"


def split_keywords(text: str) -> list[str]:
    """'明月 故乡' or '明月，故乡' -> ['明月', '故乡']."""
    for sep in KEYWORD_SEPARATORS[1:]:
        text = text.replace(sep, " ")
    return text.split()


def due_lines(count: int, lines: int | None) -> list[int]:
    """The line each of `count` keywords is due by: spread evenly over the poem's lines (the last keyword in
    the last line), or one per line when the number of lines is the model's."""
    if not lines or count >= lines:
        return list(range(count))
    return [(k + 1) * lines // count - 1 for k in range(count)]


class Keywords:
    """One request's keywords, per poem (by its seed: a plan differs between the poems of a request)."""

    def __init__(self, words: dict[int, list[list[int]]], rules: Rules, force: bool, nats: float) -> None:
        self.words, self.rules, self.force, self.nats = words, rules, force, nats
        classes, lines = rules.c, rules.lines
        self.due = {seed: due_lines(len(w), lines) for seed, w in words.items()}
        self.breaks = set(classes.punct.values())
        self.eop = classes.eop
        self.first_length = min(rules.first_lengths)  # a free first line's shortest: where its keyword must fit

    def written(self, tokens: list[int], seed: int) -> tuple[int, list[int], bool]:
        """How many of the poem's keywords it is past (written one per line, in order; without force also those
        whose line went by without them), the current line's tokens, and whether that line holds its keyword."""
        words, due = self.words.get(seed, []), self.due.get(seed, [])
        k, line, done = 0, [], 0
        for tok in tokens:
            if tok in self.breaks:
                if k < len(words) and (_contains(line, words[k]) or (not self.force and done >= due[k])):
                    k += 1
                line, done = [], done + 1
            else:
                line.append(tok)
        here = k < len(words) and _contains(line, words[k])
        return k + here, line, here

    def due_word(self, state: PoemState, seed: int) -> tuple[bool, list[int] | None, int]:
        """(keywords remain unwritten, the keyword the current line is due to write and has not (None: none),
        how many of its characters already end the line)."""
        words = self.words.get(seed, [])
        k, line, here = self.written(state.tokens, seed)
        if k == len(words) or here or state.lines_done < self.due[seed][k]:
            return k < len(words), None, 0
        return True, words[k], _started(line, words[k])

    def favoured(self, state: PoemState, seed: int) -> list[int]:
        """The next character of the keyword the line is due to write (none when it is not due)."""
        _, word, started = self.due_word(state, seed)
        return [] if word is None else [word[started]]

    def allowed(self, state: PoemState, ids: np.ndarray, seed: int) -> np.ndarray:
        if not self.force:
            return ids
        remaining, word, started = self.due_word(state, seed)
        if remaining and state.line_len == 0 and len(ids) > 1:  # no <EOP> while keywords are unwritten
            ids = ids[ids != self.eop]
        if word is None:
            return ids
        nxt, pos = word[started], state.line_len
        if not np.isin(nxt, ids):
            return ids
        if started:  # the line has begun the word: it goes on with it
            return np.array([nxt], dtype=ids.dtype)
        # Put in now where the rest of the word can follow and no later place ending before the line's last (the
        # rhyme's, most often) could take it: the latest place before the last, else the last.
        length = state.line_length or self.first_length
        if pos + len(word) > length or not self._can_start(state, word, pos, 1):
            return ids
        if any(self._can_start(state, word, q) for q in range(pos + 1, length - len(word))):
            return ids
        return np.array([nxt], dtype=ids.dtype)

    def _can_start(self, state: PoemState, word: list[int], start: int, first: int = 0) -> bool:
        """Whether the rules could take the word's characters (from its first-th) at place start on."""
        return all(self.rules.fits(state, word[j], start + j) for j in range(first, len(word)))


def _contains(line: list[int], word: list[int]) -> bool:
    n = len(word)
    return any(line[i : i + n] == word for i in range(len(line) - n + 1))


def _started(line: list[int], word: list[int]) -> int:
    """The longest j < len(word) such that the line ends with word[:j]."""
    for j in range(min(len(word) - 1, len(line)), 0, -1):
        if line[-j:] == word[:j]:
            return j
    return 0
