"""One Config for every command: defaults, then a TOML file (`--config`), then per-field flags.

The defaults are the Paddle tutorial's Config ("Using LSTM write Tang poetry"); `configs/seed.toml`
spells the same values out. Every field can be set on the command line by a flag named after it:
`batch_size` -> `--batch-size 32`, `use_gpu` -> `--use-gpu` / `--no-use-gpu`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tangpoem.errors import TangpoemError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # --- the tutorial's fields, with its values ---
    num_layers: int = _f(3, "LSTM layers")
    data_path: str = _f("work/tang_poem.npz", "corpus npz (built by `python -m tangpoem.data build`)")
    lr: float = _f(1e-3, "Adam learning rate (the peak, with a schedule)")
    use_gpu: bool = _f(True, "use a CUDA GPU when Paddle has one (falls back to CPU with a notice)")
    epoch: int = _f(20, "training epochs")
    batch_size: int = _f(4, "poems per batch")
    maxlen: int = _f(125, "tokens per poem row in the npz (<START> + poem + <EOP>, padded/cut)")
    plot_every: int = _f(1000, "log losses and sample poems every N steps")
    max_gen_len: int = _f(200, "longest poem the generator writes, in characters")
    model_path: str = _f("work/checkpoints/model.params.50", "checkpoint to generate/evaluate with")
    prefix_words: str = _f("欲穷千里目,更上一层楼", "words that set the mood; fed first, never printed")
    start_words: str = _f("老夫聊发少年狂,", "opening words (continuation) or head characters (acrostic)")
    model_prefix: str = _f("work/checkpoints/model.params", "checkpoints are written as PREFIX.EPOCH")
    embedding_dim: int = _f(256, "character embedding size")
    hidden_dim: int = _f(512, "LSTM hidden size")

    # --- model ---
    dropout: float = _f(0.0, "dropout on LSTM outputs while training: between layers and before the output layer")

    # --- data and training ---
    batching: str = _f(
        "bucket", "'bucket': batch poems of similar length, no compute on padding; 'padded': the tutorial's fixed rows"
    )
    mask_padding: bool = _f(True, "leave </s> padding out of the loss (--no-mask-padding: tutorial)")
    grad_clip: float = _f(1.0, "clip gradients to this global norm (0: off)")
    lr_schedule: str = _f("constant", "'constant' (the tutorial) or 'cosine': decay from lr to min_lr by the last step")
    warmup_steps: int = _f(0, "raise the learning rate linearly from 0 over this many steps")
    min_lr: float = _f(0.0, "the learning rate at the last step of a 'cosine' schedule")
    amp: bool = _f(False, "mixed precision (GPU only)")
    seed: int = _f(0, "random seed for shuffling, initialisation and sampling")
    num_threads: int = _f(0, "CPU threads for Paddle (0: one per core)")
    max_steps: int = _f(0, "stop after this many optimizer steps, with a checkpoint (0: no limit)")
    max_minutes: float = _f(0.0, "stop after this many minutes, with a checkpoint (0: no limit)")
    resume: str = _f("", "'latest' or a checkpoint path to continue training from")
    eval_batches: int = _f(20, "held-out batches used for the loss logged during training (0: all)")
    log_dir: str = _f("work/logs", "VisualDL log directory")

    # --- generation ---
    acrostic: bool = _f(False, "start_words are head characters: line i starts with the i-th")
    form: str = _f("", "fixed form: 五绝 七绝 五律 七律 (or wujue qijue wulv qilv)")
    line_length: int = _f(0, "characters per line, 5 or 7 (0: the model chooses)")
    lines: int = _f(0, "number of lines with --line-length (0: the model chooses)")
    rhyme: bool = _f(False, "make the even lines rhyme (modern finals, an approximation)")
    temperature: float = _f(0.8, "sampling temperature; 0 is greedy (the tutorial)")
    top_k: int = _f(0, "sample from the k most likely characters (0: off)")
    top_p: float = _f(0.9, "sample from the smallest set with this much probability (1: off)")
    num_poems: int = _f(1, "poems to write at once, decoded as one batch")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_TYPES = {f.name: f.type for f in fields(Config)}


def resolve_config_path(name: str) -> Path:
    """`cpu`, `cpu.toml`, `configs/cpu.toml` and any path to a TOML file all work."""
    dirs = [CONFIG_DIR, Path("configs")]  # the checkout's configs/, or the current directory's
    candidates = [Path(name)] + [d / n for d in dirs for n in (name, f"{name}.toml")]
    for path in candidates:
        if path.is_file():
            return path
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
    raise TangpoemError(f"config file '{name}' not found (known configs in {CONFIG_DIR}: {known})")


def load_toml(path: str | Path) -> dict[str, Any]:
    path = resolve_config_path(str(path))
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise TangpoemError(f"{path} is not valid TOML: {err}") from None
    unknown = sorted(set(values) - set(FIELD_TYPES))
    if unknown:
        raise TangpoemError(f"{path}: unknown setting(s) {', '.join(unknown)}; see `--help` for the list")
    return values


def _coerce(name: str, value: Any) -> Any:
    kind = FIELD_TYPES[name]
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise TangpoemError(f"setting '{name}' must be a {kind}, got {value!r}")
    return float(value) if kind == "float" else value


def make_config(overrides: dict[str, Any] | None = None, config_file: str | None = None) -> Config:
    """Defaults, then the file, then the overrides (later wins)."""
    values: dict[str, Any] = {}
    if config_file:
        values.update(load_toml(config_file))
    values.update(overrides or {})
    return Config(**{k: _coerce(k, v) for k, v in values.items()})


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--config FILE` and one flag per Config field (defaults come from the Config itself)."""
    parser.add_argument("-c", "--config", help="TOML file, or the name of one in configs/ (e.g. cpu)")
    group = parser.add_argument_group("settings (each overrides the config file)")
    types = {"int": int, "float": float, "str": str}
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        helptext = f"{f.metadata['help']} (default: {f.default})"
        if f.type == "bool":
            group.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=helptext
            )
        else:
            group.add_argument(
                flag, dest=f.name, type=types[f.type], default=argparse.SUPPRESS, metavar=f.type.upper(), help=helptext
            )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {k: v for k, v in vars(args).items() if k in FIELD_TYPES}
    return make_config(overrides, args.config)
