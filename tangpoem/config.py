"""One Config for every command: defaults, then a TOML file (`--config`), then per-field flags.

The defaults are the Paddle tutorial's Config ("Using LSTM write Tang poetry"); `configs/seed.toml`
spells the same values out. Each command takes the settings it uses, one flag per field named after
it (`batch_size` -> `--batch-size 32`, `use_gpu` -> `--use-gpu` / `--no-use-gpu`); a flag of another
command is refused with a line saying which command takes it. A config file may hold the settings
of every command (a recipe: train with it, then generate with it); each command reads its own.
Every value is checked against its field's range here, so no command sees a negative learning rate,
a NaN temperature or a million poems.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tangpoem.errors import TangpoemError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
# configs/ ships inside the wheel as tangpoem/configs (pyproject's package-dir); a checkout has it at the top
CONFIG_DIRS = (PACKAGE_DIR / "configs", PROJECT_ROOT / "configs")
BIG = 10**9  # "absurdly large" for counts that have no natural bound


def _f(default: Any, help: str, lo: float | None = None, hi: float | None = None, choices: tuple = ()) -> Any:
    return field(default=default, metadata={"help": help, "range": (lo, hi), "choices": choices})


@dataclass
class Config:
    # --- the tutorial's fields, with its values ---
    num_layers: int = _f(3, "LSTM layers", 1, 16)
    data_path: str = _f("work/tang_poem.npz", "corpus npz (built by `python -m tangpoem.data build`)")
    lr: float = _f(1e-3, "Adam learning rate (the peak, with a schedule)", 1e-8, 10.0)
    use_gpu: bool = _f(True, "use a CUDA GPU when Paddle has one (falls back to CPU with a notice)")
    epoch: int = _f(20, "training epochs", 1, 100_000)
    batch_size: int = _f(4, "poems per batch", 1, 65_536)
    maxlen: int = _f(
        125, "tokens per poem row of the npz `tangpoem.data build` writes (<START> + poem + <EOP>)", 3, 100_000
    )
    plot_every: int = _f(1000, "log losses and sample poems every N steps", 1, BIG)
    max_gen_len: int = _f(200, "longest poem the generator writes, in characters and punctuation", 1, 10_000)
    model_path: str = _f("work/checkpoints/model.params.50", "checkpoint to generate/evaluate with")
    prefix_words: str = _f("欲穷千里目,更上一层楼", "words that set the mood; fed first, never printed")
    start_words: str = _f("老夫聊发少年狂,", "opening words (continuation) or head characters (acrostic)")
    model_prefix: str = _f(
        "work/checkpoints/model.params",
        "checkpoints are PREFIX.N after epoch N and PREFIX.stepS when stopped at step S",
    )
    embedding_dim: int = _f(256, "character embedding size", 1, 65_536)
    hidden_dim: int = _f(512, "LSTM hidden size", 1, 65_536)

    # --- model ---
    dropout: float = _f(
        0.0, "dropout on LSTM outputs while training: between layers and before the output layer", 0, 0.95
    )
    embedding_dropout: float = _f(0.0, "dropout on the character embeddings (the LSTM's input) while training", 0, 0.95)
    output_cutoffs: str = _f(
        "",
        "adaptive softmax: frequency ranks where the output's clusters start, e.g. '2000,6000': the 2,000 "
        "most frequent characters get the full-width output, the rest narrower ones ('': one full softmax)",
    )

    # --- data and training ---
    batching: str = _f(
        "bucket",
        "'bucket': batch poems of similar length, no compute on padding; 'padded': the tutorial's fixed rows",
        choices=("bucket", "padded"),
    )
    mask_padding: bool = _f(True, "leave </s> padding out of the loss (--no-mask-padding: tutorial)")
    grad_clip: float = _f(1.0, "clip gradients to this global norm (0: off)", 0, 1e6)
    lr_schedule: str = _f(
        "constant", "'constant' (the tutorial) or 'cosine': decay from lr to min_lr by the last step",
        choices=("constant", "cosine"),
    )  # fmt: skip
    warmup_steps: int = _f(0, "raise the learning rate linearly from 0 over this many steps", 0, BIG)
    min_lr: float = _f(0.0, "the learning rate at the last step of a 'cosine' schedule", 0, 10.0)
    schedule_start: int = _f(
        0, "the step the learning-rate schedule starts from (warm-up, then to max_steps): a later stage's first", 0, BIG
    )
    amp: bool = _f(False, "mixed precision (GPU only)")
    seed: int = _f(0, "random seed for shuffling, initialisation and sampling", 0, 2**31 - 1)
    num_threads: int = _f(0, "CPU threads (0: one per CPU this process may use)", 0, 1024)
    max_steps: int = _f(0, "stop after this many optimizer steps, with a checkpoint (0: no limit)", 0, BIG)
    max_minutes: float = _f(0.0, "stop after this many minutes, with a checkpoint (0: no limit)", 0, 1e7)
    resume: str = _f("", "'latest', a checkpoint path or 'bundled' to continue training from")
    eval_batches: int = _f(20, "held-out poems for the logged loss: this many batches' worth (0: all)", 0, BIG)
    train_collections: str = _f(
        "", "train on these collections only, comma-separated, e.g. tang (default: every one the data file holds)"
    )
    title_dropout: float = _f(
        0.25, "share of training poems shown without their title (npz with titles), so one model writes both", 0, 1
    )
    log_dir: str = _f("work/logs", "VisualDL log directory")

    # --- generation ---
    title: str = _f("", "the poem's title; a model trained with titles writes to it (a few characters, e.g. 春夜喜雨)")
    title_guidance: float = _f(
        3.0, "how strongly the poem keeps to its title (classifier-free guidance; 1: the plain model)", 0, 10
    )
    keywords: str = _f("", "words the poem writes in this order, one per line, where the model chooses, e.g. 明月 故乡")
    keyword_pull: float = _f(
        6.0,
        "nats a given keyword gains on its logit while its line is due to write it (put in where it would be missed)",
        0,
        20,
    )
    plan: bool = _f(
        False, "with a title and no keywords: a keyword per line from what the title called up in the poets' poems"
    )
    style: str = _f("tang", "write as the Tang or the Song poets (a model trained on both)", choices=("tang", "song"))
    acrostic: bool = _f(False, "start_words are head characters: line i starts with the i-th")
    template: str = _f("", "a poem with blanks (□ _ ＿) for the model to fill, e.g. 床前明月光，□□□□□。")
    form: str = _f("", "fixed form: 五绝 七绝 五律 七律 (or wujue qijue wulv qilv)")
    line_length: int = _f(0, "characters per line (0: the form's, else 5 or 7 as the model chooses)", 0, 15)
    lines: int = _f(0, "number of lines (0: the form's or the model's choice)", 0, 1000)
    rhyme: bool | None = _f(None, "平水韵 rhyme: even lines end on one level rhyme group (default: on for forms)")
    tones: bool | None = _f(None, "the 平仄 patterns of regulated verse, 5- or 7-character lines (default: off)")
    pattern: str = _f("", "tone pattern with --tones: 平起入韵 平起不入韵 仄起入韵 仄起不入韵 (default: any)")
    temperature: float = _f(0.4, "sampling temperature; 0 is greedy (the tutorial)", 0, 100)
    top_k: int = _f(0, "sample from the k most likely characters (0: off)", 0, BIG)
    top_p: float = _f(0.9, "sample from the smallest set with this much probability (1: off)", 1e-9, 1)
    repetition_penalty: float = _f(
        2.0, "nats off the logit of characters the poem already has: Tang verse avoids repeating one (0: off)", 0, 100
    )
    repeat_guard: bool = _f(True, "never the same character three times in a row")
    rhyme_lookahead: float = _f(
        2.0, "how much the character before a rhyme leans toward those a good rhyme can follow (0: off)", 0, 5
    )
    candidates: int = _f(1, "write K poems per poem asked for and keep the likeliest per character", 1, 64)
    drafts: int = _f(1, "write each couplet N times and keep the likeliest per character", 1, 64)
    num_poems: int = _f(1, "poems to write at once, decoded as one batch", 1, 1000)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(Config)}
FIELD_TYPES = {name: f.type.replace(" | None", "") for name, f in FIELDS.items()}

# The settings each command takes, in one table: a command's module reads its row (train.SETTINGS, ...),
# and a flag of another command is refused with the name of the commands whose rows hold it
MODEL_SHAPE = ("embedding_dim", "hidden_dim", "num_layers", "dropout", "embedding_dropout", "output_cutoffs")
GENERATION = (
    "model_path", "title", "title_guidance", "keywords", "keyword_pull", "plan", "style", "prefix_words",
    "start_words", "acrostic", "template", "form", "line_length", "lines", "rhyme", "tones", "pattern", "temperature",
    "top_k", "top_p", "repetition_penalty", "repeat_guard", "rhyme_lookahead", "candidates", "drafts", "num_poems",
    "max_gen_len", "seed", "num_threads",
)  # fmt: skip
COMMANDS = {  # for the message that names the command a stray flag belongs to
    "tangpoem.data build": ("data_path", "maxlen"),
    "tangpoem.train": (
        *MODEL_SHAPE,
        "data_path",
        "lr",
        "use_gpu",
        "epoch",
        "batch_size",
        "plot_every",
        "model_prefix",
        "batching",
        "mask_padding",
        "grad_clip",
        "lr_schedule",
        "warmup_steps",
        "min_lr",
        "schedule_start",
        "amp",
        "seed",
        "num_threads",
        "max_steps",
        "max_minutes",
        "resume",
        "eval_batches",
        "train_collections",
        "title_dropout",
        "log_dir",
    ),  # fmt: skip
    "tangpoem.generate": GENERATION,
    "tangpoem.evaluate": (
        "model_path",
        "data_path",
        "use_gpu",
        "num_threads",
        "prefix_words",
        "rhyme",
        "tones",
        "pattern",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "repeat_guard",
        "candidates",
        "drafts",
        "seed",
        "max_gen_len",
    ),  # fmt: skip
    "tangpoem.export": ("model_path", "num_threads"),
    "tangpoem.serve": ("model_path", "num_threads"),
}


@dataclass
class ModelConfig:
    """The network's shape, as a checkpoint records it (here, not in model.py, so that reading a
    checkpoint does not import Paddle: the numpy generator and the server never need it)."""

    vocab_size: int
    embedding_dim: int = 256
    hidden_dim: int = 512
    num_layers: int = 3
    dropout: float = 0.0
    embedding_dropout: float = 0.0
    output_cutoffs: list[int] = field(default_factory=list)  # adaptive softmax; [] is one full softmax

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def clusters(self) -> list[tuple[int, int, int]]:
        """The adaptive softmax's tail clusters: (first rank, end rank, projection width), cluster k's
        projection hidden_dim / 4**(k+1) wide (PyTorch's div_value=4)."""
        edges = [*self.output_cutoffs, self.vocab_size]
        return [(edges[k], edges[k + 1], max(1, self.hidden_dim // 4 ** (k + 1))) for k in range(len(edges) - 1)]


def parse_cutoffs(text: str, vocab_size: int) -> list[int]:
    """'2000,6000' -> [2000, 6000]: increasing ranks between 1 and vocab_size - 1 ('' -> [])."""
    if not text.strip():
        return []
    hint = "give increasing frequency ranks inside the vocabulary, e.g. --output-cutoffs 2000,6000, or '' for none"
    try:
        cutoffs = [int(part) for part in text.split(",")]
    except ValueError:
        raise TangpoemError(f"--output-cutoffs '{text}' is not numbers; {hint}", field="output_cutoffs") from None
    if cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1 or cutoffs[-1] >= vocab_size:
        raise TangpoemError(
            f"--output-cutoffs {text} does not fit a vocabulary of {vocab_size:,}; {hint}", field="output_cutoffs"
        )
    return cutoffs


def config_dirs() -> list[Path]:
    return [d for d in (*CONFIG_DIRS, Path("configs")) if d.is_dir()]


def resolve_config_path(name: str) -> Path:
    """`cpu`, `cpu.toml`, `configs/cpu.toml` and any path to a TOML file all work."""
    candidates = [Path(name)] + [d / n for d in config_dirs() for n in (name, f"{name}.toml")]
    for path in candidates:
        if path.is_file():
            return path
    if Path(name).is_dir():
        raise TangpoemError(f"config '{name}' is a folder; give a TOML file or the name of one in configs/")
    known = ", ".join(sorted({p.stem for d in config_dirs() for p in d.glob("*.toml")}))
    raise TangpoemError(f"config file '{name}' not found (known configs: {known})")


def load_toml(path: str | Path) -> dict[str, Any]:
    path = resolve_config_path(str(path))
    try:
        text = path.read_bytes().decode("utf-8")
        values = tomllib.loads(text)
    except OSError as err:
        raise TangpoemError(f"cannot read config {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise TangpoemError(f"{path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise TangpoemError(f"{path} is not valid TOML: {err}") from None
    unknown = sorted(set(values) - set(FIELD_TYPES))
    if unknown:
        raise TangpoemError(f"{path}: unknown setting(s) {', '.join(unknown)}; see `--help` for the list")
    return values


def is_unicode(text: str) -> bool:
    """False for text with lone surrogates: what Python makes of command-line bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_value(name: str, value: Any) -> Any:
    """The value as the field's type, within its range; a TangpoemError naming the flag otherwise."""
    f = FIELDS[name]
    kind = FIELD_TYPES[name]
    flag = "--" + name.replace("_", "-")
    if value is None and "None" in f.type:
        return None
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise TangpoemError(f"setting '{name}' must be a {kind}, got {value!r}", field=name)
    if kind == "float":
        value = float(value)
    if kind == "str" and not is_unicode(value):
        raise TangpoemError(
            f"{flag} is not UTF-8 text (the terminal sent other bytes, e.g. GBK); switch the terminal to UTF-8 "
            "(e.g. LANG=C.UTF-8) and type it again",
            field=name,
        )
    lo, hi = f.metadata["range"]
    if kind in ("int", "float") and not (
        math.isfinite(value) and (lo is None or value >= lo) and (hi is None or value <= hi)
    ):
        raise TangpoemError(f"{flag} must be between {lo:g} and {hi:g}, not {value!r}", field=name)
    choices = f.metadata["choices"]
    if choices and value not in choices:
        raise TangpoemError(f"{flag} must be one of {', '.join(choices)}, not '{value}'", field=name)
    return value


def make_config(
    overrides: dict[str, Any] | None = None, config_file: str | None = None, defaults: dict[str, Any] | None = None
) -> Config:
    """A command's defaults, then the file, then the overrides (later wins); every value checked."""
    values: dict[str, Any] = dict(defaults or {})
    if config_file:
        values.update(load_toml(config_file))
    values.update(overrides or {})
    return Config(**{k: check_value(k, v) for k, v in values.items()})


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr and exit 2, like every other bad input."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise TangpoemError(f"{message} (see `{self.prog} --help`)")


def add_config_args(
    parser: argparse.ArgumentParser, settings: Iterable[str] | None = None, defaults: dict[str, Any] | None = None
) -> argparse.ArgumentParser:
    """Add `--config FILE` and one flag per setting this command takes (all Config fields if None).

    `defaults` are this command's own defaults where they differ from Config's (shown in --help).
    """
    names = list(settings) if settings is not None else list(FIELDS)
    parser.set_defaults(_settings=names, _defaults=dict(defaults or {}))
    parser.add_argument("-c", "--config", help="TOML file, or the name of one in configs/ (e.g. cpu)")
    group = parser.add_argument_group("settings (each overrides the config file)")
    types = {"int": int, "float": float, "str": str}
    for name in names:
        f = FIELDS[name]
        flag = "--" + name.replace("_", "-")
        default = (defaults or {}).get(name, f.default)
        shown = "" if default is None else f" (default: {default})"  # None: the help says what decides
        helptext = f"{f.metadata['help']}{shown}"
        if FIELD_TYPES[name] == "bool":
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=helptext
            )
        else:
            kind = FIELD_TYPES[name]
            group.add_argument(
                flag, dest=name, type=types[kind], default=argparse.SUPPRESS, metavar=kind.upper(), help=helptext
            )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def parse_config_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    """Parse argv; a setting of another command gets a line naming the command that takes it."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        flag = extra[0].split("=", 1)[0]
        name = flag.lstrip("-").replace("-", "_").removeprefix("no_")
        if flag.startswith("--") and name in FIELDS:
            owners = [cmd for cmd, names in COMMANDS.items() if name in names]
            where = f"a setting of {' and '.join(owners)}" if owners else "not a setting of any command"
            raise TangpoemError(f"{flag} is {where}; `{parser.prog}` does not use it (see --help for its settings)")
        raise TangpoemError(f"unrecognized argument {extra[0]} (see `{parser.prog} --help`)")
    return config_from_args(args), args


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {k: v for k, v in vars(args).items() if k in FIELD_TYPES}
    return make_config(overrides, args.config, getattr(args, "_defaults", None))
