"""tangpoem's CPU kernels (kernels.c): compiled with the system C compiler on first use, loaded with ctypes.

They link against the oneDNN library inside the Paddle wheel (its sgemm) and gcc's OpenMP runtime, so
nothing else is needed but `cc`. When that is missing, or the wheel has no oneDNN (for instance a
non-x86 build), `kernels()` is None and training takes Paddle's own ops: same results, slower, with a
one-line note. TANGPOEM_NATIVE=0 forces that path.
The library is cached under $TANGPOEM_CACHE (default ~/.cache/tangpoem), keyed by the source, the
compiler flags, the Paddle wheel's library folder and this CPU; building one removes the others. The
process loads code from that folder, so it is created 0700, and a folder or library that another user
owns or that group or others can write is refused (the note, then Paddle's ops), never loaded.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tangpoem.errors import TangpoemError

if TYPE_CHECKING:
    import paddle

SOURCE = Path(__file__).with_name("kernels.c")
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-fopenmp"]
EXTRA_CFLAGS = "TANGPOEM_KERNEL_CFLAGS"  # more flags, after CFLAGS: the tests build the kernels with sanitizers

_p, _i64, _int, _dp = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.POINTER(ctypes.c_double)
DNNL = "libdnnl.so.3"  # oneDNN inside the Paddle wheel (2.6 and 3.x): its sgemm and the libgomp it uses
OK, BAD_LABEL, NO_MEMORY = 0, 1, 2  # the kernels' status codes (kernels.c's TP_*)
SIGNATURES = {  # name: (argument types, result type), as in kernels.c
    "xent_grad": ([_p, _p, _p, _p, _p, _i64, _i64, _int, _dp], _int),
    "linear_xent": ([_i64, _i64, _i64, _p, _p, _p, _p, _p, _p, _p, _p, _i64, _int, _dp], _int),
    "lstm_forward": ([_i64, _i64, _i64, _p, _p, _p, _p, _p, _int], None),
    "lstm_backward": ([_i64, _i64, _i64, _p, _p, _p, _p, _p, _int], _int),
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


class UnsafeCache(Exception):
    """The cache folder or a library in it could hold another user's code."""


def _check_private(path: Path, what: str) -> None:
    """Refuse a folder or library that another user owns or that group or others can write: they could
    put code there that this process would load."""
    folder = what == "folder"
    st = os.stat(path) if folder else os.lstat(path)  # a library must be a file of its own, not a symlink
    fix = f"`chmod go-w {path}` or set TANGPOEM_CACHE" if folder else f"delete {path} (it is rebuilt)"
    if not (stat.S_ISDIR if folder else stat.S_ISREG)(st.st_mode):
        raise UnsafeCache(f"cache {what} {path} is not a {'folder' if folder else 'regular file'}; {fix}")
    if st.st_uid != os.getuid():
        raise UnsafeCache(f"cache {what} {path} belongs to another user (uid {st.st_uid}); set TANGPOEM_CACHE")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCache(f"cache {what} {path} is writable by group or others; {fix}")


def _private_cache_dir() -> Path:
    """cache_dir(), created 0700 when missing, checked either way."""
    folder = cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    _check_private(folder, "folder")
    return folder


def _remove_other_libraries(keep: Path) -> None:
    """Libraries built for the same Paddle wheel folder and CPU from another source or flags are never
    loaded again: delete them. Those of other environments (another venv's wheel) stay: they are in use.
    A process that has one loaded keeps its mapping."""
    wheel = keep.name.split("-")[1]
    for old in keep.parent.glob(f"kernels-{wheel}-*.so"):
        if old != keep:
            try:
                old.unlink()
            except OSError:
                pass


def cflags() -> list[str]:
    """The flags the kernels are compiled and linked with: CFLAGS, then $TANGPOEM_KERNEL_CFLAGS."""
    return CFLAGS + shlex.split(os.environ.get(EXTRA_CFLAGS, ""))


def _build(libs: Path, out: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError("no C compiler (cc)")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        obj, lib = os.path.join(tmp, "kernels.o"), os.path.join(tmp, out.name)
        # OpenMP from gcc's libgomp, the runtime oneDNN uses: one thread pool for the cell loops and the
        # products (two pools spin against each other on a small machine)
        flags = cflags()
        subprocess.run([cc, *flags, "-c", str(SOURCE), "-o", obj], check=True, capture_output=True)
        link = [cc, "-shared", *flags, obj, "-o", lib, str(libs / DNNL), "-lm", f"-Wl,-rpath,{libs}"]
        subprocess.run(link, check=True, capture_output=True)
        os.chmod(lib, 0o700)  # not the umask's: a group-writable library would be refused next time
        os.replace(lib, out)  # atomic: a concurrent process sees the old file or the whole new one


def _unavailable(reason: str) -> None:
    print(f"note: tangpoem's CPU kernels are unavailable ({reason}); using Paddle's ops (slower)", file=sys.stderr)


def library_path(libs: Path) -> Path:
    """Where the kernels built against the wheel's library folder `libs` are cached:
    kernels-{the wheel folder and CPU}-{the source and flags}.so."""
    wheel = hashlib.sha256(b"\0".join([bytes(libs), _cpu_id().encode()])).hexdigest()[:8]
    source = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(cflags()).encode()])).hexdigest()[:12]
    return cache_dir() / f"kernels-{wheel}-{source}.so"


@functools.cache
def kernels() -> ctypes.CDLL | None:
    """The compiled kernels, or None (after a one-line note) when they cannot be used here: the caller falls back."""
    if os.environ.get("TANGPOEM_NATIVE", "1") == "0":  # asked for: no note
        return None
    if not sys.platform.startswith("linux"):
        return _unavailable(f"they are built for Linux, this is {sys.platform}")
    import paddle

    libs = _paddle_libs()
    if libs is None:  # e.g. a non-x86 build
        return _unavailable(f"this Paddle wheel has no oneDNN ({DNNL})")
    if not hasattr(paddle.Tensor, "data_ptr"):
        return _unavailable(f"Paddle {paddle.__version__} has no Tensor.data_ptr")
    path = library_path(libs)
    try:
        _private_cache_dir()
        for attempt in range(2):  # another process may remove a stale library between exists() and loading it
            try:
                if not path.exists():
                    _build(libs, path)
                    _remove_other_libraries(path)
                _check_private(path, "library")
                lib = ctypes.CDLL(str(path))
                break
            except FileNotFoundError:
                if attempt:
                    raise
    except (OSError, subprocess.CalledProcessError, UnsafeCache) as e:
        stderr = getattr(e, "stderr", None)
        return _unavailable(stderr.decode(errors="replace").strip().splitlines()[-1] if stderr else str(e))
    for name, (argtypes, restype) in SIGNATURES.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = restype
    return lib


def check(status: int, labels: np.ndarray | paddle.Tensor | None = None, vocab: int = 0) -> None:
    """Raise for a kernel's failure status: a clear error instead of a wrong result or a crash."""
    if status == OK:
        return
    if status == BAD_LABEL:
        ids = np.asarray(labels.numpy() if hasattr(labels, "numpy") else labels)
        bad = np.unique(ids[(ids < 0) | (ids >= vocab)])[:5].tolist()
        raise TangpoemError(
            f"target ids {bad} are outside the output layer's {vocab} classes: the data does not fit the network "
            "(train on the npz the network was built for, or rebuild the npz)"
        )
    if status == NO_MEMORY:
        raise MemoryError("tangpoem's CPU kernels could not allocate their scratch memory")
    raise RuntimeError(f"tangpoem's CPU kernels failed with status {status}")
