"""The three ways of running the network's step give the same logits as the eager Paddle model, with the
full softmax and with the adaptive one (log-probabilities over the whole vocabulary)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tangpoem.checkpoint import load_checkpoint
from tangpoem.generate import main
from tangpoem.generation import Poet
from tangpoem.generation.steps import EagerStep, NumpyStep

from .test_generate import VOCAB


@pytest.fixture(scope="module", params=["full", "adaptive"])
def ckpt_path(request, tmp_path_factory) -> str:
    import paddle

    from tangpoem.checkpoint import save_checkpoint
    from tangpoem.model import ModelConfig, PoetryModel

    paddle.seed(2)
    cutoffs = [len(VOCAB) // 8, len(VOCAB) // 2] if request.param == "adaptive" else []
    model = PoetryModel(ModelConfig(len(VOCAB), embedding_dim=24, hidden_dim=40, num_layers=3, output_cutoffs=cutoffs))
    # Random biases too, so a mistake in the gate order or bias handling cannot hide behind zeros; a shuffled
    # frequency order, so a mistake in mapping ranks back to ids cannot hide behind the identity.
    model.set_state_dict(
        {k: paddle.randn(v.shape) * 0.5 for k, v in model.state_dict().items() if v.dtype != paddle.int64}
    )
    if cutoffs:
        model.adaptive.set_ranks(paddle.to_tensor(np.random.default_rng(1).permutation(len(VOCAB))))
    path = tmp_path_factory.mktemp("export") / "model.ckpt"
    save_checkpoint(path, model, VOCAB)
    return str(path)


@pytest.fixture(scope="module")
def exported(ckpt_path: str, tmp_path_factory) -> str:
    from tangpoem.export import export_step

    out = str(tmp_path_factory.mktemp("step") / "step")
    export_step(load_checkpoint(ckpt_path), out)
    return out


def run_steps(step, ids: np.ndarray) -> list[np.ndarray]:
    """Feed ids [T, B] one step at a time; logits after each step."""
    step.reset(ids.shape[1])
    rows = list(range(ids.shape[1]))
    return [step.step(ids[t], rows) for t in range(len(ids))]


def token_stream(batch: int = 3, steps: int = 12) -> np.ndarray:
    return np.random.default_rng(0).integers(0, len(VOCAB), size=(steps, batch))


def test_numpy_step_matches_eager(ckpt_path: str) -> None:
    ckpt = load_checkpoint(ckpt_path)
    ids = token_stream()
    eager = run_steps(EagerStep(ckpt.build_model()), ids)
    fast = run_steps(NumpyStep(ckpt), ids)
    for a, b in zip(eager, fast, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    # Skipping the output layer on forced steps must not disturb the state.
    step = NumpyStep(ckpt)
    step.reset(3)
    for t in range(len(ids) - 1):
        assert step.step(ids[t], []) is None
    np.testing.assert_allclose(step.step(ids[-1], [0, 2]), eager[-1][[0, 2]], rtol=1e-4, atol=1e-4)


def test_eager_matches_whole_sequence_forward(ckpt_path: str) -> None:
    """Stepping with carried (h, c) is the same as running the sequence at once."""
    import paddle

    ckpt = load_checkpoint(ckpt_path)
    ids = token_stream(batch=2, steps=6)
    model = ckpt.build_model()
    with paddle.no_grad():
        logits, _ = model(paddle.to_tensor(ids.T.astype(np.int64)))
    whole = logits.numpy().reshape(2, 6, -1)
    stepped = run_steps(EagerStep(ckpt.build_model()), ids)
    for t in range(6):
        np.testing.assert_allclose(stepped[t], whole[:, t], rtol=1e-4, atol=1e-5)


def test_exported_step_matches_eager(ckpt_path: str, exported: str) -> None:
    from tangpoem.generation.steps import InferenceStep

    ckpt = load_checkpoint(ckpt_path)
    assert Path(exported + ".pdiparams").is_file() and Path(exported + ".meta.json").is_file()
    ids = token_stream()
    eager = run_steps(EagerStep(ckpt.build_model()), ids)
    for onednn in (False, True):
        inferred = run_steps(InferenceStep(exported, ckpt, onednn=onednn), ids)
        for a, b in zip(eager, inferred, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_backends_write_the_same_poems(ckpt_path: str, exported: str) -> None:
    poems = {}
    for backend, inference in (("numpy", ""), ("eager", ""), ("inference", exported)):
        poet = Poet.load(ckpt_path, backend="eager" if backend == "eager" else "numpy", inference=inference)
        poems[backend] = [
            p.text for p in poet.write(start_words="春风十里", acrostic=True, form="五绝", num_poems=4, seed=3)
        ]
    assert poems["numpy"] == poems["eager"] == poems["inference"]


def test_export_cli_and_mismatched_checkpoint(ckpt_path: str, tmp_path: Path, capsys) -> None:
    from tangpoem.export import main as export_main

    out = str(tmp_path / "cli" / "step")
    assert export_main(["--model-path", ckpt_path, "--out", out]) == 0
    printed = capsys.readouterr().out.split()
    assert out + ".pdiparams" in printed and out + ".meta.json" in printed
    code = main(["--model-path", ckpt_path, "--inference", out, "--form", "五绝", "--start-words", ""])
    assert code == 0 and len(capsys.readouterr().out.strip().split("\n")) == 2
    # Another checkpoint (different weights are fine, a different shape is not).
    from tangpoem.checkpoint import save_checkpoint
    from tangpoem.model import ModelConfig, PoetryModel

    other = tmp_path / "other.ckpt"
    save_checkpoint(other, PoetryModel(ModelConfig(len(VOCAB), 8, 16, 1)), VOCAB)
    code = main(["--model-path", str(other), "--inference", out])
    err = capsys.readouterr().err
    assert code == 2 and "was exported from" in err and err.count("\n") == 1
    code = main(["--model-path", ckpt_path, "--inference", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 2 and "no exported step" in err
