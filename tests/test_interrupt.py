"""Ctrl-C never loses a run: signals during training, interrupted runs that resume, the C kernels under
AddressSanitizer and UndefinedBehaviorSanitizer.

The bug these guard against: oneDNN's JIT sgemm (in the Paddle wheel's libdnnl) points the stack pointer
into a heap buffer while it runs, so a signal handler running on that thread wrote its frame into malloc's
chunks; Ctrl-C then ended in "corrupted size vs. prev_size" and no checkpoint. kernels.c now keeps
signals blocked on every thread while it calls sgemm.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tangpoem.checkpoint import latest_checkpoint, load_checkpoint
from tests.test_native import needs_kernels
from tests.test_train import build_small_npz

pytestmark = [pytest.mark.slow, needs_kernels]

HEAP_ERRORS = ("corrupted", "double free", "free(): invalid", "malloc(): ", "AddressSanitizer", "runtime error:")


def train_command(npz: Path, prefix: Path, *more: str, threads: int = 1) -> list[str]:
    """The issue's reproduction: a tiny network on the full vocabulary, so most of a step is sgemm."""
    return [
        "--data-path", str(npz), "--model-prefix", str(prefix), "--log-dir", str(prefix.parent / "logs"),
        "--embedding-dim", "8", "--hidden-dim", "8", "--num-layers", "1", "--num-threads", str(threads),
        "--eval-batches", "1", "--no-use-gpu", *more,
    ]  # fmt: skip


def start(args: list[str], env: dict | None = None, script: str = "") -> subprocess.Popen:
    """`python -m tangpoem.train ARGS`, or `python -c SCRIPT ARGS`; stderr is read by the caller."""
    head = ["-c", script] if script else ["-m", "tangpoem.train"]
    return subprocess.Popen([sys.executable, *head, *args], stderr=subprocess.PIPE, text=True, env=env)


def wait_until_training(proc: subprocess.Popen, timeout: float = 120) -> str:
    """stderr up to the first progress bar (the run is past its setup and in its steps)."""
    seen, deadline = "", time.monotonic() + timeout
    while "epoch 1/" not in seen:
        ch = proc.stderr.read(1)
        if not ch or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"training did not start: {seen[-2000:]}")
        seen += ch
    return seen


def finish(proc: subprocess.Popen, seen: str, timeout: float = 120) -> str:
    try:
        return seen + proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:  # the corrupted heap's abort hangs in Paddle's SIGABRT handler
        proc.kill()
        return seen + proc.communicate()[1] + "\n(hung: killed)"


def assert_clean(err: str) -> None:
    found = [e for e in HEAP_ERRORS if e in err]
    assert not found, err[-3000:]


# ---------------------------------------------------------------- signals while the kernels run

STORM_SCRIPT = """
import signal, sys
signal.signal(signal.SIGUSR1, lambda signum, frame: None)  # a handler that does nothing, as a profiler's
from tangpoem.train import main
status = main(sys.argv[1:])
signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the storm may outlast the run: not a death by SIGUSR1
sys.exit(status)
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_a_storm_of_signals_during_training_leaves_the_heap_intact(tang_npz, tmp_path, threads):
    """Before the fix every such run died in free() with a corrupted heap; now it trains to its end."""
    proc = start(train_command(tang_npz, tmp_path / "m", "--max-steps", "800", threads=threads), script=STORM_SCRIPT)
    seen = wait_until_training(proc)
    sent = 0
    while proc.poll() is None and sent < 3000:
        proc.send_signal(signal.SIGUSR1)
        sent += 1
        time.sleep(0.002)
    err = finish(proc, seen)
    assert sent > 100, f"the run ended before it could be signalled much ({sent} signals)"
    assert_clean(err)
    assert proc.returncode == 0 and "reached --max-steps at step 800" in err, err[-3000:]


def test_twenty_interrupted_trainings_each_leave_a_checkpoint_that_resumes(tang_npz, tmp_path):
    """SIGINT or SIGTERM at a random moment of training, two runs at a time: every run exits 130 with a
    checkpoint, and `--resume latest` goes on from it."""
    rng = random.Random(23)
    runs = [(tmp_path / f"run{i}" / "m", (signal.SIGINT, signal.SIGTERM)[i % 2], rng.uniform(0, 2)) for i in range(20)]
    for pair in (runs[i : i + 2] for i in range(0, len(runs), 2)):
        procs = [start(train_command(tang_npz, prefix, "--epoch", "5")) for prefix, _, _ in pair]
        seen = [wait_until_training(proc) for proc in procs]
        for (_, sig, delay), proc in zip(pair, procs, strict=True):
            time.sleep(delay)
            proc.send_signal(sig)
        for (prefix, sig, delay), proc, before in zip(pair, procs, seen, strict=True):
            err = finish(proc, before)
            assert_clean(err)
            assert proc.returncode == 130 and f"stopped by {sig.name}" in err, (sig.name, delay, err[-3000:])
            path = latest_checkpoint(str(prefix))
            assert path is not None, err[-3000:]
            step = load_checkpoint(path).meta["global_step"]
            more = train_command(tang_npz, prefix, "--epoch", "5", "--resume", "latest", "--max-steps", str(step + 3))
            resumed = subprocess.run([sys.executable, "-m", "tangpoem.train", *more], capture_output=True, text=True)
            assert resumed.returncode == 0, resumed.stderr[-3000:]
            assert f"resuming {path}" in resumed.stderr and f"reached --max-steps at step {step + 3}" in resumed.stderr


# ---------------------------------------------------------------- the kernels under the sanitizers


def _runtime(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path):
        pytest.fail(f"gcc has no {name} here: install gcc's sanitizer runtimes (Debian: libasan8, libubsan1)")
    return path


def sanitizer_env(cache: Path) -> dict[str, str]:
    """The kernels built with ASan and UBSan (their products by a plain loop, so that every access is
    checked: libdnnl is not instrumented), the runtimes preloaded into Python."""
    import paddle

    env = dict(os.environ)
    env["TANGPOEM_KERNEL_CFLAGS"] = (
        "-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -DTP_PLAIN_GEMM"
    )
    env["TANGPOEM_CACHE"] = str(cache)
    env["LD_PRELOAD"] = f"{_runtime('libasan.so')} {_runtime('libubsan.so')}"
    # the preloaded runtime's dlopen looks in its own search path, not libpaddle's: name the wheel's libraries
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(Path(paddle.__file__).parent / "libs"),
                                                           env.get("LD_LIBRARY_PATH")]))  # fmt: skip
    # Paddle's own exit frees an array with delete (pir::IrContext); leaks are Python's and Paddle's, not ours
    env["ASAN_OPTIONS"] = "detect_leaks=0:alloc_dealloc_mismatch=0:abort_on_error=0"
    return env


KERNEL_SCRIPT = """
import numpy as np, paddle
from tangpoem import device, fastlstm, native
assert native.kernels() is not None, "the sanitized kernels did not build"
rng = np.random.default_rng(0)
for threads in (1, 2):
    device.set_threads(threads)
    for seq, batch, inp, hid, vocab in [(1, 1, 3, 5, 7), (2, 3, 5, 3, 11), (7, 5, 9, 17, 31), (13, 1, 4, 6, 2051)]:
        lstm = paddle.nn.LSTM(inp, hid, num_layers=2)
        x = paddle.to_tensor(rng.normal(size=(seq, batch, inp)).astype("float32"), stop_gradient=False)
        out = fastlstm.lstm_forward(x, lstm)
        ref = lstm(x.transpose([1, 0, 2]))[0].transpose([1, 0, 2])
        np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-5)
        weight = paddle.to_tensor(rng.normal(size=(hid, vocab)).astype("float32"), stop_gradient=False)
        bias = paddle.to_tensor(rng.normal(size=(vocab,)).astype("float32"), stop_gradient=False)
        targets = paddle.to_tensor(rng.integers(0, vocab, size=seq * batch))
        h = out.reshape([-1, hid])
        loss = fastlstm.linear_cross_entropy(h, weight, bias, targets)
        loss.backward()
        grads = [t.grad.numpy() for t in (x, weight, bias)]
        for t in (x, weight, bias):
            t.clear_gradient()
        ref_loss = paddle.nn.functional.cross_entropy(ref.reshape([-1, hid]) @ weight + bias, targets)
        ref_loss.backward()
        np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-5)
        for got, t in zip(grads, (x, weight, bias)):
            np.testing.assert_allclose(got, t.grad.numpy(), atol=1e-4)
print("kernels ok")
"""


def test_the_kernels_and_an_interrupted_training_under_the_sanitizers(tmp_path):
    env = sanitizer_env(tmp_path / "cache")
    checked = subprocess.run([sys.executable, "-c", KERNEL_SCRIPT], capture_output=True, text=True, env=env)
    assert checked.returncode == 0 and "kernels ok" in checked.stdout, checked.stderr[-4000:]
    assert_clean(checked.stderr)

    # a few hundred steps of real training: batches of 7 poems of every length the buckets give, two
    # threads, interrupted, then resumed to its end
    npz = build_small_npz(tmp_path / "data", n=900)
    prefix = tmp_path / "ck" / "m"
    args = ["--data-path", str(npz), "--model-prefix", str(prefix), "--log-dir", str(tmp_path / "logs"),
            "--embedding-dim", "13", "--hidden-dim", "19", "--num-layers", "2", "--batch-size", "7",
            "--num-threads", "2", "--eval-batches", "2", "--plot-every", "50", "--no-use-gpu"]  # fmt: skip
    proc = start([*args, "--max-steps", "100000"], env=env)
    seen = wait_until_training(proc, timeout=300)
    deadline = time.monotonic() + 300
    while "epoch 3/" not in seen and proc.poll() is None and time.monotonic() < deadline:
        seen += proc.stderr.read(1)  # two epochs (254 steps) done: their checkpoints, evaluations and samples
    proc.send_signal(signal.SIGINT)
    err = finish(proc, seen, timeout=300)
    assert_clean(err)
    assert proc.returncode == 130 and "stopped by SIGINT" in err, err[-4000:]
    step = load_checkpoint(latest_checkpoint(str(prefix))).meta["global_step"]
    assert step >= 254
    resumed = subprocess.run([sys.executable, "-m", "tangpoem.train", *args, "--resume", "latest", "--max-steps",
                              str(step + 150)], capture_output=True, text=True, env=env)  # fmt: skip
    assert_clean(resumed.stderr)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"reached --max-steps at step {step + 150}" in resumed.stderr
