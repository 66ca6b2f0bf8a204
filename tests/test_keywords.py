"""Keywords and a title's plan: words the lines are pulled toward (and, given by the user, forced into), one
line each, in order; the plan draws them from what the title called up in the corpus (title_words.tsv)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tangpoem.config import Config
from tangpoem.errors import TangpoemError
from tangpoem.generation import Poet
from tangpoem.generation.keywords import due_lines, split_keywords
from tangpoem.generation.plan import PLAN_POOL, TITLE_WORDS_FILE, plan_keywords, title_associations, title_words
from tests.test_generate import check_lines, check_rhyme, check_tones

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def poet() -> Poet:
    return Poet.load("bundled")


def keyword_lines(poem, words: list[str]) -> list[int]:
    """The line each keyword is in (one line each, in order, as the generator counts them), -1 when missing."""
    out, line = [], 0
    for word in words:
        while line < len(poem.lines) and word not in poem.lines[line]:
            line += 1
        out.append(line if line < len(poem.lines) else -1)
        line += 1
    return out


def test_keywords_split_on_spaces_and_commas_and_fall_due_spread_over_the_poem():
    assert (
        split_keywords("明月 故乡")
        == split_keywords("明月，故乡")
        == split_keywords(" 明月、故乡 ")
        == ["明月", "故乡"]
    )
    assert due_lines(4, 4) == [0, 1, 2, 3]
    assert due_lines(2, 4) == [1, 3]
    assert due_lines(4, 8) == [1, 3, 5, 7]
    assert due_lines(3, None) == [0, 1, 2]  # the model's number of lines: one after another


@pytest.mark.parametrize(
    "form, words, tones",
    [("五绝", ["明月", "故乡"], False), ("七绝", ["酒", "剑", "马", "孤"], False), ("五律", ["秋风", "雁"], False),
     ("七绝", ["酒", "剑", "马", "孤"], True), ("五律", ["明月", "故乡", "秋风", "归"], True)],
)  # fmt: skip
def test_given_keywords_are_written_in_order_one_line_each(poet, form, words, tones):
    """With tones too: a keyword goes in at the last place of its line whose tone it fits (tried at the last two
    places only, 26 of 40 such 七绝 lost a keyword)."""
    poems = poet.write(keywords=" ".join(words), form=form, tones=tones, num_poems=12, seed=5)
    for poem in poems:
        check_lines(poem, int(form[0] == "七") * 2 + 5, 4 if form[1] == "绝" else 8)
        check_rhyme(poem)
        if tones:
            check_tones(poem)
        assert poem.keywords == words
        where = keyword_lines(poem, words)
        assert -1 not in where, (poem.text, words)
        assert where == sorted(where)


def test_keywords_pull_the_model_toward_them_and_without_pull_are_still_forced(poet):
    """With pull the model places a keyword where it reads naturally, so more of them land before the line's
    last two places; at 0 they are only forced there, yet every poem still holds them."""
    words = ["明月", "故乡"]

    def early_share(pull: float) -> float:
        poems = poet.write(keywords="明月 故乡", form="五绝", num_poems=16, seed=40, keyword_pull=pull)
        assert all(-1 not in keyword_lines(p, words) for p in poems)
        spots = [p.lines[i].index(w) for p in poems for w, i in zip(words, keyword_lines(p, words), strict=True)]
        return sum(spot < 2 for spot in spots) / len(spots)

    assert early_share(Config.keyword_pull) > early_share(0.0) + 0.2


def test_bad_keywords_are_one_clear_error_naming_the_setting(poet):
    for keywords, message in [
        ("一 二 三 四 五", "5 keywords but the poem has 4 lines"),
        ("明月 moon", "not in the model's vocabulary"),
        ("明月 故乡", None),
        ("白日依山尽了", "longer than a line"),
    ]:
        if message is None:
            poet.write(keywords=keywords, form="五绝")
            continue
        with pytest.raises(TangpoemError, match=message) as err:
            poet.write(keywords=keywords, form="五绝")
        assert err.value.field == "keywords"


def test_the_plan_draws_what_the_title_calls_up():
    table = title_words()
    assert "菊" in table["重阳"] and "萸" in table["重阳"]  # 重阳: the festival of chrysanthemums and 茱萸
    assert "灯" in table["夜"] and "军" in table["塞"]
    calls = [ch for ch, _ in title_associations("重阳登高")]
    assert calls[0] == "菊" and "萸" in calls[:PLAN_POOL]
    assert dict(title_associations("阳")) != dict(title_associations("重阳"))  # 重阳 is a word, not 重 + 阳
    pool = {ch for ch, _ in title_associations("塞下曲")[:PLAN_POOL]}
    plans = [plan_keywords("塞下曲", 4, seed) for seed in range(6)]
    assert all(len(p) == 4 == len(set(p)) and set(p) <= pool for p in plans)
    assert plans[0] == plan_keywords("塞下曲", 4, 0)  # the seed decides
    assert len({tuple(p) for p in plans}) > 1  # and poems of other seeds get other plans
    assert plan_keywords("〇〇", 4, 1) == []  # a title the table knows nothing of: no plan


def test_a_planned_poem_writes_its_titles_images(poet):
    """The plan's keywords reach the poem: many more of them than the model writes to the same title unplanned."""
    titles = ["重阳", "塞下曲", "秋夜寄远", "春日登楼"]

    def hits(plan: bool) -> float:
        found = total = 0
        for title in titles:
            for poem in poet.write(title=title, form="七绝", plan=plan, num_poems=6, seed=11):
                words = poem.keywords if plan else plan_keywords(title, 4, poem.seed)
                assert len(words) == 4
                found += sum(w in poem.text for w in words)
                total += len(words)
        return found / total

    planned, unplanned = hits(True), hits(False)
    assert planned > unplanned + 0.15, (planned, unplanned)  # measured: 0.70 against 0.41


def test_a_plan_needs_a_title_and_gives_way_to_given_keywords(poet):
    assert poet.write(form="五绝", plan=True)[0].keywords == []
    assert poet.write(title="重阳", form="五绝", plan=True, keywords="明月")[0].keywords == ["明月"]


@pytest.mark.once
def test_the_title_table_is_what_its_script_counts_in_the_corpus(corpus_tarball, tmp_path):
    out = tmp_path / TITLE_WORDS_FILE
    script = ROOT / "scripts" / "build_title_words.py"
    done = subprocess.run([sys.executable, str(script), str(corpus_tarball), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "title units from 294,622 titled poems" in done.stdout
    assert out.read_bytes() == (ROOT / "tangpoem" / TITLE_WORDS_FILE).read_bytes()


def test_the_rules_say_which_later_places_a_character_fits(poet):
    """Rules.fits, which a keyword asks before it waits for a later place: the tone pattern and the rhyme."""
    from tangpoem.generation import GenerationConfig
    from tangpoem.prosody import LEVEL, OBLIQUE, tones

    rules = poet.job(GenerationConfig(form="五绝", tones=True, pattern="仄起不入韵")).rules
    st = rules.new_state()  # line 1 of 仄起不入韵: 仄仄平平仄, its 1st and 3rd places free where the rules allow
    w = poet.classes.word2ix
    assert tones("月") == OBLIQUE and tones("风") == LEVEL
    assert rules.fits(st, w["月"], 1) and not rules.fits(st, w["风"], 1)
    assert rules.fits(st, w["风"], 3) and not rules.fits(st, w["月"], 3)
    assert rules.fits(st, w["风"], 0) and rules.fits(st, w["月"], 0)
    assert not rules.fits(st, w["风"], 4)  # the line ends oblique
    plain = poet.job(GenerationConfig(form="五绝")).rules  # rhyme without tones: only the line ends are ruled
    st = plain.new_state()
    assert all(plain.fits(st, w[ch], pos) for ch in "风月" for pos in range(4))


def test_keywords_on_the_command_line_set_aside_the_tutorials_words(capsys):
    """Keywords, like a title, are the poem's subject: the command line then neither opens a 7-character poem with
    the tutorial's 老夫聊发少年狂 nor feeds its prefix words, unless they are given."""
    import json

    from tangpoem.generate import main

    assert main(["--model-path", "bundled", "--keywords", "剑 雪 归", "--form", "七绝", "--seed", "2", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["settings"]["start_words"] == record["settings"]["prefix_words"] == ""
    assert not record["text"].startswith("老夫聊发少年狂") and record["keywords"] == ["剑", "雪", "归"]
    assert main(["--model-path", "bundled", "--form", "七绝", "--seed", "2", "--json"]) == 0  # without: the tutorial's
    assert json.loads(capsys.readouterr().out)["text"].startswith("老夫聊发少年狂")
