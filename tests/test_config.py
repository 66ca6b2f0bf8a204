from __future__ import annotations

import argparse

import pytest

from tangpoem.config import Config, add_config_args, config_from_args, make_config
from tangpoem.device import usable_cpus
from tangpoem.errors import TangpoemError

TUTORIAL = {
    "num_layers": 3, "data_path": "work/tang_poem.npz", "lr": 1e-3, "use_gpu": True, "epoch": 20,
    "batch_size": 4, "maxlen": 125, "plot_every": 1000, "max_gen_len": 200,
    "model_path": "work/checkpoints/model.params.50", "prefix_words": "欲穷千里目,更上一层楼",
    "start_words": "老夫聊发少年狂,", "model_prefix": "work/checkpoints/model.params",
    "embedding_dim": 256, "hidden_dim": 512,
}  # fmt: skip


def parse(argv: list[str]) -> Config:
    return config_from_args(add_config_args(argparse.ArgumentParser()).parse_args(argv))


def test_defaults_are_the_tutorial_config():
    cfg = Config().to_dict()
    assert {k: cfg[k] for k in TUTORIAL} == TUTORIAL


def test_seed_toml_is_the_tutorial_config():
    cfg = make_config(config_file="seed").to_dict()
    assert {k: cfg[k] for k in TUTORIAL} == TUTORIAL


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('batch_size = 8\nstart_words = "床前明月光"\nuse_gpu = true\n', encoding="utf-8")
    cfg = parse(["--config", str(path), "--batch-size", "32", "--no-use-gpu", "--lr", "0.01"])
    assert (cfg.batch_size, cfg.start_words, cfg.use_gpu, cfg.lr) == (32, "床前明月光", False, 0.01)
    assert parse(["--start-words", "老夫聊发少年狂"]).start_words == "老夫聊发少年狂"


def test_config_by_name_from_configs_dir():
    assert make_config(config_file="seed.toml") == make_config(config_file="configs/seed.toml")


@pytest.mark.parametrize(
    "text, message",
    [("batch_sise = 3\n", "unknown setting(s) batch_sise"), ('batch_size = "big"\n', "must be a int"),
     ("batch_size = \n", "not valid TOML")],
)  # fmt: skip
def test_bad_config_files_are_refused_clearly(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TangpoemError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config(config_file=str(path))


def test_missing_config_file_names_the_known_ones():
    with pytest.raises(TangpoemError, match="not found.*seed"):
        make_config(config_file="no-such-config")


def test_gpu_request_falls_back_to_cpu_with_a_notice(capsys):
    from tangpoem.device import gpu_available, setup_device

    if gpu_available():
        pytest.skip("this machine has a GPU")
    assert setup_device(use_gpu=True, num_threads=1) == "cpu"
    assert "running on the CPU" in capsys.readouterr().err
    assert setup_device(use_gpu=False, num_threads=1) == "cpu"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("flag", "want"), [(1, 1), (3, 3), (0, usable_cpus())])
def test_thread_count_is_the_flag_else_one_per_usable_cpu(flag, want):
    import paddle  # noqa: F401  (importing paddle sets OMP_NUM_THREADS=1: it must not decide the count)

    from tangpoem import device

    before = device.cpu_threads()
    try:
        assert device.set_threads(flag) == want
        assert device.cpu_threads() == want  # what tangpoem's C kernels use
    finally:
        device.set_threads(before)
