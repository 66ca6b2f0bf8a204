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
    _write_repeated_vocabulary(ckpt, bad / "repeated_vocab.ckpt")
    _write_damaged_export(ckpt, bad / "export")
    return {
        "npz": str(npz), "ckpt": str(ckpt), "corpus": str(corpus),
        **{p.name.replace(".", "_"): str(p) for p in bad.iterdir()},
        "root": str(root), "nothing": "",
    }  # fmt: skip


def _write_repeated_vocabulary(ckpt: str, out: Path) -> None:
    """The checkpoint with its second token renamed to its first: two ids for one character."""
    import json

    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(ckpt, framework="np") as f:
        header = json.loads(f.metadata()["tangpoem"])
    header["vocab"][1] = header["vocab"][0]
    save_file(load_file(ckpt), str(out), metadata={"tangpoem": json.dumps(header, ensure_ascii=False)})


def _write_damaged_export(ckpt: str, folder: Path) -> None:
    """`tangpoem.export` of the checkpoint, its parameters file then cut short (an interrupted copy)."""
    from tangpoem.export import main as export

    assert export(["--model-path", ckpt, "--out", str(folder / "step")]) == 0
    params = folder / "step.pdiparams"
    params.write_bytes(params.read_bytes()[: params.stat().st_size // 2])


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
    ("train", "--data-path {npz} --resume {root}/missing.ckpt", "no such checkpoint; give --resume latest"),
    ("train", "--data-path {npz} --resume lastest", "no such checkpoint; give --resume latest"),
    ("train", "--data-path {npz} --model-prefix {root}/checkpoints/", "names no file"),
    ("train", "--data-path {npz} --model-prefix {nothing}", "names no file"),
    ("evaluate", "--model-path {root}/missing --data-path {npz}", "not found"),
    ("evaluate", "--model-path {folder} --data-path {npz}", "is a directory"),
    ("evaluate", "--model-path {empty} --data-path {npz}", "not a tangpoem checkpoint"),
    ("evaluate", "--model-path {truncated_ckpt} --data-path {npz}", "is truncated"),
    ("evaluate", "--model-path {npz} --data-path {npz}", "not a tangpoem checkpoint"),
    ("evaluate", "--model-path {ckpt} --data-path {truncated_npz}", "is not an npz file"),
    ("evaluate", "--model-path {ckpt} --data-path {npz} --samples -1", "--samples must be between 0"),
    ("evaluate", "--poems {poems_txt} --data-path {npz}", "not UTF-8"),
    ("generate", "--model-path {root}/missing", "not found"),
    ("generate", "--model-path {nothing}", "--model-path is empty"),
    ("generate", "--model-path {repeated_vocab_ckpt}", "its vocabulary is damaged"),
    ("generate", "--model-path {ckpt} --inference {export}/step --start-words 山", "cannot be loaded"),
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
    argv = [a.format(**files) if "{" in a else a for a in args.split()]  # {nothing}: an empty argument
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


def test_an_overlong_text_is_quoted_short(files, capsys):
    from tangpoem.generate import main

    assert main(["--model-path", files["ckpt"], "--prefix-words", "", "--start-words", "山水风月，" * 600]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 300 and "(3,000 characters)" in err, err


# ---------------------------------------------------------------- what a terminal or the system gets wrong


def _run(module: str, *args: str | bytes, env: dict | None = None, timeout: float = 120):
    import os
    import subprocess
    import sys

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, timeout=timeout, env=full_env)


@pytest.mark.parametrize("flag", ["--start-words", "--prefix-words", "--template"])
def test_text_typed_in_a_gbk_terminal_is_named_not_a_traceback(files, flag):
    done = _run("tangpoem.generate", "--model-path", files["ckpt"], flag, "春风".encode("gbk"))
    err = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in err, err
    assert err.startswith(f"error: {flag} is not UTF-8 text") and err.count("\n") == 1, err


def test_poems_reach_an_output_that_cannot_encode_chinese(files):
    """PYTHONIOENCODING=ascii (or a redirect under a C locale): the poems are written in UTF-8 with one note."""
    done = _run("tangpoem.generate", "--model-path", files["ckpt"], "--prefix-words", "", "--start-words", "山水",
                "--seed", "3", env={"PYTHONIOENCODING": "ascii"})  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 0 and "Traceback" not in err, err
    assert done.stdout.decode("utf-8").startswith("山水") and "writing UTF-8" in err


@pytest.mark.parametrize(
    "host, message", [("127.0.0.1", "is already in use"), ("no-such-host.invalid", "is not an address")]
)
def test_serve_on_a_taken_port_or_an_unknown_host_is_one_line(files, host, message):
    import socket

    pytest.importorskip("uvicorn")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run("tangpoem.serve", "--model-path", files["ckpt"], "--host", host, "--port", str(port))
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err and ("--port" in err or "--host" in err), err
