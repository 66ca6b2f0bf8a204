"""Generation: every structural promise over many seeds, on random weights (constraints must hold for
any weights) and, when $TANGPOEM_CORPUS is set and the trainer exists, on a small model trained here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tangpoem import prosody
from tangpoem.data import EOP, PAD, START
from tangpoem.errors import TangpoemError
from tangpoem.generate import main
from tangpoem.generation import Poet, normalise
from tangpoem.generation.sampling import sample
from tangpoem.generation.shapes import LINE_ENDS, SENTENCE_ENDS
from tangpoem.prosody import FORMS, is_hanzi

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


def written(poems: list, count: int) -> list:
    """The poems a call wrote, once checked to be all `count` of them: a loop over none would check nothing."""
    assert len(poems) == count, f"{len(poems)} poems, not {count}"
    return poems


def no_triples(text: str) -> bool:
    return all(not (a == b == c) for a, b, c in zip(text, text[1:], text[2:], strict=False))


# ---------------------------------------------------------------- acrostic


def test_acrostic_heads_in_order_all_used(poet: Poet) -> None:
    poems = poet.write(start_words=HEADS, acrostic=True, num_poems=SEEDS, seed=100)
    assert len({p.text for p in poems}) > SEEDS // 2  # varied
    for poem in poems:
        check_lines(poem, None, len(HEADS))
        assert [line[0] for line in poem.lines] == list(HEADS), poem.text
        assert no_triples(poem.text)


@pytest.mark.parametrize("form", ["五绝", "qilv"])
def test_acrostic_with_form_and_rhyme(poet: Poet, form: str) -> None:
    length, count = FORMS[{"qilv": "七律"}.get(form, form)]
    for poem in written(
        poet.write(start_words="春风十里", acrostic=True, form=form, rhyme=True, num_poems=SEEDS, seed=7), SEEDS
    ):
        check_lines(poem, length, count)
        assert [line[0] for line in poem.lines[:4]] == list("春风十里"), poem.text
        check_rhyme(poem)


def test_acrostic_heads_with_punctuation_and_question_marks(poet: Poet) -> None:
    # A phrase written with punctuation: the marks are not heads.
    poems = written(poet.write(start_words="春风? 十里,", acrostic=True, num_poems=4), 4)
    assert all([line[0] for line in p.lines] == list("春风十里") for p in poems)


# ---------------------------------------------------------------- forms


def check_rhyme(poem) -> None:
    """平水韵, strictly: every line end is in the table, the even ones level and sharing a group, none twice."""
    ends = [line[-2] for line in poem.lines]
    assert all(prosody.known(ch) for ch in ends), poem.text
    assert prosody.check_poem(poem.text).rhyme, poem.text
    rhymes = ends[1::2]
    assert len(set(rhymes)) == len(rhymes), f"a rhyme character twice (重韵): {poem.text}"
    assert poem.rhyme and all(set(poem.rhyme.split("/")) & prosody.level_groups(ch) for ch in rhymes), poem.rhyme


def check_tones(poem) -> None:
    """Every character in the table, and every line admitted by one standard pattern."""
    assert all(prosody.known(ch) for line in poem.lines for ch in line[:-1]), poem.text
    found = prosody.check_poem(poem.text)
    assert found.tones_ok and found.all_ok, (poem.text, found)
    assert poem.pattern and set(poem.pattern.split("/")) & set(found.patterns), (poem.pattern, found.patterns)


@pytest.mark.parametrize("form", ["五绝", "七绝", "五律", "七律", "wujue", "qijue", "wulv", "qilv"])
@pytest.mark.parametrize("rhyme", [False, True])
def test_forms_exact(poet: Poet, form: str, rhyme: bool) -> None:
    name = {"wujue": "五绝", "qijue": "七绝", "wulv": "五律", "qilv": "七律"}.get(form, form)
    length, count = FORMS[name]
    poems = written(poet.write(form=form, rhyme=rhyme, num_poems=SEEDS // 2, seed=3), SEEDS // 2)
    for poem in poems:
        check_lines(poem, length, count)
        assert poem.ended == "shape"
        assert no_triples(poem.text)
        if rhyme:
            check_rhyme(poem)


def test_line_length_and_lines(poet: Poet) -> None:
    for poem in written(poet.write(line_length=5, lines=6, num_poems=SEEDS, seed=1), SEEDS):
        check_lines(poem, 5, 6)
    for poem in written(poet.write(line_length=7, num_poems=SEEDS, seed=1, max_gen_len=64), SEEDS):
        check_lines(poem, 7, None)
        assert len(poem.lines) % 2 == 0


def test_continuation_keeps_first_line_length(poet: Poet) -> None:
    for poem in written(poet.write(start_words="老夫聊发少年狂,", num_poems=SEEDS, seed=5, max_gen_len=80), SEEDS):
        assert poem.text.startswith("老夫聊发少年狂，"), poem.text
        check_lines(poem, 7, None, strict=False)
        assert len(poem.text) <= 80
    # The model may choose the first line's length, then keeps it.
    for poem in written(poet.write(num_poems=SEEDS, seed=5, max_gen_len=60), SEEDS):
        check_lines(poem, None, None, strict=False)


def test_start_words_within_a_form(poet: Poet) -> None:
    for poem in written(poet.write(start_words="床前明月光，疑是", form="五绝", num_poems=6), 6):
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
        poems = written(
            poet.write(start_words="春风", prefix_words=prefix, num_poems=SEEDS, seed=9, max_gen_len=60), SEEDS
        )
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
    (poem,) = poet.write(prefix_words="欲穷千里目", temperature=0, form="五绝")
    assert not poem.text.startswith("欲穷千里目")


def test_fixed_seed_repeats(poet: Poet) -> None:
    a = poet.write(start_words="春夏秋冬", acrostic=True, seed=42, num_poems=3)
    b = poet.write(start_words="春夏秋冬", acrostic=True, seed=42, num_poems=3)
    c = poet.write(start_words="春夏秋冬", acrostic=True, seed=43, num_poems=3)
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
        return poet.write(start_words=heads, acrostic=True, **mode, **kw) if heads else poet.write(**mode, **kw)

    batch = run(seed=20, num_poems=5)
    alone = [run(seed=20 + i, num_poems=1)[0] for i in range(5)]
    assert [p.text for p in batch] == [p.text for p in alone]


def test_repetition_penalty_breaks_greedy_loops(poet: Poet) -> None:
    (looping,) = poet.write(form="七律", temperature=0, repetition_penalty=0)
    (varied,) = poet.write(form="七律", temperature=0, repetition_penalty=5)
    check_lines(varied, 7, 8)
    assert len(set(varied.text)) > len(set(looping.text)) or len(set(varied.text)) >= 50


def test_greedy_ignores_seed(poet: Poet) -> None:
    a = poet.write(start_words="春", form="五绝", temperature=0, seed=1, num_poems=2)
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
    from tangpoem.generation.sampling import _nucleus

    rng = np.random.default_rng(1)
    for scale in (0.1, 1.0, 5.0):  # flat to peaked: the candidate search widens or not
        x = rng.normal(size=9000) * scale  # logits
        p = np.exp(x - x.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        for top_p in (0.5, 0.9, 0.99):
            want = order[: int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1]
            assert _nucleus(x, top_p).tolist() == sorted(want.tolist())


def test_normalise() -> None:
    assert normalise("  老夫聊发 少年狂, ") == "老夫聊发少年狂，"
    assert normalise("龍飛鳳舞!") == "龙飞凤舞！"


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
    assert record["text"] == record["poem"] == "".join(record["lines"])  # "poem": the earlier key, one more release
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
        (["--form", "五绝", "--start-words", "老夫聊发少年狂,"], "do not fit: line 1 is longer than 5"),
        (["--acrostic"], "acrostic phrase is empty"),  # the tutorial's start words are not heads
        (["--form", "五绝", "--line-length", "7"], "--form 五绝 has 5-character lines"),
        (["--temperature", "-1"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--repetition-penalty", "-1"], "--repetition-penalty"),
        (["--temperature", "nan"], "--temperature must be between 0 and 100, not nan"),
        (["--num-poems", "100000000"], "--num-poems must be between 1 and 1000"),
        (["--lr", "5"], "--lr is a setting of tangpoem.train"),
        (["--no-such-flag"], "unrecognized argument --no-such-flag"),
        (["--template", "床前明月光，□□□□。"], "same length"),
        (["--template", "床前明a光，□□□□□。"], "'a' at line 1, character 4"),
        (["--template", "春风江山开，□□□□□。", "--tones"], "'山' at line 1, character 4"),
        (["--form", "五绝", "--start-words", "", "--tones", "--pattern", "平平"], "unknown tone pattern '平平'"),
        (["--acrostic", "--template", "□□□□□，□□□□□。"], "two modes"),
        (["--candidates", "0"], "--candidates must be between 1 and 64"),
    ],
)
def test_cli_bad_input(random_ckpt: str, capsys, args: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, "--model-path", random_ckpt, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err, err


def test_cli_form_without_start_words_begins_empty(random_ckpt: str, capsys) -> None:
    # the tutorial's default start words are a 7-character line: a 5-character form begins from nothing
    code, out, err = run_cli(capsys, "--model-path", random_ckpt, "--form", "五绝", "--seed", "2")
    assert code == 0, err
    assert [len(line) for line in out.strip().split("\n")] == [12, 12]
    code, out, err = run_cli(capsys, "--model-path", random_ckpt, "--form", "七绝", "--seed", "2")
    assert code == 0 and out.startswith("老夫聊发少年狂，")  # ... a 7-character one keeps them


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


# ---------------------------------------------------------------- Tang prosody, templates, choosing


FORM_NAMES = ("五绝", "七绝", "五律", "七律")


def test_forms_rhyme_by_default_and_no_rhyme_turns_it_off(poet: Poet) -> None:
    for poem in written(poet.write(form="七绝", num_poems=SEEDS, seed=11), SEEDS):
        check_rhyme(poem)
    assert all(not p.rhyme for p in written(poet.write(form="七绝", rhyme=False, num_poems=4), 4))


@pytest.mark.parametrize("form", FORM_NAMES)
@pytest.mark.parametrize("num_poems", [1, 9])
def test_tones_keep_every_rule(poet: Poet, form: str, num_poems: int) -> None:
    length, count = FORMS[form]
    for seed in range(0, 40, num_poems):
        for poem in written(poet.write(form=form, tones=True, num_poems=num_poems, seed=seed), num_poems):
            check_lines(poem, length, count)
            check_tones(poem)
            check_rhyme(poem)


def test_tones_with_acrostic_template_and_start_words(poet: Poet) -> None:
    for poem in written(
        poet.write(start_words="春花秋月", acrostic=True, form="七绝", tones=True, num_poems=SEEDS, seed=3), SEEDS
    ):
        assert [line[0] for line in poem.lines] == list("春花秋月")
        check_tones(poem)
        check_rhyme(poem)
    template = "床前明月光，□□□□□。□□□□□，□□□□□。"
    for poem in written(poet.write(template=template, tones=True, num_poems=SEEDS, seed=5), SEEDS):
        assert poem.text.startswith("床前明月光，") and len(poem.text) == len(template)
        check_tones(poem)
    for poem in written(
        poet.write(start_words="白日依山尽，", form="五绝", tones=True, num_poems=SEEDS, seed=8), SEEDS
    ):
        assert poem.text.startswith("白日依山尽，")
        check_tones(poem)
        assert poem.pattern == "仄起不入韵"  # the only pattern 白日依山尽 leaves


def test_tones_without_a_form_on_five_or_seven_character_lines(poet: Poet) -> None:
    for poem in written(
        poet.write(start_words="夜月一帘幽梦", acrostic=True, tones=True, num_poems=SEEDS, seed=2), SEEDS
    ):
        check_lines(poem, None, 6)
        assert len(poem.lines[0]) - 1 in (5, 7)
        check_tones(poem)


def test_pattern_names_a_pattern(poet: Poet) -> None:
    for name in prosody.PATTERN_NAMES:
        for poem in written(poet.write(form="五律", tones=True, pattern=name, num_poems=4, seed=1), 4):
            assert poem.pattern == name and name in prosody.check_poem(poem.text).patterns
    with pytest.raises(TangpoemError, match="unknown tone pattern '平起'"):
        poet.write(form="五律", tones=True, pattern="平起")
    with pytest.raises(TangpoemError, match="with --tones"):
        poet.write(form="五律", pattern="平起入韵")


def test_given_characters_no_pattern_admits_are_named(poet: Poet) -> None:
    with pytest.raises(TangpoemError, match=r"'山' at line 1, character 4 of the template"):
        poet.write(template="春风江山开，□□□□□。□□□□□，□□□□□。", tones=True)
    with pytest.raises(TangpoemError, match=r"do not fit: no 五绝 tone pattern admits the level \(平\) '山'"):
        poet.write(start_words="春风江山", form="五绝", tones=True)
    with pytest.raises(TangpoemError, match="oblique"):  # 月 cannot close a rhyming line
        poet.write(template="□□□□□，□□□□月。□□□□□，□□□□□。")
    assert poet.write(template="□□□□□，□□□□月。□□□□□，□□□□□。", rhyme=False)  # it can without rhyme


def test_template_keeps_its_characters_and_fills_the_blanks(poet: Poet) -> None:
    template = "□□□□□□□，□□□□□□□。□□□山□□□，□□□□□□□。"
    for poem in written(
        poet.write(template=template.replace("□", "_", 3).replace("□", "＿", 2), num_poems=SEEDS, seed=4), SEEDS
    ):
        check_lines(poem, 7, 4)
        assert poem.lines[2][3] == "山"
        check_rhyme(poem)  # a template in a form's shape rhymes by default
    kept = "春风不见长江水，明月何时上玉楼。"
    (poem,) = poet.write(template=kept + "□□□□□□□，□□□□□□□。", seed=3)
    assert poem.text.startswith(kept)


@pytest.mark.parametrize(
    "template, message",
    [
        ("床前明月光，□□□□。", "same length"),
        ("床前明月光，□□□□□。□□□□□，", "line 3 of the template must end in 。"),
        ("床前明月光，□□□□□", "must end each line"),
        ("床前明a光，□□□□□。", "'a' at line 1, character 4"),
        ("床前明月光。□□□□□，", "line 1 of the template must end in ，"),
        (" ", "template is empty"),  # an empty template is no template: a continuation
    ],
)
def test_bad_templates_are_refused(poet: Poet, template: str, message: str) -> None:
    with pytest.raises(TangpoemError, match=message):
        poet.write(template=template)
    with pytest.raises(TangpoemError, match="has 5-character lines, but 7"):
        poet.write(template="床前明月光，□□□□□。", form="七绝")


def test_lines_have_five_or_seven_characters_unless_asked(poet: Poet) -> None:
    for poem in written(
        poet.write(start_words="夜月一帘幽梦春风十里柔情", acrostic=True, num_poems=SEEDS, seed=6), SEEDS
    ):
        assert len(poem.lines[0]) - 1 in (5, 7), poem.text
        check_lines(poem, None, 12)
    for poem in written(poet.write(num_poems=SEEDS, seed=7, max_gen_len=80), SEEDS):
        assert len(poem.lines[0]) - 1 in (5, 7), poem.text
    for poem in written(poet.write(start_words="春夏秋冬", acrostic=True, line_length=4, num_poems=4), 4):
        check_lines(poem, 4, 4)


def test_max_gen_len_bounds_acrostics_and_lines(poet: Poet) -> None:
    heads = "夜月一帘幽梦春风十里柔情"  # 12 lines: 72 characters in 5-character lines, 96 in 7
    for poem in written(poet.write(start_words=heads, acrostic=True, max_gen_len=80, num_poems=SEEDS, seed=1), SEEDS):
        check_lines(poem, 5, 12)
    for poem in written(poet.write(lines=6, max_gen_len=40, num_poems=SEEDS, seed=1), SEEDS):
        check_lines(poem, 5, 6)
    with pytest.raises(TangpoemError, match="--max-gen-len is 60"):
        poet.write(start_words=heads, acrostic=True, max_gen_len=60)


def test_candidates_keep_the_likeliest_poem(poet: Poet) -> None:
    for seed in range(6):
        (plain,) = poet.write(form="五绝", seed=seed)
        (best,) = poet.write(form="五绝", candidates=4, seed=seed)
        assert best.score == pytest.approx(poet.score(best.text), abs=1e-4)
        assert best.score >= poet.score(plain.text) - 1e-6  # the first candidate is the plain poem
        assert best.text == poet.write(form="五绝", candidates=4, seed=seed)[0].text


@pytest.mark.parametrize("options", [dict(form="七绝", drafts=3), dict(drafts=3, max_gen_len=60),
                                     dict(form="五律", tones=True, drafts=2, candidates=2)])  # fmt: skip
def test_drafts_keep_the_rules_and_batches_equal_one_by_one(poet: Poet, options: dict) -> None:
    batch = poet.write(num_poems=5, seed=30, **options)
    alone = [poet.write(num_poems=1, seed=30 + i, **options)[0] for i in range(5)]
    assert [p.text for p in batch] == [p.text for p in alone]
    for poem in batch:
        check_lines(poem, None, None, strict="form" in options)
        assert poem.score is not None
        if poem.ended != "max_gen_len":  # (then the text is cut back to its last couplet)
            assert poem.score == pytest.approx(poet.score(poem.text), abs=1e-4)
        if options.get("tones"):
            check_tones(poem)
        if "form" in options:
            check_rhyme(poem)


def test_greedy_needs_no_candidates(poet: Poet) -> None:
    (a,) = poet.write(form="五绝", temperature=0)
    (b,) = poet.write(form="五绝", temperature=0, candidates=4, drafts=4)
    assert a.text == b.text


def test_write_batch_equals_each_request_alone(poet: Poet) -> None:
    from tangpoem.generation import GenerationConfig

    requests = [
        GenerationConfig(form="七绝", num_poems=2, seed=3),
        GenerationConfig(
            start_words="春花秋月", acrostic=True, form="五绝", tones=True, seed=4, prefix_words="欲穷千里目"
        ),
        GenerationConfig(start_words="春风abc"),  # refused: not in the vocabulary
        GenerationConfig(template="□□□□□，□□□□□。□□□□□，□□□□□。", candidates=2, drafts=2, seed=5),
        GenerationConfig(start_words="春风", max_gen_len=40, temperature=0),
    ]
    together = poet.write_batch(requests)
    assert isinstance(together[2], TangpoemError) and "'a' (U+0061)" in str(together[2])
    assert together[2].field == "start_words"
    assert sum(not isinstance(got, TangpoemError) for got in together) == 4
    for request, got in zip(requests, together, strict=True):
        if not isinstance(got, TangpoemError):
            assert [p.text for p in got] == [p.text for p in poet.write(request)]
            assert [p.score for p in got] == pytest.approx([p.score for p in poet.write(request)])


def test_a_constraint_plugs_into_the_loop(poet: Poet) -> None:
    """The extension point DEVELOPERS.md shows: a piece that narrows what may be sampled, in the one loop."""
    from collections import Counter
    from dataclasses import replace

    from tangpoem.generation.decoder import decode
    from tangpoem.generation.request import GenerationConfig

    job = poet.job(GenerationConfig(form="五绝", num_poems=8, seed=1))
    plain = [st.tokens for st, _ in decode(poet.step, [job])[0]]
    written = [t for tokens in plain for t in tokens if poet.classes.text[t]]
    avoid = [t for t, _ in Counter(written).most_common(3)]  # the characters the model writes most when free
    assert len(avoid) == 3

    class Avoid:  # characters a poem must not use
        def allowed(self, state, ids, seed):
            kept = ids[~np.isin(ids, avoid)]
            return kept if len(kept) else ids

    constrained = [st.tokens for st, _ in decode(poet.step, [replace(job, constraints=[Avoid()])])[0]]
    assert len(constrained) == 8 and not any(t in avoid for tokens in constrained for t in tokens)


def test_the_deprecated_names_translate_and_refuse_a_mix(poet: Poet) -> None:
    """mode/text still work for one release (the server translates them through the same function)."""
    with pytest.warns(DeprecationWarning):
        old = poet.write(mode="acrostic", text="春夏秋冬", seed=3)
    assert [p.text for p in old] == [p.text for p in poet.write(start_words="春夏秋冬", acrostic=True, seed=3)]
    with pytest.raises(TangpoemError, match="use one set") as err, pytest.warns(DeprecationWarning):
        poet.write(mode="acrostic", text="春夏", start_words="秋冬")
    assert err.value.field == "mode"
