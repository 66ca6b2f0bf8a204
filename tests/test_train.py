"""The training loop: it learns, masks padding, round-trips checkpoints, stops and resumes exactly."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import paddle
import pytest

import tangpoem.train as train_mod
from tangpoem.checkpoint import latest_checkpoint, load_checkpoint, load_trainer_state
from tangpoem.config import Config
from tangpoem.data import build_poems, load_npz, save_npz
from tangpoem.dataset import make_loader, target_mask
from tangpoem.evaluate import heldout_batches, heldout_loss
from tangpoem.loss import sequence_loss
from tangpoem.train import main, run_training, train
from tests.conftest import write_corpus

ALPHABET = "山水风月花春秋日云天人江河雨雪夜明清长远高寒孤飞归来去生落"


# ---------------------------------------------------------------- helpers (also used by the other test modules)


def synthetic_poems(n: int, seed: int = 0, alphabet: str = ALPHABET) -> list[list[str]]:
    """Five-character quatrains whose characters follow a noisy rule, so a network can learn them."""
    rng = np.random.default_rng(seed)
    poems = []
    for _ in range(n):
        c = int(rng.integers(len(alphabet)))
        lines = []
        for _ in range(4):
            chars = []
            for _ in range(5):
                c = (c * 3 + 1 + int(rng.integers(2))) % len(alphabet)
                chars.append(alphabet[c])
            lines.append("".join(chars))
        poems.append([f"{lines[0]}，{lines[1]}。", f"{lines[2]}，{lines[3]}。"])
    return poems


def build_small_npz(directory: Path, n: int = 600, seed: int = 0, alphabet: str = ALPHABET) -> Path:
    """About 600 poems, a vocabulary of ~35: a training step takes milliseconds."""
    poems, _ = build_poems(write_corpus(directory / "src", synthetic_poems(n, seed, alphabet)), maxlen=32)
    path = directory / "small.npz"
    save_npz(poems, path)
    return path


def tiny_config(data_path: Path, prefix: Path, **overrides) -> Config:
    values = dict(
        data_path=str(data_path),
        embedding_dim=16,
        hidden_dim=32,
        num_layers=1,
        batch_size=32,
        lr=1e-2,
        epoch=20,
        max_steps=10,
        model_prefix=str(prefix),
        log_dir=str(prefix.parent / "logs"),
        use_gpu=False,
        num_threads=1,
        plot_every=10**9,
        eval_batches=2,
    )
    values.update(overrides)
    return Config(**values)


def weights(path: str) -> dict[str, np.ndarray]:
    return load_checkpoint(path).weights


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory) -> Path:
    return build_small_npz(tmp_path_factory.mktemp("small"))


# ---------------------------------------------------------------- learning on the real corpus


def test_loss_decreases_on_the_real_corpus(tang_npz, tmp_path):
    cfg = tiny_config(tang_npz, tmp_path / "m", batch_size=8, max_steps=20, plot_every=20, eval_batches=2)
    poems = load_npz(tang_npz)
    batches = heldout_batches(poems, max_poems=48, seed=1)

    def heldout(model):
        return heldout_loss(model, batches, poems.pad_id, poems.start_id)[0]

    result = run_training(cfg)
    fresh = load_checkpoint(result.checkpoint)
    paddle.seed(cfg.seed)
    with paddle.utils.unique_name.guard():
        untrained = train_mod.PoetryModel(fresh.model_config)  # the same initialisation as the run's
    before, after = heldout(untrained), heldout(result.model)
    assert np.log(poems.vocab_size) - 0.2 < before  # chance level to start with
    assert after < before - 0.7, (before, after)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.7
    assert list((tmp_path / "logs").iterdir()), "VisualDL logs were written at plot_every"


def test_unmasked_loss_is_dominated_by_padding(tang_npz, tmp_path):
    """The tutorial's loss (padded rows, every position) is learned mostly from easy </s> predictions;
    the masked loss ignores padding altogether. Same start, same batches, the two objectives."""
    poems = load_npz(tang_npz)
    loader, _ = make_loader(poems, "heldout", 16, "padded", shuffle=False)
    inputs, targets = next(iter(loader))
    mask = target_mask(targets, poems.pad_id, poems.start_id)

    def parts(mask_padding: bool) -> tuple[float, float, float, float]:
        cfg = tiny_config(tang_npz, tmp_path / f"m{mask_padding}", batch_size=4, max_steps=15, batching="padded")
        result = run_training(Config(**{**cfg.to_dict(), "mask_padding": mask_padding}))
        model = result.model
        model.eval()
        with paddle.no_grad():
            unmasked, n_all = sequence_loss(model, inputs, targets, None)
            chars, n_chars = sequence_loss(model, inputs, targets, mask)
            padding, n_pad = sequence_loss(model, inputs, targets, ~mask)
        assert n_all == n_chars + n_pad and n_pad > n_chars  # the tutorial's rows are mostly padding
        # the unmasked mean is exactly the position-weighted mix of the two parts
        assert unmasked.item() == pytest.approx((chars.item() * n_chars + padding.item() * n_pad) / n_all, rel=1e-4)
        return unmasked.item(), chars.item(), padding.item(), float(np.mean(result.losses[-5:]))

    t_unmasked, t_chars, t_padding, t_reported = parts(False)  # the tutorial's objective
    m_unmasked, m_chars, m_padding, m_reported = parts(True)
    assert t_padding < 0.5 * t_chars  # padding is the easy part of the tutorial's objective ...
    assert t_unmasked < m_unmasked and t_reported < m_reported  # ... so its loss looks far better
    assert m_padding > m_chars  # the masked objective never learns to predict padding


# ---------------------------------------------------------------- checkpoints


def test_epoch_checkpoints_round_trip_to_the_same_logits(small_npz, tmp_path):
    poems = load_npz(small_npz)
    steps_per_epoch = -(-int((~poems.heldout).sum()) // 32)
    cfg = tiny_config(small_npz, tmp_path / "model.params", epoch=2, max_steps=0)
    path = train(cfg)
    assert path == f"{tmp_path / 'model.params'}.2"
    assert sorted(p.name for p in tmp_path.glob("model.params.*")) == [
        "model.params.1",
        "model.params.1.trainer",
        "model.params.2",
        "model.params.2.trainer",
    ]
    ckpt = load_checkpoint(path)
    assert ckpt.meta["epoch"] == 2 and ckpt.meta["step_in_epoch"] == 0
    assert ckpt.meta["global_step"] == 2 * steps_per_epoch
    assert ckpt.meta["config"]["hidden_dim"] == 32 and ckpt.vocab == poems.ix2word
    assert load_trainer_state(path)["global_step"] == 2 * steps_per_epoch

    cfg2 = tiny_config(small_npz, tmp_path / "again", epoch=1, max_steps=0)
    trained = run_training(cfg2).model
    rebuilt = load_checkpoint(f"{cfg2.model_prefix}.1").build_model()
    trained.eval()
    x = paddle.to_tensor(poems.data[:4, :-1].astype("int64"))
    want, (want_h, _) = trained(x)
    got, (got_h, _) = rebuilt(x)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    np.testing.assert_array_equal(got_h.numpy(), want_h.numpy())


def run_to(cfg: Config, **changes) -> train_mod.TrainResult:
    return run_training(Config(**{**cfg.to_dict(), **changes}))


def test_stopped_and_resumed_equals_uninterrupted(small_npz, tmp_path):
    # two layers with dropout (embeddings too): the resumed steps must draw the same dropout masks
    # (seed_step); 19 steps per epoch, so the stops fall inside epoch 1, exactly at its end, and inside epoch 2
    common = dict(num_layers=2, dropout=0.2, embedding_dropout=0.1, epoch=3)
    whole = run_training(tiny_config(small_npz, tmp_path / "whole" / "m", max_steps=45, **common))
    cfg = tiny_config(small_npz, tmp_path / "parts" / "m", max_steps=7, **common)
    first = run_to(cfg)
    assert first.stopped_by == "max_steps" and first.checkpoint.endswith(".step7")
    second = run_to(cfg, resume="latest", max_steps=19)
    assert second.checkpoint.endswith("m.1")  # stopped at the epoch's last step: the epoch checkpoint
    third = run_to(cfg, resume="latest", max_steps=30)
    assert (tmp_path / "parts" / "m.step7").exists()  # one of the run's two newest step checkpoints
    last = run_to(cfg, resume=third.checkpoint, max_steps=45)
    assert not (tmp_path / "parts" / "m.step7").exists() and (tmp_path / "parts" / "m.step30").exists()
    assert last.global_step == whole.global_step == 45
    assert whole.losses[30:] == pytest.approx(last.losses, rel=1e-5)
    a, b = weights(whole.checkpoint), weights(last.checkpoint)
    assert a and set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_a_resume_goes_on_when_a_parameter_meets_its_first_gradient_after_it(small_npz, tmp_path):
    """Adam creates a parameter's moments at its first gradient, and an adaptive softmax cluster gets none until
    a batch holds one of its characters: a checkpoint written before then has no moments for that cluster (made
    here by taking them out of a real one). The resumed run must go on when its gradient comes."""
    cfg = tiny_config(small_npz, tmp_path / "m", max_steps=3, output_cutoffs="10,20")
    first = run_training(cfg)
    with paddle.utils.unique_name.guard():  # the parameters' names as a run makes them (`train` does the same)
        model = load_checkpoint(first.checkpoint).build_model()
    cluster = [model.adaptive.tail_proj[0].weight.name, model.adaptive.tail_proj[1].weight.name]
    state = load_trainer_state(first.checkpoint)
    state["optimizer"] = {k: v for k, v in state["optimizer"].items() if not k.startswith(tuple(cluster))}
    paddle.save(state, first.checkpoint + ".trainer")

    second = run_to(cfg, resume="latest", max_steps=5)
    assert second.global_step == 5
    moments = load_trainer_state(second.checkpoint)["optimizer"]
    for name in cluster:
        assert np.abs(moments[f"{name}_moment1_0"].numpy()).max() > 0  # created, and it learned since


def test_dropout_masks_depend_on_seed_rank_and_step_only():
    x = paddle.ones([4000])

    def mask(seed: int, rank: int, step: int) -> np.ndarray:
        train_mod.seed_step(seed, rank, step)
        return paddle.nn.functional.dropout(x, 0.5).numpy() > 0

    first = mask(0, 0, 7)
    paddle.nn.functional.dropout(x, 0.5)  # whatever was drawn before, the step's masks come back
    assert (mask(0, 0, 7) == first).all()
    for other in (mask(0, 0, 8), mask(0, 1, 7), mask(1, 0, 7)):
        assert 0.4 < (other != first).mean() < 0.6  # independent masks: about half the entries differ


def test_sigint_saves_a_resumable_checkpoint_and_exits_130(small_npz, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real_loss = train_mod.sequence_loss

    def loss_then_ctrl_c(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            signal.raise_signal(signal.SIGINT)  # as if Ctrl-C arrived during step 4
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "sequence_loss", loss_then_ctrl_c)
    # a run started with nohup or `&` begins with SIGINT ignored: what must come back is what was there
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    prefix = tmp_path / "m"
    argv = [
        *("--data-path", str(small_npz), "--model-prefix", str(prefix), "--log-dir", str(tmp_path / "logs")),
        *("--embedding-dim", "16", "--hidden-dim", "32", "--num-layers", "1", "--batch-size", "32"),
        *("--no-use-gpu", "--num-threads", "1", "--max-steps", "0", "--lr", "0.01"),
    ]
    assert main(argv) == 130
    assert "SIGINT" in capsys.readouterr().err
    assert {sig: signal.getsignal(sig) for sig in before} == before  # handlers restored
    assert latest_checkpoint(str(prefix)) == f"{prefix}.step4"
    monkeypatch.setattr(train_mod, "sequence_loss", real_loss)
    resumed = run_training(tiny_config(small_npz, prefix, resume="latest", max_steps=10))
    whole = run_training(tiny_config(small_npz, tmp_path / "whole", max_steps=10))
    assert resumed.losses == pytest.approx(whole.losses[4:], rel=1e-5)


def test_an_error_that_ends_the_run_keeps_its_steps(small_npz, tmp_path, monkeypatch, capsys):
    """A bug beside the steps (here in what logs progress, as a half-edited generator once was) ends the run
    with its error but keeps its work: a step checkpoint that resumes onto the uninterrupted run's curve."""
    real_log = train_mod.Run.log_progress

    def log_then_fail(self):
        if self.global_step == 6:
            raise RuntimeError("a bug in the sample poems")
        real_log(self)

    monkeypatch.setattr(train_mod.Run, "log_progress", log_then_fail)
    cfg = tiny_config(small_npz, tmp_path / "m", max_steps=10)
    with pytest.raises(RuntimeError, match="a bug in the sample poems"):
        run_training(cfg)
    assert f"error at step 6; checkpoint: {tmp_path / 'm'}.step6" in capsys.readouterr().err
    assert latest_checkpoint(str(tmp_path / "m")) == f"{tmp_path / 'm'}.step6"
    monkeypatch.undo()
    resumed = run_to(cfg, resume="latest")
    whole = run_training(tiny_config(small_npz, tmp_path / "whole", max_steps=10))
    assert resumed.global_step == 10
    assert resumed.losses == pytest.approx(whole.losses[6:], rel=1e-5)


def test_an_error_inside_the_update_writes_no_half_stepped_checkpoint(small_npz, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real_clip = train_mod.clip_grad_norm

    def clip_then_fail(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise MemoryError("out of memory in the update")
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(train_mod, "clip_grad_norm", clip_then_fail)
    with pytest.raises(MemoryError):
        run_training(tiny_config(small_npz, tmp_path / "m", grad_clip=1.0))
    assert "error at step" not in capsys.readouterr().err
    assert latest_checkpoint(str(tmp_path / "m")) is None


def test_ctrl_c_while_the_run_sets_up_stops_after_its_first_step(small_npz, tmp_path, monkeypatch, capsys):
    """Loading the data and building the network take seconds on the real corpus: Ctrl-C then is not lost
    either, and not a traceback: the run stops after one step, with a checkpoint."""
    real_load = train_mod.load_npz

    def load_then_ctrl_c(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(train_mod, "load_npz", load_then_ctrl_c)
    result = run_training(tiny_config(small_npz, tmp_path / "m", max_steps=0))
    assert result.stopped_by == "SIGINT" and result.global_step == 1
    assert latest_checkpoint(str(tmp_path / "m")) == f"{tmp_path / 'm'}.step1"


FAILURES = ["trainer pickle", "trainer rename", "weights serialise", "weights write", "weights rename"]


@pytest.mark.parametrize("where", FAILURES)
def test_an_interrupted_save_leaves_the_previous_checkpoint(small_npz, tmp_path, monkeypatch, where):
    cfg = tiny_config(small_npz, tmp_path / "m", max_steps=5)
    previous = train(cfg)
    before = weights(previous)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of the save

    if where == "trainer pickle":
        monkeypatch.setattr(paddle, "save", boom)
    elif where == "weights serialise":
        import safetensors.numpy

        monkeypatch.setattr(safetensors.numpy, "save", boom)
    elif where == "weights write":
        monkeypatch.setattr(os, "fsync", boom)  # atomic_write: after the bytes, before the rename
    else:
        real_replace, calls = os.replace, {"n": 0}
        fail_at = 1 if where == "trainer rename" else 2

        def replace(src, dst):
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise KeyboardInterrupt
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(small_npz, tmp_path / "m", max_steps=8, resume="latest"))
    monkeypatch.undo()

    assert latest_checkpoint(str(tmp_path / "m")) == previous
    after = load_checkpoint(previous)
    assert before and set(after.weights) == set(before)
    for k, v in before.items():
        np.testing.assert_array_equal(after.weights[k], v)
    assert load_trainer_state(previous)["global_step"] == 5
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary files left
    assert not (tmp_path / "m.step8").exists()
    # and training goes on from it
    assert train(tiny_config(small_npz, tmp_path / "m", max_steps=8, resume="latest")).endswith("m.step8")


def test_resuming_deletes_only_the_runs_own_superseded_step_checkpoints(small_npz, tmp_path, capsys):
    """Each stop keeps the run's two newest step checkpoints (the one the last stop reported stays) and every
    epoch checkpoint; a file under the prefix that is not this run's checkpoint is never touched."""
    notes = tmp_path / "m.step2"  # a name the run's own step checkpoints could have
    notes.write_text("lr 1e-2 looked too high; try 5e-3", encoding="utf-8")
    cfg = tiny_config(small_npz, tmp_path / "m", max_steps=3)
    stops = [train(cfg)] + [train(tiny_config(small_npz, tmp_path / "m", max_steps=n, resume="latest")) for n in (5, 7)]
    assert [Path(p).name for p in stops] == ["m.step3", "m.step5", "m.step7"]
    assert not Path(stops[0]).exists() and not Path(stops[0] + ".trainer").exists()
    assert Path(stops[1]).exists() and Path(stops[2]).exists()  # step 5 was reported by the stop before
    assert f"removed the superseded step checkpoint {stops[0]}" in capsys.readouterr().err
    assert notes.read_text(encoding="utf-8") == "lr 1e-2 looked too high; try 5e-3"


# ---------------------------------------------------------------- refusals


def test_amp_is_refused_on_the_cpu(small_npz, tmp_path, capsys):
    argv = ["--data-path", str(small_npz), "--model-prefix", str(tmp_path / "m"), "--no-use-gpu", "--amp"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--amp" in err[0] and "GPU" in err[0]


def test_resume_refuses_another_network_or_batch_order(small_npz, tmp_path, capsys):
    train(tiny_config(small_npz, tmp_path / "m", max_steps=3))
    base = ["--data-path", str(small_npz), "--model-prefix", str(tmp_path / "m"), "--no-use-gpu"]
    base += ["--embedding-dim", "16", "--num-layers", "1", "--resume", "latest"]
    assert main([*base, "--hidden-dim", "64", "--batch-size", "32"]) == 2
    assert "network" in capsys.readouterr().err
    assert main([*base, "--hidden-dim", "32", "--batch-size", "16"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["--model-prefix", str(tmp_path / "none"), "--resume", "latest", "--data-path", str(small_npz)]) == 2


def test_max_minutes_stops_with_a_checkpoint(small_npz, tmp_path):
    result = run_training(tiny_config(small_npz, tmp_path / "m", max_steps=0, max_minutes=1e-6))
    assert result.stopped_by == "max_minutes" and result.global_step == 1
    assert result.checkpoint == f"{tmp_path / 'm'}.step1" and load_trainer_state(result.checkpoint)


def test_sigterm_to_the_command_saves_and_exits_130(small_npz, tmp_path):
    import subprocess
    import sys
    import time

    prefix = tmp_path / "m"
    cmd = [sys.executable, "-m", "tangpoem.train", "--data-path", str(small_npz), "--model-prefix", str(prefix)]
    cmd += ["--embedding-dim", "16", "--hidden-dim", "32", "--num-layers", "1", "--batch-size", "32"]
    cmd += ["--no-use-gpu", "--num-threads", "1", "--log-dir", str(tmp_path / "logs"), "--epoch", "1000"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + 60
    while "epoch 1/" not in seen and time.monotonic() < deadline:  # training has started
        seen += proc.stderr.read(1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    err = seen + proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err[-2000:]
    assert "stopped by SIGTERM" in err
    path = latest_checkpoint(str(prefix))
    assert path is not None and load_checkpoint(path).meta["global_step"] >= 1


def test_seed_config_is_the_tutorials_and_gpu_config_keeps_its_network():
    from tangpoem.config import make_config

    seed = make_config(config_file="seed")
    assert seed == Config()  # the tutorial's values are tangpoem's defaults
    assert (seed.embedding_dim, seed.hidden_dim, seed.num_layers, seed.batch_size) == (256, 512, 3, 4)
    gpu = make_config(config_file="gpu")
    assert (gpu.embedding_dim, gpu.hidden_dim, gpu.num_layers) == (256, 512, 3)
    assert gpu.batch_size == 128 and gpu.amp
    cpu = make_config(config_file="cpu")
    assert not cpu.use_gpu and not cpu.amp and cpu.max_minutes > 0
