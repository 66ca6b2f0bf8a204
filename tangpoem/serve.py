"""A web page and a JSON API over one Poet: `python -m tangpoem.serve`.

    python -m tangpoem.serve                                      # then open http://127.0.0.1:8000/
    python -m tangpoem.serve --model-path CKPT --port 8080 --workers 2

Without --model-path it serves what `generate` writes with: the configured checkpoint, else your newest,
else the bundled model (one line says which).

Routes: `/` the page (tangpoem/static: HTML, CSS and plain JavaScript, nothing fetched from other
sites), `POST /api/poems`, `GET /api/health`, `/docs` (Swagger UI) and `/openapi.json`.

Concurrency. Decoding is CPU work and a Poet is not thread-safe (its network step carries the LSTM
state), so one decode thread owns the Poet. It takes every request that arrived while it was busy
and hands them to one `Poet.write_batch` call, which decodes them together; the event loop only
awaits a future. The queue is bounded (a full queue answers 503) and so is every request (the
limits below, a 16 KiB body), so no request makes unbounded work. The app keeps nothing between
requests: `--workers N` runs N processes (uvicorn's own), each with its Poet, and several machines
can stand behind any load balancer. Settings reach worker processes through the environment
(`TANGPOEM_SERVE`, read by `app_from_env`, the factory uvicorn imports).

Bad input is the user's: a pydantic model with limits taken from Config's ranges, then the Poet's
own checks; both answer 422 with the message and the field it concerns (`detail`, `field`).
"""

from __future__ import annotations

if __name__ == "__main__":  # a command: its process is set up before Paddle loads (device.prepare_command)
    from tangpoem.device import prepare_command

    prepare_command()

import asyncio
import errno
import json
import logging
import os
import queue
import re
import secrets
import socket
import sys
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from tangpoem.checkpoint import resolve_model
from tangpoem.config import COMMANDS, FIELDS, ArgumentParser, add_config_args, is_unicode, parse_config_args
from tangpoem.errors import TangpoemError, cli_main
from tangpoem.generation import MAX_ROWS, GenerationConfig, Poem, Poet
from tangpoem.generation.request import DEPRECATED_FIELDS, translate_deprecated
from tangpoem.prosody import FORMS, PATTERN_NAMES, form_name

try:  # the `serve` extra: pip install 'tangpoem[serve]'
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as err:  # pragma: no cover - depends on the environment
    _missing = f"the server needs FastAPI and uvicorn ({err}); install them with: pip install 'tangpoem[serve]'"
    if __name__ == "__main__":  # `python -m tangpoem.serve`: one line, not an import traceback
        print(f"error: {_missing}", file=sys.stderr)
        sys.exit(2)
    raise TangpoemError(_missing) from None

try:  # the same extra; only `main` needs it, and says so when it is missing
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
except ImportError:  # pragma: no cover - depends on the environment
    AutoHTTPProtocol = None

log = logging.getLogger("tangpoem.serve")

ENV_VAR = "TANGPOEM_SERVE"  # JSON of ServeSettings, for the worker processes of --workers N
STATIC_DIR = Path(__file__).resolve().parent / "static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 16 * 1024  # bytes of a request body; a 七律 template with every setting is well under 1 KiB
MAX_TEXT = 200  # characters of start words, heads or template (a 七律 template has 64)
MAX_PREFIX = 100
MAX_TITLE = 40  # characters of a title as sent; the model's own cap (shorter) is checked with a clear message
# Tighter than Config's ranges where those allow work no web request should cause (1000 poems, 64
# candidates of 64 drafts each); lower bounds and the rest come from Config (one source of truth).
CAPS = {"num_poems": 16, "candidates": 8, "drafts": 8, "max_gen_len": 400, "lines": 64}
LEGACY_FIELDS = {"start_words": "text", "template": "text", "acrostic": "mode"}  # a deprecated request's words
MAX_REQUEST_ROWS = 64  # num_poems x candidates x drafts of one request
GATHER_MS = 25.0  # under load, a batch waits this long at most for the clients of the last one
SEED_MAX = int(FIELDS["seed"].metadata["range"][1])
OPTION_DEFAULTS = GenerationConfig()
FormName = Literal[("", *FORMS)]
PatternName = Literal[("", *PATTERN_NAMES)]


# ---------------------------------------------------------------- settings


@dataclass
class ServeSettings:
    """What a server process needs; JSON in $TANGPOEM_SERVE for the processes of --workers N."""

    model_path: str = ""
    num_threads: int = 1  # BLAS threads per process (see generate.make_step: one is never slow)
    queue_size: int = 64  # requests waiting for the decoder; one more is answered 503
    batch_rows: int = MAX_ROWS  # rows (poems x candidates x drafts) decoded in one write_batch call
    gather_ms: float = GATHER_MS  # under load, how long a batch waits for the clients the last one answered
    cors: list[str] = field(default_factory=list)  # origins allowed to call the API from their pages

    def to_env(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_env(cls) -> ServeSettings:
        raw = os.environ.get(ENV_VAR)
        if not raw:
            raise TangpoemError(f"${ENV_VAR} is not set; start the server with `python -m tangpoem.serve`")
        try:
            values = json.loads(raw)
            return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})
        except (ValueError, TypeError) as err:
            raise TangpoemError(f"${ENV_VAR} is not valid server settings ({err})") from None


# ---------------------------------------------------------------- the request and the answer


def _limits(name: str) -> dict[str, Any]:
    """ge/le from the Config field's range, capped where CAPS says, and its help as the description."""
    meta = FIELDS[name].metadata
    lo, hi = meta["range"]
    if name in CAPS:
        hi = CAPS[name] if hi is None else min(hi, CAPS[name])
    out: dict[str, Any] = {"description": meta["help"]}
    if lo is not None:
        out["ge"] = int(lo) if FIELDS[name].type == "int" else lo
    if hi is not None:
        out["le"] = int(hi) if FIELDS[name].type == "int" else hi
    if FIELDS[name].type == "float":
        out["allow_inf_nan"] = False
    return out


def _default(name: str) -> Any:
    return getattr(OPTION_DEFAULTS, name)


def _clean_text(value: str, what: str) -> str:
    """No lone surrogates (JSON allows "\\ud800") nor control characters: neither is poem text. Line breaks
    and tabs are fine (a template typed over several lines): normalising drops all whitespace."""
    if not is_unicode(value):
        raise ValueError(f"{what} holds an invalid character (a lone UTF-16 surrogate); send UTF-8 text")
    bad = sorted(
        {f"U+{ord(ch):04X}" for ch in value if (ord(ch) < 32 and ch not in "\t\n\r") or 0x7F <= ord(ch) < 0xA0}
    )
    if bad:
        raise ValueError(f"{what} holds control characters ({', '.join(bad)}); send the poem's text only")
    return value


class PoemRequest(BaseModel):
    """Every generation option of `python -m tangpoem.generate`, as JSON. Omitted fields take their
    defaults; `seed` omitted or null picks a random one, which the answer reports (replay it)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    _legacy: bool = PrivateAttr(False)  # sent in the deprecated names: errors name `text` and `mode`

    title: str = Field("", max_length=MAX_TITLE, description=FIELDS["title"].metadata["help"], examples=["春夜喜雨"])
    title_guidance: float = Field(_default("title_guidance"), **_limits("title_guidance"))
    keywords: str = Field(
        "", max_length=MAX_TITLE, description=FIELDS["keywords"].metadata["help"], examples=["明月 故乡"]
    )
    keyword_pull: float = Field(_default("keyword_pull"), **_limits("keyword_pull"))
    plan: bool = Field(_default("plan"), description=FIELDS["plan"].metadata["help"])
    style: Literal["tang", "song"] = Field("tang", description=FIELDS["style"].metadata["help"])
    start_words: str = Field(
        "", max_length=MAX_TEXT, description="the opening words to go on from; with acrostic, the head characters",
        examples=["春花秋月"],
    )  # fmt: skip
    acrostic: bool = Field(False, description=FIELDS["acrostic"].metadata["help"])
    template: str = Field(
        "", max_length=MAX_TEXT, description="a poem with blanks □ (or _ ＿) to fill (instead of start_words)"
    )
    mode: Literal["continue", "acrostic", "template"] | None = Field(
        None, description=f"deprecated, dropped in tangpoem 0.2: use {DEPRECATED_FIELDS['mode']}"
    )
    text: str | None = Field(
        None, max_length=MAX_TEXT, description=f"deprecated, dropped in tangpoem 0.2: use {DEPRECATED_FIELDS['text']}"
    )
    prefix_words: str = Field("", max_length=MAX_PREFIX, description=FIELDS["prefix_words"].metadata["help"])
    form: FormName = Field("", description="fixed form: 五绝 七绝 五律 七律 (or wujue qijue wulv qilv)")
    line_length: int = Field(_default("line_length"), **_limits("line_length"))
    lines: int = Field(_default("lines"), **_limits("lines"))
    rhyme: bool | None = Field(None, description=FIELDS["rhyme"].metadata["help"])
    tones: bool | None = Field(None, description=FIELDS["tones"].metadata["help"])
    pattern: PatternName = Field("", description=FIELDS["pattern"].metadata["help"])
    temperature: float = Field(_default("temperature"), **_limits("temperature"))
    top_k: int = Field(_default("top_k"), **_limits("top_k"))
    top_p: float = Field(_default("top_p"), **_limits("top_p"))
    repetition_penalty: float = Field(_default("repetition_penalty"), **_limits("repetition_penalty"))
    repeat_guard: bool = Field(_default("repeat_guard"), description=FIELDS["repeat_guard"].metadata["help"])
    rhyme_lookahead: float = Field(_default("rhyme_lookahead"), **_limits("rhyme_lookahead"))
    candidates: int = Field(_default("candidates"), **_limits("candidates"))
    drafts: int = Field(_default("drafts"), **_limits("drafts"))
    seed: int | None = Field(
        None, ge=0, le=SEED_MAX, description="poem i of the answer uses seed + i (null: a random seed)"
    )
    num_poems: int = Field(_default("num_poems"), **_limits("num_poems"))
    max_gen_len: int = Field(_default("max_gen_len"), **_limits("max_gen_len"))

    @field_validator("form", mode="before")
    @classmethod
    def _form(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            try:
                return form_name(value.strip())  # wujue, 七言绝句, ... -> 五绝 (the CLI's names)
            except TangpoemError as err:
                raise ValueError(str(err)) from None
        return value.strip() if isinstance(value, str) else value

    @field_validator("title", "keywords", "start_words", "template", "text", "prefix_words")
    @classmethod
    def _text(cls, value: str | None, info) -> str | None:
        return None if value is None else _clean_text(value, info.field_name)

    @model_validator(mode="after")
    def _work(self) -> PoemRequest:
        if self.mode is not None or self.text is not None:  # the earlier vocabulary, for one more release
            names = ("mode", "text", "start_words", "acrostic", "template")
            try:
                translated = translate_deprecated({name: getattr(self, name) for name in names})
            except TangpoemError as err:
                raise ValueError(str(err)) from None
            for name in names[2:]:
                setattr(self, name, translated[name])
            self.mode = self.text = None
            self._legacy = True
        rows = self.num_poems * self.candidates * self.drafts
        if rows > MAX_REQUEST_ROWS:
            limit = MAX_REQUEST_ROWS
            raise ValueError(f"num_poems x candidates x drafts is {rows}, at most {limit}; send several requests")
        if self.seed is not None and self.seed + self.num_poems - 1 > SEED_MAX:
            raise ValueError(f"seed + num_poems - 1 must be at most {SEED_MAX} (poem i uses seed + i)")
        return self

    def request(self, seed: int) -> GenerationConfig:
        return GenerationConfig(**self.model_dump(exclude={"mode", "text", "seed"}), seed=seed)


class PoemOut(BaseModel):
    text: str
    lines: list[str] = Field(description="the poem's lines (句), each with its closing punctuation")
    couplets: list[str]
    seed: int = Field(description="this poem again: the same settings with this seed and num_poems 1")
    ended: str = Field(description="eop (the model ended it), shape (last line of the form) or max_gen_len")
    score: float | None = Field(description="mean log-probability per character (with candidates/drafts)")
    rhyme: str = Field(description="the 平水韵 group(s) it rhymes on")
    pattern: str = Field(description="the tone pattern it keeps (with tones)")
    title: str = Field("", description="the title it was written to, as the model read it (cleaned)")
    keywords: list[str] = Field([], description="the words its lines were pulled toward: the keywords, or its plan")


class PoemsAnswer(BaseModel):
    poems: list[PoemOut]
    settings: dict[str, Any] = Field(
        description="the request in the settings' names (those of `--json`), every default and the seed filled in"
    )
    elapsed_ms: float


class FieldError(BaseModel):
    field: str | None
    message: str


class ErrorAnswer(BaseModel):
    detail: str = Field(description="what is wrong and how to fix it")
    field: str | None = Field(None, description="the request field it concerns, when known")
    errors: list[FieldError] = Field(default_factory=list)
    chars: list[str] = Field(default_factory=list, description="characters the model does not know")


# ---------------------------------------------------------------- errors: which field, in API words


def request_settings() -> dict[str, dict[str, Any]]:
    """Each setting of PoemRequest (the deprecated names left out) with what its JSON schema says of it:
    type, default, minimum/maximum, maxLength, choices (enum) and description."""
    schema = PoemRequest.model_json_schema()
    out = {}
    for name, prop in schema["properties"].items():
        if name in DEPRECATED_FIELDS:
            continue
        variants = prop.get("anyOf", [prop])
        info = {"default": prop.get("default"), "description": prop.get("description", "")}
        for variant in variants:
            for key in ("type", "minimum", "maximum", "maxLength", "enum"):
                if key in variant and not (key == "type" and variant[key] == "null"):
                    info.setdefault(key, variant[key])
        info["nullable"] = any(v.get("type") == "null" for v in variants)
        out[name] = info
    return out


def api_words(message: str) -> str:
    """The command line's flags in a Poet message as the JSON fields (the same names, snake_case)."""
    message = re.sub(r"--no-([a-z][a-z-]*)", lambda m: f'"{m.group(1).replace("-", "_")}": false', message)
    message = re.sub(r"--start-words '' to let the model begin", "an empty start_words to let the model begin", message)
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), message)


def unknown_chars(message: str) -> list[str]:
    """The characters a vocabulary message names ('龘' (U+9F98)), for the page to mark."""
    if "vocabulary" not in message:
        return []
    return list(dict.fromkeys(re.findall(r"'(.)' \(U\+[0-9A-F]{4,6}\)", message)))


def _error(status: int, detail: str, field: str | None = None, errors: list[dict] | None = None, **kw) -> JSONResponse:
    errors = errors if errors is not None else [{"field": field, "message": detail}]
    body = {"detail": detail, "field": field, "errors": errors, "chars": kw.pop("chars", [])}
    return JSONResponse(body, status_code=status, **kw)


def _validation_message(err: dict) -> tuple[str | None, str]:
    """(field, message) of one pydantic error, in words a person can act on."""
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    kind, msg = err.get("type", ""), str(err.get("msg", "invalid"))
    name = loc[0] if loc and not loc[0].isdigit() else None
    if kind == "json_invalid":
        return None, f"the body is not valid JSON ({err.get('ctx', {}).get('error', msg)}); send a JSON object"
    if kind == "missing" and not loc:
        return None, 'send a JSON object of settings, e.g. {"start_words": "春花秋月", "acrostic": true}'
    if kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
        return None, "the body must be a JSON object of settings (Content-Type: application/json)"
    if kind == "extra_forbidden":
        known = ", ".join(PoemRequest.model_fields)
        return None, f"unknown setting '{name}'; the settings are: {known}"
    msg = msg.removeprefix("Value error, ")
    if name is None:  # the whole request's checks (_work) begin with the field they are about
        lead = re.match(r"^([a-z_]+)", msg)
        name = lead.group(1) if lead and lead.group(1) in PoemRequest.model_fields else None
        return name, msg
    return name, f"{name}: {msg}"


# ---------------------------------------------------------------- the decode thread


class Busy(Exception):
    """The queue is full."""


@dataclass
class _Job:
    request: GenerationConfig
    rows: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)


class _Internal(Exception):
    """An exception that is not the user's (a bug): logged with its traceback, answered 500 without one."""


class Decoder:
    """One thread owns the Poet and decodes, per `write_batch` call, every request that arrived while
    it was busy (up to batch_rows rows); requests wait in a bounded queue.

    Under load it also waits up to gather_ms for the clients it just answered: they send their next
    requests within milliseconds of their answers, and without the wait the first of them would start
    a batch alone while the rest wait a whole decode for the next one (p95 at 8 clients was twice a
    batch). It counts only requests that arrived after its last answers, besides those already waiting,
    so two groups of clients that fell out of step are joined again rather than kept apart. A lone
    client never waits: the last batch answered one request, its own.
    """

    def __init__(self, poet: Poet, queue_size: int, batch_rows: int, gather_ms: float = GATHER_MS):
        self.poet = poet
        self.batch_rows = batch_rows
        self.gather_s = gather_ms / 1000
        self.answered, self.answered_at = 0, 0.0  # requests the last batch answered, and when
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.batches = 0  # write_batch calls, and the requests they held (health: how much batching happens)
        self.requests = 0

    def start(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="tangpoem-decoder", daemon=True)
                self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self.lock:
            thread, self.thread = self.thread, None
        if thread is None:
            return
        try:
            self.jobs.put(None, timeout=timeout)
        except queue.Full:
            pass  # the daemon thread ends with the process
        thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    async def write(self, request: GenerationConfig) -> list[Poem]:
        self.start()
        loop = asyncio.get_running_loop()
        rows = request.num_poems * request.candidates * request.drafts
        job = _Job(request, rows, loop.create_future(), loop)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise Busy from None
        return await job.future

    def _run(self) -> None:
        carried: _Job | None = None  # taken from the queue but did not fit the last batch
        while True:
            job = carried if carried is not None else self.jobs.get()
            carried = None
            if job is None:
                return
            batch, rows, stop = [job], job.rows, False
            deadline = time.monotonic() + self.gather_s
            returned = int(job.arrived >= self.answered_at)  # of the clients the last batch answered
            while True:
                wait = deadline - time.monotonic() if returned < self.answered else 0.0
                try:
                    more = self.jobs.get(timeout=wait) if wait > 0 else self.jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if rows + more.rows > self.batch_rows:
                    carried = more
                    break
                batch.append(more)
                rows += more.rows
                returned += more.arrived >= self.answered_at
            batch = [j for j in batch if not j.future.done()]  # a client that left is not decoded for
            if batch:
                results = self._write(batch)
                self.batches += 1
                self.requests += len(batch)
                self.answered, self.answered_at = len(batch), time.monotonic()
                for j, result in zip(batch, results, strict=True):
                    try:
                        j.loop.call_soon_threadsafe(_settle, j.future, result)
                    except RuntimeError:  # that event loop has closed (server shutting down): nobody waits
                        pass
            if stop:
                return

    def _write(self, batch: list[_Job]) -> list[Any]:
        try:
            return self.poet.write_batch([j.request for j in batch])
        except Exception as err:  # a bug, not the user's input: fail only the request that meets it
            if len(batch) > 1:
                return [self._write([j])[0] for j in batch]
            log.exception("decoding failed: %s", batch[0].request)
            return [_Internal(f"{type(err).__name__}: {err}")]


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


# ---------------------------------------------------------------- body size


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before the app reads it
    (Content-Length, or counted while it arrives for a chunked body); the app gets the buffered body."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send) -> None:
        response = _error(413, f"the request body is over {self.limit:,} bytes; send only the settings")
        await response(scope, receive, send)


# ---------------------------------------------------------------- the app


# What /api/health tells about the model: its shape and training record, not the machine's paths
HEALTH_META = ("epoch", "global_step", "train_seconds", "bundled")
HEALTH_RECIPE = ("embedding_dim", "hidden_dim", "num_layers", "dropout", "embedding_dropout", "batch_size", "lr",
                 "lr_schedule", "warmup_steps", "min_lr", "max_steps", "epoch", "seed")  # fmt: skip


def model_info(poet: Poet) -> dict[str, Any]:
    ckpt = poet.ckpt
    if ckpt is None:
        return {"vocab_size": len(poet.vocab)}
    info: dict[str, Any] = {"name": Path(ckpt.path).name, **ckpt.model_config.to_dict()}
    info["steps"] = ckpt.meta.get("global_step")
    meta = {k: ckpt.meta[k] for k in HEALTH_META if k in ckpt.meta}
    if isinstance(meta.get("bundled"), dict):  # the shipped model's record, its recipe without paths
        meta["bundled"] = {k: v for k, v in meta["bundled"].items() if k not in ("recipe", "source_checkpoint")}
    config = ckpt.meta.get("config")
    if isinstance(config, dict):
        meta["config"] = {k: config[k] for k in HEALTH_RECIPE if k in config}
    info["meta"] = meta
    return info


def create_app(settings: ServeSettings, poet: Poet | None = None) -> FastAPI:
    """The app over `poet` (loaded from settings.model_path when not given)."""
    if poet is None:
        poet = Poet.load(settings.model_path or None, num_threads=settings.num_threads)
    if hasattr(poet.step, "fill_input_table"):
        poet.step.fill_input_table()  # at once (~1 s, 73 MB for the bundled model): RSS flat from the start
    decoder = Decoder(poet, settings.queue_size, settings.batch_rows, settings.gather_ms)
    model = model_info(poet)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        decoder.start()
        yield
        await asyncio.to_thread(decoder.stop)

    from tangpoem import __version__

    app = FastAPI(
        title="tangpoem",
        version=__version__,
        description="Tang poems from a character-level LSTM: continuation, acrostic, templates and the four "
        "forms. The page is at `/`.",
        lifespan=lifespan,
    )
    app.state.decoder = decoder
    app.state.poet = poet

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [dict(zip(("field", "message"), _validation_message(e), strict=True)) for e in exc.errors()]
        first = errors[0] if errors else {"field": None, "message": "invalid request"}
        return _error(422, "; ".join(e["message"] for e in errors), first["field"], errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and request.url.path == "/api/poems":  # a body FastAPI could not decode
            return _error(422, "the body is not JSON in UTF-8; send a JSON object of settings")
        words = {404: "nothing here: the page is at / and the API at /api/poems (see /docs)",
                 405: f"{request.method} is not allowed here (POST /api/poems, GET /api/health)"}  # fmt: skip
        return _error(exc.status_code, words.get(exc.status_code, str(exc.detail)), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # the net: never a traceback out
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the server's log has the details")

    @app.post(
        "/api/poems",
        response_model=PoemsAnswer,
        responses={422: {"model": ErrorAnswer}, 413: {"model": ErrorAnswer}, 503: {"model": ErrorAnswer}},
        summary="Write poems",
    )
    async def poems(req: PoemRequest) -> Any:
        """Poems for one request. Replay poem i: the answer's `settings` with its `seed` and num_poems 1."""
        started = time.perf_counter()
        seed = req.seed if req.seed is not None else secrets.randbelow(SEED_MAX - req.num_poems + 2)
        try:
            written = await decoder.write(req.request(seed))
        except Busy:
            waiting = settings.queue_size
            return _error(
                503, f"the server is busy ({waiting} requests are waiting); try again in a moment",
                headers={"Retry-After": "1"},
            )  # fmt: skip
        except TangpoemError as err:
            message = api_words(str(err))
            field = LEGACY_FIELDS.get(err.field, err.field) if req._legacy else err.field
            return _error(422, message, field, chars=unknown_chars(str(err)))
        except _Internal:
            return _error(500, "internal error while writing; the server's log has the details")
        return {
            "poems": [p.to_dict() for p in written],
            "settings": req.model_copy(update={"seed": seed}).model_dump(exclude={"mode", "text"}),
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    @app.get("/api/settings", summary="Every request setting: its default, limits, choices and meaning")
    async def settings_info() -> dict[str, Any]:
        """What the page builds its form from, so that it never copies a default or a limit."""
        return {"settings": request_settings(), "limits": {"rows_per_request": MAX_REQUEST_ROWS}}

    @app.get("/api/health", summary="The model and whether the server is ready")
    async def health() -> dict[str, Any]:
        return {
            "ready": decoder.alive,
            "model": model,
            "backend": poet.backend,
            "limits": {"body_bytes": MAX_BODY, "text": MAX_TEXT, "rows_per_request": MAX_REQUEST_ROWS, **CAPS},
            "queue": {"waiting": decoder.jobs.qsize(), "capacity": settings.queue_size},
            # this process's decoder (with --workers N, whichever worker answered: pid says which)
            "decoded": {"requests": decoder.requests, "batches": decoder.batches, "pid": os.getpid()},
            "version": __version__,
        }

    page_headers = {  # the page loads only its own files: this keeps it so (and offline-proof)
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=page_headers)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors, allow_methods=["GET", "POST"], allow_headers=["Content-Type"]
        )
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    return app


if AutoHTTPProtocol is not None:

    class NoDelayHTTP(AutoHTTPProtocol):
        """uvicorn's HTTP protocol with Nagle's algorithm off on every connection, for --workers N.

        There the listening socket comes from uvicorn's supervisor, made without a protocol number, so
        asyncio does not recognise its connections as TCP and leaves Nagle on: an answer's second
        segment then waits for the client's delayed ACK, and every request took 40 ms longer (a health
        check 44 ms against 0.9 with one worker; benchmarks/README.md).
        """

        def connection_made(self, transport: asyncio.Transport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)


def app_from_env() -> FastAPI:
    """The factory uvicorn's worker processes call (`tangpoem.serve:app_from_env`, --workers N)."""
    return create_app(ServeSettings.from_env())


# ---------------------------------------------------------------- CLI


def host_warning(host: str) -> str | None:
    """One line when the server listens beyond this machine (it has no login)."""
    if host in LOCAL_HOSTS:
        return None
    return (
        f"warning: serving on {host}: anyone who can reach it can use this server (no login); "
        "--host 127.0.0.1 keeps it on this machine"
    )


def check_listen_address(host: str, port: int) -> None:
    """A host that does not resolve or a port already taken is one line before uvicorn starts (uvicorn says it
    in six log lines and exits 3). Bound and released at once: the server binds it again a moment later."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as err:
        raise TangpoemError(f"--host {host} is not an address of this machine ({err}); try --host 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise TangpoemError(
                    f"port {port} on {host} is already in use (another server?); choose another, e.g. --port {port + 1}"
                ) from None
            raise TangpoemError(f"cannot listen on {host}:{port} ({err.strerror}); try --host 127.0.0.1") from None


SETTINGS = COMMANDS["tangpoem.serve"]
DEFAULTS = {"num_threads": 1}


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m tangpoem.serve", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    add_config_args(parser, SETTINGS, DEFAULTS)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default: 1)")
    parser.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                        help="let pages from ORIGIN (e.g. http://localhost:3000) call the API; repeatable")  # fmt: skip
    parser.add_argument("--queue", type=int, default=64, help="requests that may wait for the decoder (default: 64)")
    parser.add_argument("--gather-ms", type=float, default=GATHER_MS, metavar="MS",
                        help=f"under load, how long a batch may wait for the clients of the last one (default: "
                        f"{GATHER_MS:g}; 0: never)")  # fmt: skip
    cfg, args = parse_config_args(parser, argv)
    if not 0 <= args.port <= 65535:
        raise TangpoemError(f"--port must be 0 to 65535, not {args.port}")
    if not 1 <= args.workers <= 64:
        raise TangpoemError(f"--workers must be 1 to 64, not {args.workers}")
    if not 1 <= args.queue <= 100_000:
        raise TangpoemError(f"--queue must be 1 to 100000, not {args.queue}")
    if not 0 <= args.gather_ms <= 1000:  # also refuses nan
        raise TangpoemError(f"--gather-ms must be 0 to 1000, not {args.gather_ms}")
    for origin in args.cors:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise TangpoemError(f"--cors takes an origin such as http://localhost:3000 (no path), not '{origin}'")
    try:
        import uvicorn
    except ImportError as err:
        raise TangpoemError(
            f"the server needs uvicorn ({err}); install it with: pip install 'tangpoem[serve]'"
        ) from None

    # as `generate`: a named checkpoint must exist; else the configured one, your newest, then the bundled model
    path = resolve_model(cfg, named="model_path" in vars(args))
    settings = ServeSettings(path, cfg.num_threads, args.queue, cors=args.cors, gather_ms=args.gather_ms)
    check_listen_address(args.host, args.port)
    warning = host_warning(args.host)
    if warning:
        print(warning, file=sys.stderr)
    if args.workers == 1:
        app = create_app(settings, Poet.load(path, num_threads=cfg.num_threads))
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    else:
        from tangpoem.checkpoint import load_checkpoint

        load_checkpoint(path)  # a bad path is one line here, not a traceback in every worker
        os.environ[ENV_VAR] = settings.to_env()
        uvicorn.run(
            "tangpoem.serve:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers,
            http=NoDelayHTTP, log_level="info",
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
