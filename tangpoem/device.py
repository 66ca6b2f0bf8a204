"""The one place that picks the device and the CPU thread count; GPU and CPU then run the same code."""

from __future__ import annotations

import math
import os
import signal
import sys
import warnings
from pathlib import Path

_cpu_threads = 1  # Paddle's own default until set_threads is called
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def usable_cpus() -> int:
    """The CPUs this process may use: its CPU affinity (taskset, cpusets), capped by a container's CPU
    quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`) rounded up; at least 1.

    os.cpu_count() counts the machine's cores: in a container limited to 2 CPUs on a 64-core host, 64
    threads would fight over 2 cores' worth of time.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_and_ancestors(mount: Path, relative: str) -> list[Path]:
    """The process's cgroup folder under a mount and each parent up to the mount (a limit set on any of
    them applies); the mount alone when that folder is not visible (v1 containers show the host's path)."""
    folder = mount / relative.lstrip("/")
    if not relative.strip("/") or not folder.is_dir():
        return [mount]
    return [folder, *[p for p in folder.parents if p == mount or mount in p.parents]]


def cgroup_cpu_quota(root: Path | None = None, self_cgroup: Path | None = None) -> float | None:
    """CPUs' worth of time the cgroup quota allows (e.g. 1.5), the smallest along the hierarchy; None if none."""
    root = CGROUP_ROOT if root is None else root
    lines = (_read(SELF_CGROUP if self_cgroup is None else self_cgroup) or "").splitlines()
    limits: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, relative = parts
        if controllers == "":  # cgroup v2: "0::/path"; its mount is the root or, on hybrid systems, unified/
            mount = root if (root / "cgroup.controllers").exists() else root / "unified"
            for folder in _own_and_ancestors(mount, relative):
                quota, _, period = (_read(folder / "cpu.max") or "max").partition(" ")
                if quota.isdigit() and period.isdigit() and int(quota) > 0 and int(period) > 0:  # not "max"
                    limits.append(int(quota) / int(period))
        elif "cpu" in controllers.split(","):  # cgroup v1: "4:cpu,cpuacct:/path"
            mount = next((root / m for m in (controllers, "cpu", "cpu,cpuacct") if (root / m).is_dir()), None)
            for folder in _own_and_ancestors(mount, relative) if mount else []:
                quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
                if quota and period and quota.isdigit() and period.isdigit() and int(quota) > 0 and int(period) > 0:
                    limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def quiet_idle_threads() -> None:
    """Let idle OpenMP threads sleep at once instead of spinning, unless the user chose otherwise.

    A Paddle process holds two OpenMP runtimes: Intel's libiomp5 (MKL and some Paddle ops) and gcc's
    libgomp (oneDNN, whose sgemm tangpoem's kernels use). By default each keeps its threads spinning
    after a parallel region (libiomp5 for 200 ms), so on a small machine one pool's idle threads take
    the cores the other pool's working threads need: a training step of configs/cpu.toml took 0.7 s
    instead of 0.35 s on a machine of two cores. Both runtimes read these variables when they load, so this
    must run before `import paddle` (each command calls it first, `prepare_command`); set_threads repeats the libiomp5
    part at run time for a process that imported paddle first.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")


def prepare_command() -> None:
    """What a command sets up in its own process before Paddle loads; importing tangpoem sets up nothing.

    Idle OpenMP threads sleep (`quiet_idle_threads`), Paddle's import-time warning that no C++ compiler
    cache was found (it matters only for building custom ops) is not shown, and Ctrl-C ends the command
    with one line (training installs its own handler, which stops with a checkpoint).
    """
    quiet_idle_threads()
    warnings.filterwarnings("ignore", message="No ccache found")
    signal.signal(signal.SIGINT, _interrupted)


def _interrupted(signum, frame) -> None:
    """Ctrl-C in a command (while Paddle loads, say, before any handler of its own): one line, exit 130,
    not a KeyboardInterrupt traceback from whatever import was running. Nothing is half-written: files
    are written to a temporary name and renamed (data.atomic_write)."""
    print("interrupted", file=sys.stderr)
    raise SystemExit(130)


def set_threads(num_threads: int = 0) -> int:
    """Paddle uses one CPU thread unless told; 0 means one per usable CPU (`usable_cpus`).

    Not $OMP_NUM_THREADS: importing paddle sets it to 1 when unset, so it cannot tell what the user chose.
    """
    import paddle

    global _cpu_threads
    n = num_threads if num_threads > 0 else usable_cpus()
    _cpu_threads = n
    paddle.set_flags({"FLAGS_paddle_num_threads": n})
    try:
        paddle.base.core.set_num_threads(n)
    except AttributeError:  # older Paddle: the flag alone
        pass
    _iomp_blocktime(int(os.environ.get("KMP_BLOCKTIME", "0")))
    return n


def _iomp_blocktime(ms: int) -> None:
    """libiomp5's kmp_set_blocktime for this thread's teams (see quiet_idle_threads); a no-op without it."""
    import ctypes

    try:
        ctypes.CDLL("libiomp5.so", mode=os.RTLD_NOLOAD).kmp_set_blocktime(ctypes.c_int(ms))
    except (OSError, AttributeError, ValueError):
        pass


def cpu_threads() -> int:
    """The CPU thread count Paddle was given (tangpoem's native kernels use the same)."""
    return _cpu_threads


def gpu_available() -> bool:
    import paddle

    try:
        return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    except Exception:  # a CUDA build without a driver
        return False


def setup_device(use_gpu: bool, num_threads: int = 0, quiet: bool = False) -> str:
    """Select 'gpu' when asked for and present, else 'cpu' (with a one-line notice if GPU was asked)."""
    import paddle

    if use_gpu and gpu_available():
        device = "gpu"
    else:
        if use_gpu and not quiet:
            print("note: no CUDA GPU available to Paddle; running on the CPU", file=sys.stderr)
        device = "cpu"
        set_threads(num_threads)
    paddle.set_device(device)
    return device


def set_blas_threads(n: int) -> bool:
    """Set the thread count of numpy's OpenBLAS (the numpy step's matmuls); False if not found."""
    import ctypes
    import glob

    import numpy as np

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*"))
    names = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_")
    for lib in [*libs, None]:
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for name in (*names, "openblas_set_num_threads"):
            fn = getattr(handle, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return True
    return False
