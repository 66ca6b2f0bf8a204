"""Data-parallel training under paddle.distributed.launch: two CPU processes (gloo) on this machine.

The run is stopped inside epoch 1 and resumed across the epoch boundary; its weights must equal a
single process that averages, at every step, the gradients of the two ranks' batches.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from tangpoem.checkpoint import load_checkpoint
from tangpoem.data import load_npz
from tangpoem.dataset import make_loader, target_mask
from tangpoem.loss import sequence_loss
from tangpoem.train import model_config
from tests.test_train import build_small_npz, tiny_config

WORLD = 2


def launch(tmp_path: Path, args: list[str], tag: str) -> subprocess.CompletedProcess:
    # launch runs a training_script not ending in .py as a program: the interpreter, then `-m tangpoem.train`
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(WORLD)]
    cmd += ["--log_dir", str(tmp_path / f"launch-{tag}"), sys.executable, "-m", "tangpoem.train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    logs = {p.name: p.read_text(errors="replace") for p in (tmp_path / f"launch-{tag}").glob("workerlog.*")}
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n{logs}"
    return done


def reference_weights(npz: Path, steps: int, **cfg_overrides) -> dict[str, np.ndarray]:
    """One process: each step the mean of rank 0's and rank 1's gradients, computed without fastlstm."""
    cfg = tiny_config(npz, Path("unused"), **cfg_overrides)
    poems = load_npz(npz)
    loaders = [
        make_loader(poems, "train", cfg.batch_size, cfg.batching, seed=cfg.seed, rank=r, world_size=WORLD)
        for r in range(WORLD)
    ]
    with paddle.utils.unique_name.guard():
        paddle.seed(cfg.seed)
        from tangpoem.model import PoetryModel

        model = PoetryModel(model_config(cfg, poems.vocab_size))
        clip = paddle.nn.ClipGradByGlobalNorm(cfg.grad_clip)
        opt = paddle.optimizer.Adam(learning_rate=cfg.lr, parameters=model.parameters(), grad_clip=clip)
        step, epoch = 0, 0
        while step < steps:
            for _, sampler in loaders:
                sampler.set_epoch(epoch)
            for batches in zip(*(loader for loader, _ in loaders), strict=True):
                # one backward per rank's batch through the plain nn.LSTM path (independent of fastlstm, whose
                # parameter gradients share storage, so accumulating two backwards would double-count),
                # then the mean of the two gradients by hand
                grads = []
                for x, y in batches:
                    sequence_loss(model, x, y, target_mask(y, poems.pad_id, poems.start_id), fast=False)[0].backward()
                    grads.append([p.grad.numpy().copy() for p in model.parameters()])
                    opt.clear_grad(set_to_zero=False)
                for x, y in batches[:1]:  # gradients exist again (any values), then overwrite them with the mean
                    sequence_loss(model, x, y, target_mask(y, poems.pad_id, poems.start_id), fast=False)[0].backward()
                for i, p in enumerate(model.parameters()):
                    p.grad.set_value(np.mean([g[i] for g in grads], axis=0))
                opt.step()
                opt.clear_grad()
                step += 1
                if step == steps:
                    break
            epoch += 1
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_two_process_data_parallel_stops_resumes_and_averages_gradients(tmp_path):
    npz = build_small_npz(tmp_path)
    prefix = tmp_path / "m"
    poems = load_npz(npz)
    per_rank = (-(-int((~poems.heldout).sum()) // 32)) // WORLD  # batches per rank per epoch
    args = [
        *("--data-path", str(npz), "--model-prefix", str(prefix), "--log-dir", str(tmp_path / "logs")),
        *("--embedding-dim", "16", "--hidden-dim", "32", "--num-layers", "1", "--batch-size", "32"),
        *("--lr", "0.01", "--no-use-gpu", "--num-threads", "1", "--plot-every", "3", "--eval-batches", "1"),
    ]
    stop, end = per_rank - 3, per_rank + 3  # stop inside epoch 1, then resume past its end
    launch(tmp_path, [*args, "--max-steps", str(stop)], "first")
    first = load_checkpoint(f"{prefix}.step{stop}")
    assert first.meta["world_size"] == WORLD and first.meta["step_in_epoch"] == stop
    launch(tmp_path, [*args, "--max-steps", str(end), "--resume", "latest"], "second")
    epoch_ckpt = load_checkpoint(f"{prefix}.1")
    assert epoch_ckpt.meta["global_step"] == per_rank
    last = load_checkpoint(f"{prefix}.step{end}")
    assert last.meta["global_step"] == end and last.meta["epoch"] == 1 and last.meta["step_in_epoch"] == 3

    want = reference_weights(npz, end)
    assert want and set(want) == set(last.weights)  # every weight compared below
    for k, v in want.items():
        np.testing.assert_allclose(last.weights[k], v, rtol=1e-4, atol=1e-5, err_msg=k)

    # only rank 0 logs and writes checkpoints
    for tag in ("first", "second"):
        rank0 = (tmp_path / f"launch-{tag}" / "workerlog.0").read_text(errors="replace")
        rank1 = (tmp_path / f"launch-{tag}" / "workerlog.1").read_text(errors="replace")
        logged = re.compile(r"^step \d+  train [\d.]+  heldout [\d.]+  lr [\d.e-]+$", re.M)
        assert "checkpoint:" in rank0 and logged.search(rank0)
        assert "checkpoint:" not in rank1 and not logged.search(rank1) and "epoch 1/" not in rank1
    assert len(list((tmp_path / "logs").iterdir())) == 2  # one VisualDL run per launch, from rank 0
