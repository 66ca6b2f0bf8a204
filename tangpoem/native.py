"""tangpoem's CPU kernels (kernels.c): compiled with the system C compiler on first use, loaded with ctypes.

They link against the oneDNN library inside the Paddle wheel (its sgemm) and gcc's OpenMP runtime, so
nothing else is needed but `cc`. When that is missing, or the wheel has no oneDNN (for instance a
non-x86 build), `kernels()` is None and training takes Paddle's own ops: same results, slower, with a
one-line note. TANGPOEM_NATIVE=0 forces that path.
The library is cached under $TANGPOEM_CACHE (default ~/.cache/tangpoem), keyed by the source, the
compiler flags, the Paddle wheel's library folder and this CPU.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("kernels.c")
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-fopenmp"]

_p, _i64, _int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
DNNL = "libdnnl.so.3"  # oneDNN inside the Paddle wheel (2.6 and 3.x): its sgemm and the libgomp it uses
SIGNATURES = {  # name: (argument types, result type), as in kernels.c
    "xent_grad": ([_p, _p, _p, _p, _p, _i64, _i64, _int], ctypes.c_double),
    "linear_xent": ([_i64, _i64, _i64, _p, _p, _p, _p, _p, _p, _p, _p, _i64, _int], ctypes.c_double),
    "lstm_forward": ([_i64, _i64, _i64, _p, _p, _p, _p, _p, _int], None),
    "lstm_backward": ([_i64, _i64, _i64, _p, _p, _p, _p, _p, _int], None),
    "gemm": ([_int, _int, _i64, _i64, _i64, ctypes.c_float, _p, _i64, _p, _i64, ctypes.c_float, _p, _i64, _int], None),
}


def _paddle_libs() -> Path | None:
    import paddle

    libs = Path(paddle.__file__).parent / "libs"
    return libs if (libs / DNNL).exists() else None


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def cache_dir() -> Path:
    base = os.environ.get("TANGPOEM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tangpoem"
    )
    return Path(base)


def _build(libs: Path, out: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError("no C compiler (cc)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        obj, lib = os.path.join(tmp, "kernels.o"), os.path.join(tmp, out.name)
        # OpenMP from gcc's libgomp, the runtime oneDNN uses: one thread pool for the cell loops and the
        # products (two pools spin against each other on a small machine)
        subprocess.run([cc, *CFLAGS, "-c", str(SOURCE), "-o", obj], check=True, capture_output=True)
        link = [cc, "-shared", "-fopenmp", obj, "-o", lib, str(libs / DNNL), "-lm", f"-Wl,-rpath,{libs}"]
        subprocess.run(link, check=True, capture_output=True)
        os.replace(lib, out)  # atomic: a concurrent process sees the old file or the whole new one


@functools.cache
def kernels() -> ctypes.CDLL | None:
    """The compiled kernels, or None when they cannot be built here (the caller falls back)."""
    if os.environ.get("TANGPOEM_NATIVE", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    import paddle

    libs = _paddle_libs()
    if libs is None or not hasattr(paddle.Tensor, "data_ptr"):  # no oneDNN in the wheel, or an old Paddle
        return None
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(CFLAGS).encode(), bytes(libs), _cpu_id().encode()]))
    path = cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"
    try:
        if not path.exists():
            _build(libs, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.CalledProcessError) as e:
        stderr = getattr(e, "stderr", None)
        reason = stderr.decode(errors="replace").strip().splitlines()[-1] if stderr else str(e)
        print(f"note: tangpoem's CPU kernels are unavailable ({reason}); using Paddle's ops (slower)", file=sys.stderr)
        return None
    for name, (argtypes, restype) in SIGNATURES.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = restype
    return lib
