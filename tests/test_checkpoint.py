"""Checkpoints: a truncated or altered file is refused with one line by every command that reads it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from tangpoem.checkpoint import expected_tensors, load_checkpoint
from tangpoem.errors import TangpoemError
from tangpoem.model import ModelConfig, PoetryModel
from tests.test_train import build_small_npz, run_training, tiny_config


@pytest.mark.parametrize("config", [ModelConfig(7, 3, 5, 1), ModelConfig(11, 4, 6, 3, 0.2)], ids=["1-layer", "3-layer"])
def test_expected_tensors_are_the_networks(config):
    state = PoetryModel(config).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_tensors(config)
    assert {str(v.dtype) for v in state.values()} == {"paddle.float32"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(npz, a resumable checkpoint of a 2-layer network trained 3 steps on it)."""
    root = tmp_path_factory.mktemp("ckpt")
    npz = build_small_npz(root, n=200)
    result = run_training(tiny_config(npz, root / "m", num_layers=2, max_steps=3))
    return npz, Path(result.checkpoint)


def rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of checkpoint src (and its trainer state) with change(weights) applied, metadata kept."""
    with safe_open(str(src), framework="np") as f:
        metadata = f.metadata()
        weights = {k: f.get_tensor(k) for k in f.keys()}
    change(weights)
    save_file(weights, str(dst), metadata=metadata)
    shutil.copy(f"{src}.trainer", f"{dst}.trainer")
    return dst


def swap_shape(weights):
    w = weights["lstm.weight_hh_l1"]
    weights["lstm.weight_hh_l1"] = weights["lstm.1.cell.weight_hh"] = np.zeros((w.shape[0], w.shape[1] - 1), w.dtype)


def altered_files(trained, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    _, good = trained
    cut, header_cut = tmp_path / "cut", tmp_path / "header_cut"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    header_cut.write_bytes(good.read_bytes()[:100])
    for path in (cut, header_cut):
        shutil.copy(f"{good}.trainer", f"{path}.trainer")

    def to_float64(w):
        w["linear.bias"] = w["linear.bias"].astype(np.float64)

    def drop(w):
        del w["lstm.bias_ih_l1"]

    def one_alias(w):  # nn.LSTM's two names of one parameter disagree
        w["lstm.0.cell.weight_ih"] = w["lstm.0.cell.weight_ih"] + 1

    return {
        "truncated": (cut, f"is truncated ({cut.stat().st_size:,} of its {good.stat().st_size:,} bytes"),
        "header-cut": (header_cut, "is truncated (100 of its "),
        "shape": (rewrite(good, tmp_path / "shape", swap_shape), "tensor lstm.weight_hh_l1 is float32 [128, 31]"),
        "dtype": (rewrite(good, tmp_path / "dtype", to_float64), "tensor linear.bias is float64"),
        "missing": (rewrite(good, tmp_path / "missing", drop), "lacks lstm.bias_ih_l1"),
        "alias": (rewrite(good, tmp_path / "alias", one_alias), "lstm.weight_ih_l0 and lstm.0.cell.weight_ih differ"),
    }


@pytest.mark.parametrize("case", ["truncated", "header-cut", "shape", "dtype", "missing", "alias"])
def test_altered_checkpoint_is_refused_on_load(trained, tmp_path, case):
    path, message = altered_files(trained, tmp_path)[case]
    load_checkpoint(trained[1])  # the original loads
    with pytest.raises(TangpoemError) as err:
        load_checkpoint(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_metadata_describing_another_network_is_refused(trained, tmp_path):
    _, good = trained
    with safe_open(str(good), framework="np") as f:
        header = json.loads(f.metadata()["tangpoem"])
        weights = {k: f.get_tensor(k) for k in f.keys()}
    header["model"]["hidden_dim"] = 64  # the tensors are still those of hidden_dim 32
    save_file(weights, str(tmp_path / "bigger"), metadata={"tangpoem": json.dumps(header, ensure_ascii=False)})
    with pytest.raises(TangpoemError, match=r"tensor embeddings.weight|needs float32 \[256"):
        load_checkpoint(tmp_path / "bigger")
    header["model"]["num_layers"] = -1
    save_file(weights, str(tmp_path / "negative"), metadata={"tangpoem": json.dumps(header, ensure_ascii=False)})
    with pytest.raises(TangpoemError, match="num_layers=-1"):
        load_checkpoint(tmp_path / "negative")


@pytest.mark.parametrize("case", ["truncated", "shape"])
@pytest.mark.parametrize("command", ["generate-numpy", "generate-eager", "evaluate", "export", "train-resume"])
def test_every_command_refuses_an_altered_checkpoint_in_one_line(trained, tmp_path, capsys, case, command):
    import importlib

    npz, _ = trained
    path, message = altered_files(trained, tmp_path)[case]
    common = ["--num-threads", "1"]
    argv = {
        "generate-numpy": ["--model-path", str(path), "--backend", "numpy"],
        "generate-eager": ["--model-path", str(path), "--backend", "eager"],
        "evaluate": ["--model-path", str(path), "--data-path", str(npz), "--no-use-gpu"],
        "export": ["--model-path", str(path), "--out", str(tmp_path / "export" / "step")],
        "train-resume": [*("--data-path", str(npz), "--resume", str(path), "--model-prefix", str(path)),
                         *("--embedding-dim", "16", "--hidden-dim", "32", "--num-layers", "2", "--max-steps", "5"),
                         "--no-use-gpu"],
    }[command]  # fmt: skip
    module = importlib.import_module(f"tangpoem.{command.split('-')[0]}")
    assert module.main([*argv, *common]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_compact_checkpoints_load_as_float32_and_close(trained, tmp_path, storage):
    from tangpoem.checkpoint import save_compact
    from tangpoem.generation import Poet

    _, path = trained
    ckpt = load_checkpoint(path)
    out = tmp_path / f"small.{storage}"
    save_compact(ckpt, out, storage, {"note": "compact"})
    back = load_checkpoint(out)
    assert back.meta["note"] == "compact" and back.vocab == ckpt.vocab and back.model_config == ckpt.model_config
    assert "storage" not in back.meta and set(back.weights) == set(ckpt.weights)
    tolerance = 2e-3 if storage == "float16" else 1 / 127
    assert {"embeddings.weight", "linear.weight", "linear.bias"} <= set(ckpt.weights)  # the loop checks something
    for name, w in ckpt.weights.items():
        got = back.weights[name]
        assert got.dtype == np.float32 and got.shape == w.shape
        bound = tolerance * np.abs(w).max(axis=0 if name == "linear.weight" else -1, keepdims=True)
        assert (np.abs(got - w) <= bound + 1e-7).all(), name
    plain_size = os.path.getsize(path)
    assert os.path.getsize(out) < plain_size * (0.35 if storage == "int8" else 0.6)  # aliases once, fewer bytes
    a = Poet.load(path).write(form="五绝", temperature=0)[0].text
    b = Poet.load(str(out)).write(form="五绝", temperature=0)[0].text
    assert len(a) == len(b) == 24


def test_compact_checkpoint_with_a_missing_scale_is_refused(trained, tmp_path):
    from safetensors.numpy import load_file

    from tangpoem.checkpoint import save_compact

    _, path = trained
    out = tmp_path / "small.int8"
    save_compact(load_checkpoint(path), out, "int8")
    with safe_open(str(out), framework="np") as f:
        metadata = f.metadata()
    weights = load_file(str(out))
    del weights["linear.weight.scale"]
    save_file(weights, str(out), metadata=metadata)
    with pytest.raises(TangpoemError, match="compact weights are incomplete"):
        load_checkpoint(out)
