"""Tang prosody: the 平水韵 table shipped in the package, the tone rules, the patterns, the checker, on real poems."""

from __future__ import annotations

import shutil
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest

from tangpoem import prosody
from tangpoem.errors import TangpoemError
from tangpoem.prosody import (
    BOTH,
    LEVEL,
    OBLIQUE,
    PATTERN_NAMES,
    admitted_strings,
    check_poem,
    distinct_246,
    level_group_names,
    level_groups,
    lone_level,
    pattern,
    poem_patterns,
    three_level_tail,
    tones,
)
from tests.conftest import skip_outside_ci

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "data" / "pingshui"  # the team's copy of the upstream table

# Real poems (simplified as the corpus cleans them), checked by hand against the table.
DENG_GUANQUE_LOU = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"  # 王之涣: 仄起不入韵 五绝
JUEJU = "两个黄鹂鸣翠柳，一行白鹭上青天。窗含西岭千秋雪，门泊东吴万里船。"  # 杜甫 绝句: 仄起不入韵 七绝
JING_YE_SI = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"  # 李白 静夜思: 古体
SHAN_JU = "空山新雨后，天气晚来秋。明月松间照，清泉石上流。竹喧归浣女，莲动下渔舟。随意春芳歇，王孙自可留。"
CHUN_WANG = "国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。"
WEICHENG = "渭城朝雨浥轻尘，客舍青青杨柳春。劝君更尽一杯酒，西出阳关无故人。"  # 王维: 舍 仄, 君 平: 失粘
JI_HAN_ZUN = "夫子素多疾，别来未得书。北庭苦寒地，体内今何如。"  # 岑参 寄韩樽: 别来未得书 is 仄平仄仄平
GUAN_FANG_BAI_YING = "八月边风高，胡鹰白锦毛。孤飞一片雪，百里见秋毫。"  # 李白: 八月边风高 ends 平平平
CHUN_XIAO = "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"  # 孟浩然: rhymes on oblique tones
HU_ZHONG = "青草湖边日色低，黄茅嶂里鹧鸪啼。丈夫飘荡今如此，一曲长歌楚水西。"  # 顾况: the table lacks 啼


# ---------------------------------------------------------------- the table


def test_tones_come_from_the_rhyme_classes():
    assert tones("东") == LEVEL and level_groups("东") == {"上平一东"}
    # Entering-tone characters are oblique although Mandarin reads some of them level.
    for ch in "白国十一月独":
        assert tones(ch) == OBLIQUE and level_groups(ch) == frozenset(), ch
    assert tones("柳") == OBLIQUE and tones("楼") == LEVEL and level_groups("楼") == {"下平十一尤"}


def test_characters_with_both_tones_and_several_groups():
    # 看 kān/kàn (十四寒, 十五翰), 思 sī/sì (四支, 四寘), 过 guō/guò (五歌, 二十一个)
    assert tones("看") == tones("思") == tones("过") == BOTH
    assert level_groups("看") == {"上平十四寒"}
    assert level_groups("思") == {"上平四支"}
    assert level_groups("过") == {"下平五歌"}
    assert level_groups("行") == {"下平七阳", "下平八庚"}  # háng and xíng


def test_the_group_head_missing_upstream_is_repaired():
    # Upstream's 一先 lists 千 天 年 ... but not 先 itself; every other group lists its head first.
    assert tones("先") == BOTH and level_groups("先") == {"下平一先"}


def test_unknown_characters():
    assert tones("a") == 0 and tones("□") == 0 and level_groups("a") == frozenset()
    assert not prosody.known("a") and prosody.known("东")


def test_group_names_are_the_thirty_level_groups():
    names = level_group_names()
    assert len(names) == len(set(names)) == 30
    assert names[0] == "上平一东" and names[14] == "上平十五删"
    assert names[15] == "下平一先" and names[-1] == "下平十五咸"
    used = set().union(*(level_groups(ch) for ch in "东冬江支微鱼虞齐佳灰真文元寒删先萧肴豪歌麻阳庚青蒸尤侵覃盐咸"))
    assert used == set(names)


@pytest.fixture
def upstream_table() -> Path:
    """The team's copy of the upstream table beside the checkout: a developer may lack it (skip), CI, which reads
    the corpus from the same shared folder, must not (fail)."""
    if not (SOURCE / "Pingshui_Rhyme.json").is_file():
        skip_outside_ci(f"no copy of the upstream table at {SOURCE}")
    return SOURCE


def test_the_package_data_is_what_the_script_builds(tmp_path, upstream_table):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_pingshui.py"), str(SOURCE), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "8,232 characters" in done.stdout
    for name in ("pingshui.tsv", "pingshui.LICENSE"):
        assert (tmp_path / name).read_bytes() == (ROOT / "tangpoem" / name).read_bytes(), name
    assert "MIT License" in (tmp_path / "pingshui.LICENSE").read_text(encoding="utf-8")


def test_the_script_refuses_another_table(tmp_path, upstream_table):
    src = tmp_path / "src"
    shutil.copytree(SOURCE, src)
    table = (src / "Pingshui_Rhyme.json").read_text(encoding="utf-8")
    (src / "Pingshui_Rhyme.json").write_text(table.replace('"东"', '"冬"', 1), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_pingshui.py"), str(src), "--out-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "sha256" in done.stderr
    assert not (tmp_path / "out" / "pingshui.tsv").exists()


@pytest.mark.slow
# ---------------------------------------------------------------- line rules


def test_line_rules_on_tone_strings():
    assert distinct_246("ZZPPZ") and not distinct_246("PZZZP")  # 疑是地上霜
    assert distinct_246("ZZPPZZP") and not distinct_246("ZZPPPPZ")  # 4th and 6th alike
    assert three_level_tail("ZZPPP") and not three_level_tail("ZZZPP")
    assert lone_level("ZPZZP") and lone_level("PPZPZZP")  # 仄平仄仄平; in seven: the last five
    assert not lone_level("PPZZP") and not lone_level("PPPZP") and not lone_level("ZPPZP")
    assert not lone_level("ZPZZZ")  # ends oblique: no 孤平


# ---------------------------------------------------------------- patterns


def test_each_form_has_four_patterns_by_stick_and_oppose():
    assert [p.base for p in poem_patterns(5, 4)] == [
        ("PPZZP", "ZZZPP", "ZZPPZ", "PPZZP"),  # 平起入韵
        ("PPPZZ", "ZZZPP", "ZZPPZ", "PPZZP"),  # 平起不入韵
        ("ZZZPP", "PPZZP", "PPPZZ", "ZZZPP"),  # 仄起入韵
        ("ZZPPZ", "PPZZP", "PPPZZ", "ZZZPP"),  # 仄起不入韵: 仄仄平平仄，平平仄仄平。平平平仄仄，仄仄仄平平。
    ]
    assert pattern(7, 4, "平起入韵").base == ("PPZZZPP", "ZZPPZZP", "ZZPPPZZ", "PPZZZPP")
    # 五律 仄起入韵: lines 5-8 repeat the cycle, line 5 unrhymed.
    assert pattern(5, 8, "仄起入韵").base == (
        *("ZZZPP", "PPZZP", "PPPZZ", "ZZZPP"),
        *("ZZPPZ", "PPZZP", "PPPZZ", "ZZZPP"),
    )
    for length, lines in ((5, 4), (7, 4), (5, 8), (7, 8), (7, 12)):
        patterns = poem_patterns(length, lines)
        assert tuple(p.name for p in patterns) == PATTERN_NAMES and len(patterns) == 4
        assert poem_patterns(length, lines) is patterns  # cached
        for p in patterns:
            assert p.lines == lines == len(p.base) and p.line_length == length
            assert p.base[0][1] == ("P" if p.name.startswith("平") else "Z")
            assert p.first_line_rhymes == (p.name in ("平起入韵", "仄起入韵"))
            for i, base in enumerate(p.base):
                assert base[-1] == ("P" if i % 2 or (i == 0 and p.first_line_rhymes) else "Z")
                if i:
                    assert (base[1] != p.base[i - 1][1]) == (i % 2 == 1)  # 对 in a couplet, 粘 across


def test_admitted_strings_are_exactly_the_rule_abiding_variants():
    assert set(admitted_strings("PPZZP")) == {"PPZZP", "PPPZP", "ZPPZP"}  # not 仄平仄仄平 (孤平)
    assert set(admitted_strings("ZZZPP")) == {"ZZZPP", "PZZPP"}  # not x仄平平平 (三平尾)
    assert set(admitted_strings("ZZPPZ")) == {"ZZPPZ", "PZPPZ", "ZZZPZ", "PZZPZ"}
    for length in (5, 7):
        fixed = (1, 3, 5, length - 1) if length == 7 else (1, 3, 4)
        assert len(prosody.BASE_LINES[length]) == 4  # the four base lines A-D, each checked below
        for base in prosody.BASE_LINES[length].values():
            admitted = admitted_strings(base)
            assert base in admitted and len(set(admitted)) == len(admitted)
            everything = ("".join(t) for t in product("PZ", repeat=length))
            want = {
                s
                for s in everything
                if all(s[i] == base[i] for i in fixed) and not three_level_tail(s) and not lone_level(s)
            }
            assert set(admitted) == want
            assert all(distinct_246(s) for s in admitted)


def test_bad_pattern_requests():
    with pytest.raises(TangpoemError, match="even number of lines of 5 or 7"):
        poem_patterns(6, 4)
    with pytest.raises(TangpoemError, match="even number"):
        poem_patterns(5, 3)
    with pytest.raises(TangpoemError, match="unknown tone pattern '平起'.*仄起不入韵"):
        pattern(5, 4, "平起")


# ---------------------------------------------------------------- the checker on real poems


def test_regular_poems_keep_every_rule():
    cases = {
        DENG_GUANQUE_LOU: ("五绝", "仄起不入韵", "下平十一尤"),
        JUEJU: ("七绝", "仄起不入韵", "下平一先"),
        SHAN_JU: ("五律", "平起不入韵", "下平十一尤"),
        CHUN_WANG: ("五律", "仄起不入韵", "下平十二侵"),
    }
    for text, (form, name, group) in cases.items():
        c = check_poem(text)
        assert c.form == form and c.all_ok and c.tones_ok, text
        assert len(c.rules()) == 5 and all(c.rules().values()), c.rules()
        assert c.pattern == name and c.rhyme_groups == (group,) and c.unknown == ()


def test_jing_ye_si_is_old_style():
    c = check_poem(JING_YE_SI)
    assert c.form == "五绝" and c.rhyme  # 光 霜 乡 all 七阳, 月 oblique
    assert not c.distinct_246  # 疑是地上霜: 是 and 上 both oblique
    assert not c.nian_dui  # 是 仄 then 头 平
    assert not c.tones_ok and not c.all_ok and c.pattern is None


def test_faults_are_found_one_at_a_time():
    broken = check_poem(WEICHENG)  # 失粘 between lines 2 and 3
    assert broken.rhyme and broken.distinct_246 and broken.no_three_level and broken.no_lone_level
    assert not broken.nian_dui and not broken.tones_ok

    lone = check_poem(JI_HAN_ZUN)
    assert lone.rhyme and lone.distinct_246 and lone.nian_dui and lone.no_three_level
    assert not lone.no_lone_level and not lone.tones_ok

    # 权审 题山院: 一山秋气寒 is 仄平平仄平: a level 3rd rescues the line from 孤平.
    rescued = check_poem("万叶风声利，一山秋气寒。晓霜浮碧瓦，落日度朱栏。")
    assert prosody.tone_string("一山秋气寒") == "ZPPZP" and rescued.no_lone_level and rescued.all_ok

    tail = check_poem(GUAN_FANG_BAI_YING)
    assert tail.rhyme and tail.distinct_246 and tail.nian_dui and tail.no_lone_level  # 高 毛 毫: 四豪
    assert not tail.no_three_level and not tail.tones_ok

    oblique_rhyme = check_poem(CHUN_XIAO)
    assert oblique_rhyme.form == "五绝" and not oblique_rhyme.rhyme and not oblique_rhyme.all_ok


def test_rhyme_covers_the_odd_lines_too():
    # 韦应物 喜园中茶生: 烦 原 园 言 share 十三元, but line 5 ends level (余) where 近体 wants oblique.
    cha = "洁性不可污，为饮涤尘烦。此物信灵味，本自出山原。聊因理郡余，率尔植荒园。喜随众草长，得与幽人言。"
    assert not check_poem(cha).rhyme
    assert check_poem(cha.replace("理郡余", "理郡事")).rhyme  # 事 is oblique
    # 崔道融 钓鱼: 青 星 are 九青; line 1 ends level on 名 (八庚), a neighbouring group.
    fishing = "闲钓江鱼不钓名，瓦瓯斟酒暮山青。醉头倒向芦花里，却笑无端犯客星。"
    assert not check_poem(fishing).rhyme
    assert check_poem(fishing.replace("钓名", "钓经")).rhyme_groups == ("下平九青",)  # 经 is 九青


def test_two_class_characters_fit_either_tone():
    # 李白 独坐敬亭山: 相看两不厌 sticks (粘) to 孤云 only with 看 level.
    jingting = "众鸟高飞尽，孤云独去闲。相看两不厌，只有敬亭山。"
    assert check_poem(jingting).all_ok and check_poem(jingting).pattern == "仄起不入韵"
    assert not check_poem(jingting.replace("相看", "相见")).nian_dui  # 见 is only oblique
    # 李白 早发白帝城: 轻舟已过万重山 keeps 二四六 only with 过 oblique.
    baidi = "朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。"
    assert check_poem(baidi).all_ok and check_poem(baidi).pattern == "平起入韵"  # 间 还 山: 十五删
    assert not check_poem(baidi.replace("已过", "已歌")).distinct_246  # 歌 is only level
    # 王维 相思: 思 rhymes level (四支) with 枝.
    xiangsi = "红豆生南国，秋来发故枝。愿君多采撷，此物最相思。"
    assert check_poem(xiangsi).all_ok and check_poem(xiangsi).rhyme_groups == ("上平四支",)
    assert prosody.tone_string("更上一层楼") == "*ZZPP"  # 更: 八庚 and 敬


def test_unknown_characters_count_as_wildcards():
    c = check_poem(HU_ZHONG)  # 鹧鸪啼 ends line 2; 低 and 西 fix the group (八齐)
    assert c.unknown == ("啼",)
    assert c.form == "七绝" and c.rhyme and c.rhyme_groups == ("上平八齐",) and c.all_ok


def test_shapes_the_rules_do_not_apply_to():
    for text in ("", "床前明月光", "床前明月，疑是地上。", "床前明月光，疑是地上霜。举头望明月，", "abcde，fghij。"):
        c = check_poem(text)
        assert c.form is None and not c.regular and not c.tones_ok, text
        assert len(c.rules()) == 5 and not any(c.rules().values()), (text, c.rules())
    pair = check_poem("白日依山尽，黄河入海流。")
    assert pair.form is None and pair.regular and pair.rhyme and pair.tones_ok  # a couplet is checked
    assert check_poem(" 白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。 ").form == "五绝"  # whitespace ignored


# ---------------------------------------------------------------- the readings the poets rhymed on


def test_the_generator_rhymes_only_on_readings_the_poets_used():
    assert prosody.level_groups("平") == {"下平一先", "下平八庚"}
    assert prosody.usual_level_groups("平") == {"下平八庚"}  # 平 rhymed in 一先 4 times in 2,379
    assert prosody.usual_level_groups("还") == {"上平十五删"}
    assert prosody.usual_level_groups("才") == {"上平十灰"}  # a slip of the table: never 十五咸
    assert prosody.usual_level_groups("行") == {"下平七阳", "下平八庚"}  # both readings are common
    assert prosody.usual_level_groups("天") == prosody.level_groups("天") == {"下平一先"}
    assert prosody.usual_level_groups("㛀") == prosody.level_groups("㛀")  # never rhymed: too few uses to tell
    # the checker still takes every reading of the table: some real poems rhyme on the rare ones
    assert prosody.check_poem("兵戈连楚塞秋天，汉水东流万里平。江上月明人不见，江南花落几时还。").rhyme


@pytest.mark.once
def test_the_usage_table_is_what_its_script_counts_in_the_corpus(corpus_tarball, tmp_path):
    out = tmp_path / "rhyme_usage.tsv"
    script = ROOT / "scripts" / "build_rhyme_usage.py"
    done = subprocess.run([sys.executable, str(script), str(corpus_tarball), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "275 characters of two or more level groups" in done.stdout
    assert out.read_bytes() == (ROOT / "tangpoem" / prosody.USAGE_FILE).read_bytes()


def test_the_rhyming_characters_are_the_even_lines_last_and_a_level_first_lines():
    assert prosody.rhyme_characters(prosody.split_lines(WEICHENG)) == ["春", "人", "尘"]  # 尘: level, 首句入韵
    assert prosody.rhyme_characters(prosody.split_lines(CHUN_WANG)) == ["深", "心", "金", "簪"]  # 在: oblique
    assert prosody.rhyme_characters(prosody.split_lines("湘水东流去不回，秋风秋草满江城。")) == ["城"]  # 回: both tones
