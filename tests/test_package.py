"""What `pip install .` gives a user: a wheel with the package data, working from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A non-editable wheel of the checkout, built from a copy (so the checkout gets no build/ folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("tangpoem", "configs"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp), "-q"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0 and "setuptools" in done.stderr:  # an old setuptools here: build it in isolation
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-w", str(tmp), "-q"],
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (path,) = tmp.glob("tangpoem-*.whl")
    return path


@pytest.mark.once
def test_the_wheel_holds_the_package_data(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in ("tangpoem/pingshui.tsv", "tangpoem/pingshui.LICENSE", "tangpoem/kernels.c",
                     "tangpoem/static/index.html", "tangpoem/static/app.js", "tangpoem/static/app.css",
                     "tangpoem/configs/cpu.toml", "tangpoem/configs/seed.toml", "tangpoem/configs/gpu.toml",
                     "tangpoem/models/bundled.safetensors"):  # fmt: skip
            assert name in names, name
        assert zf.read("tangpoem/pingshui.tsv") == (ROOT / "tangpoem" / "pingshui.tsv").read_bytes()
        assert b"MIT License" in zf.read("tangpoem/pingshui.LICENSE")
        for config in (ROOT / "configs").glob("*.toml"):
            assert zf.read(f"tangpoem/configs/{config.name}") == config.read_bytes()
        model = zf.getinfo("tangpoem/models/bundled.safetensors")
        assert model.file_size <= 16 * 1024 * 1024


@pytest.mark.once
def test_the_installed_package_writes_poems_from_any_folder(wheel, tmp_path):
    """Installed (not editable) into its own folder, run from a folder with no work/ and no configs/."""
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel), "-q"]
    done = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    where = run("-c", "import tangpoem, tangpoem.configs; print(tangpoem.__file__)")
    assert where.returncode == 0 and where.stdout.startswith(str(target)), where.stdout + where.stderr
    for config in ([], ["-c", "cpu"], ["-c", "seed"]):
        done = run("-m", "tangpoem.generate", *config, "--start-words", "床前明月光，", "--form", "五绝", "--seed", "1")
        assert done.returncode == 0, done.stderr
        assert "bundled model" in done.stderr  # no checkpoint here: the one in the package, said in one line
        lines = done.stdout.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith("床前明月光，") and all(len(x) == 12 for x in lines)
    assert not list(elsewhere.iterdir())  # nothing written where it ran
