"""`Poet`: poems from one checkpoint, through the one decoding loop.

poet = Poet.load()                      # the configured checkpoint, your newest, else the bundled model
poet.write(start_words="春眠", form="五绝", seed=7)
"""

from __future__ import annotations

import unicodedata
import warnings
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from tangpoem.checkpoint import Checkpoint, load_checkpoint, resolve_model
from tangpoem.config import Config
from tangpoem.corpus import TITLE_MAX_CHARS, clean_title
from tangpoem.data import SEP, STYLE_MARKS
from tangpoem.errors import TangpoemError, about, excerpt
from tangpoem.generation.decoder import Job, decode
from tangpoem.generation.keywords import Keywords, split_keywords
from tangpoem.generation.plan import PLAN_PULL, plan_keywords
from tangpoem.generation.request import MAX_ROWS, TONES_BY_DEFAULT, GenerationConfig
from tangpoem.generation.rules import PoemState, Rules
from tangpoem.generation.sampling import log_probs
from tangpoem.generation.shapes import (
    LINE_ENDS,
    SENTENCE_ENDS,
    Layout,
    Shape,
    VocabClasses,
    merge_shapes,
    parse_template,
    resolve_shape,
    vocab_classes,
)  # fmt: skip
from tangpoem.generation.steps import EagerStep, Step, make_step

if TYPE_CHECKING:
    from tangpoem.model import PoetryModel


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"Poet.{old} is deprecated: use Poet.{new}", DeprecationWarning, stacklevel=3)


PLAN_FREE_LINES = 4  # keywords a plan gives a poem whose number of lines is the model's
ASCII_PUNCT = str.maketrans({",": "，", ".": "。", "?": "？", "!": "！", ";": "；", ":": "："})


@dataclass
class Poem:
    text: str
    lines: list[str]  # 句: each with its closing punctuation
    couplets: list[str]  # what the CLI prints, one per line
    seed: int
    ended: str  # 'eop' (the model ended it), 'shape' (last line of the form), 'max_gen_len'
    score: float | None = None  # mean log-probability per character (with --candidates/--drafts)
    rhyme: str = ""  # the 平水韵 group(s) the poem rhymes on (with rhyme)
    pattern: str = ""  # the tone pattern it keeps (with --tones)
    title: str = ""  # the title it was written to, as the model read it (cleaned)
    keywords: list[str] = field(default_factory=list)  # the words its lines were pulled toward (given or planned)

    def __str__(self) -> str:
        return "\n".join(self.couplets)

    def to_dict(self) -> dict[str, Any]:
        """The poem as `--json` prints it and the JSON API answers it: the same keys."""
        return asdict(self)


def split_poem(text: str) -> tuple[list[str], list[str]]:
    lines, couplets, line, couplet = [], [], "", ""
    for ch in text:
        line += ch
        couplet += ch
        if ch in LINE_ENDS:
            lines.append(line)
            line = ""
        if ch in SENTENCE_ENDS:
            couplets.append(couplet)
            couplet = ""
    if line:
        lines.append(line)
    if couplet:
        couplets.append(couplet)
    return lines, couplets


def normalise(text: str) -> str:
    """ASCII punctuation to full width, traditional to simplified (the corpus's OpenCC t2s), no spaces."""
    from tangpoem.corpus import to_simplified

    return "".join(to_simplified(text.translate(ASCII_PUNCT)).split())


class Poet:
    """Poems from one checkpoint: `Poet.load()`, then `write(start_words=..., form=..., seed=...)` with the
    settings of `GenerationConfig` (the command line's and the JSON API's names)."""

    def __init__(self, vocab: list[str], step: Step, backend: str = "numpy", ckpt: Checkpoint | None = None):
        try:
            self.classes: VocabClasses = vocab_classes(vocab)
        except KeyError as err:
            raise TangpoemError(f"the model's vocabulary lacks the special token {err}") from None
        self.vocab = vocab
        self.step = step
        self.backend = backend
        self.ckpt = ckpt

    @cached_property
    def known_characters(self) -> frozenset[str]:
        """The characters (not marks or punctuation) of the model's vocabulary: what a plan may draw."""
        return frozenset(w for w, t in zip(self.vocab, self.classes.text, strict=True) if t)

    @classmethod
    def load(
        cls, path: str | None = None, config: Config | None = None, backend: str = "numpy", inference: str = "",
        num_threads: int = 1,
    ) -> Poet:  # fmt: skip
        """A checkpoint's poet. path None: the checkpoint `checkpoint.resolve_model` picks from config (a
        `make_config(config_file="cpu")`, say; None: the defaults), as the commands do."""
        ckpt = load_checkpoint(path if path is not None else resolve_model(config or Config()))
        step = make_step(ckpt, backend, inference, num_threads)
        return cls(ckpt.vocab, step, "inference" if inference else backend, ckpt)

    @classmethod
    def from_model(cls, model: PoetryModel, vocab: list[str]) -> Poet:
        """A Poet on a live Paddle model (the trainer's samples), through the same decoder."""
        return cls(vocab, EagerStep(model), "eager")

    # -- input checks

    def encode(self, text: str, what: str, field: str | None = None) -> list[int]:
        missing = [ch for ch in dict.fromkeys(text) if ch not in self.classes.word2ix]
        if missing:
            named = ", ".join(f"'{ch}' (U+{ord(ch):04X})" for ch in missing[:8])
            named += f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            raise TangpoemError(f"{what}: not in the model's vocabulary: {named}; use other characters", field)
        return [self.classes.word2ix[ch] for ch in text]

    def log_probs(self, text: str, prefix_words: str = "", title: str = "") -> np.ndarray:
        """The log-probability the model gives each token of text, after what `prime` reads before a poem
        written with these prefix words (and title): the context the decoder scores candidates in."""
        prime = self.prime(GenerationConfig(title=title, prefix_words=prefix_words))
        tokens = self.encode(normalise(text), "text")
        if not tokens:
            raise TangpoemError("nothing to score: the text is empty")
        self.step.reset(1)
        for tok in prime[:-1]:
            self.step.step(np.array([tok]), [])
        out, feed = np.empty(len(tokens)), prime[-1]
        for i, tok in enumerate(tokens):
            out[i] = log_probs(self.step.step(np.array([feed]), [0]), np.array([tok]))[0]
            feed = tok
        return out

    def score(self, text: str, prefix_words: str = "") -> float:
        """The mean log-probability per token the model gives text: the figure candidates and drafts
        choose by."""
        return float(self.log_probs(text, prefix_words).mean())

    # -- writing

    def write(self, request: GenerationConfig | None = None, /, *, unconstrained: bool = False,
              **settings: Any) -> list[Poem]:  # fmt: skip
        """Poems for one request: a GenerationConfig, or its settings as keyword arguments (or both: the
        keywords override). E.g. write(start_words="春眠", form="五绝"), write(start_words="春夏秋冬",
        acrostic=True), write(template="床前明月光，□□□□□。□□□□□，□□□□□。")."""
        if request is None:
            request = GenerationConfig.from_settings(settings)
        elif settings:
            request = GenerationConfig.from_settings({**request.to_dict(), **settings})
        return self._decode([self.job(request, unconstrained)])[0]

    def continue_poem(self, start_words: str = "", **settings: Any) -> list[Poem]:
        """Deprecated (tangpoem 0.2 drops it): write(start_words=...)."""
        _deprecated("continue_poem(words)", "write(start_words=words)")
        return self.write(start_words=start_words, **settings)

    def acrostic(self, heads: str, **settings: Any) -> list[Poem]:
        """Deprecated (tangpoem 0.2 drops it): write(start_words=heads, acrostic=True)."""
        _deprecated("acrostic(heads)", "write(start_words=heads, acrostic=True)")
        return self.write(start_words=heads, acrostic=True, **settings)

    def fill(self, template: str, **settings: Any) -> list[Poem]:
        """Deprecated (tangpoem 0.2 drops it): write(template=...)."""
        _deprecated("fill(template)", "write(template=template)")
        return self.write(template=template, **settings)

    def write_batch(self, requests: list[GenerationConfig]) -> list[list[Poem] | TangpoemError]:
        """Several requests decoded together, as one batch: each one's poems, or the TangpoemError that
        refused it. The poems are those `write` gives each alone (same seed, same result): rows never
        influence each other."""
        jobs: list[Job] = []
        out: list[list[Poem] | TangpoemError] = []
        for request in requests:
            try:
                jobs.append(self.job(request))
                out.append([])
            except TangpoemError as err:
                out.append(err)
        results = iter(self._decode(jobs))
        return [err if isinstance(err, TangpoemError) else next(results) for err in out]

    def job(self, request: GenerationConfig, unconstrained: bool = False) -> Job:
        """The decoder's job for a request, or a TangpoemError saying what in it cannot be written (and
        naming the setting in its `field`)."""
        request.check()
        mode, text_field = request.mode, "template" if request.template else "start_words"
        shape = resolve_shape(request.form, request.line_length, request.lines)
        prime = self.prime(request)
        layout, given, text = Layout(), [], normalise(request.text)
        with about(text_field):
            if mode == "acrostic":
                layout = self._heads(text, shape)
                shape = merge_shapes(Shape(lines=max(shape.lines or 0, len(layout.fixed))), shape, "the acrostic")
            elif mode == "template":
                layout = parse_template(text, self.classes)
                shape = merge_shapes(layout.shape, shape, "the template")
            else:
                given = self.encode(text, "start words")
        if shape.lines and shape.line_length and shape.lines * (shape.line_length + 1) > request.max_gen_len:
            need = shape.lines * (shape.line_length + 1)
            raise TangpoemError(f"the poem needs {need} characters but --max-gen-len is {request.max_gen_len}",
                                "max_gen_len")  # fmt: skip
        tones = (TONES_BY_DEFAULT and shape.is_form) if request.tones is None else request.tones
        rhyme = (shape.is_form or tones) if request.rhyme is None else request.rhyme  # regulated verse rhymes
        if request.pattern and not tones:
            raise TangpoemError("--pattern names a tone pattern: use it with --tones", "pattern")
        with about(text_field):  # what the given characters leave open; the rest say which setting
            rules = Rules(
                self.classes, shape, layout, rhyme, tones, request.pattern, request.max_gen_len, unconstrained
            )
            self._check_given(rules, given, text)
        seeds = [request.seed + i for i in range(request.num_poems)]
        keywords = self._keywords(request, rules, seeds)
        untitled = None
        if request.title.strip() and request.title_guidance != 1:
            untitled = self.prime(replace(request, title=""))
        return Job(rules, prime, given, seeds, request, [keywords] if keywords else [], keywords, untitled)

    def _keywords(self, request: GenerationConfig, rules: Rules, seeds: list[int]) -> Keywords | None:
        """The request's keywords (the same for each poem), or its title's plan (drawn for each poem's seed)."""
        c = self.classes
        words = [normalise(word) for word in split_keywords(request.keywords)]
        if words:
            encoded = [self.encode(word, "keywords", "keywords") for word in words]
            bad = [w for w, ids in zip(words, encoded, strict=True) if not all(c.text[t] for t in ids)]
            if bad:
                raise TangpoemError(f"keywords are Chinese characters, not '{bad[0]}'", "keywords")
            if rules.lines and len(words) > rules.lines:
                raise TangpoemError(f"{len(words)} keywords but the poem has {rules.lines} lines: one per line at most",
                                    "keywords")  # fmt: skip
            room = min(rules.first_lengths)
            if any(len(w) > room for w in words):
                raise TangpoemError(f"the keyword '{max(words, key=len)}' is longer than a line ({room} characters)",
                                    "keywords")  # fmt: skip
            per_poem = {seed: encoded for seed in seeds}
        elif request.plan and request.title.strip():
            count = rules.lines or PLAN_FREE_LINES
            title, known = clean_title(request.title), self.known_characters
            per_poem = {s: [[c.word2ix[ch]] for ch in plan_keywords(title, count, s, known)] for s in seeds}
            return Keywords(per_poem, rules, force=False, nats=PLAN_PULL)
        else:
            return None
        return Keywords(per_poem, rules, force=True, nats=request.keyword_pull)

    def prime(self, request: GenerationConfig) -> list[int]:
        """What the model reads before the poem, its outputs unused: <START>, then, for a model trained with
        titles, the style mark, the title and <SEP> (as `dataset` lays out every poem it trains on), then
        the prefix words."""
        c, word2ix = self.classes, self.classes.word2ix
        prefix = self.encode(normalise(request.prefix_words), "prefix words", "prefix_words")
        if SEP not in word2ix:  # a model trained before titles
            if request.title.strip():
                raise TangpoemError(
                    "this model was trained without titles; leave out the title, or train one on an npz built "
                    "with them (`python -m tangpoem.data build --collections tang,song` or --format-version 2)",
                    "title",
                )
            if request.style != "tang":
                raise TangpoemError(f"this model knows only Tang poems, not style '{request.style}'", "style")
            return [c.start, *prefix]
        mark = STYLE_MARKS.get(request.style)
        trained = self.ckpt.meta.get("collections") if self.ckpt is not None else None  # what it has read
        if mark not in word2ix or (trained is not None and request.style not in trained):
            raise TangpoemError(f"this model was not trained on {request.style} poems; use style tang", "style")
        return [c.start, word2ix[mark], *self.title_tokens(request.title), word2ix[SEP], *prefix]

    def title_tokens(self, title: str) -> list[int]:
        """The title as the corpus's titles are cleaned (OpenCC, notes and numbering dropped), encoded."""
        if not title.strip():
            return []
        cleaned = clean_title(title)
        letters = sum(unicodedata.category(ch) == "Lo" for ch in title)
        if not cleaned and letters > TITLE_MAX_CHARS:  # clean_title drops a title over the cap
            raise TangpoemError(
                f"the title has {letters} characters, at most {TITLE_MAX_CHARS} (as the training titles)", "title"
            )
        if not cleaned:
            raise TangpoemError(
                f"the title '{excerpt(title)}' is empty once cleaned (notes in brackets, numbering and punctuation "
                "are dropped, as in the corpus); give a few Chinese characters, e.g. 春夜喜雨",
                "title",
            )
        return self.encode(cleaned, "title", "title")

    def _decode(self, jobs: list[Job]) -> list[list[Poem]]:
        """Decode the jobs in batches of at most MAX_ROWS rows (a large job is split by its poems)."""
        pieces: list[tuple[int, Job]] = []  # (job index, a part of its poems)
        for j, job in enumerate(jobs):
            per_batch = max(1, MAX_ROWS // (job.rows // len(job.seeds)))
            for first in range(0, len(job.seeds), per_batch):
                pieces.append((j, replace(job, seeds=job.seeds[first : first + per_batch])))
        poems: list[list[Poem]] = [[] for _ in jobs]
        batch: list[tuple[int, Job]] = []
        for piece in [*pieces, None]:
            if batch and (piece is None or sum(p.rows for _, p in batch) + piece[1].rows > MAX_ROWS):
                for (j, part), results in zip(batch, decode(self.step, [p for _, p in batch]), strict=True):
                    title = clean_title(part.opts.title) if part.opts.title.strip() else ""
                    words = part.preference.words if isinstance(part.preference, Keywords) else {}
                    poems[j] += [self._poem(part.rules, st, seed, score, title, words.get(seed, []))
                                 for (st, score), seed in zip(results, part.seeds, strict=True)]  # fmt: skip
                batch = []
            if piece is not None:
                batch.append(piece)
        return poems

    def _heads(self, text: str, shape: Shape) -> Layout:
        words = "".join(ch for ch in text if ch not in "，。？！；：、")
        if not words:
            raise TangpoemError("the acrostic phrase is empty: give its head characters with --start-words")
        heads = self.encode(words, "acrostic heads")
        bad = [self.vocab[t] for t in heads if not self.classes.text[t]]
        if bad:
            raise TangpoemError(f"acrostic heads must be Chinese characters, not {' '.join(bad)}")
        if shape.lines is not None and len(heads) > shape.lines:
            what = f"--form {shape.name}" if shape.name else f"--lines {shape.lines}"
            raise TangpoemError(f"{len(heads)} head characters but {what} has only {shape.lines} lines")
        return Layout(Shape(lines=len(heads)), {(i, 0): t for i, t in enumerate(heads)}, "the acrostic heads")

    def _check_given(self, rules: Rules, given: list[int], words: str) -> None:
        """Start words are forced, not sampled: they must already obey the rules, or we say where not."""
        st = rules.new_state()
        words = excerpt(words)
        for i, token in enumerate(given):
            if st.done and st.ended == "max_gen_len":
                raise TangpoemError(f"--max-gen-len {rules.max_len} is shorter than the start words '{words}'",
                                    "max_gen_len")  # fmt: skip
            if st.done:
                raise TangpoemError(f"the start words '{words}' go on after the poem's last line ('{words[i:]}')")
            why = rules.check(st, token)
            if why:
                hint = "change --start-words, or pass --start-words '' to let the model begin"
                raise TangpoemError(f"the start words '{words}' do not fit: {why}; {hint}")
            rules.advance(st, token)

    def _poem(self, rules: Rules, st: PoemState, seed: int, score: float | None, title: str = "",
              keywords: list[list[int]] | None = None) -> Poem:  # fmt: skip
        text = "".join(self.vocab[t] for t in st.tokens)
        if st.ended == "max_gen_len":  # cut back to the last whole couplet, else the last whole line
            last = max(text.rfind(p) for p in SENTENCE_ENDS)
            if last < 0:
                last = max(text.rfind(p) for p in LINE_ENDS)
            text = text[: last + 1] if last >= 0 else text
        lines, couplets = split_poem(text)
        rhyme = self.classes.group_label(st.rhyme) if rules.rhyme and st.rhyme else ""
        pattern = "/".join(dict.fromkeys(rules.patterns[p][0] for p in sorted(st.patterns))) if st.patterns else ""
        words = ["".join(self.vocab[t] for t in word) for word in keywords or []]
        return Poem(text, lines, couplets, seed, st.ended, score, rhyme, pattern, title, words)
