"""Shared fixtures: the real corpus (from $TANGPOEM_CORPUS), an npz built from it, small hand-made corpora."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

import tangpoem  # noqa: F401  (quiets Paddle's import-time warning before any test imports paddle)
from tangpoem.data import PoemData, build_poems, save_npz

CORPUS_ENV = "TANGPOEM_CORPUS"
TARBALL_ENV = "TANGPOEM_CORPUS_TARBALL"  # the npm tarball, for the Song shi the Tang folder lacks


def corpus_from_env(base: Path) -> Path | None:
    """$TANGPOEM_CORPUS as an absolute path (a relative one is taken from `base`), or None when unset.

    Absolute because tests run commands in other folders: scripts/test.sh sets the relative
    `work/chinese-poetry-2.0.1.tgz` after downloading the corpus.
    """
    value = os.environ.get(CORPUS_ENV)
    return (base / Path(value).expanduser()).resolve() if value else None


def in_ci() -> bool:
    """$CI is set (CI systems set CI=true): what a developer's machine may lack, CI must have."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_outside_ci(reason: str, *, allow_module_level: bool = False) -> NoReturn:
    """Skip on a developer's machine; under CI fail, since there the missing piece is a broken setup that a skip
    would hide (a run that skipped the tests it is there for, green)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: CI must have it, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason, allow_module_level=allow_module_level)


def importorskip_outside_ci(module: str, reason: str) -> ModuleType:
    """`pytest.importorskip` (in a test or at a module's top), except that under CI a missing module (a dependency
    of the test or serve extra) fails."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        skip_outside_ci(f"{reason} ({error})", allow_module_level=True)


@pytest.fixture(scope="session")
def corpus_dir(request) -> Path:
    """The chinese-poetry Tang files (a folder or the tarball); scripts/test.sh and .ci/run set $TANGPOEM_CORPUS.

    Unset: skipped on a developer's machine, failed under CI (a CI run that skipped every corpus test would pass).
    """
    path = corpus_from_env(request.config.invocation_params.dir)
    if path is None:
        skip_outside_ci(
            f"${CORPUS_ENV} is not set, so the tests that need the chinese-poetry corpus cannot run "
            f"(scripts/test.sh downloads it and sets it; .ci/run points it at ../shared/data/chinese-poetry-tang; "
            f"or export it to the corpus folder or tarball)"
        )
    if not path.exists():
        pytest.fail(f"${CORPUS_ENV}={os.environ[CORPUS_ENV]} does not exist (looked for {path})")
    return path


@pytest.fixture(scope="session")
def corpus_tarball(request) -> Path:
    """chinese-poetry-2.0.1.tgz (Tang and Song): $TANGPOEM_CORPUS_TARBALL, else $TANGPOEM_CORPUS when it is the
    tarball (scripts/test.sh downloads one). Missing: a failure in CI (CI=true), a skip elsewhere."""
    base = request.config.invocation_params.dir
    value = os.environ.get(TARBALL_ENV)
    path = (base / Path(value).expanduser()).resolve() if value else corpus_from_env(base)
    if path is None or not path.is_file():
        message = f"${TARBALL_ENV} ({value or 'unset'}) is not the corpus tarball, nor is ${CORPUS_ENV}; export it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def built_corpus(corpus_dir: Path, tmp_path_factory) -> tuple[PoemData, Path]:
    """The full corpus cleaned once per test session: (PoemData, npz path)."""
    poems, _ = build_poems(corpus_dir)
    path = tmp_path_factory.mktemp("corpus") / "tang_poem.npz"
    save_npz(poems, path)
    poems.path = str(path)
    return poems, path


@pytest.fixture(scope="session")
def tang_npz(built_corpus) -> Path:
    return built_corpus[1]


@pytest.fixture(scope="session")
def trained_ckpt(tang_npz, tmp_path_factory) -> str:
    """A small model trained 20 steps on the real corpus: the real vocabulary, weights that are not random."""
    from tangpoem.config import Config
    from tangpoem.train import train

    prefix = tmp_path_factory.mktemp("trained") / "model"
    cfg = Config(
        data_path=str(tang_npz), embedding_dim=32, hidden_dim=64, num_layers=1, batch_size=32, max_steps=20,
        model_prefix=str(prefix), use_gpu=False, plot_every=10**9,
    )  # fmt: skip
    return train(cfg)


def write_corpus(directory: Path, poems: list[list[str]], name: str = "poet.tang.0.json") -> Path:
    """A chinese-poetry style file: each poem a list of paragraphs."""
    directory.mkdir(parents=True, exist_ok=True)
    records = [{"author": "某", "title": f"诗{i}", "id": f"id-{i}", "paragraphs": p} for i, p in enumerate(poems)]
    (directory / name).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return directory
