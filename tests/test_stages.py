"""A run in stages (`configs/bundled.toml`, then `configs/bundled-tang.toml`): a later stage resumes the first's
checkpoint on some collections only (`--train-collections`), from a fresh epoch of its own poems, with its
own learning-rate schedule (`--schedule-start`), and the checkpoint's record says what each stage read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tangpoem.checkpoint import has_trainer_state, load_checkpoint, save_compact
from tangpoem.config import Config
from tangpoem.data import STYLE_MARKS, build_poems, save_npz
from tangpoem.train import Run, learning_rate, main, run_training
from tests.test_titles import titled_poems
from tests.test_train import tiny_config


def song_poems(n: int) -> list[dict]:
    """Poems in characters of their own, so a Song row cannot pass for a Tang one."""
    rng = np.random.default_rng(7)
    chars = "梅竹雪酒茶窗灯棋琴书"
    records = []
    for i in range(n):
        lines = ["".join(chars[k] for k in rng.integers(len(chars), size=7)) for _ in range(4)]
        body = [f"{lines[0]}，{lines[1]}。", f"{lines[2]}，{lines[3]}。"]
        records.append({"author": "某", "title": f"闲居{i}", "paragraphs": body, "id": f"s{i}"})
    return records


@pytest.fixture(scope="module")
def tangsong_npz(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tangsong")
    src = folder / "src"
    src.mkdir()
    (src / "poet.tang.0.json").write_text(json.dumps(titled_poems(600), ensure_ascii=False), "utf-8")
    (src / "poet.song.0.json").write_text(json.dumps(song_poems(900), ensure_ascii=False), "utf-8")
    poems, _ = build_poems(src, maxlen=48, collections=("tang", "song"), format_version=2)
    assert poems.collection_names == ["tang", "song"]
    save_npz(poems, folder / "tangsong.npz")
    return folder / "tangsong.npz"


def style_marks_read(run: Run, batches: int) -> set[str]:
    """The style marks that open the rows of the run's first batches."""
    seen = set()
    for b, (inputs, _) in enumerate(run.loader):
        for row in np.asarray(inputs):
            first = row[row != run.poems.pad_id]
            seen.add(run.poems.ix2word[int(first[1])])  # <START>, then the style mark
        if b + 1 == batches:
            break
    return seen


def test_a_stage_reads_only_its_collections_and_holds_out_only_theirs(tangsong_npz, tmp_path):
    both = Run(tiny_config(tangsong_npz, tmp_path / "both"))
    tang = Run(tiny_config(tangsong_npz, tmp_path / "tang", train_collections="tang"))
    assert style_marks_read(both, 20) == {STYLE_MARKS["tang"], STYLE_MARKS["song"]}
    assert style_marks_read(tang, 20) == {STYLE_MARKS["tang"]}
    poems = tang.poems
    tang_train = int((~poems.heldout & (poems.collection_of_rows() == 0)).sum())
    assert len(tang.loader.dataset) == tang_train < len(both.loader.dataset)
    held_out_marks = {poems.ix2word[int(x[0][1])] for x, _ in tang.heldout}
    assert held_out_marks == {STYLE_MARKS["tang"]}


def test_a_second_stage_resumes_mid_epoch_on_tang_and_records_both_stages(tangsong_npz, tmp_path):
    prefix = tmp_path / "m"
    first = run_training(tiny_config(tangsong_npz, prefix, max_steps=12))
    meta = load_checkpoint(first.checkpoint).meta
    assert meta["step_in_epoch"] == 12 and meta["collections"] == ["tang", "song"]  # stopped inside an epoch

    stage = dict(train_collections="tang", schedule_start=12, warmup_steps=2, lr_schedule="cosine", min_lr=1e-4)
    second = run_training(tiny_config(tangsong_npz, prefix, max_steps=20, resume=first.checkpoint, **stage))
    meta = load_checkpoint(second.checkpoint).meta
    assert second.global_step == meta["global_step"] == 20
    assert meta["step_in_epoch"] == 8  # a fresh epoch of the Tang poems, not the rest of the mixed one
    assert [inv["collections"] for inv in meta["invocations"]] == [["tang", "song"], ["tang"]]
    assert [(inv["first_step"], inv["last_step"]) for inv in meta["invocations"]] == [(0, 12), (12, 20)]
    assert meta["collections"] == ["tang", "song"]  # it has read both: `generate --style song` still works
    assert meta["config"]["train_collections"] == "tang"

    # a stop inside the second stage resumes within it, where it stopped
    third = run_training(tiny_config(tangsong_npz, prefix, max_steps=23, resume="latest", **stage))
    meta = load_checkpoint(third.checkpoint).meta
    assert (meta["global_step"], meta["step_in_epoch"]) == (23, 11)


def test_a_stages_schedule_warms_up_from_its_first_step_and_ends_at_its_last():
    stage = Config(lr=1e-3, lr_schedule="cosine", warmup_steps=100, min_lr=5e-5, schedule_start=19000)
    assert learning_rate(stage, 19000, 25000) == pytest.approx(1e-3 / 100)
    assert learning_rate(stage, 19099, 25000) == pytest.approx(1e-3)
    assert learning_rate(stage, 22050, 25000) == pytest.approx((1e-3 + 5e-5) / 2)  # halfway down the cosine
    assert learning_rate(stage, 25000, 25000) == pytest.approx(5e-5)
    first = Config(lr=5e-3, lr_schedule="cosine", warmup_steps=200, min_lr=5e-5)
    assert learning_rate(first, 0, 19000) == pytest.approx(5e-3 / 200)
    assert learning_rate(first, 19000, 19000) == pytest.approx(5e-5)


def test_an_unknown_collection_is_one_line_naming_those_the_data_holds(tangsong_npz, tmp_path, capsys):
    args = ["--data-path", str(tangsong_npz), "--model-prefix", str(tmp_path / "m"), "--no-use-gpu"]
    assert main([*args, "--train-collections", "yuan"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds no yuan" in err and "tang,song" in err


def test_a_stage_whose_schedule_starts_ahead_of_the_run_is_refused(tangsong_npz, tmp_path, capsys):
    run_training(tiny_config(tangsong_npz, tmp_path / "m", max_steps=5))
    capsys.readouterr()
    args = ["--data-path", str(tangsong_npz), "--model-prefix", str(tmp_path / "m"), "--no-use-gpu"]
    args += ["--embedding-dim", "16", "--hidden-dim", "32", "--num-layers", "1", "--batch-size", "32"]
    assert main([*args, "--resume", "latest", "--train-collections", "tang", "--schedule-start", "19000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--schedule-start 19000" in err and "is at step 5" in err


def test_a_stage_goes_on_from_a_packed_checkpoint_with_a_fresh_optimizer(tangsong_npz, tmp_path, capsys):
    """A packed checkpoint (the bundled model is one) has no optimizer state: `--resume` of it starts from its
    weights, step and record, says the optimizer starts over, and the stage's own stops resume as usual."""
    first = run_training(tiny_config(tangsong_npz, tmp_path / "m", max_steps=12))
    packed = tmp_path / "shipped" / "model.safetensors"
    packed.parent.mkdir()
    save_compact(load_checkpoint(first.checkpoint), packed, "int8")
    assert not has_trainer_state(packed)
    capsys.readouterr()

    stage = dict(train_collections="tang", schedule_start=12, warmup_steps=2, lr_schedule="cosine", min_lr=1e-4)
    cfg = tiny_config(tangsong_npz, tmp_path / "stage3" / "m", max_steps=20, resume=str(packed), **stage)
    run = Run(cfg)
    assert f"{packed} holds weights only: the optimizer's state starts over" in capsys.readouterr().err
    assert run.global_step == 12 and not any("moment" in k for k in run.optimizer.state_dict())
    loaded = {k: v.numpy() for k, v in run.model.state_dict().items()}
    for name, want in load_checkpoint(packed).weights.items():
        np.testing.assert_array_equal(loaded[name], want, err_msg=name)

    second = run_training(cfg)
    meta = load_checkpoint(second.checkpoint).meta
    assert second.global_step == 20 and has_trainer_state(second.checkpoint)
    assert [(inv["first_step"], inv["last_step"]) for inv in meta["invocations"]] == [(0, 12), (12, 20)]
    assert meta["run"] == load_checkpoint(first.checkpoint).meta["run"]
    third = run_training(tiny_config(tangsong_npz, tmp_path / "stage3" / "m", max_steps=23, resume="latest", **stage))
    assert third.global_step == 23
