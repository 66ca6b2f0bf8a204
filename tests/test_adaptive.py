"""The adaptive softmax output layer (`--output-cutoffs`): the same loss on the fast and the plain path,
full probabilities that sum to 1 in every generation backend, checkpoints (compact storage, resume) and
clear refusals of impossible cutoffs or a damaged frequency order."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from tangpoem import fastlstm
from tangpoem.checkpoint import Checkpoint, load_checkpoint, save_compact
from tangpoem.config import Config, ModelConfig
from tangpoem.data import load_npz
from tangpoem.errors import TangpoemError
from tangpoem.generation import Poet
from tangpoem.generation.steps import EagerStep, NumpyStep
from tangpoem.loss import sequence_loss
from tangpoem.model import PoetryModel
from tangpoem.train import frequency_ranks, main, train
from tests.test_generate import check_lines, check_rhyme
from tests.test_train import build_small_npz, run_to, tiny_config, weights


def adaptive_model(vocab: int = 300, cutoffs: tuple[int, ...] = (20, 100), layers: int = 1) -> PoetryModel:
    paddle.seed(1)
    model = PoetryModel(ModelConfig(vocab, 16, 24, layers, output_cutoffs=list(cutoffs)))
    model.adaptive.set_ranks(paddle.to_tensor(np.random.RandomState(0).permutation(vocab)))
    return model


def batch(vocab: int, shape=(4, 9), seed: int = 1):
    rng = np.random.RandomState(seed)
    inputs, targets = (paddle.to_tensor(rng.randint(0, vocab, shape)) for _ in range(2))
    return inputs, targets, paddle.to_tensor(rng.rand(*shape) > 0.3)


@pytest.mark.parametrize("native", [True, False])
def test_the_fast_loss_and_gradients_are_the_plain_ones(native, monkeypatch):
    """The fast path scores each row in the head and only its own cluster; the plain one takes -log p from
    the full log-probabilities: both must agree, on the compiled kernels and on Paddle's own ops."""
    monkeypatch.setattr(fastlstm, "USE_NATIVE", native)
    model = adaptive_model(cutoffs=(20, 100, 200))
    inputs, targets, mask = batch(300)
    results = []
    for fast in (True, False):
        model.clear_gradients()
        loss, count = sequence_loss(model, inputs, targets, mask, fast=fast)
        loss.backward()
        grads = {p.name: p.grad.numpy().copy() for p in model.parameters() if p.grad is not None}
        results.append((loss.item(), count, grads))
    (fast_loss, fast_count, fast_grads), (plain_loss, plain_count, plain_grads) = results
    assert fast_count == plain_count == int(mask.sum().item())
    assert fast_loss == pytest.approx(plain_loss, rel=1e-5)
    assert len(fast_grads) == len(plain_grads) == len(model.parameters())  # every cluster got a gradient
    for name, grad in plain_grads.items():
        np.testing.assert_allclose(fast_grads[name], grad, rtol=1e-4, atol=1e-6, err_msg=name)


def test_probabilities_over_the_whole_vocabulary_sum_to_one_in_every_backend(tmp_path):
    model = adaptive_model(layers=2)
    model.eval()
    inputs, _, _ = batch(300, (3, 5))
    log_probs, _ = model(inputs)
    np.testing.assert_allclose(np.exp(log_probs.numpy()).sum(axis=1), 1.0, rtol=1e-5)
    # the numpy step (the generator's default) and the eager one, one character at a time
    ckpt = Checkpoint("m", model.config, [f"w{i}" for i in range(300)],
                      {k: v.numpy() for k, v in model.state_dict().items()})  # fmt: skip
    steps = [NumpyStep(ckpt), EagerStep(model)]
    for step in steps:
        step.reset(3)
    for t in range(5):
        ids = inputs[:, t].numpy()
        out = [step.step(ids, [0, 1, 2]) for step in steps]
        np.testing.assert_allclose(np.exp(out[0]).sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(out[0], out[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[1], log_probs.numpy().reshape(3, 5, -1)[:, -1], rtol=1e-4, atol=1e-5)


def test_a_real_run_learns_orders_by_frequency_and_writes_poems(tang_npz, tmp_path):
    cfg = Config(data_path=str(tang_npz), embedding_dim=32, hidden_dim=64, num_layers=1, batch_size=32,
                 max_steps=40, lr=1e-2, model_prefix=str(tmp_path / "m"), log_dir=str(tmp_path / "logs"),
                 use_gpu=False, plot_every=10**9, output_cutoffs="500,3000")  # fmt: skip
    path = train(cfg)
    ckpt = load_checkpoint(path)
    poems = load_npz(tang_npz)
    assert ckpt.model_config.output_cutoffs == [500, 3000]
    rank = ckpt.weights["adaptive.rank"]
    np.testing.assert_array_equal(rank, frequency_ranks(poems))
    assert poems.ix2word[int(np.argmin(rank))] == "，"  # the commonest character of the poems heads the list
    assert rank[poems.pad_id] == poems.vocab_size - 1  # padding is never a target: last
    # a 40-step model already writes the forms' shape and rhyme through the same generator
    for poem in Poet.load(path).write(form="五律", num_poems=3, seed=3):
        check_lines(poem, 5, 8)
        check_rhyme(poem)
    # int8 storage keeps the frequency order exact and the log-probabilities close
    save_compact(ckpt, tmp_path / "small.safetensors", "int8")
    small = load_checkpoint(tmp_path / "small.safetensors")
    np.testing.assert_array_equal(small.weights["adaptive.rank"], rank)
    step, small_step = NumpyStep(ckpt), NumpyStep(small)
    for s in (step, small_step):
        s.reset(2)
    ids = np.array([poems.start_id, poems.word2ix["春"]])
    np.testing.assert_allclose(small_step.step(ids, [0, 1]), step.step(ids, [0, 1]), atol=0.05)


def test_stopped_and_resumed_equals_uninterrupted(tmp_path):
    npz = build_small_npz(tmp_path / "data")
    common = dict(output_cutoffs="8,20", dropout=0.2, epoch=3)
    whole = run_to(tiny_config(npz, tmp_path / "whole" / "m", max_steps=30, **common))
    cfg = tiny_config(npz, tmp_path / "parts" / "m", max_steps=11, **common)
    run_to(cfg)
    last = run_to(cfg, resume="latest", max_steps=30)
    assert last.global_step == whole.global_step == 30
    a, b = weights(whole.checkpoint), weights(last.checkpoint)
    assert "adaptive.tail_out.1.weight" in a and set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # another output layer is another network: refused, not resumed
    argv = ["--data-path", str(npz), "--model-prefix", str(tmp_path / "parts" / "m"), "--resume", "latest",
            "--embedding-dim", "16", "--hidden-dim", "32", "--num-layers", "1", "--batch-size", "32",
            "--dropout", "0.2", "--output-cutoffs", "10,20", "--max-steps", "31", "--no-use-gpu"]  # fmt: skip
    assert main(argv) == 2


@pytest.mark.parametrize("cutoffs", ["20,8", "0,8", "8,999", "8;20", "eight"])
def test_impossible_cutoffs_are_one_line_and_exit_2(cutoffs, tmp_path, capsys):
    npz = build_small_npz(tmp_path / "data")
    argv = ["--data-path", str(npz), "--model-prefix", str(tmp_path / "m"), "--output-cutoffs", cutoffs,
            "--max-steps", "1", "--no-use-gpu"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--output-cutoffs" in err and "\n" not in err and "Traceback" not in err
    assert not list(tmp_path.glob("m*"))


def test_a_damaged_frequency_order_is_refused(tmp_path):
    model = adaptive_model()
    values = {k: v.numpy() for k, v in model.state_dict().items()}
    values["adaptive.rank"] = values["adaptive.rank"].copy()
    values["adaptive.rank"][0] = values["adaptive.rank"][1]  # two characters on one rank, one on none
    with pytest.raises(TangpoemError, match="adaptive.rank"):
        Checkpoint("m", model.config, [f"w{i}" for i in range(300)], values)
    with pytest.raises(TangpoemError, match="impossible"):
        load_checkpoint_with(tmp_path, model, output_cutoffs=[100, 20])


def load_checkpoint_with(tmp_path, model: PoetryModel, **changes) -> Checkpoint:
    """model saved, its metadata's network edited."""
    import json

    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from tangpoem.checkpoint import save_checkpoint

    path = tmp_path / "edited"
    save_checkpoint(path, model, [f"w{i}" for i in range(model.config.vocab_size)])
    with safe_open(str(path), framework="np") as f:
        header = json.loads(f.metadata()["tangpoem"])
    header["model"].update(changes)
    save_file(load_file(str(path)), str(path), metadata={"tangpoem": json.dumps(header)})
    return load_checkpoint(path)
