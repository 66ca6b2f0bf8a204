"""Train the poem LSTM on the corpus npz, with checkpoints that can be resumed and generated from.

    python -m tangpoem.train [-c configs/cpu.toml] [--max-minutes 15] [--resume latest] [--any-field ...]
    python -m paddle.distributed.launch --nproc_per_node 2 "$(command -v python)" -m tangpoem.train ...

The loop (`run_training`) reads top to bottom: for each batch a training step (loss, backward,
clip, learning rate, Adam), now and then a log line with the held-out loss and sample poems, a check
whether to stop; a checkpoint after every epoch and when stopping. Everything a run holds lives in
one `Run` object.

Checkpoints (`tangpoem.checkpoint`: safetensors weights + JSON, and `PATH.trainer` for resuming):
- `{model_prefix}.{N}` after epoch N is complete (1-based, as the tutorial's `model.params.N`);
- `{model_prefix}.step{S}` when training stops inside an epoch: `--max-steps`, `--max-minutes`,
  Ctrl-C (SIGINT), SIGTERM, or an error (raised again once the checkpoint is written; none is written
  when the error came inside the optimizer's update, whose weights are no step's). S is the global step.
  Each stop writes a new file and only then deletes the run's step checkpoints older than its two newest
  (`KEEP_STEP_CHECKPOINTS`; epoch checkpoints are all kept), so an interrupted save always leaves the
  previous checkpoint; only files whose metadata shows them to be this run's step checkpoints are ever
  deleted.
The metadata holds `epoch` (epochs completed), `step_in_epoch` (batches done in the next one),
`global_step`, `world_size`, `run` (an id the run keeps across resumes) and the whole training config;
the trainer state holds the optimizer's state and the AMP scaler's. `--resume latest`
picks the checkpoint of the prefix with the most steps. A prefix holds one run: a fresh run onto a
prefix with another run's checkpoints is refused rather than mixed with them. Batches depend only on
(seed, epoch) and resuming skips the batches already done; dropout's masks depend only on (seed, rank,
step) (`seed_step`); so with a fixed `--seed` a stopped-and-resumed run ends with the same weights as an
uninterrupted one. The learning rate is a function of
the step alone (`learning_rate`), so a resumed run continues on the same curve.

Stages: a resume may go on with other poems (`--train-collections tang`: of a Tang + Song file, the Tang
poems alone, for training and for the logged held-out loss) and a schedule of its own (`--schedule-start S`:
the warm-up and the cosine count from step S). Resuming onto other collections starts a fresh epoch of
them, since the stopped epoch's batches were of the other poems; each invocation's record names its
collections.

`--max-steps` counts global steps (a resumed run continues to the same total, where a cosine schedule
ends); `--max-minutes` counts this invocation's time. Exit status: 0 when training finished or stopped
at a limit, 130 when stopped by SIGINT or SIGTERM (after the checkpoint is written), 2 on bad input.
A second Ctrl-C while stopping aborts at once.

Data parallel: under `paddle.distributed.launch` each process trains on its share of every epoch's
batches (the sampler's rank/world_size), `paddle.DataParallel` starts every rank from rank 0's weights,
the gradients are averaged across ranks after each backward (`_average_gradients`, not DataParallel's
reducer: see there why), and only rank 0 shows progress, logs and writes checkpoints. Every rank
checks the limits and signals after each step and all stop together.
launch runs `training_script` with `python -u` only if it ends in `.py` (`-m` is not supported);
anything else it executes as a program, hence `"$(command -v python)" -m tangpoem.train`. The path
`tangpoem/train.py` works too. On GPUs: `--devices 0,1,...`; more machines: `--nnodes N --master
HOST:PORT` on each (see the README). On CPU, `--devices` fails inside launch; use `--nproc_per_node`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    # run as a script (`launch ... tangpoem/train.py`): keep tangpoem/data.py etc. from shadowing real modules
    sys.path.pop(0)
if __name__ == "__main__":  # a command: its process is set up before Paddle loads (device.prepare_command)
    from tangpoem.device import prepare_command

    prepare_command()

import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager, nullcontext  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from tangpoem.checkpoint import (  # noqa: E402
    BUNDLED_NAME,
    TRAINER_SUFFIX,
    has_trainer_state,
    latest_checkpoint,
    load_checkpoint,
    load_trainer_state,
    prefix_checkpoints,
    save_checkpoint,
)
from tangpoem.config import (  # noqa: E402
    COMMANDS,
    MODEL_SHAPE,
    ArgumentParser,
    Config,
    add_config_args,
    parse_config_args,
    parse_cutoffs,
)
from tangpoem.data import PoemData, load_npz, writable_folder  # noqa: E402
from tangpoem.dataset import make_loader, target_mask  # noqa: E402
from tangpoem.device import setup_device  # noqa: E402
from tangpoem.errors import TangpoemError, cli_main  # noqa: E402
from tangpoem.evaluate import greedy_continue, heldout_batches, heldout_loss  # noqa: E402
from tangpoem.loss import sequence_loss  # noqa: E402
from tangpoem.model import ModelConfig, PoetryModel  # noqa: E402

SETTINGS = COMMANDS["tangpoem.train"]
SAMPLE_STARTS = ("床前明月光，", "春")  # greedy continuations logged every plot_every steps
# Settings that decide which batch comes when: a mid-epoch resume with other values would not continue.
BATCH_ORDER_FIELDS = ("batch_size", "batching", "seed", "title_dropout")  # what an epoch's batches hang on
STOP_REASONS = ("", "max_steps", "max_minutes", "SIGINT", "SIGTERM")  # ranks agree on the highest


@dataclass
class TrainResult:
    checkpoint: str  # the last checkpoint written ("" if none)
    global_step: int
    stopped_by: str = ""  # "", "max_steps", "max_minutes", "SIGINT", "SIGTERM"
    losses: list[float] = field(default_factory=list)  # training loss of every step of this invocation
    model: PoetryModel | None = None  # the trained network (rank 0's copy under data parallel)


# ---------------------------------------------------------------- the pieces of a step


class _LossLayer(paddle.nn.Layer):
    """The model's training loss as one Layer, so paddle.DataParallel can wrap it.

    sequence_loss's fast path does not go through model.forward; DataParallel prepares its gradient
    all-reduce in its own forward, so the whole loss has to be that forward.
    """

    def __init__(self, model: PoetryModel, mask_padding: bool, pad_id: int, start_id: int):
        super().__init__()
        self.model = model
        self.mask_padding = mask_padding
        self.pad_id, self.start_id = pad_id, start_id

    def forward(self, inputs: paddle.Tensor, targets: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        mask = target_mask(targets, self.pad_id, self.start_id) if self.mask_padding else None
        loss, count = sequence_loss(self.model, inputs, targets, mask)
        return loss, paddle.to_tensor(count)


def clip_grad_norm(parameters: list, max_norm: float) -> float:
    """Scale the gradients in place so their global L2 norm is at most max_norm; returns the norm before.

    The same rule as paddle.nn.ClipGradByGlobalNorm (g *= max_norm / max(norm, max_norm)), which runs
    one-thread elementwise ops over every gradient: ~30 ms a step on the seed network here, against
    ~2 ms for a BLAS dot product per tensor plus an in-place scale only when the norm is too large.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    with paddle.no_grad():
        squares = [paddle.matmul(g.reshape([1, -1]), g.reshape([1, -1]), transpose_y=True) for g in grads]
        norm = math.sqrt(float(paddle.add_n(squares).item()))
        if norm > max_norm:
            for g in grads:
                g.scale_(max_norm / norm)
    return norm


def learning_rate(cfg: Config, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based): a linear warm-up, then cfg.lr ('constant')
    or a cosine from cfg.lr down to cfg.min_lr at total_steps ('cosine'), both counted from
    cfg.schedule_start (a later stage of a run starts its own schedule there). A function of the step
    alone, so a resumed run continues on the same curve."""
    step, total_steps = step - cfg.schedule_start, total_steps - cfg.schedule_start  # a later stage's own curve
    if step < cfg.warmup_steps:
        return cfg.lr * (max(step, 0) + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = min((step - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps, 1), 1.0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def _average_gradients(parameters: list, world_size: int) -> None:
    """All-reduce the gradients as one flat buffer and write the mean back into each, by value.

    Why not DataParallel's own reducer: an earlier fastlstm backward handed out parameter gradients
    that shared storage, and the reducer's in-place per-parameter all-reduce corrupted them (the
    2-process test against a plain nn.LSTM reference caught it). Writing the mean back by value is
    right whether or not gradients share storage, so a custom backward cannot break it again.
    """
    import paddle.distributed as dist

    grads = [p.grad for p in parameters]
    if any(g is None for g in grads):  # every rank must reduce the same buffer
        raise RuntimeError("a parameter got no gradient; data parallel needs all of them used every step")
    flat = paddle.concat([g.reshape([-1]) for g in grads])
    dist.all_reduce(flat)
    flat = flat / world_size
    offset = 0
    for g in grads:
        n = int(np.prod(g.shape))
        paddle.assign(flat[offset : offset + n].reshape(g.shape), output=g)
        offset += n


def seed_step(seed: int, rank: int, step: int) -> None:
    """Seed Paddle's generators for one training step from (seed, rank, step): they draw its dropout masks.

    A resumed run then draws the masks of an uninterrupted one from what the checkpoint already records,
    on every Paddle version. Saving `paddle.get_rng_state()` in the trainer state cannot do that on
    Paddle 2.6: its CPU GeneratorState pickles as (device, seed, offset) only and unpickling re-seeds the
    mt19937_64 engine, so `paddle.load` gives back the generator as it was at `paddle.seed`, not at the
    step (3.x pickles the engine too). Each rank gets its own masks, as the rows of one large batch would.
    """
    words = np.random.SeedSequence([seed, rank, step]).generate_state(2, dtype=np.uint32)
    paddle.seed((int(words[0]) << 31) | (int(words[1]) >> 1))  # 63 bits: a valid seed for every generator


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current step (and its checkpoint)."""

    def __init__(self) -> None:
        self.signal = ""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signal:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        print(f"\n{self.signal}: stopping after this step with a checkpoint (again to abort)", file=sys.stderr)

    @contextmanager
    def installed(self):
        import threading

        if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


def _distributed() -> tuple[int, int]:
    """(rank, world_size); initialises the process group when started by paddle.distributed.launch."""
    world_size = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
    if world_size <= 1:
        return 0, 1
    import paddle.distributed as dist

    if not dist.is_initialized():
        dist.init_parallel_env()
    return dist.get_rank(), dist.get_world_size()


def machine() -> str:
    """What this run trains on, for the checkpoint's record: CPU model and usable CPUs, GPU, Paddle."""
    import platform

    from tangpoem.device import usable_cpus

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    device = paddle.device.get_device()
    return f"{cpu}, {usable_cpus()} CPUs, {device}, paddle {paddle.__version__}"


def frequency_ranks(poems: PoemData) -> np.ndarray:
    """rank[id]: 0 for the most frequent character of the training poems, vocab - 1 for the rarest; padding,
    never a target, last."""
    counts = np.bincount(poems.data[~poems.heldout].ravel(), minlength=poems.vocab_size).astype(np.int64)
    counts[poems.pad_id] = -1
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(poems.vocab_size, dtype=np.int64)
    rank[order] = np.arange(poems.vocab_size)
    return rank


def model_config(cfg: Config, vocab_size: int) -> ModelConfig:
    shape = {name: getattr(cfg, name) for name in MODEL_SHAPE}
    shape["output_cutoffs"] = parse_cutoffs(cfg.output_cutoffs, vocab_size)
    return ModelConfig(vocab_size, **shape)


ADAM_BETAS = (0.9, 0.999)  # Paddle's defaults, given explicitly: _with_every_accumulator fills in their first powers


def _with_every_accumulator(state: dict[str, Any], params: list[paddle.Tensor]) -> dict[str, Any]:
    """The optimizer state with an entry for every parameter. Adam creates a parameter's moments at its first
    gradient, so a checkpoint written before some parameter had one (an adaptive softmax cluster whose characters
    no batch has held yet) lacks them, and Paddle refuses to load a state that then meets that gradient. The
    missing entries are what Adam would have created: zero moments, and the betas' powers at their first value."""
    accumulators: dict[str, paddle.Tensor] = {}  # suffix ('moment1_0', 'beta1_pow_acc_0', ...) -> an example
    missing = []
    for param in params:
        mine = [key for key in state if key.startswith(param.name + "_")]
        if not mine:
            missing.append(param)
        for key in mine:
            accumulators.setdefault(key[len(param.name) + 1 :], state[key])
    if not missing or not accumulators:
        return state
    state = dict(state)
    for param in missing:
        for suffix, example in accumulators.items():
            example = example if isinstance(example, paddle.Tensor) else paddle.to_tensor(example)
            if "pow_acc" in suffix:
                beta = ADAM_BETAS[0] if suffix.startswith("beta1") else ADAM_BETAS[1]
                state[f"{param.name}_{suffix}"] = paddle.full_like(example, beta)
            else:
                state[f"{param.name}_{suffix}"] = paddle.zeros(param.shape, dtype=example.dtype)
    return state


# ---------------------------------------------------------------- checks before a run starts


def _resume_path(cfg: Config) -> str:
    if cfg.resume == "latest":
        path = latest_checkpoint(cfg.model_prefix)
        if path is None:
            raise TangpoemError(
                f"--resume latest: no resumable checkpoint {cfg.model_prefix}.* found; "
                "check --model-prefix, or start without --resume"
            )
        return path
    if cfg.resume != BUNDLED_NAME and not Path(cfg.resume).is_file():
        raise TangpoemError(
            f"--resume {cfg.resume}: no such checkpoint; give --resume latest (the newest checkpoint of "
            f"--model-prefix {cfg.model_prefix}), the path of a checkpoint file, or bundled"
        )
    return cfg.resume


def _check_resumable(ckpt, cfg: Config, poems: PoemData, mcfg: ModelConfig, world_size: int) -> None:
    if ckpt.vocab != poems.ix2word:
        raise TangpoemError(f"{ckpt.path} was trained on another vocabulary than {cfg.data_path}; use its data file")
    if ckpt.model_config != mcfg:
        raise TangpoemError(
            f"{ckpt.path} holds a network {ckpt.model_config.to_dict()}, the config asks for {mcfg.to_dict()}; "
            "resume with the checkpoint's network settings"
        )
    if ckpt.meta.get("step_in_epoch", 0) and not _new_stage(ckpt, cfg):
        old = ckpt.meta.get("config", {})
        changed = [k for k in BATCH_ORDER_FIELDS if k in old and old[k] != getattr(cfg, k)]
        if ckpt.meta.get("world_size", 1) != world_size:
            changed.append("world_size")
        if changed:
            raise TangpoemError(
                f"{ckpt.path} stopped inside an epoch; resuming it needs the same {', '.join(changed)} "
                "(or resume from an epoch checkpoint)"
            )


def _check_schedule_starts_behind(cfg: Config, ckpt) -> None:
    """A stage's schedule starts where the run is or before: one that starts ahead would train at a warm-up's
    first tiny rates until it got there."""
    step = int(ckpt.meta.get("global_step", 0)) if ckpt else 0
    if cfg.schedule_start > step:
        where = f"{ckpt.path} is at step {step}" if ckpt else "a new run starts at step 0"
        raise TangpoemError(
            f"--schedule-start {cfg.schedule_start}: {where}; a later stage goes on from the end of the one "
            "before it (finish that one first, e.g. `-c bundled --resume latest` before `-c bundled-tang`)"
        )


def _new_stage(ckpt, cfg: Config) -> bool:
    """Whether this resume trains on other collections than the checkpoint did: a new stage, which starts
    a fresh epoch over its own poems."""
    return ckpt.meta.get("config", {}).get("train_collections", "") != cfg.train_collections


def _collection_indices(poems: PoemData, names: str) -> list[int] | None:
    """--train-collections as indices into the data file's collections (None: all of them)."""
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    if not wanted:
        return None
    unknown = [name for name in wanted if name not in poems.collection_names]
    if unknown:
        raise TangpoemError(
            f"--train-collections {names}: {poems.path or 'the data file'} holds no {', '.join(unknown)}; "
            f"give some of {','.join(poems.collection_names)}"
        )
    return [poems.collection_names.index(name) for name in wanted]


def _check_prefix_names_files(prefix: str) -> None:
    """PREFIX.N and PREFIX.stepS need a file name in PREFIX: '' or 'dir/' would write hidden '.step3' files."""
    if not prefix or prefix.endswith(("/", os.sep)) or Path(prefix).name in ("", ".", ".."):
        raise TangpoemError(
            f"--model-prefix '{prefix}' names no file; give a folder and a name, e.g. --model-prefix "
            f"{Path(prefix or 'work/checkpoints') / 'model'} (checkpoints are then model.1, model.step300, ...)"
        )


def _check_prefix_is_this_runs(prefix: str, run_id: str, resuming: bool) -> None:
    """A prefix holds one run's checkpoints: writing a second run's there would overwrite its epoch files
    and let `--resume latest` pick either run's."""
    others = [path for path, meta in prefix_checkpoints(prefix) if meta.get("run") != run_id]
    if others:
        names = ", ".join(Path(p).name for p in sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
        hint = "" if resuming else "continue it with --resume latest, or "
        raise TangpoemError(
            f"{prefix}.* already holds another run's checkpoints ({names}); {hint}start over with another "
            f"--model-prefix (or delete those files)"
        )


KEEP_STEP_CHECKPOINTS = 2  # the one a stop just wrote and the one before it (the last stop's, which was reported)


def _remove_older_step_checkpoints(prefix: str, run_id: str, keep: str) -> None:
    """A run keeps its epoch checkpoints and its KEEP_STEP_CHECKPOINTS newest step checkpoints; older step
    checkpoints are superseded and deleted, with a line saying so. Only files whose metadata shows them to be
    this run's step checkpoints are ever deleted: notes, other runs' files and anything else stay."""
    pattern = re.compile(re.escape(Path(prefix).name) + r"\.step\d+$")
    mine = sorted(
        ((int(meta.get("global_step", -1)), path) for path, meta in prefix_checkpoints(prefix)
         if meta.get("run") == run_id and pattern.match(Path(path).name)),
        reverse=True,
    )  # fmt: skip
    for _, path in mine[KEEP_STEP_CHECKPOINTS:]:
        if path != keep:
            Path(path).unlink(missing_ok=True)
            Path(path + TRAINER_SUFFIX).unlink(missing_ok=True)
            print(f"removed the superseded step checkpoint {path} (kept: {keep})", file=sys.stderr)


class _Logger:
    """VisualDL + console, created on first use (rank 0 only)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.writer = None

    def log(self, step: int, scalars: dict[str, float], samples: list[str]) -> None:
        if self.writer is None:
            from visualdl import LogWriter

            run = f"{Path(self.cfg.model_prefix).name}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.writer = LogWriter(logdir=os.path.join(self.cfg.log_dir, run))
        for tag, value in scalars.items():
            self.writer.add_scalar(tag=tag, step=step, value=value)
        for i, text in enumerate(samples):
            self.writer.add_text(tag=f"sample/{i}", text_string=text, step=step)
        self.writer.flush()
        numbers = "  ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in scalars.items())
        from tqdm import tqdm

        tqdm.write(f"step {step}  {numbers}")
        for text in samples:
            tqdm.write(f"  {text}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------- one run


class Run:
    """Everything one training run holds: data, model, optimizer, counters, and where it stops."""

    def __init__(self, cfg: Config):
        device = setup_device(cfg.use_gpu, cfg.num_threads, quiet=False)
        if cfg.amp and device != "gpu":
            raise TangpoemError("--amp (mixed precision) needs a CUDA GPU; Paddle runs on the CPU here: drop --amp")
        self.cfg = cfg
        self.rank, self.world_size = _distributed()
        self.main_rank = self.rank == 0
        self.poems = poems = load_npz(cfg.data_path)
        self.stage_collections = _collection_indices(poems, cfg.train_collections)  # this stage's poems
        rows = poems.collection_of_rows()[~poems.heldout]
        trained = np.unique(rows if self.stage_collections is None else rows[np.isin(rows, self.stage_collections)])
        mcfg = model_config(cfg, poems.vocab_size)
        ckpt = None
        if cfg.resume:
            ckpt = load_checkpoint(_resume_path(cfg))
            _check_resumable(ckpt, cfg, poems, mcfg, self.world_size)
        _check_schedule_starts_behind(cfg, ckpt)
        # the styles the model has read, over every stage: `generate --style` checks them
        earlier = ckpt.meta.get("collections", []) if ckpt else []
        self.collections = [name for name in poems.collection_names
                            if name in earlier or poems.collection_names.index(name) in trained]  # fmt: skip
        self.run_id = ckpt.meta.get("run", "") if ckpt else uuid.uuid4().hex[:12]
        self.seconds_before = float(ckpt.meta.get("train_seconds", 0.0)) if ckpt else 0.0  # earlier invocations'
        self.started = time.monotonic()
        self.machine = machine()  # for every checkpoint's record: read once
        # the record of how the model was made, carried over a resume: each invocation's steps, minutes and
        # the machine's load (a busy machine explains a slow run), and the held-out loss at every log
        self.invocations = list(ckpt.meta.get("invocations", [])) if ckpt else []
        self.curve = list(ckpt.meta.get("curve", [])) if ckpt else []
        self.this_invocation = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_1min": [],
            "collections": [poems.collection_names[int(c)] for c in trained],  # trained on and held out from
        }
        if self.main_rank:
            _check_prefix_names_files(cfg.model_prefix)
            writable_folder(Path(cfg.model_prefix).parent, "checkpoint")
            writable_folder(cfg.log_dir, "log")
            _check_prefix_is_this_runs(cfg.model_prefix, self.run_id, ckpt is not None)

        paddle.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.model = PoetryModel(mcfg)
        if mcfg.output_cutoffs:  # the adaptive softmax's clusters follow this run's character frequencies
            self.model.adaptive.set_ranks(paddle.to_tensor(frequency_ranks(poems)))
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0**15) if cfg.amp else None
        # with AMP the gradients are still scaled until the scaler's step: clipping stays inside the optimizer
        clip = paddle.nn.ClipGradByGlobalNorm(cfg.grad_clip) if cfg.grad_clip > 0 and self.scaler else None
        self.optimizer = paddle.optimizer.Adam(learning_rate=cfg.lr, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1],
                                               parameters=self.model.parameters(), grad_clip=clip)  # fmt: skip
        self.epoch = self.step_in_epoch = self.global_step = 0
        if ckpt is not None:
            self._resume(ckpt)
            if _new_stage(ckpt, cfg) and self.step_in_epoch:
                self.step_in_epoch = 0  # the stopped epoch's batches were of the other poems
        self.first_step = self.saved_step = self.global_step
        self.updating = False

        loss_layer = _LossLayer(self.model, cfg.mask_padding, poems.pad_id, poems.start_id)
        self.trainer = paddle.DataParallel(loss_layer) if self.world_size > 1 else loss_layer
        self.loader, self.sampler = make_loader(
            poems, "train", cfg.batch_size, cfg.batching, seed=cfg.seed, rank=self.rank, world_size=self.world_size,
            title_dropout=cfg.title_dropout, collections=self.stage_collections,
        )  # fmt: skip
        self.total_steps = cfg.max_steps or cfg.epoch * len(self.sampler)  # where a 'cosine' schedule ends
        # the same random held-out poems at every log, eval_batches batches' worth (0: all)
        self.heldout = heldout_batches(poems, cfg.eval_batches * cfg.batch_size, max(cfg.batch_size, 32), cfg.seed,
                                       collections=self.stage_collections)  # fmt: skip
        self.logger = _Logger(cfg) if self.main_rank else None
        self.result = TrainResult(checkpoint=ckpt.path if ckpt else "", global_step=self.global_step)
        self.deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
        self.window_loss, self.window_count = 0.0, 0  # training loss since the last log
        self.bar = None
        self.tick, self.tick_tokens = time.monotonic(), 0  # tokens/s on the progress bar

    def _resume(self, ckpt) -> None:
        self.model.set_state_dict({k: paddle.to_tensor(v) for k, v in ckpt.weights.items()})
        # a packed checkpoint (the bundled model, bundle_model.py's) has weights only: its run goes on from them, its
        # step and its record, and the optimizer's moments start over (a new stage's warm-up re-learns them)
        if has_trainer_state(ckpt.path):
            state = load_trainer_state(ckpt.path)
            self.optimizer.set_state_dict(_with_every_accumulator(state["optimizer"], self.model.parameters()))
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        elif self.main_rank:
            print(f"{ckpt.path} holds weights only: the optimizer's state starts over", file=sys.stderr)
        self.epoch = int(ckpt.meta.get("epoch", 0))
        self.step_in_epoch = int(ckpt.meta.get("step_in_epoch", 0))
        self.global_step = int(ckpt.meta.get("global_step", 0))
        if self.main_rank:
            print(f"resuming {ckpt.path}: epoch {self.epoch + 1}, step {self.global_step}", file=sys.stderr)

    # -- the named steps of the loop

    def batches(self) -> Iterator[tuple[paddle.Tensor, paddle.Tensor]]:
        """This epoch's batches from where it stopped, with a progress bar."""
        from tqdm import tqdm

        self.sampler.set_epoch(self.epoch)
        self.loader.dataset.set_epoch(self.epoch)
        self.sampler.skip = self.step_in_epoch
        self.model.train()
        desc = f"epoch {self.epoch + 1}/{self.cfg.epoch}"
        self.bar = tqdm(total=len(self.sampler), initial=self.step_in_epoch, desc=desc, disable=not self.main_rank,
                        dynamic_ncols=True, mininterval=1.0)  # fmt: skip
        self.tick, self.tick_tokens = time.monotonic(), 0
        yield from self.loader

    def train_step(self, inputs: paddle.Tensor, targets: paddle.Tensor) -> None:
        """Forward, backward, clip, learning rate, optimizer step; counters and progress bar."""
        cfg, scaler = self.cfg, self.scaler
        seed_step(cfg.seed, self.rank, self.global_step)
        with paddle.amp.auto_cast() if scaler is not None else nullcontext():
            loss, count = self.trainer(inputs, targets)
        with self.trainer.no_sync() if self.world_size > 1 else nullcontext():
            (scaler.scale(loss) if scaler is not None else loss).backward()
        if self.world_size > 1:
            _average_gradients(self.model.parameters(), self.world_size)
        self.optimizer.set_lr(learning_rate(cfg, self.global_step, self.total_steps))
        self.updating = True  # from here to the step count the weights are half of one step, half of the next
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            if cfg.grad_clip > 0:
                clip_grad_norm(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
        self.optimizer.clear_grad()
        self.global_step += 1
        self.updating = False
        self.step_in_epoch += 1
        value, n = loss.item(), int(count.item())
        self.result.losses.append(value)
        self.window_loss += value * n
        self.window_count += n
        self._show(value, n)

    def _show(self, loss: float, tokens: int) -> None:
        self.tick_tokens += tokens
        self.bar.update(1)
        now = time.monotonic()
        if now - self.tick >= 1.0 or self.step_in_epoch == len(self.sampler):
            self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{self.tick_tokens / max(now - self.tick, 1e-9):,.0f}")
            self.tick, self.tick_tokens = now, 0

    def log_progress(self) -> None:
        """Every plot_every steps: training and held-out loss, learning rate, greedy samples (rank 0)."""
        if not self.main_rank or self.global_step % self.cfg.plot_every:
            return
        model = self.model
        model.eval()
        nats, _ = heldout_loss(model, self.heldout, self.poems.pad_id, self.poems.start_id)
        samples = [greedy_continue(model, self.poems.ix2word, start, max_len=64) for start in SAMPLE_STARTS]
        train_loss = self.window_loss / max(self.window_count, 1)
        self.logger.log(self.global_step, {"loss/train": train_loss, "loss/heldout": nats,
                                           "lr": self.optimizer.get_lr()}, samples)  # fmt: skip
        self.window_loss, self.window_count = 0.0, 0
        self.curve.append([self.global_step, round(self.train_seconds() / 60, 2), round(nats, 4)])
        self._note_load()
        self.tick, self.tick_tokens = time.monotonic(), 0  # tokens/s of training, not of the evaluation
        model.train()

    def train_seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

    def _note_load(self) -> None:
        """The 1-minute load average's range over this invocation."""
        load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        seen = self.this_invocation["load_1min"]
        if load is not None:
            seen[:] = [min([load, *seen]), max([load, *seen])]

    def stop_reason(self, stop: _StopFlag) -> str:
        """Why to stop after this step ('' to go on); under data parallel every rank agrees."""
        reason = ""
        if self.cfg.max_steps and self.global_step >= self.cfg.max_steps:
            reason = "max_steps"
        elif time.monotonic() >= self.deadline:
            reason = "max_minutes"
        elif stop.signal:
            reason = stop.signal
        if self.world_size > 1:  # every rank must stop at the same step, or the others wait in all-reduce forever
            import paddle.distributed as dist

            flag = paddle.to_tensor([STOP_REASONS.index(reason)], dtype="int32")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            reason = STOP_REASONS[flag.item()]
        self.result.stopped_by = reason
        return reason

    def end_epoch(self) -> None:
        """The epoch's checkpoint when it is complete (also when a limit hit its last step), else the
        stop's step checkpoint."""
        self.bar.close()
        if self.step_in_epoch >= len(self.sampler):
            self.epoch += 1
            self.step_in_epoch = 0
            self.save(f"{self.cfg.model_prefix}.{self.epoch}")
        elif self.result.stopped_by:
            self.save(self.step_checkpoint_path)

    @property
    def step_checkpoint_path(self) -> str:
        """Where a stop inside an epoch (a limit, a signal, an error) saves."""
        return f"{self.cfg.model_prefix}.step{self.global_step}"

    def save(self, path: str) -> None:
        if self.main_rank:
            meta = {
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step,
                "world_size": self.world_size,
                "run": self.run_id,
                "train_seconds": round(self.train_seconds(), 1),
                "machine": self.machine,
                "invocations": [*self.invocations, self._invocation_record()],
                "curve": self.curve,  # [step, training minutes, held-out nats/char] at every log
                "collections": self.collections,  # the styles it has read: `generate --style` checks
                "config": self.cfg.to_dict(),
            }
            trainer_state = {
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "global_step": self.global_step,
            }
            save_checkpoint(path, self.model, self.poems.ix2word, meta, trainer_state)
            _remove_older_step_checkpoints(self.cfg.model_prefix, self.run_id, path)
        self.result.checkpoint = path
        self.saved_step = self.global_step

    def save_after_error(self) -> None:
        """An error that ends the run (a bug in logging, a full disk, an unreadable batch) keeps the steps it
        made: a step checkpoint, unless the error came in the middle of the optimizer's update (the weights
        are then no step's) or nothing was trained since the last checkpoint."""
        if not self.main_rank or self.updating or self.global_step == self.saved_step:
            return
        self.bar.close()
        path = self.step_checkpoint_path
        try:
            self.save(path)
        except Exception as err:  # noqa: BLE001 - the error that ended the run is the one to raise
            print(f"error at step {self.global_step}; no checkpoint could be written ({err})", file=sys.stderr)
            return
        print(f"error at step {self.global_step}; checkpoint: {path} (--resume latest goes on from it)",
              file=sys.stderr)  # fmt: skip

    def _invocation_record(self) -> dict[str, Any]:
        self._note_load()
        minutes = (time.monotonic() - self.started) / 60
        return {**self.this_invocation, "first_step": self.first_step, "last_step": self.global_step,
                "minutes": round(minutes, 1), "machine": self.machine}  # fmt: skip

    def finish(self) -> TrainResult:
        if self.logger is not None:
            self.logger.close()
        self.result.global_step = self.global_step
        self.result.model = self.model
        if self.main_rank:
            why = {"": "finished", "max_steps": "reached --max-steps", "max_minutes": "reached --max-minutes"}
            status = why.get(self.result.stopped_by, f"stopped by {self.result.stopped_by}")
            print(
                f"{status} at step {self.global_step}; checkpoint: {self.result.checkpoint or 'none'}", file=sys.stderr
            )
        return self.result


def run_training(cfg: Config) -> TrainResult:
    """The training loop; see the module docstring for checkpoints, stopping and resuming."""
    # Optimizer state is keyed by generated names (parameter name + accumulator counter, the latter made
    # at the first step): a fresh name scope for the whole run makes them the same in every run and
    # process, so a saved state always loads.
    # The stop flag is up from the start: Ctrl-C while the run sets up (data, network, kernels) stops it
    # after its first step, with a checkpoint, like one during training.
    with paddle.utils.unique_name.guard(), _StopFlag().installed() as stop:
        run = Run(cfg)
        if cfg.max_steps and run.global_step >= cfg.max_steps:
            run.result.stopped_by = "max_steps"
        try:
            while run.epoch < cfg.epoch and not run.result.stopped_by:
                for inputs, targets in run.batches():
                    run.train_step(inputs, targets)
                    run.log_progress()
                    if run.stop_reason(stop):
                        break
                run.end_epoch()
        except Exception:
            run.save_after_error()
            raise
        return run.finish()


def train(cfg: Config) -> str:
    """Train as configured; return the path of the last checkpoint written."""
    return run_training(cfg).checkpoint


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m tangpoem.train", description=__doc__.split("\n\n")[0])
    add_config_args(parser, SETTINGS)
    cfg, _ = parse_config_args(parser, argv)
    result = run_training(cfg)
    return 130 if result.stopped_by in ("SIGINT", "SIGTERM") else 0


if __name__ == "__main__":
    sys.exit(main())
