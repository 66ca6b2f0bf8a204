"""What `pip install .` gives a user: a wheel with the package data, working from any folder."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# A warning printed by the build: a Python warning (setuptools' `SetuptoolsDeprecationWarning`, `BuildBackendWarning`,
# ...) or a distutils-style `warning: ...` line. Byte-compiling is off when $PYTHONDONTWRITEBYTECODE is set: that one
# says nothing about the package.
BUILD_WARNING = re.compile(r"\b[A-Z]\w*Warning\b|^\s*warning: (?!\w+: byte-compiling is disabled)", re.MULTILINE)


def setuptools_is_new_enough() -> bool:
    """At least pyproject's build requirement (PEP 639's `license = "MIT"` and `license-files` need 77)."""
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0]) >= 77
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """A non-editable wheel of the checkout, built from a copy (so the checkout gets no build/ folder), and the
    build's output (pip -v shows the backend's)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("tangpoem", "configs"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # this environment's setuptools when it is new enough, else pip builds in isolation with a current one
    isolation = ["--no-build-isolation"] if setuptools_is_new_enough() else []
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", *isolation, "-w", str(tmp), "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    (path,) = tmp.glob("tangpoem-*.whl")
    return path, done.stdout


@pytest.fixture(scope="module")
def wheel(built) -> Path:
    return built[0]


@pytest.mark.once
def test_the_build_prints_no_warning(built):
    _, log = built
    assert "Building wheel for tangpoem" in log  # the backend's output is there to read
    warnings = [line for line in log.splitlines() if BUILD_WARNING.search(line)]
    assert not warnings, "\n".join(warnings) + "\n\n" + log


def files_under(folder: Path, pattern: str) -> list[str]:
    """Files matching `pattern` under `folder` (not in __pycache__), as paths in the wheel."""
    found = [p for p in folder.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts]
    return sorted(p.relative_to(ROOT).as_posix() for p in found)


@pytest.mark.once
def test_the_wheel_holds_every_subpackage_and_the_page(wheel):
    """Every .py file under tangpoem/ (so every subpackage, e.g. one added later) and every file of the page."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    modules = files_under(ROOT / "tangpoem", "*.py")
    assert "tangpoem/__init__.py" in modules and "tangpoem/serve.py" in modules, modules
    missing = [name for name in modules if name not in names]
    folders = sorted({name.rsplit("/", 1)[0].replace("/", ".") for name in missing})
    assert not missing, f"not in the wheel: {missing}; add {folders} to `packages` in pyproject.toml"
    page = files_under(ROOT / "tangpoem" / "static", "*")
    assert {"tangpoem/static/index.html", "tangpoem/static/app.js", "tangpoem/static/app.css"} <= set(page), page
    missing = [name for name in page if name not in names]
    assert not missing, f"not in the wheel: {missing}; see package-data for tangpoem.static in pyproject.toml"


def test_the_license_holds_the_notices_of_the_data_shipped():
    """LICENSE: the project's MIT licence, then the 平水韵 table's notice verbatim and chinese-poetry's."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the tangpoem authors\n")
    assert (ROOT / "tangpoem" / "pingshui.LICENSE").read_text(encoding="utf-8").strip() in text
    assert "chinese-poetry@2.0.1" in text and "Copyright (c) 2016 JackeyGao" in text
    assert text.count("Permission is hereby granted") == 3


@pytest.mark.once
def test_the_wheel_metadata_holds_the_license(wheel):
    with zipfile.ZipFile(wheel) as zf:
        info = next(name for name in zf.namelist() if name.endswith(".dist-info/METADATA")).rsplit("/", 1)[0]
        metadata = zf.read(f"{info}/METADATA").decode()
        assert zf.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()


@pytest.mark.once
def test_the_wheel_holds_the_package_data(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in ("tangpoem/pingshui.tsv", "tangpoem/pingshui.LICENSE", "tangpoem/rhyme_usage.tsv",
                     "tangpoem/title_words.tsv", "tangpoem/kernels.c", "tangpoem/static/index.html",
                     "tangpoem/static/app.js",
                     "tangpoem/static/app.css",
                     "tangpoem/configs/cpu.toml", "tangpoem/configs/seed.toml", "tangpoem/configs/gpu.toml",
                     "tangpoem/models/bundled.safetensors"):  # fmt: skip
            assert name in names, name
        assert zf.read("tangpoem/pingshui.tsv") == (ROOT / "tangpoem" / "pingshui.tsv").read_bytes()
        assert b"MIT License" in zf.read("tangpoem/pingshui.LICENSE")
        configs = sorted((ROOT / "configs").glob("*.toml"))
        assert len(configs) >= 4, configs  # bundled, cpu, gpu, seed
        for config in configs:
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
