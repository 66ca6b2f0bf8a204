"""Every command, a table of bad inputs: exit 2, one line on stderr naming the problem, no traceback,
no file left behind."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest

from tests.test_train import build_small_npz, run_training, tiny_config


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Good and bad files of every kind, in a folder the commands must leave as it is."""
    root = tmp_path_factory.mktemp("inputs")
    npz = build_small_npz(root / "good", n=200)
    ckpt = run_training(tiny_config(npz, root / "good" / "m", max_steps=2)).checkpoint
    corpus = root / "good" / "src"
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty").write_bytes(b"")
    (bad / "folder").mkdir()
    (bad / "folder.toml").mkdir()
    raw = Path(npz).read_bytes()
    (bad / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    blob = Path(ckpt).read_bytes()
    (bad / "truncated.ckpt").write_bytes(blob[: len(blob) // 2])
    (bad / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    (bad / "unknown.toml").write_text("batch_sise = 3\n", encoding="utf-8")
    (bad / "wrongtype.toml").write_text('lr = "fast"\n', encoding="utf-8")
    (bad / "latin1.toml").write_bytes('start_words = "春风"\n'.encode("gb18030"))
    (bad / "poems.txt").write_bytes("白日依山尽，黄河入海流。".encode("gbk"))
    (bad / "a_file").write_text("not a folder", encoding="utf-8")
    return {
        "npz": str(npz), "ckpt": str(ckpt), "corpus": str(corpus),
        **{p.name.replace(".", "_"): str(p) for p in bad.iterdir()},
        "root": str(root),
    }  # fmt: skip


CASES = [  # (command, arguments with {placeholders}, what the line must say)
    ("data", "build --source {root}/missing --out {root}/out.npz", "does not exist"),
    ("data", "build --source {folder} --out {root}/out.npz", "no poet.tang.*.json files"),
    ("data", "build --source {empty} --out {root}/out.npz", "not a readable tarball"),
    ("data", "build --source {picture_png} --out {root}/out.npz", "not a readable tarball"),
    ("data", "build --source {corpus} --out {a_file}/out.npz", "a file is in the way of its folder"),
    ("data", "build --source {corpus} --out {folder}", "it is a folder"),
    ("data", "build --source {corpus} --maxlen 2", "--maxlen must be between 3"),
    ("data", "build --source {corpus} -c {unknown_toml}", "unknown setting(s) batch_sise"),
    ("data", "build --source {corpus} --lr 1", "--lr is a setting of tangpoem.train"),
    ("data", "stats {root}/missing.npz", "not found"),
    ("data", "stats {folder}", "is a folder"),
    ("data", "stats {empty}", "is not an npz file"),
    ("data", "stats {truncated_npz}", "is not an npz file"),
    ("data", "stats {picture_png}", "is not an npz file"),
    ("train", "--data-path {root}/missing.npz", "not found"),
    ("train", "--data-path {truncated_npz}", "is not an npz file"),
    ("train", "--data-path {ckpt}", "is not an npz file"),
    ("train", "--data-path {npz} --lr -1", "--lr must be between"),
    ("train", "--data-path {npz} --lr nan", "--lr must be between"),
    ("train", "--data-path {npz} --plot-every 0", "--plot-every must be between 1"),
    ("train", "--data-path {npz} --batch-size 0", "--batch-size must be between 1"),
    ("train", "--data-path {npz} --batch-size 100000000", "--batch-size must be between 1"),
    ("train", "--data-path {npz} --dropout 1.5", "--dropout must be between 0"),
    ("train", "--data-path {npz} --embedding-dropout -0.1", "--embedding-dropout must be between 0"),
    ("train", "--data-path {npz} --max-minutes inf", "--max-minutes must be between 0"),
    ("train", "--data-path {npz} --lr-schedule linear", "--lr-schedule must be one of constant, cosine"),
    ("train", "--data-path {npz} --rhyme", "--rhyme is a setting of tangpoem.generate"),
    ("train", "--data-path {npz} -c {unknown_toml}", "unknown setting(s) batch_sise"),
    ("train", "--data-path {npz} -c {wrongtype_toml}", "setting 'lr' must be a float"),
    ("train", "--data-path {npz} -c {latin1_toml}", "is not UTF-8"),
    ("train", "--data-path {npz} -c {folder_toml}", "is a folder"),
    ("train", "--data-path {npz} -c {root}/missing.toml", "not found"),
    ("train", "--data-path {npz} --model-prefix {a_file}/m", "cannot create the checkpoint folder"),
    ("train", "--data-path {npz} --resume {root}/missing.ckpt", "not found"),
    ("evaluate", "--model-path {root}/missing --data-path {npz}", "not found"),
    ("evaluate", "--model-path {folder} --data-path {npz}", "is a directory"),
    ("evaluate", "--model-path {empty} --data-path {npz}", "not a tangpoem checkpoint"),
    ("evaluate", "--model-path {truncated_ckpt} --data-path {npz}", "is truncated"),
    ("evaluate", "--model-path {npz} --data-path {npz}", "not a tangpoem checkpoint"),
    ("evaluate", "--model-path {ckpt} --data-path {truncated_npz}", "is not an npz file"),
    ("evaluate", "--model-path {ckpt} --data-path {npz} --samples -1", "--samples must be between 0"),
    ("evaluate", "--poems {poems_txt} --data-path {npz}", "not UTF-8"),
    ("generate", "--model-path {root}/missing", "not found"),
    ("generate", "--model-path {folder}", "is a directory"),
    ("generate", "--model-path {empty}", "not a tangpoem checkpoint"),
    ("generate", "--model-path {truncated_ckpt}", "is truncated"),
    ("generate", "--model-path {picture_png}", "not a tangpoem checkpoint"),
    ("generate", "--model-path {ckpt} --temperature nan", "--temperature must be between 0"),
    ("generate", "--model-path {ckpt} --top-p 2", "--top-p must be between"),
    ("generate", "--model-path {ckpt} --num-poems 0", "--num-poems must be between 1"),
    ("generate", "--model-path {ckpt} --num-poems 100000000", "--num-poems must be between 1"),
    ("generate", "--model-path {ckpt} --start-words 春风xyz", "'x' (U+0078)"),
    ("generate", "--model-path {ckpt} --template 山水风月，□□□□□。", "same length"),
    ("generate", "--model-path {ckpt} -c {latin1_toml}", "is not UTF-8"),
    ("export", "--model-path {truncated_ckpt} --out {root}/export/step", "is truncated"),
    ("export", "--model-path {ckpt} --out {a_file}/step", "cannot write the export"),
    ("export", "--model-path {ckpt} --lr 5", "--lr is a setting of tangpoem.train"),
]


def _listing(root: str) -> set[str]:
    return {str(p.relative_to(root)) for p in Path(root).rglob("*")}


@pytest.mark.parametrize("command, args, message", CASES, ids=[f"{c} {a}" for c, a, _ in CASES])
def test_bad_input_gets_one_line_and_exit_2(files, capsys, command, args, message):
    argv = [a.format(**files) if "{" in a else a for a in args.split()]
    if command in ("train", "evaluate"):
        argv += ["--no-use-gpu"]
    if command == "generate":  # the default prefix words are not in the tiny model's vocabulary
        argv += ["--prefix-words", ""]
    before = _listing(files["root"])
    status = importlib.import_module(f"tangpoem.{command}").main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert status == 2, (args, err[-500:])
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert _listing(files["root"]) == before, "a file was left behind"
    shutil.rmtree(Path(files["root"]) / "export", ignore_errors=True)
