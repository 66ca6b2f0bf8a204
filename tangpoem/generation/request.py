"""One request to the generator, in the one vocabulary the command line, the Python API and the JSON API
share: the same names (Config's fields, so the flags are `--start-words`, `--acrostic`, ...) and the same
defaults. One default differs on purpose: the command line, like the tutorial, continues its start words
老夫聊发少年狂 with its prefix words when none are given (Config's defaults); the Python and JSON APIs
start from nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

from tangpoem.config import Config, check_value
from tangpoem.errors import TangpoemError

MAX_ROWS = 256  # poems x candidates x drafts decoded at once; larger requests go in chunks (bounded memory)
TONES_BY_DEFAULT = False  # tones for forms when not asked either way (measured: docs/model-card.md)
MODES = ("continue", "acrostic", "template")
# Names of the earlier API that keep working for one release (tangpoem 0.2 drops them): the server's
# `mode` + `text` (the Python API's `Poet.continue_poem/acrostic/fill` call `write`).
DEPRECATED_FIELDS = {"mode": "acrostic or template", "text": "start_words or template"}


@dataclass
class GenerationConfig:
    """What a request may set. rhyme and tones: None means the default: rhyme on for the four forms (a
    template or acrostic of that shape included) and with tones; tones as TONES_BY_DEFAULT."""

    title: str = ""  # what the poem is about; needs a model trained with titles
    title_guidance: float = Config.title_guidance  # > 1: keep closer to the title (guidance.py)
    keywords: str = ""  # words the poem writes in order, one per line (keywords.py)
    keyword_pull: float = Config.keyword_pull  # nats toward the given keyword a line is due to write
    plan: bool = Config.plan  # with a title and no keywords: keywords drawn from it (plan.py)
    style: str = "tang"  # "tang" or "song": the collection whose poems the model is to write like
    start_words: str = ""  # continuation: the opening words; with acrostic: the head characters
    acrostic: bool = False
    template: str = ""  # a poem with blanks □ (or _ ＿) to fill; another mode than start_words
    prefix_words: str = ""
    form: str = ""
    line_length: int = 0
    lines: int = 0
    rhyme: bool | None = None
    tones: bool | None = None
    pattern: str = ""
    temperature: float = Config.temperature
    top_k: int = Config.top_k
    top_p: float = Config.top_p
    repeat_guard: bool = True
    repetition_penalty: float = Config.repetition_penalty
    rhyme_lookahead: float = Config.rhyme_lookahead  # > 0: the character before a rhyme looks ahead (lookahead.py)
    candidates: int = Config.candidates
    drafts: int = Config.drafts
    seed: int = Config.seed
    num_poems: int = Config.num_poems
    max_gen_len: int = Config.max_gen_len

    @classmethod
    def from_config(cls, cfg: Config) -> GenerationConfig:
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> GenerationConfig:
        """From keyword arguments or JSON fields: the names above, plus the deprecated `mode` and `text`
        (with a DeprecationWarning). An unknown name is a TangpoemError naming it."""
        if settings.get("mode") is not None or settings.get("text") is not None:
            warnings.warn(
                "'mode' and 'text' are deprecated: use start_words (with acrostic=True for heads) or template",
                DeprecationWarning,
                stacklevel=3,
            )
        values = translate_deprecated(settings)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TangpoemError(f"unknown setting(s) {', '.join(unknown)}; settings: {', '.join(sorted(known))}",
                                field=unknown[0])  # fmt: skip
        return cls(**values)

    @property
    def mode(self) -> str:
        return "template" if self.template else "acrostic" if self.acrostic else "continue"

    @property
    def text(self) -> str:
        """What the mode writes from: the template, or the start words (heads of an acrostic)."""
        return self.template or self.start_words

    def check(self) -> None:
        """Every value within its Config field's range (the command line checks the same way)."""
        for f in fields(self):
            setattr(self, f.name, check_value(f.name, getattr(self, f.name)))
        if self.acrostic and self.template:
            raise TangpoemError("acrostic and template are two modes: give one", field="template")
        if self.template and self.start_words:
            raise TangpoemError("start_words and template are two modes: give one", field="template")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def translate_deprecated(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings with the deprecated `mode` and `text` (absent or None: not given) in today's names; a
    request that mixes the two sets is refused. The Python API and the server both translate here."""
    mode, text = settings.get("mode"), settings.get("text")
    values = {k: v for k, v in settings.items() if k not in DEPRECATED_FIELDS}
    if mode is None and text is None:
        return values
    if values.get("start_words") or values.get("template") or values.get("acrostic"):
        raise TangpoemError(
            "mode and text are the deprecated names of start_words/acrostic/template: use one set", field="mode"
        )
    return {**values, **legacy_request(mode or "continue", text or "")}


def legacy_request(mode: str, text: str) -> dict[str, Any]:
    """The earlier `mode` + `text` as today's settings."""
    if mode not in MODES:
        raise TangpoemError(f"unknown mode '{mode}': continue, acrostic or template", field="mode")
    if mode == "template":
        if not text.strip():
            raise TangpoemError("text: the template is empty: write the poem with □ where the model should write",
                                field="text")  # fmt: skip
        return {"template": text}
    return {"start_words": text, "acrostic": mode == "acrostic"}
