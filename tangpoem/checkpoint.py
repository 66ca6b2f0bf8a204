"""Checkpoints that generating needs nothing else for, and that cannot run code when loaded.

`PREFIX.N` is one safetensors file: the weights, plus JSON metadata with the model's shape, the
vocabulary and the training counters. The trainer's own resume state (optimizer moments, which use
pickle through `paddle.save`) sits beside it in `PREFIX.N.trainer`; nothing but `--resume` reads it.
Both are written to a temporary name and renamed, the weights last, so a crash at any point leaves
every earlier checkpoint intact and never a weights file without its trainer state.

A checkpoint may also be stored compactly (`save_compact`: float16, or int8 with a float32 scale per
output unit, LSTM weights once rather than under both of nn.LSTM's names); loading gives float32
weights again, so nothing after the loader knows. The model shipped in the package is such a file
(`BUNDLED`, loaded by the name "bundled").
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tangpoem.config import Config, ModelConfig
from tangpoem.data import atomic_write
from tangpoem.errors import TangpoemError

if TYPE_CHECKING:
    from tangpoem.model import PoetryModel

FORMAT = "tangpoem-checkpoint"
VERSION = 2  # the newest format this code reads: 1 float32 (save_checkpoint), 2 compact (save_compact)
TRAINER_SUFFIX = ".trainer"
BUNDLED_NAME = "bundled"
BUNDLED = Path(__file__).resolve().parent / "models" / "bundled.safetensors"
STORAGES = ("float16", "int8")
_ALIAS = re.compile(r"lstm\.(\d+)\.cell\.(\w+)$")  # nn.LSTM's second name for lstm.{name}_l{k}


def expected_tensors(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every float32 tensor in PoetryModel(config).state_dict() (tested against it).

    nn.LSTM lists each weight twice, as `weight_ih_l{k}` and as its cell's `{k}.cell.weight_ih`: one
    parameter under two names, so a checkpoint holds both and they must be equal.
    """
    V, E, H = config.vocab_size, config.embedding_dim, config.hidden_dim
    shapes: dict[str, tuple[int, ...]] = {"embeddings.weight": (V, E)}
    for k in range(config.num_layers):
        for name, shape in (("weight_ih", (4 * H, E if k == 0 else H)), ("weight_hh", (4 * H, H)),
                            ("bias_ih", (4 * H,)), ("bias_hh", (4 * H,))):  # fmt: skip
            shapes[f"lstm.{name}_l{k}"] = shapes[f"lstm.{k}.cell.{name}"] = shape
    if not config.output_cutoffs:
        shapes["linear.weight"], shapes["linear.bias"] = (H, V), (V,)
        return shapes
    shortlist, bounds = config.output_cutoffs[0], config.clusters()
    head = shortlist + len(bounds)  # the shortlist's characters and one entry per cluster
    shapes["adaptive.head.weight"], shapes["adaptive.head.bias"] = (H, head), (head,)
    for k, (start, end, width) in enumerate(bounds):
        shapes[f"adaptive.tail_proj.{k}.weight"] = (H, width)
        shapes[f"adaptive.tail_out.{k}.weight"] = (width, end - start)
        shapes[f"adaptive.tail_out.{k}.bias"] = (end - start,)
    return shapes


RANK = "adaptive.rank"  # the adaptive softmax's id -> frequency rank map: int64, a permutation, never compacted


def _is_linear_weight(name: str) -> bool:
    """nn.Linear stores its weight [in, out]: its output units are columns."""
    return name == "linear.weight" or (name.startswith("adaptive.") and name.endswith(".weight"))


def check_weights(path: str, config: ModelConfig, weights: dict[str, np.ndarray]) -> None:
    """Every tensor the network needs, with its shape and dtype, and nothing else: Paddle's set_state_dict
    only warns about a wrong shape and keeps those weights random, and the numpy step would compute garbage."""
    damaged = "the file is damaged or was edited; use another checkpoint"
    shapes = expected_tensors(config)
    if config.output_cutoffs:
        rank = weights.get(RANK)
        if rank is None or rank.dtype != np.int64 or not np.array_equal(np.sort(rank), np.arange(config.vocab_size)):
            raise TangpoemError(f"{path}: {RANK} is missing or not an order of the vocabulary; {damaged}")
        weights = {k: v for k, v in weights.items() if k != RANK}
    missing, extra = sorted(set(shapes) - set(weights)), sorted(set(weights) - set(shapes))
    if missing or extra:
        what = f"lacks {', '.join(missing[:3])}" if missing else f"holds tensors the network has not: {extra[:3]}"
        raise TangpoemError(f"{path}: {what} (the network it describes: {config.to_dict()}); {damaged}")
    for name, shape in shapes.items():
        w = weights[name]
        if w.shape != shape or w.dtype != np.float32:
            raise TangpoemError(
                f"{path}: tensor {name} is {w.dtype} {list(w.shape)}, the network it describes "
                f"({config.to_dict()}) needs float32 {list(shape)}; {damaged}"
            )
    for k in range(config.num_layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if not np.array_equal(weights[f"lstm.{name}_l{k}"], weights[f"lstm.{k}.cell.{name}"]):
                raise TangpoemError(f"{path}: lstm.{name}_l{k} and lstm.{k}.cell.{name} differ; {damaged}")


def _check_model_config(path: str, config: ModelConfig) -> None:
    sizes = {k: getattr(config, k) for k in ("vocab_size", "embedding_dim", "hidden_dim", "num_layers")}
    bad = [f"{k}={v!r}" for k, v in sizes.items() if type(v) is not int or v < 1]
    for name in ("dropout", "embedding_dropout"):
        rate = getattr(config, name)
        if type(rate) not in (int, float) or not 0 <= rate < 1:
            bad.append(f"{name}={rate!r}")
    cuts = config.output_cutoffs
    listed = isinstance(cuts, list) and all(type(c) is int for c in cuts) and cuts == sorted(set(cuts))
    if not listed or (cuts and not (cuts[0] >= 1 and type(config.vocab_size) is int and cuts[-1] < config.vocab_size)):
        bad.append(f"output_cutoffs={cuts!r}")
    if bad:
        raise TangpoemError(
            f"{path}: the network in its metadata is impossible ({', '.join(bad)}); the file was edited"
        )


@dataclass
class Checkpoint:
    """A loaded checkpoint; its weights fit the network its metadata describes (checked on creation)."""

    path: str
    model_config: ModelConfig
    vocab: list[str]
    weights: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)  # epoch, step, training config, ...

    def __post_init__(self) -> None:
        # here, so every user of a checkpoint (build_model, the numpy step, resume, export) gets checked weights
        _check_model_config(self.path, self.model_config)
        check_weights(self.path, self.model_config, self.weights)

    def build_model(self) -> PoetryModel:
        """The network with these weights, in eval mode."""
        import paddle

        from tangpoem.model import PoetryModel

        model = PoetryModel(self.model_config)
        model.set_state_dict({k: paddle.to_tensor(v) for k, v in self.weights.items()})
        model.eval()
        return model


def save_checkpoint(
    path: str | Path,
    model: PoetryModel,
    vocab: list[str],
    meta: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
) -> None:
    """Write PATH (weights + JSON metadata) and, when given, PATH.trainer (resume state)."""
    from safetensors.numpy import save

    path = Path(path)
    if trainer_state is not None:
        import paddle

        tmp = path.with_name(f".{path.name}{TRAINER_SUFFIX}.tmp{os.getpid()}")
        try:
            paddle.save(trainer_state, str(tmp))
            with open(tmp, "rb+") as f:  # on disk before the rename, as atomic_write does for the weights
                os.fsync(f.fileno())
            os.replace(tmp, str(path) + TRAINER_SUFFIX)
        finally:
            if tmp.exists():
                tmp.unlink()
    header = {"format": FORMAT, "version": 1, "model": model.config.to_dict(), "vocab": vocab, **(meta or {})}
    weights = {k: np.ascontiguousarray(v.numpy()) for k, v in model.state_dict().items()}
    blob = save(weights, metadata={"tangpoem": json.dumps(header, ensure_ascii=False)})
    atomic_write(path, lambda f: f.write(blob))


def _declared_size(path: str) -> int | None:
    """The size a safetensors file's header promises (header + tensor data), or None if it is not one."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > 100 << 20:  # no header is that large: not a safetensors file
                return None
            raw = f.read(n)
    except OSError:
        return None
    if not raw.startswith(b"{"):
        return None
    if len(raw) < n:  # the header itself is cut
        return 8 + n
    try:
        header = json.loads(raw)
        return 8 + n + max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError):
        return None


def compact_weights(weights: dict[str, np.ndarray], storage: str) -> dict[str, np.ndarray]:
    """float16: every tensor halved. int8: every matrix rounded to 127 steps of its largest magnitude per
    output unit (a row; a column of linear.weight, which Paddle stores [in, out]), scale beside it as
    NAME.scale; vectors (biases) stay float32. nn.LSTM's alias names are left out (expand_weights)."""
    if storage not in STORAGES:
        raise TangpoemError(f"storage must be one of {', '.join(STORAGES)}, not '{storage}'")
    out: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        if _ALIAS.match(name):
            continue
        if name == RANK:
            out[name] = w
        elif storage == "float16":
            out[name] = w.astype(np.float16)
        elif w.ndim == 2:
            axis = 0 if _is_linear_weight(name) else 1
            scale = np.abs(w).max(axis=axis, keepdims=True) / 127.0
            scale[scale == 0] = 1.0
            out[name] = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
            out[name + ".scale"] = scale.reshape(-1).astype(np.float32)
        else:
            out[name] = w.astype(np.float32)
    return out


def expand_weights(
    path: str, weights: dict[str, np.ndarray], storage: str, config: ModelConfig
) -> dict[str, np.ndarray]:
    """The float32 weights (aliases included) of a compact checkpoint."""
    if storage not in STORAGES:
        raise TangpoemError(f"{path}: unknown storage '{storage}'; upgrade tangpoem")
    out: dict[str, np.ndarray] = {}
    try:
        for name, w in weights.items():
            if name.endswith(".scale"):
                continue
            if w.dtype == np.int8:
                scale = weights[name + ".scale"]
                w = w.astype(np.float32) * (scale[None, :] if _is_linear_weight(name) else scale[:, None])
            out[name] = np.ascontiguousarray(w, dtype=np.int64 if name == RANK else np.float32)
    except (KeyError, ValueError) as err:
        raise TangpoemError(f"{path}: its compact weights are incomplete ({err}); the file is damaged") from None
    for k in range(config.num_layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if f"lstm.{name}_l{k}" in out:
                out[f"lstm.{k}.cell.{name}"] = out[f"lstm.{name}_l{k}"]
    return out


def save_compact(ckpt: Checkpoint, path: str | Path, storage: str, meta: dict[str, Any] | None = None) -> None:
    """Write ckpt's weights compactly (see compact_weights) with its metadata and `meta` (no trainer state)."""
    from safetensors.numpy import save

    header = {**ckpt.meta, **(meta or {}), "format": FORMAT, "version": VERSION, "model": ckpt.model_config.to_dict(),
              "vocab": ckpt.vocab, "storage": storage}  # fmt: skip
    blob = save(compact_weights(ckpt.weights, storage), metadata={"tangpoem": json.dumps(header, ensure_ascii=False)})
    atomic_write(path, lambda f: f.write(blob))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint or save_compact (or "bundled": the model shipped in
    the package); a clear TangpoemError for anything else."""
    from safetensors import SafetensorError, safe_open

    path = str(path)
    if not path.strip():
        raise TangpoemError("no checkpoint named (--model-path is empty); give a checkpoint's path, or 'bundled'")
    if path == BUNDLED_NAME:
        if not BUNDLED.is_file():
            raise TangpoemError(f"this installation has no bundled model ({BUNDLED} is missing); reinstall tangpoem")
        path = str(BUNDLED)
    if not os.path.isfile(path):
        hint = "train one with `python -m tangpoem.train`, or pass --model-path to an existing checkpoint"
        if os.path.isdir(path):
            raise TangpoemError(f"checkpoint {path} is a directory, not a checkpoint file; {hint}")
        raise TangpoemError(f"checkpoint {path} not found; {hint}")
    try:
        with safe_open(path, framework="np") as f:
            header = json.loads((f.metadata() or {}).get("tangpoem", "null"))
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
        declared, size = _declared_size(path), os.path.getsize(path)
        if declared is not None and declared > size:
            raise TangpoemError(
                f"{path} is truncated ({size:,} of its {declared:,} bytes; an interrupted copy?); "
                "copy it again or use another checkpoint"
            ) from None
        raise TangpoemError(
            f"{path} is not a tangpoem checkpoint ({err}); checkpoints of the original "
            "tutorial (paddle.save pickles) cannot be loaded, retrain with tangpoem"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TangpoemError(f"{path} is a safetensors file but not a tangpoem checkpoint")
    version = header.pop("version", 0)
    header.pop("format")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TangpoemError(f"{path}: its format version {version!r} is not a number; the file was edited")
    if version > VERSION:
        raise TangpoemError(f"{path} was written by a newer tangpoem (format {version}); upgrade tangpoem")
    try:
        config = ModelConfig(**header.pop("model"))
        vocab = list(header.pop("vocab"))
    except (KeyError, TypeError) as err:
        raise TangpoemError(f"{path}: checkpoint metadata is incomplete ({err})") from None
    if len(vocab) != config.vocab_size:
        raise TangpoemError(f"{path}: vocabulary of {len(vocab)} does not match the model's {config.vocab_size}")
    if not all(isinstance(word, str) for word in vocab) or len(set(vocab)) != len(vocab):
        repeated = sorted({w for w in vocab if vocab.count(w) > 1}, key=str)[:5] if len(vocab) < 100_000 else []
        raise TangpoemError(
            f"{path}: its vocabulary is damaged (entries that are not text, or repeated: {repeated}); "
            "a token must have one id. Use another checkpoint"
        )
    storage = header.pop("storage", None)
    if storage is not None:
        _check_model_config(path, config)
        weights = expand_weights(path, weights, storage, config)
    return Checkpoint(path, config, vocab, weights, header)


def has_trainer_state(path: str | Path) -> bool:
    """Whether a checkpoint has the optimizer's state beside it (packed ones and the bundled model do not)."""
    return os.path.isfile(str(path) + TRAINER_SUFFIX)


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """The resume state beside a checkpoint (pickle: only load checkpoints you made)."""
    import paddle

    state_path = str(path) + TRAINER_SUFFIX
    if not os.path.isfile(state_path):
        raise TangpoemError(f"{state_path} not found: {path} cannot be resumed (it has weights only)")
    try:
        state = paddle.load(state_path)
    except Exception as err:  # a truncated or foreign pickle: the file's fault, not ours
        raise TangpoemError(
            f"{state_path} cannot be read ({type(err).__name__}); resume from an earlier checkpoint, or start over"
        ) from None
    if not isinstance(state, dict) or "optimizer" not in state:
        raise TangpoemError(f"{state_path} is not a tangpoem trainer state; resume from another checkpoint")
    return state


def prefix_checkpoints(model_prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """The checkpoints PREFIX.* of ours (epoch and step files, resumable or not) with their metadata."""
    from safetensors import safe_open

    prefix = Path(model_prefix)
    if not prefix.parent.is_dir():
        return []
    found = []
    for candidate in prefix.parent.glob(prefix.name + ".*"):
        if candidate.name.endswith(TRAINER_SUFFIX) or not candidate.is_file():
            continue
        try:
            with safe_open(str(candidate), framework="np") as f:
                meta = json.loads((f.metadata() or {})["tangpoem"])
        except Exception:  # not a checkpoint of ours (or not readable): not one of the run's
            continue
        if isinstance(meta, dict) and meta.get("format") == FORMAT:
            found.append((str(candidate), meta))
    return found


def folder_checkpoints(folder: str | Path) -> list[str]:
    """Every checkpoint of ours in a folder, whatever its prefix."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = {p.name.split(".")[0] for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    return [path for name in sorted(names) for path, _ in prefix_checkpoints(str(folder / name))]


def latest_checkpoint(model_prefix: str) -> str | None:
    """The resumable checkpoint PREFIX.* with the most training steps, or None."""
    best: tuple[int, float, str] | None = None
    for path, meta in prefix_checkpoints(model_prefix):
        if not has_trainer_state(path):
            continue
        key = (int(meta.get("global_step", -1)), Path(path).stat().st_mtime, path)
        best = key if best is None or key > best else best
    return best[2] if best else None


def resolve_model(cfg: Config, named: bool = False, quiet: bool = False) -> str:
    """Which checkpoint to use: the one place every command (generate, evaluate, export, serve) and
    `Poet.load` decide it, from the same settings (a `-c` file's included).

    named: model_path was given explicitly (a flag, an argument): it is used as it is, and loading it says
    so when it does not exist. Otherwise the configured model_path if it exists, else the newest checkpoint
    of the configured model_prefix, else the newest of any prefix in its folder (work/checkpoints: a model
    the user trained, with whatever config, is never shadowed), else the model shipped in the package;
    one line says which, unless quiet."""
    if named or Path(cfg.model_path).is_file() or cfg.model_path == BUNDLED_NAME:
        return cfg.model_path
    latest = latest_checkpoint(cfg.model_prefix)
    if latest is None:
        found = folder_checkpoints(Path(cfg.model_prefix).parent)
        latest = max(found, key=lambda p: Path(p).stat().st_mtime) if found else None
    if latest is not None:
        if not quiet:
            print(f"note: {cfg.model_path} does not exist; using your newest checkpoint {latest}", file=sys.stderr)
        return latest
    if not quiet:
        print(
            f"note: no checkpoint at {cfg.model_path}; using the bundled model (--model-path bundled). "
            "Train your own: python -m tangpoem.train -c cpu",
            file=sys.stderr,
        )
    return BUNDLED_NAME
