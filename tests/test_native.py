"""The C kernels' cache (private, no code of other users, no stale libraries) and the kernels' own checks."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from ctypes import byref, c_double
from pathlib import Path

import numpy as np
import paddle
import pytest

from tangpoem import fastlstm, native
from tangpoem.errors import TangpoemError

ROOT = Path(__file__).resolve().parent.parent
OTHER_UID = 65534  # nobody

needs_kernels = pytest.mark.skipif(
    os.environ.get("TANGPOEM_NATIVE") == "0" or shutil.which(os.environ.get("CC") or "cc") is None,
    reason="no C kernels here",
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh TANGPOEM_CACHE; kernels() forgets its loaded library before and after."""
    folder = tmp_path / "cache" / "tangpoem"
    monkeypatch.setenv("TANGPOEM_CACHE", str(folder))
    native.kernels.cache_clear()
    yield folder
    native.kernels.cache_clear()


def planted_library(path: Path, marker: Path) -> Path:
    """A shared library that, when loaded, creates `marker`: what a planted kernels-<key>.so could do."""
    src = path.with_suffix(".c")
    src.write_text(
        f'#include <stdio.h>\n__attribute__((constructor)) static void run(void) {{ fopen("{marker}", "w"); }}\n'
    )
    subprocess.run(["cc", "-shared", "-fPIC", str(src), "-o", str(path)], check=True)
    src.unlink()
    return path


def as_other_user(path: Path, monkeypatch) -> None:
    """path belongs to another user: really (chown) when running as root, else this process's uid changes."""
    uid = os.getuid()
    if uid == 0:
        os.chown(path, OTHER_UID, -1)
    else:
        monkeypatch.setattr(native.os, "getuid", lambda: uid + 1)


@needs_kernels
def test_cache_is_private_and_keeps_only_the_current_library(cache, capsys):
    old_umask = os.umask(0o002)  # a umask that lets the group write what is created
    try:
        assert native.kernels() is not None
    finally:
        os.umask(old_umask)
    assert capsys.readouterr().err == ""
    built = native.library_path(native._paddle_libs())
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(built.stat().st_mode) & 0o077 == 0
    # a library of an older kernels.c for the same wheel goes when a new one is built; another
    # environment's (another venv's Paddle wheel) stays: it may be in use
    wheel = built.name.split("-")[1]
    built.rename(cache / f"kernels-{wheel}-0123456789ab.so")
    (cache / "kernels-feedbeef-0123456789ab.so").write_bytes(b"another venv's")
    native.kernels.cache_clear()
    assert native.kernels() is not None
    assert sorted(p.name for p in cache.iterdir()) == sorted([built.name, "kernels-feedbeef-0123456789ab.so"])


@needs_kernels
@pytest.mark.parametrize("problem", ["group-writable", "others-writable", "another-user"])
def test_unsafe_cache_folder_is_refused_with_the_note(cache, monkeypatch, capsys, problem):
    cache.mkdir(parents=True)
    os.chmod(cache, {"group-writable": 0o770, "others-writable": 0o707}.get(problem, 0o700))
    if problem == "another-user":
        as_other_user(cache, monkeypatch)
    marker = cache.parent / "ran"
    planted_library(native.library_path(native._paddle_libs()), marker)
    if problem == "another-user" and os.getuid() == 0:
        os.chown(native.library_path(native._paddle_libs()), OTHER_UID, -1)
    assert native.kernels() is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "note: tangpoem's CPU kernels are unavailable" in err and "Paddle's ops" in err
    assert ("belongs to another user" if problem == "another-user" else "writable by group or others") in err
    assert not marker.exists()  # the planted library was never loaded


@needs_kernels
@pytest.mark.parametrize("problem", ["group-writable", "another-user", "symlink"])
def test_planted_library_is_refused_and_never_loaded(cache, monkeypatch, capsys, problem):
    cache.mkdir(mode=0o700, parents=True)
    marker = cache.parent / "ran"
    path = native.library_path(native._paddle_libs())
    if problem == "symlink":
        os.symlink(planted_library(cache.parent / "elsewhere.so", marker), path)
    else:
        planted_library(path, marker)
    if problem == "group-writable":
        os.chmod(path, 0o775)
    elif problem == "another-user":
        if os.getuid() != 0:
            pytest.skip("making a file of another user needs root")
        os.chown(path, OTHER_UID, -1)
    assert native.kernels() is None
    err = capsys.readouterr().err
    assert "note: tangpoem's CPU kernels are unavailable (cache library" in err and err.count("\n") == 1
    assert not marker.exists()


def test_a_wheel_without_onednn_falls_back_with_the_note(cache, monkeypatch, capsys):
    monkeypatch.setattr(native, "_paddle_libs", lambda: None)
    assert native.kernels() is None
    err = capsys.readouterr().err
    assert err == "note: tangpoem's CPU kernels are unavailable (this Paddle wheel has no oneDNN (libdnnl.so.3)); " \
                  "using Paddle's ops (slower)\n"  # fmt: skip
    assert not cache.exists()


def test_tangpoem_native_0_is_silent(cache, monkeypatch, capsys):
    monkeypatch.setenv("TANGPOEM_NATIVE", "0")
    assert native.kernels() is None and capsys.readouterr().err == ""


# --------------------------------------------------------------- the kernels' own checks


@needs_kernels
@pytest.mark.parametrize("bad", [-1, 300, 2**40])
def test_out_of_range_label_is_refused_before_any_write(bad):
    kernels = native.kernels()
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 300)).astype("float32")
    labels = np.array([3, 7, bad, 0])
    t, lab, dbias, total = paddle.to_tensor(logits), paddle.to_tensor(labels), paddle.zeros([300]), c_double(-7.0)
    status = kernels.xent_grad(t.data_ptr(), lab.data_ptr(), None, None, dbias.data_ptr(), 4, 300, 2, byref(total))
    assert status == native.BAD_LABEL
    np.testing.assert_array_equal(t.numpy(), logits)  # untouched
    assert total.value == -7.0 and not dbias.numpy().any()
    h, w, b = (paddle.to_tensor(rng.standard_normal(s).astype("float32")) for s in ((4, 8), (8, 300), (300,)))
    dh, dw, db, scratch = paddle.zeros([4, 8]), paddle.zeros([8, 300]), paddle.zeros([300]), paddle.zeros([4, 300])
    ptrs = [x.data_ptr() for x in (h, w, b, lab, dh, dw, db, scratch)]
    assert kernels.linear_xent(4, 8, 300, *ptrs, 4, 2, byref(total)) == native.BAD_LABEL
    assert not (dh.numpy().any() or dw.numpy().any() or scratch.numpy().any())


@needs_kernels
def test_out_of_range_target_raises_a_clear_error_in_training(monkeypatch):
    monkeypatch.setattr(fastlstm, "USE_NATIVE", True)
    h = paddle.to_tensor(np.ones((5, 8), "float32"), stop_gradient=False)
    weight = paddle.to_tensor(np.ones((8, 30), "float32"), stop_gradient=False)
    bias = paddle.to_tensor(np.zeros(30, "float32"), stop_gradient=False)
    with pytest.raises(TangpoemError, match=r"target ids \[30, 99\] are outside the output layer's 30 classes"):
        fastlstm.linear_cross_entropy(h, weight, bias, paddle.to_tensor([1, 30, 2, 99, 30]))
    loss = fastlstm.linear_cross_entropy(h, weight, bias, paddle.to_tensor([1, 29, 2, 0, 3]))
    assert loss.item() == pytest.approx(np.log(30), rel=1e-6)  # equal logits: uniform


@pytest.mark.parametrize("optimize", ["", "-O"])
def test_pointer_guard_holds_under_python_O(optimize):
    code = (
        "import paddle, numpy as np\n"
        "from tangpoem.fastlstm import _ptr\n"
        "x = paddle.to_tensor(np.zeros((3, 4), 'float32'))\n"
        "assert _ptr(x) == x.data_ptr()\n"
        "for bad in (x.T, x[:, 1:3], x.astype('float64')):\n"
        "    try:\n"
        "        _ptr(bad)\n"
        "    except ValueError as e:\n"
        "        print('refused:', e)\n"
        "print('debug' if __debug__ else 'optimized')\n"
    )
    argv = [sys.executable, *([optimize] if optimize else []), "-c", code]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.count("refused: native kernels take contiguous CPU") == 3, out
    assert out.strip().endswith("optimized" if optimize else "debug")
