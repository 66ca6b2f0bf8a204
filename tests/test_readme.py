"""Every command in the README (and in docs/*.md) runs: the cheap ones here, with a tiny network and a few steps.

Commands that download, launch several processes, install packages or take minutes (the two set-up
commands, benchmarks) are named in SKIPPED: a new command in the README must be run here or added there.
The settings reference (README.md and docs/settings.md) is what scripts/settings_reference.py generates
from Config now, and the README and the configs shipped in the wheel hold no dates, loads or machines.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import shutil
import tarfile
from pathlib import Path

import pytest

from tangpoem.config import Config
from tests.conftest import CORPUS_ENV, corpus_from_env, write_corpus

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))  # their commands run too, each page in a user's folder of its own
README_MAX_LINES = 260  # a user's guide; measurements and details live in docs/ and benchmarks/README.md
TINY = ["--embedding-dim", "16", "--hidden-dim", "32", "--num-layers", "1", "--batch-size", "16",
        "--max-steps", "2", "--no-use-gpu", "--no-amp", "--plot-every", "1000000", "--epoch", "1"]  # fmt: skip
# a config that resumes another's run: that config, and the tiny stage's first and last step (after the one before)
LATER_STAGES = {"bundled-tang": ("bundled", 2, 4), "bundled-finish": ("bundled", 4, 6)}
SKIPPED = [
    "scripts/quickstart.sh",  # run by hand for each release: it trains for 15 minutes
    "scripts/test.sh",  # this very test suite
    "scripts/setup_env.sh",  # makes the environment scripts/test.sh and scripts/quickstart.sh run in
    "python -m tangpoem.data build  ",  # downloads the corpus (the same code path is tested with --source)
    "paddle.distributed.launch",  # tests/test_distributed.py runs the launcher
    "python benchmarks/",  # minutes each; run by hand, results in benchmarks/README.md
    "--collections tang,song",  # needs the Song files of the tarball: tests/test_collections.py builds them
    "--data-path work/tangsong.npz",  # trains on that build: tests/test_titles.py trains and writes to titles
    "--model-path work/checkpoints/titled.1",  # that model: tests/test_titles.py writes with --title
    "pip install torch",
    "pip install -e",  # the serve extra: scripts/test.sh installs it
    "python -m tangpoem.serve",  # runs until stopped: tests/test_serve.py starts it on a free port
    "curl ",  # needs that server: tests/test_serve.py posts the README's example to the app
]


def readme_blocks(lang: str, page: Path = README) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def readme_commands(page: Path = README) -> list[str]:
    commands = []
    for block in readme_blocks("sh", page):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix(".venv/bin/")  # the same command in the environment setup_env.sh made
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_readme_has_the_commands_a_user_needs():
    commands = " ".join(readme_commands())
    for needed in ("scripts/quickstart.sh", "scripts/test.sh", "tangpoem.data build", "tangpoem.train",
                   "tangpoem.evaluate", "tangpoem.generate", "--acrostic", "tangpoem.export",
                   "tangpoem.serve"):  # fmt: skip
        assert needed in commands


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tang_npz, corpus_dir):
    """A user's folder: work/tang_poem.npz, work/tangsong.npz (the bundled recipe's data; here the Tang poems
    alone with their titles, which build in seconds) and a tiny checkpoint trained on the first."""
    from tangpoem.data import build_poems, save_npz
    from tangpoem.train import train

    root = tmp_path_factory.mktemp("readme")
    (root / "work").mkdir()
    shutil.copy(tang_npz, root / "work" / "tang_poem.npz")
    save_npz(build_poems(corpus_dir, format_version=2)[0], root / "work" / "tangsong.npz")
    cfg = Config(data_path=str(root / "work" / "tang_poem.npz"), embedding_dim=16, hidden_dim=32, num_layers=1,
                 batch_size=16, max_steps=3, use_gpu=False, plot_every=10**6,
                 model_prefix=str(root / "work" / "checkpoints" / "tiny"))  # fmt: skip
    return root, train(cfg), corpus_dir


def to_argv(command: str, ckpt: str, corpus: Path) -> tuple[str, list[str]]:
    """`python -m tangpoem.X args # comment` -> ("tangpoem.X", args) with the tiny checkpoint and settings."""
    words = shlex.split(command, comments=True)
    module, args = words[2], words[3:]
    args = [ckpt if a == "CKPT" or (args[i - 1] == "--model-path" and a.startswith("work/")) else a
            for i, a in enumerate(args)]  # fmt: skip
    # every --source (the downloaded tarball, a clone) is the test corpus: absolute, so any folder works
    args = [str(corpus) if i and args[i - 1] == "--source" else a for i, a in enumerate(args)]
    if module == "tangpoem.train":
        config = args[args.index("-c") + 1] if "-c" in args else "default"
        if "--model-prefix" not in args:  # one run per config, as a user's
            args += ["--model-prefix", f"work/checkpoints/readme-{LATER_STAGES.get(config, (config,))[0]}"]
        args += TINY
        if config in LATER_STAGES:  # goes on from the tiny run of the stage before it, as a user's from theirs
            _, first, last = LATER_STAGES[config]
            args += ["--schedule-start", str(first), "--max-steps", str(last)]
    return module, args


def run_page_commands(page: Path, workdir, folder: Path, monkeypatch, capsys) -> tuple[int, int]:
    """Run a page's commands in order in a copy of the user's folder (its npz and tiny checkpoint)."""
    root, ckpt, corpus = workdir
    shutil.copytree(root / "work", folder / "work")
    ckpt = str(folder / Path(ckpt).relative_to(root))
    monkeypatch.chdir(folder)
    ran = skipped = 0
    for command in readme_commands(page):
        if any(s in command + "  " for s in SKIPPED):
            skipped += 1
            continue
        assert command.startswith("python -m tangpoem."), f"{page.name} command not covered: {command}"
        module, argv = to_argv(command, ckpt, corpus)
        status = importlib.import_module(module).main(argv)
        err = capsys.readouterr().err
        assert status == 0, f"{page.name}: {command}\n-> exit {status}: {err[-500:]}"
        ran += 1
    return ran, skipped


def test_every_readme_command_runs(workdir, tmp_path, monkeypatch, capsys):
    ran, skipped = run_page_commands(README, workdir, tmp_path, monkeypatch, capsys)
    assert ran >= 15 and skipped >= 5


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_every_docs_command_runs(page, workdir, tmp_path, monkeypatch, capsys):
    run_page_commands(page, workdir, tmp_path, monkeypatch, capsys)


def test_readme_data_commands_run_with_a_relative_downloaded_corpus(tmp_path, monkeypatch, capsys):
    # scripts/test.sh after downloading: TANGPOEM_CORPUS=work/chinese-poetry-2.0.1.tgz, relative to the clone,
    # while the README's commands run in a user's folder elsewhere
    from tangpoem.data import load_npz, main

    clone = tmp_path / "clone"
    package = write_corpus(tmp_path / "npm" / "package" / "dist" / "quantangshi", [["床前明月光，疑是地上霜。"]])
    (clone / "work").mkdir(parents=True)
    with tarfile.open(clone / "work" / "chinese-poetry-2.0.1.tgz", "w:gz") as tar:
        tar.add(package.parent.parent, arcname="package")
    monkeypatch.setenv(CORPUS_ENV, "work/chinese-poetry-2.0.1.tgz")
    corpus = corpus_from_env(clone)  # as the corpus_dir fixture does, from where pytest started
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.chdir(user)
    builds = [c for c in readme_commands() if "tangpoem.data build" in c and "--source" in c and
              not any(s in c for s in SKIPPED)]  # fmt: skip
    assert len(builds) >= 2  # the downloaded tarball and a clone
    for command in builds:
        module, argv = to_argv(command, "", corpus)
        assert main(argv) == 0, capsys.readouterr().err
        assert load_npz(user / "work" / "tang_poem.npz").texts() == ["床前明月光，疑是地上霜。"]
        (user / "work" / "tang_poem.npz").unlink()


def test_readme_python_api_example_runs(workdir, monkeypatch, capsys):
    root, ckpt, _ = workdir
    monkeypatch.chdir(root)
    (code,) = readme_blocks("python")
    exec(re.sub(r'"work/checkpoints/[^"]+"', repr(ckpt), code), {})
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) >= 3


# ---------------------------------------------------------------- the settings reference, and what the README holds


def settings_script():
    spec = importlib.util.spec_from_file_location("settings_reference", ROOT / "scripts" / "settings_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_reference_is_generated_from_config_now():
    from tangpoem.config import COMMANDS, FIELDS

    ref = settings_script()
    blocks = ref.generate()
    for kind, path in ref.FILES.items():
        assert ref.current(path) == blocks[kind], (
            f"{path.relative_to(ROOT)}: its settings are out of date; run python scripts/settings_reference.py --write"
        )
    for name in FIELDS:  # every field once, with its default and range, under the commands that take it
        rows = [row for row in blocks["full"].splitlines() if row.startswith(f"| `{ref.flag(name)}` |")]
        assert len(rows) == 1, name
        assert f" {ref.show_range(name)} | " in rows[0] and ref.show_default(name, FIELDS[name].default) in rows[0]
    for command, names in COMMANDS.items():  # and each command's row of the README's table names them all
        (row,) = [row for row in blocks["compact"].splitlines() if row.startswith(f"| `{command}` |")]
        assert all(f"`{ref.flag(name)}`" in row for name in names), command
    assert "| `--num-threads` | 0; generate, serve: 1 |" in blocks["full"]  # a command's own default is shown
    assert "docs/settings.md" in README.read_text(encoding="utf-8")


DATED = re.compile(r"\b20\d\d-\d\d-\d\d\b|\d\d:\d\d UTC|\bUTC\b|load average|\bload \d|EPYC|Xeon|vCPU", re.I)


def test_readme_and_configs_hold_no_dates_loads_or_machines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; details go to docs/"
    found = [f"README.md:{i}: {line}" for i, line in enumerate(lines, 1) if DATED.search(line)]
    for config in sorted((ROOT / "configs").glob("*.toml")):  # shipped in the wheel
        for i, line in enumerate(config.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("#") and DATED.search(line):
                found.append(f"{config.name}:{i}: {line}")
    assert not found, "measurements with their dates and machines go to benchmarks/README.md or docs/:\n" + "\n".join(
        found
    )
