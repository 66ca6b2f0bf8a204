"""Generation: every structural promise over many seeds, on random weights (constraints must hold for
any weights) and, when $TANGPOEM_CORPUS is set and the trainer exists, on a small model trained here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tangpoem.data import EOP, PAD, START
from tangpoem.forms import FORMS, LINE_ENDS, SENTENCE_ENDS, is_hanzi, level_rhymes, rhyme_group
from tangpoem.generate import Poet, main, normalise, sample

COMMON = (
    "不人无山一风日云有来天何中时上花水月春生为相心自年如长君知白此归行见秋去得空在清下夜高江是里明未金门三多处"
    "青子道客千声寒家落玉事今前万雨出我远朝南入路飞尽东与深城流开草地烟树思新将色还欲已别成谁西可马应酒身回更光"
    "闻独闲重向同石阳看香海望游从雪满头情难愁林老莫衣方古书尘能龙红名似歌分复作黄楼后气当旧犹平到言十大间亦仙过"
    "五鸟非叶王几离外然松起意华百北初台诗之世边若发随竹神安须公梦故宫余阴暮国少孤四终文野吟汉坐露醉晚好枝所柳碧"
    "逢幽临河泉波轻霜关留问连绿微半岁溪芳池九乡因影小两共经岂断近翠照曲期惊乐寻庭真动却物者双曾正遥吹常苦星残对"
    "居晓静先二峰垂鹤木忆悲舟笑以虚合语紫才沙鸣至通依浮忽又和灵楚久唯鱼夕传帘柔聊狂穷层冬凤夏夫床疑目舞"
)
VOCAB = [*COMMON, "，", "。", "？", "！", "；", "□", EOP, START, PAD]
HEADS = "夜月一帘幽梦春风十里柔情"
SEEDS = 24


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory) -> str:
    import paddle

    from tangpoem.checkpoint import save_checkpoint
    from tangpoem.model import ModelConfig, PoetryModel

    paddle.seed(1)
    model = PoetryModel(ModelConfig(len(VOCAB), embedding_dim=16, hidden_dim=32, num_layers=2))
    path = tmp_path_factory.mktemp("gen") / "random.ckpt"
    save_checkpoint(path, model, VOCAB)
    return str(path)


@pytest.fixture(scope="module")
def trained_ckpt(tang_npz, tmp_path_factory) -> str:
    train = pytest.importorskip("tangpoem.train")
    from tangpoem.config import Config

    prefix = tmp_path_factory.mktemp("trained") / "model"
    cfg = Config(
        data_path=str(tang_npz), embedding_dim=32, hidden_dim=64, num_layers=1, batch_size=32, max_steps=20,
        model_prefix=str(prefix), use_gpu=False, plot_every=10**9,
    )  # fmt: skip
    return train.train(cfg)


@pytest.fixture(params=["random", "trained"])
def poet(request) -> Poet:
    return Poet.load(request.getfixturevalue(f"{request.param}_ckpt"))


def check_lines(poem, length: int | None, count: int | None, strict: bool = True) -> None:
    """Chinese characters only inside lines, equal lengths, ，/。 alternating, ends after a sentence end."""
    assert poem.text and poem.text[-1] in SENTENCE_ENDS, poem.text
    assert "".join(poem.lines) == poem.text == "".join(poem.couplets)
    lengths = {len(line) - 1 for line in poem.lines}
    assert len(lengths) == 1, poem.text
    if length:
        assert lengths == {length}, poem.text
    if count:
        assert len(poem.lines) == count, poem.text
    for i, line in enumerate(poem.lines):
        assert all(is_hanzi(ch) for ch in line[:-1]), poem.text
        if strict:
            assert line[-1] == ("，" if i % 2 == 0 and i != len(poem.lines) - 1 else "。"), poem.text
        else:
            assert line[-1] in LINE_ENDS
    for ch in poem.text:
        assert ch != "□" and ch != "；"


def no_triples(text: str) -> bool:
    return all(not (a == b == c) for a, b, c in zip(text, text[1:], text[2:], strict=False))


# ---------------------------------------------------------------- acrostic


def test_acrostic_heads_in_order_all_used(poet: Poet) -> None:
    poems = poet.acrostic(HEADS, num_poems=SEEDS, seed=100)
    assert len({p.text for p in poems}) > SEEDS // 2  # varied
    for poem in poems:
        check_lines(poem, None, len(HEADS))
        assert [line[0] for line in poem.lines] == list(HEADS), poem.text
        assert no_triples(poem.text)


@pytest.mark.parametrize("form", ["五绝", "qilv"])
def test_acrostic_with_form_and_rhyme(poet: Poet, form: str) -> None:
    length, count = FORMS[{"qilv": "七律"}.get(form, form)]
    for poem in poet.acrostic("春风十里", form=form, rhyme=True, num_poems=SEEDS, seed=7):
        check_lines(poem, length, count)
        assert [line[0] for line in poem.lines[:4]] == list("春风十里"), poem.text
        check_rhyme(poem)


def test_acrostic_heads_with_punctuation_and_question_marks(poet: Poet) -> None:
    # A phrase written with punctuation: the marks are not heads.
    poems = poet.acrostic("春风? 十里,", num_poems=4)
    assert all([line[0] for line in p.lines] == list("春风十里") for p in poems)


# ---------------------------------------------------------------- forms


def check_rhyme(poem) -> None:
    ends = [line[-2] for line in poem.lines[1::2]]
    shared = None
    for ch in ends:
        groups = level_rhymes(ch)
        assert groups, f"{ch} has no level reading: {poem.text}"
        shared = groups if shared is None else shared & groups
    assert shared, f"{ends} do not share a rhyme: {poem.text}"


@pytest.mark.parametrize("form", ["五绝", "七绝", "五律", "七律", "wujue", "qijue", "wulv", "qilv"])
@pytest.mark.parametrize("rhyme", [False, True])
def test_forms_exact(poet: Poet, form: str, rhyme: bool) -> None:
    name = {"wujue": "五绝", "qijue": "七绝", "wulv": "五律", "qilv": "七律"}.get(form, form)
    length, count = FORMS[name]
    poems = poet.continue_poem("", form=form, rhyme=rhyme, num_poems=SEEDS // 2, seed=3)
    for poem in poems:
        check_lines(poem, length, count)
        assert poem.ended == "shape"
        assert no_triples(poem.text)
        if rhyme:
            check_rhyme(poem)


def test_line_length_and_lines(poet: Poet) -> None:
    for poem in poet.continue_poem("", line_length=5, lines=6, num_poems=SEEDS, seed=1):
        check_lines(poem, 5, 6)
    for poem in poet.continue_poem("", line_length=7, num_poems=SEEDS, seed=1, max_gen_len=64):
        check_lines(poem, 7, None)
        assert len(poem.lines) % 2 == 0


def test_continuation_keeps_first_line_length(poet: Poet) -> None:
    for poem in poet.continue_poem("老夫聊发少年狂,", num_poems=SEEDS, seed=5, max_gen_len=80):
        assert poem.text.startswith("老夫聊发少年狂，"), poem.text
        check_lines(poem, 7, None, strict=False)
        assert len(poem.text) <= 80
    # The model may choose the first line's length, then keeps it.
    for poem in poet.continue_poem("", num_poems=SEEDS, seed=5, max_gen_len=60):
        check_lines(poem, None, None, strict=False)


def test_start_words_within_a_form(poet: Poet) -> None:
    for poem in poet.continue_poem("床前明月光，疑是", form="五绝", num_poems=6):
        check_lines(poem, 5, 4)
        assert poem.text.startswith("床前明月光，疑是")


# ---------------------------------------------------------------- priming, seeds, batches


def test_prefix_words_never_appear(poet: Poet) -> None:
    prefix = "欲穷千里目,更上一层楼"
    fed: list[list[int]] = []
    real_step = poet.step.step

    def spy(ids, rows):
        fed.append(ids.tolist())
        return real_step(ids, rows)

    poet.step.step = spy
    try:
        poems = poet.continue_poem("春风", prefix_words=prefix, num_poems=SEEDS, seed=9, max_gen_len=60)
    finally:
        del poet.step.step
    # Fed: <START>, the prefix (normalised), then the poem; printed: the poem only.
    want = [poet.classes.start, *(poet.classes.word2ix[ch] for ch in normalise(prefix))]
    assert [column[0] for column in fed[: len(want)]] == want
    assert all(len(set(column)) == 1 for column in fed[: len(want)])
    for poem in poems:
        assert poem.text.startswith("春风")
        assert "欲穷千里目" not in poem.text and "更上一层楼" not in poem.text


def test_greedy_prefix_is_not_output(random_ckpt: str) -> None:
    poet = Poet.load(random_ckpt)
    (poem,) = poet.continue_poem("", prefix_words="欲穷千里目", temperature=0, form="五绝")
    assert not poem.text.startswith("欲穷千里目")


def test_fixed_seed_repeats(poet: Poet) -> None:
    a = poet.acrostic("春夏秋冬", seed=42, num_poems=3)
    b = poet.acrostic("春夏秋冬", seed=42, num_poems=3)
    c = poet.acrostic("春夏秋冬", seed=43, num_poems=3)
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.text for p in a] != [p.text for p in c]
    assert [p.seed for p in a] == [42, 43, 44]


@pytest.mark.parametrize(
    "mode",
    [
        dict(start_words="老夫聊发少年狂,", max_gen_len=60),
        dict(heads=HEADS),
        dict(start_words="", form="七律", rhyme=True, top_k=50),
        dict(heads="春风", form="五绝", temperature=0),
    ],
)
def test_batch_equals_one_by_one(poet: Poet, mode: dict) -> None:
    mode = dict(mode)
    heads = mode.pop("heads", None)

    def run(**kw):
        return poet.acrostic(heads, **mode, **kw) if heads else poet.continue_poem(**mode, **kw)

    batch = run(seed=20, num_poems=5)
    alone = [run(seed=20 + i, num_poems=1)[0] for i in range(5)]
    assert [p.text for p in batch] == [p.text for p in alone]


def test_repetition_penalty_breaks_greedy_loops(poet: Poet) -> None:
    (looping,) = poet.continue_poem("", form="七律", temperature=0, repetition_penalty=0)
    (varied,) = poet.continue_poem("", form="七律", temperature=0, repetition_penalty=5)
    check_lines(varied, 7, 8)
    assert len(set(varied.text)) > len(set(looping.text)) or len(set(varied.text)) >= 50


def test_greedy_ignores_seed(poet: Poet) -> None:
    a = poet.continue_poem("春", form="五绝", temperature=0, seed=1, num_poems=2)
    assert a[0].text == a[1].text


# ---------------------------------------------------------------- sampler and input


def test_sampler_allowed_top_k_top_p() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50)).astype(np.float32)
    allowed = [np.arange(10, 50)] * 3
    best = logits[:, 10:].argmax(1) + 10
    rngs = [np.random.default_rng(i) for i in range(3)]
    for kw in (dict(temperature=0, top_k=0, top_p=1.0), dict(temperature=1, top_k=1, top_p=1.0)):
        assert (sample(logits, allowed, [[]] * 3, rngs, **kw) == best).all()
    assert (sample(logits, allowed, [[]] * 3, rngs, temperature=1, top_k=0, top_p=1e-6) == best).all()
    many = np.concatenate([sample(logits, allowed, [[]] * 3, rngs, 1.5, 0, 1.0) for _ in range(200)])
    assert many.min() >= 10 and len(set(many.tolist())) > 20  # only allowed tokens, and many of them
    top3 = np.argsort(-logits[:, 10:], axis=1)[:, :3] + 10
    drawn = np.stack([sample(logits, allowed, [[]] * 3, rngs, 1.0, 3, 1.0) for _ in range(100)], axis=1)
    assert all(set(drawn[r].tolist()) <= set(top3[r].tolist()) for r in range(3))
    banned = [[int(b)] for b in best]
    assert (sample(logits, allowed, banned, rngs, 0, 0, 1.0) != best).all()


def test_nucleus_matches_full_sort() -> None:
    from tangpoem.generate import _nucleus

    rng = np.random.default_rng(1)
    for scale in (0.1, 1.0, 5.0):  # flat to peaked: the candidate search widens or not
        p = np.exp(rng.normal(size=9000) * scale)
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        want = order[: int(np.searchsorted(np.cumsum(p[order]), 0.9)) + 1]
        assert _nucleus(p, 0.9).tolist() == sorted(want.tolist())


def test_normalise() -> None:
    assert normalise("  老夫聊发 少年狂, ") == "老夫聊发少年狂，"
    assert normalise("龍飛鳳舞!") == "龙飞凤舞！"


def test_rhyme_groups() -> None:
    assert rhyme_group("shuang") == rhyme_group("guang") == rhyme_group("yang") == "唐"
    assert rhyme_group("shi") == "支" and rhyme_group("xi") == "齐" and rhyme_group("ju") == "齐"
    assert "唐" in level_rhymes("霜") and not level_rhymes("月")
    assert level_rhymes("身") == {"文"} and level_rhymes("看") == {"寒"}  # main reading; level reading


# ---------------------------------------------------------------- CLI


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_couplets_and_json(random_ckpt: str, capsys) -> None:
    code, out, err = run_cli(capsys, "--model-path", random_ckpt, "--form", "七绝", "--seed", "4")
    assert code == 0, err
    lines = out.strip().split("\n")
    assert len(lines) == 2 and all(len(line) == 16 for line in lines)
    assert lines[0].startswith("老夫聊发少年狂，")  # the tutorial's default start words
    code, out, err = run_cli(capsys, "--model-path", random_ckpt, "--acrostic", "--start-words", "春风", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["lines"][0][0] == "春" and record["seed"] == 0 and record["settings"]["acrostic"] is True
    assert record["poem"] == "".join(record["lines"])
    code, out, _ = run_cli(
        capsys, "--model-path", random_ckpt, "--num-poems", "3", "--json", "--form", "wujue", "--start-words", ""
    )
    assert [json.loads(line)["seed"] for line in out.strip().split("\n")] == [0, 1, 2]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--start-words", "春风abc十里"], "'a' (U+0061), 'b' (U+0062), 'c' (U+0063)"),
        (["--start-words", "春", "--prefix-words", "鑫"], "prefix words: not in the model's vocabulary: '鑫'"),
        (["--acrostic", "--start-words", " ，。 "], "acrostic phrase is empty"),
        (
            ["--acrostic", "--start-words", "一二三四五", "--form", "五绝"],
            "5 head characters but --form 五绝",
        ),
        (["--acrostic", "--start-words", "一二三", "--lines", "2"], "has only 2 lines"),
        (["--form", "sonnet"], "unknown form 'sonnet'"),
        (["--form", "五绝"], "do not fit: line 1 is longer than 5"),
        (["--form", "五绝", "--line-length", "7"], "--form 五绝 has 5-character lines"),
        (["--temperature", "-1"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--repetition-penalty", "-1"], "--repetition-penalty"),
    ],
)
def test_cli_bad_input(random_ckpt: str, capsys, args: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, "--model-path", random_ckpt, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err, err


def test_cli_bad_checkpoint(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "--model-path", str(tmp_path / "missing.ckpt"))
    assert code == 2 and "not found" in err and err.count("\n") == 1
    foreign = tmp_path / "foreign.pdparams"
    foreign.write_bytes(b"\x80\x04not a checkpoint at all" * 10)
    code, _, err = run_cli(capsys, "--model-path", str(foreign))
    assert code == 2 and "not a tangpoem checkpoint" in err and err.count("\n") == 1


def test_cli_subprocess(random_ckpt: str) -> None:
    cmd = [sys.executable, "-m", "tangpoem.generate", "--model-path", random_ckpt]
    bad = subprocess.run([*cmd, "--form", "sonnet"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == "" and "unknown form 'sonnet'" in bad.stderr
    good = subprocess.run([*cmd, "--acrostic", "--start-words", "春風", "--json"], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert [line[0] for line in json.loads(good.stdout)["lines"]] == ["春", "风"]
