"""The fast training path (fastlstm + masked fused output layer) computes what the plain model computes."""

from __future__ import annotations

import ctypes
import os
from ctypes import byref

import numpy as np
import paddle
import pytest

from tangpoem import fastlstm, native
from tangpoem.checkpoint import load_checkpoint, save_checkpoint
from tangpoem.data import PoemData
from tangpoem.dataset import make_loader, target_mask
from tangpoem.loss import hidden_states, sequence_loss
from tangpoem.model import ModelConfig, PoetryModel

VOCAB = 40


def tiny_model(seed: int = 0, layers: int = 2) -> PoetryModel:
    paddle.seed(seed)
    return PoetryModel(ModelConfig(VOCAB, embedding_dim=12, hidden_dim=16, num_layers=layers))


def batch(seed: int = 0, b: int = 4, t: int = 11):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(b, t + 1))
    mask = rng.random((b, t)) > 0.3
    mask[:, 0] = False  # like left padding: a column that counts nowhere
    return paddle.to_tensor(ids[:, :-1]), paddle.to_tensor(ids[:, 1:]), paddle.to_tensor(mask)


def loss_and_grads(model: PoetryModel, fast: bool, masked: bool = True):
    x, y, m = batch()
    loss, count = sequence_loss(model, x, y, m if masked else None, fast=fast)
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
    model.clear_gradients()
    return loss.item(), count, grads


@pytest.fixture(params=[True, False], ids=["native-kernels", "paddle-ops"])
def lstm_kernel(request, monkeypatch):
    """Both CPU fast paths: tangpoem's compiled kernels (the default) and the fallback on Paddle's ops."""
    monkeypatch.setattr(fastlstm, "USE_NATIVE", request.param)
    return request.param


def test_native_kernels_build_on_this_machine():
    # the machines this project supports have cc and a Paddle wheel with MKL; without the kernels
    # training silently takes the slow path, so a broken build must show up here
    if os.environ.get("TANGPOEM_NATIVE") == "0":
        pytest.skip("TANGPOEM_NATIVE=0")
    assert native.kernels() is not None


def test_kernels_that_cannot_build_fall_back_with_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CC", "/bin/false")
    monkeypatch.setenv("TANGPOEM_CACHE", str(tmp_path))
    native.kernels.cache_clear()
    try:
        assert native.kernels() is None
        assert "using Paddle's ops" in capsys.readouterr().err
        model = tiny_model()  # and training still works, on Paddle's ops
        loss, _, grads = loss_and_grads(model, fast=True)
        assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    finally:
        native.kernels.cache_clear()
    assert not list(tmp_path.iterdir())  # no half-built library left behind


def test_native_softmax_cross_entropy_is_stable_and_exact():
    kernels = native.kernels()
    if kernels is None:
        pytest.skip("no native kernels")
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((5, 300)) * 30).astype("float32")
    logits[0, 7] = 1e4  # far beyond exp's range: must not overflow
    logits[1] = -1e4
    labels = np.array([7, 3, 299, 0, 150])
    x = logits.astype("float64")  # the exact answer (Paddle's own kernel clips at 64 nats)
    shifted = x - x.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    want_loss = log_z - shifted[np.arange(5), labels]
    want_grad = np.exp(shifted - log_z[:, None]) - np.eye(300)[labels]
    t = paddle.to_tensor(logits)
    lab, loss, total = paddle.to_tensor(labels), paddle.empty([5]), ctypes.c_double()
    status = kernels.xent_grad(t.data_ptr(), lab.data_ptr(), None, loss.data_ptr(), None, 5, 300, 2, byref(total))
    assert status == native.OK and total.value == pytest.approx(want_loss.sum(), rel=1e-5)
    np.testing.assert_allclose(loss.numpy(), want_loss, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(t.numpy(), want_grad, atol=1e-6)


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("layers", [1, 3])
def test_fast_loss_and_gradients_match_the_plain_computation(masked, layers, lstm_kernel):
    model = tiny_model(layers=layers)
    plain_loss, plain_count, plain_grads = loss_and_grads(model, fast=False, masked=masked)
    fast_loss, fast_count, fast_grads = loss_and_grads(model, fast=True, masked=masked)
    assert fast_count == plain_count
    assert fast_loss == pytest.approx(plain_loss, rel=1e-5)
    assert set(fast_grads) == set(plain_grads)
    for name, g in plain_grads.items():
        np.testing.assert_allclose(fast_grads[name], g, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_embedding_dropout_acts_while_training_only(fast, lstm_kernel):
    paddle.seed(0)
    model = PoetryModel(ModelConfig(VOCAB, embedding_dim=12, hidden_dim=16, num_layers=1, embedding_dropout=0.5))
    x, y, m = batch()

    def loss(seed: int | None = None) -> float:
        if seed is not None:
            paddle.seed(seed)
        return sequence_loss(model, x, y, m, fast=fast)[0].item()

    first = loss(1)
    assert loss(2) != first and loss(1) == first  # the masks come from the seed, and only from it
    model.eval()
    without = PoetryModel(ModelConfig(VOCAB, embedding_dim=12, hidden_dim=16, num_layers=1))
    without.set_state_dict(model.state_dict())
    without.eval()
    assert loss() == pytest.approx(sequence_loss(without, x, y, m, fast=fast)[0].item(), rel=1e-6)


def test_off_cpu_branch_matches_too(monkeypatch):
    # on a GPU the fast path keeps nn.LSTM and the stock cross-entropy (only the row selection): emulate it
    monkeypatch.setattr(fastlstm, "use_fast_lstm", lambda t: False)
    model = tiny_model()
    plain_loss, plain_count, plain_grads = loss_and_grads(model, fast=False)
    fast_loss, fast_count, fast_grads = loss_and_grads(model, fast=True)
    assert fast_count == plain_count and fast_loss == pytest.approx(plain_loss, rel=1e-5)
    for name, g in plain_grads.items():
        np.testing.assert_allclose(fast_grads[name], g, rtol=1e-4, atol=1e-6, err_msg=name)


def test_fast_lstm_outputs_match_nn_lstm():
    if native.kernels() is None:
        pytest.skip("no native kernels")
    model = tiny_model(layers=3)
    x, _, _ = batch()
    ref, _ = model.lstm(model.embeddings(x))  # batch-first
    fast = hidden_states(model, x)  # time-major
    np.testing.assert_allclose(fast.transpose([1, 0, 2]).numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


def test_chunked_cross_entropy_matches_across_chunks(monkeypatch, lstm_kernel):
    monkeypatch.setattr(fastlstm, "CE_CHUNK_ROWS", 7)  # 4 x 11 rows -> several chunks, one partial
    model = tiny_model()
    plain_loss, _, plain_grads = loss_and_grads(model, fast=False, masked=False)
    fast_loss, _, fast_grads = loss_and_grads(model, fast=True, masked=False)
    assert fast_loss == pytest.approx(plain_loss, rel=1e-5)
    for name in ("linear.weight", "linear.bias", "embeddings.weight"):
        np.testing.assert_allclose(fast_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)
    with paddle.no_grad():  # evaluation: loss only
        x, y, m = batch()
        assert sequence_loss(model, x, y, m)[0].item() == pytest.approx(
            sequence_loss(model, x, y, m, fast=False)[0].item(), rel=1e-5
        )


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])  # clipping active, and not
def test_trainer_gradient_clipping_equals_paddles(max_norm, lstm_kernel):
    from tangpoem.train import clip_grad_norm

    weights = []
    for ours in (False, True):
        model = tiny_model(seed=5)
        clip = None if ours else paddle.nn.ClipGradByGlobalNorm(max_norm)
        opt = paddle.optimizer.Adam(1e-2, parameters=model.parameters(), grad_clip=clip)
        for step in range(3):
            x, y, m = batch(seed=step)
            sequence_loss(model, x, y, m)[0].backward()
            if ours:
                norm = clip_grad_norm(model.parameters(), max_norm)
                assert norm > 0
            opt.step()
            opt.clear_grad()
        weights.append({k: v.numpy() for k, v in model.state_dict().items()})
    for name, want in weights[0].items():
        np.testing.assert_allclose(weights[1][name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_nothing_to_count_gives_zero_loss():
    model = tiny_model()
    x, y, m = batch()
    loss, count = sequence_loss(model, x, y, paddle.zeros_like(m))
    assert count == 0 and loss.item() == 0.0
    loss.backward()  # and still differentiable


def test_fast_trained_checkpoint_loads_in_the_plain_model_with_identical_logits(tmp_path, lstm_kernel):
    model = tiny_model(seed=3)
    opt = paddle.optimizer.Adam(1e-2, parameters=model.parameters())
    first = None
    for step in range(5):
        x, y, m = batch(seed=step)
        loss, _ = sequence_loss(model, x, y, m)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.clear_grad()
    assert loss.item() < first  # it learned something
    path = tmp_path / "model.params.1"
    save_checkpoint(path, model, [f"w{i}" for i in range(VOCAB)])
    plain = load_checkpoint(path).build_model()
    assert set(plain.state_dict()) == set(model.state_dict())
    model.eval()
    x, _, _ = batch(seed=9)
    state = model.zero_state(4)
    want_logits, (want_h, want_c) = model(x, state)
    got_logits, (got_h, got_c) = plain(x, state)
    assert got_logits.shape == [4 * 11, VOCAB] and got_h.shape == [2, 4, 16]
    np.testing.assert_array_equal(got_logits.numpy(), want_logits.numpy())
    np.testing.assert_array_equal(got_c.numpy(), want_c.numpy())


def test_bucketed_batches_compute_almost_only_useful_positions(built_corpus):
    poems, _ = built_corpus
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(poems.data), 3000, replace=False))  # a small sample of the real corpus
    sample = PoemData(poems.data[pick], poems.ix2word, poems.heldout[pick], poems.lengths[pick])
    loader, _ = make_loader(sample, "train", batch_size=32, batching="bucket", seed=0)
    useful = computed = 0
    for _, y in loader:
        y = y.numpy()
        useful += int(target_mask(y, sample.pad_id, sample.start_id).sum())
        computed += y.size
    assert useful / computed >= 0.95
