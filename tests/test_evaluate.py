"""Evaluation: the held-out number is the masked cross-entropy, forms are checked, foreign vocabularies refused."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import paddle
import pytest

from tangpoem.checkpoint import load_checkpoint
from tangpoem.data import load_npz
from tangpoem.evaluate import greedy_continue, main, sample_poems, well_formed
from tangpoem.train import train
from tests.test_train import build_small_npz, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """(npz, checkpoint) of a tiny network trained for a few dozen steps on the synthetic corpus."""
    root = tmp_path_factory.mktemp("evaluate")
    npz = build_small_npz(root)
    return npz, train(tiny_config(npz, root / "m", max_steps=40))


def numpy_heldout_cross_entropy(ckpt_path: str, npz: Path) -> tuple[float, int]:
    """The plain computation: each held-out poem from <START> (no padding before it, as the generator
    reads it) through model.forward, log-softmax in numpy, every next character and the <EOP>."""
    poems = load_npz(npz)
    model = load_checkpoint(ckpt_path).build_model()
    nll = []
    for i in np.flatnonzero(poems.heldout):
        row = poems.data[i, poems.maxlen - poems.lengths[i] :].astype("int64")
        with paddle.no_grad():
            logits, _ = model(paddle.to_tensor(row[None, :-1]))
        logits = logits.numpy().astype(np.float64)
        logp = logits - logits.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        nll.extend(-logp[np.arange(len(row) - 1), row[1:]])
    return float(np.mean(nll)), len(nll)


def test_evaluate_reports_the_masked_heldout_cross_entropy(trained, capsys):
    npz, ckpt = trained
    assert main(["--model-path", ckpt, "--data-path", str(npz), "--samples", "3", "--no-use-gpu"]) == 0
    out = capsys.readouterr().out
    nats = float(re.search(r"cross-entropy\s+([\d.]+) nats/char", out).group(1))
    perplexity = float(re.search(r"perplexity ([\d.]+)", out).group(1))
    chars = int(re.search(r"([\d,]+) characters", out).group(1).replace(",", ""))
    want, want_chars = numpy_heldout_cross_entropy(ckpt, npz)
    assert nats == pytest.approx(want, abs=2e-4) and chars == want_chars
    assert perplexity == pytest.approx(math.exp(want), abs=0.051)  # printed to one decimal
    assert nats < math.log(load_npz(npz).vocab_size) - 0.5  # it learned something
    assert re.search(r"well formed\s+\d/3 sampled poems", out)


def test_evaluate_refuses_a_checkpoint_with_another_vocabulary(trained, tmp_path, capsys):
    npz, ckpt = trained
    other = build_small_npz(tmp_path, n=100, alphabet="甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥")
    capsys.readouterr()  # the build's progress bar
    assert main(["--model-path", ckpt, "--data-path", str(other), "--no-use-gpu"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "vocabulary" in err[0] and str(other) in err[0]
    assert "cross-entropy" not in captured.out


def test_well_formed():
    assert well_formed("床前明月光，疑是地上霜。举头望明月，低头思故乡。")
    assert well_formed("两个黄鹂鸣翠柳，一行白鹭上青天。")
    assert not well_formed("床前明月光，疑是地上霜。举头望明月，")  # odd number of lines
    assert not well_formed("床前明月光，疑是地上霜。举头望明月，低头思故乡")  # no final 。
    assert not well_formed("床前明月光。疑是地上霜，")  # wrong alternation
    assert not well_formed("床前明月光，疑是地上霜啊。")  # lines of different lengths
    assert not well_formed("床前明月，疑是地上。")  # four characters
    assert not well_formed("")


def test_small_decoders_are_deterministic(trained):
    npz, ckpt = trained
    c = load_checkpoint(ckpt)
    model = c.build_model()
    a = greedy_continue(model, c.vocab, "山水", max_len=30)
    assert a.startswith("山水") and len(a) <= 32 and a == greedy_continue(model, c.vocab, "山水", max_len=30)
    first = sample_poems(model, c.vocab, 3, temperature=1.0, seed=5, max_len=40)
    assert first == sample_poems(model, c.vocab, 3, temperature=1.0, seed=5, max_len=40)
    assert len(first) == 3 and all(len(p) <= 40 for p in first)
    greedy = sample_poems(model, c.vocab, 2, temperature=0, max_len=40)
    assert greedy[0] == greedy[1] == greedy_continue(model, c.vocab, "", max_len=40)
