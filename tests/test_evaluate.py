"""Evaluation: the held-out number is the masked cross-entropy, forms are checked, foreign vocabularies refused."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import paddle
import pytest

from tangpoem.checkpoint import load_checkpoint
from tangpoem.data import build_poems, is_heldout, load_npz, save_npz
from tangpoem.evaluate import (
    greedy_continue,
    main,
    poem_figures,
    reference_figures,
    repeated_characters,
    sample_poems,
    training_lines,
    well_formed,
)
from tangpoem.train import train
from tests.conftest import write_corpus
from tests.test_prosody import CHUN_WANG, DENG_GUANQUE_LOU, HU_ZHONG, JI_HAN_ZUN, JING_YE_SI, JUEJU, SHAN_JU, WEICHENG
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
    assert re.search(r"well formed\s+\d/3 poems sampled with no rules", out)


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
    assert greedy[0] == greedy[1]


# ---------------------------------------------------------------- figures of poems (prosody, copies, repeats)

REPEATED = "春风吹柳绿，春风吹柳绿。"  # the kind of couplet an untrained sampler writes


def test_poem_figures_by_hand():
    train_lines = {"床前明月光", "疑是地上霜", "举头望明月", "低头思故乡", "黄河入海流"}
    f = poem_figures([DENG_GUANQUE_LOU, JING_YE_SI, REPEATED, "你好"], train_lines)
    assert f["poems"] == 4 and f["well_formed"] == 3 / 4 and f["forms"]["五绝"] == 2
    assert f["rhyme"] == 2 / 4  # 登鹳雀楼, 静夜思 (光 霜 乡); 绿 is oblique
    assert f["all_rules"] == 1 / 4  # 登鹳雀楼 alone
    assert f["rules"] == {"rhyme": 2 / 4, "二四六": 2 / 4, "粘对": 1 / 4, "三平尾": 3 / 4, "孤平": 3 / 4, "格律": 1 / 4}
    assert f["lines"] == 10 and f["copied_lines"] == 5 / 10 and f["poems_with_copied_line"] == 2 / 4
    assert f["repeated_character"] == 2 / 4 and f["repeated_line"] == 1 / 4  # 静夜思 (明 月 头), the couplet
    assert f["distinct_2"] == 35 / 40  # 16 + 15 (明月 twice) + 4 (of 8) distinct bigrams of 40
    assert f["unknown_characters"] == 0
    assert poem_figures([HU_ZHONG], set())["unknown_characters"] == 1  # 啼


def test_repeated_characters_leave_a_doubled_word_alone():
    assert repeated_characters(JING_YE_SI) == 3  # 明 月 头
    assert repeated_characters(DENG_GUANQUE_LOU) == 0
    assert repeated_characters("萧萧梧叶送寒声，江上秋风动客情。") == 0  # 萧萧 is one doubled word
    assert repeated_characters("萧萧梧叶送萧声，江上秋风动客情。") == 1  # a third 萧, apart: 重字
    assert repeated_characters("风吹风落，。") == 1  # two uses apart


def real_npz(directory: Path) -> Path:
    """A corpus of real poems, all in the training split (the split hashes the text)."""
    texts = [DENG_GUANQUE_LOU, JUEJU, JING_YE_SI, SHAN_JU, CHUN_WANG, WEICHENG, JI_HAN_ZUN, HU_ZHONG]
    assert not any(is_heldout(t) for t in texts)
    poems, _ = build_poems(write_corpus(directory / "src", [[t] for t in texts]))
    save_npz(poems, directory / "real.npz")
    return directory / "real.npz"


def test_evaluate_poems_file(tmp_path, capsys):
    npz = real_npz(tmp_path)
    capsys.readouterr()
    path = tmp_path / "poems.txt"
    path.write_text(f"{DENG_GUANQUE_LOU}\n\n {JUEJU} \n{REPEATED}\n", encoding="utf-8")
    assert main(["--poems", str(path), "--data-path", str(npz)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^poems\s+3\s+1\s+1\s+0\s+0\s+0\s+0\s*$", out, re.M), out  # the file, its 五绝, its 七绝, refs
    assert re.search(r"^rhyme \(平水韵\)\s+66\.7%\s+100\.0%\s+100\.0%\s+-\s+-\s+-\s+-\s*$", out, re.M), out
    assert re.search(r"^copied lines\s+80\.0%", out, re.M)  # 8 of 10 lines: the two real poems'

    assert main(["--poems", str(path), "--data-path", str(npz), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["poems_file"] == str(path) and set(report["reference"]) == {"五绝", "七绝", "五律", "七律"}
    figures = report["figures"]["poems"]
    assert figures["poems"] == 3 and figures["all_rules"] == pytest.approx(2 / 3)
    assert figures["repeated_line"] == pytest.approx(1 / 3) and figures["copied_lines"] == pytest.approx(0.8)
    assert report["figures"]["poems 七绝"]["poems"] == 1 and report["reference"]["五律"]["poems"] == 0


@pytest.mark.parametrize(
    "content, message",
    [(None, "not found"), (b"\n \n", "holds no poems"), ("白日依山尽，黄河入海流。".encode("gbk"), "not UTF-8")],
)
def test_evaluate_refuses_bad_poem_files(tmp_path, capsys, content, message):
    path = tmp_path / "poems.txt"
    if content is not None:
        path.write_bytes(content)
    assert main(["--poems", str(path), "--data-path", str(tmp_path / "unused.npz")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(path) in err[0] and captured.out == ""


def test_evaluate_json_with_a_checkpoint(trained, capsys):
    npz, ckpt = trained
    argv = ["--model-path", ckpt, "--data-path", str(npz), "--samples", "3", "--per-form", "2", "--tones", "--json"]
    assert main([*argv, "--no-use-gpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    want, chars = numpy_heldout_cross_entropy(ckpt, npz)
    assert report["cross_entropy"] == pytest.approx(want, abs=2e-4) and report["heldout_characters"] == chars
    assert len(report["samples"]) == 3 and report["figures"]["no rules"]["poems"] == 3
    generated = report["figures"]["generated"]  # 2 per form, with the tone rules: every rule holds
    assert generated["poems"] == 8 and generated["well_formed"] == 1 and generated["all_rules"] == 1
    assert report["settings"]["tones"] is True
    assert report["reference"]["五绝"]["poems"] > 0  # the synthetic corpus is all five-character quatrains


@pytest.mark.slow
def test_reference_figures_on_the_real_heldout_split(built_corpus):
    poems, _ = built_corpus
    ref = reference_figures(poems, training_lines(poems))
    assert list(ref) == ["五绝", "七绝", "五律", "七律"]
    for form, f in ref.items():
        assert f["poems"] >= 80, form
        assert f["well_formed"] > 0.95 and f["forms"][form] == f["poems"]
        # Real Tang poems mostly keep the rules; many 五绝 are 古绝 (oblique rhymes, free tones).
        assert 0.7 < f["rhyme"] < 0.97 and 0.4 < f["all_rules"] < 0.9 and f["all_rules"] <= f["rhyme"]
        assert f["rules"]["三平尾"] > 0.9 and f["rules"]["孤平"] > 0.9
        assert f["copied_lines"] < 0.15 and f["repeated_line"] < 0.05
        assert 0.85 < f["distinct_2"] < 1
    assert ref["七绝"]["all_rules"] > ref["五绝"]["all_rules"]
