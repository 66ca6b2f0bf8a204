"""Looking one character ahead of a rhyme (`rhyme_lookahead`).

A rhyme's place takes only characters of the poem's rhyme group, and a left-to-right writer does not see it
coming: a line that did not lead toward one ends on whichever of them is least unlikely, the character readers
call an odd ending. In real poems the model finds the rhyme characters likelier than the rest (the line builds
to its rhyme); in its own poems they were its least likely choices, the last one most of all.

So before the character ahead of a rhyme, each of a row's CANDIDATES likeliest allowed characters c gains

    weight * log P(the next character can rhyme | the poem so far, c)

from one network step on a copy of the row's state (`Step.peek`, every candidate of every such row in one
batch). With weight 1 that samples c from the model's own distribution given that a rhyme follows. Only those
candidates stay allowed, since each costs a network row: the lookahead reaches well below the likeliest few (at
16 candidates instead of 32, 44% of poems came out otherwise; benchmarks/README.md), so a wider look could still
change some poems.
"""

from __future__ import annotations

import numpy as np

from tangpoem.generation.steps import Step, log_softmax

CANDIDATES = 32  # characters looked through per row, each a row of the peek: the poems that were read blind


def look_ahead(
    step: Step, rows: list[int], allowed: list[np.ndarray], logits: np.ndarray, targets: list[np.ndarray],
    weight: float,
) -> tuple[list[np.ndarray], np.ndarray]:  # fmt: skip
    """For the batch rows about to write the character before a rhyme (their allowed ids and logits [rows, V]
    from this step, the ids each rhyme may take): the candidates each keeps (sorted ids) and a copy of the
    logits in which those candidates gained what the rhyme ahead of them is worth."""
    tops = []
    for ids, x in zip(allowed, logits, strict=True):
        k = min(CANDIDATES, len(ids))
        tops.append(np.sort(ids[np.argpartition(x[ids], len(ids) - k)[len(ids) - k :]]))
    ahead = step.peek(np.repeat(rows, [len(t) for t in tops]), np.concatenate(tops))
    ahead = log_softmax(ahead.astype(np.float64))  # guided logits are not normalised; an adaptive output is
    out = logits.astype(np.float64)
    start = 0
    for r, (top, target) in enumerate(zip(tops, targets, strict=True)):
        rhymes = ahead[start : start + len(top)][:, target]
        start += len(top)
        best = rhymes.max(axis=1, keepdims=True)
        out[r, top] += weight * (best[:, 0] + np.log(np.exp(rhymes - best).sum(axis=1)))
    return tops, out
