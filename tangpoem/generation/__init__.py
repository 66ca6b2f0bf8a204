"""Writing poems: one decoding loop, and the small pieces that differ between requests plugged into it.

    request.py   GenerationConfig: the one vocabulary of a request (CLI flags, Python keywords, JSON fields)
    shapes.py    forms, line lengths, templates, acrostic heads; the vocabulary's token classes
    rules.py     what may come next: the shape, given characters, 平水韵 rhyme and 平仄 tones
    sampling.py  temperature, top-k, top-p, repetition penalty; Gumbel-max draws; log-probabilities
    steps.py     the network, one token per call: numpy, eager Paddle, or Paddle Inference
    guidance.py  title guidance: each poem decoded beside an untitled twin, the title's pull strengthened
    keywords.py  keywords: each line pulled toward its word, and a given word forced in where a line would miss it
    plan.py      a title's plan: a keyword per line from what the title called up in the poets' poems
    lookahead.py the character before a rhyme looks one step ahead, toward characters a rhyme can follow
    decoder.py   the loop: every poem of every request in one batch, drafts and candidates
    poet.py      Poet: a checkpoint's poems, the API the command line and the server use

Data flows down this list's reverse: poet -> decoder -> guidance/keywords/lookahead -> rules/sampling/steps -> shapes ->
prosody; poet also reads plan.
"""

from tangpoem.generation.poet import Poem, Poet, normalise, split_poem
from tangpoem.generation.request import MAX_ROWS, GenerationConfig
from tangpoem.generation.shapes import resolve_shape
from tangpoem.generation.steps import BACKENDS, make_step

__all__ = [
    "BACKENDS", "MAX_ROWS", "GenerationConfig", "Poem", "Poet", "make_step", "normalise", "resolve_shape", "split_poem",
]  # fmt: skip
