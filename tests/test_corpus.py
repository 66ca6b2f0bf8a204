"""Cleaning rules (poems and titles) on small hand-made inputs, corpus sources, malformed records, and the
download's failure modes."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from tangpoem import corpus
from tangpoem.corpus import clean_poem, read_poems
from tangpoem.data import build_poems
from tangpoem.errors import TangpoemError
from tests.conftest import write_corpus


def test_traditional_becomes_simplified():
    assert clean_poem(["秦川雄帝宅，函谷壯皇居。"]) == "秦川雄帝宅，函谷壮皇居。"


def test_annotations_are_removed_one_pair_at_a_time():
    # The classic greedy （.*） would delete everything from the first （ to the last ）.
    text = clean_poem(["春眠不覺曉（一作眠），處處聞啼鳥。", "夜來風雨聲（一作夜），花落知多少。"])
    assert text == "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"


def test_each_bracket_kind_and_nesting():
    assert clean_poem(["床前明月光{注}，疑是《某書》地上霜。"]) == "床前明月光，疑是地上霜。"
    assert clean_poem(["舉頭望明月（外（內）註），低頭思故鄉。"]) == "举头望明月，低头思故乡。"
    assert clean_poem(["白日依山盡〖1〗，黃河入海流。"]) == "白日依山尽，黄河入海流。"


def test_supplied_characters_keep_their_character():
    # [襟] marks a character an editor supplied: dropping it would break a five-character line.
    assert clean_poem(["還欲淚沾[襟]。"]) == "还欲泪沾襟。"


def test_digits_and_dashes_dropped_and_double_stops_collapsed():
    assert clean_poem(["千山鳥飛絕12，萬徑-人蹤滅。。。"]) == "千山鸟飞绝，万径人踪灭。"


@pytest.mark.parametrize("paragraphs", [[], [""], ["（全缺）"], ["。，"], ["空。"], ["123-"]])
def test_nothing_poem_like_left_means_empty(paragraphs):
    assert clean_poem(paragraphs) == ""


def test_build_drops_empty_and_duplicate_poems(tmp_path):
    source = write_corpus(tmp_path / "src", [["床前明月光，疑是地上霜。"], ["空。"], ["牀前明月光，疑是地上霜。"],
                                             ["（缺）"], ["白日依山盡，黃河入海流。"]])  # fmt: skip
    poems, report = build_poems(source, maxlen=20)
    assert (report.read, report.empty, report.duplicates, report.kept) == (5, 2, 1, 2)
    assert poems.texts() == ["床前明月光，疑是地上霜。", "白日依山尽，黄河入海流。"]


def test_files_are_found_anywhere_below_the_source_in_numeric_order(tmp_path):
    root = tmp_path / "chinese-poetry" / "全唐诗"
    write_corpus(root, [["第二首詩，在此。"]], name="poet.tang.1000.json")
    write_corpus(root, [["第一首詩，在此。"]], name="poet.tang.0.json")
    write_corpus(root, [["不是唐詩，不要。"]], name="poet.song.0.json")
    assert [p["paragraphs"][0] for p in read_poems(tmp_path)] == ["第一首詩，在此。", "第二首詩，在此。"]


def add_json(tar: tarfile.TarFile, name: str, poems: list) -> None:
    payload = json.dumps(poems, ensure_ascii=False).encode()
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def test_npm_tarball_is_a_source_and_only_quantangshi_counts(tmp_path):
    # The real package also has poet.tang.*.json of derived data under strains/ and rank/.
    tgz = tmp_path / corpus.TARBALL_NAME
    with tarfile.open(tgz, "w:gz") as tar:
        add_json(tar, "package/dist/strains/json/poet.tang.0.json", [{"id": "x", "strains": ["平平"]}])
        add_json(tar, "package/dist/quantangshi/poet.tang.0.json", [{"paragraphs": ["鵝鵝鵝，曲項向天歌。"]}])
        add_json(tar, "package/dist/quantangshi/error/poet.tang.0.json", [{"paragraphs": ["錯。"]}])
    poems, _ = build_poems(tgz)
    assert poems.texts() == ["鹅鹅鹅，曲项向天歌。"]


def test_two_unnamed_folders_of_tang_files_are_ambiguous(tmp_path):
    write_corpus(tmp_path / "a", [["一首詩，在此。"]])
    write_corpus(tmp_path / "b", [["一首詩，在此。"]])
    with pytest.raises(TangpoemError, match="several folders.*a, b"):
        list(read_poems(tmp_path))


@pytest.mark.parametrize(
    "make, message",
    [(lambda p: p, "does not exist"), (lambda p: p.mkdir() or p, "no poet.tang"),
     (lambda p: (p.write_text("not a tarball"), p)[1], "not a readable tarball")],
)  # fmt: skip
def test_bad_sources_say_what_is_wrong(tmp_path, make, message):
    with pytest.raises(TangpoemError, match=message):
        list(read_poems(make(tmp_path / "src")))


def test_broken_json_is_named(tmp_path):
    (tmp_path / "poet.tang.0.json").write_text("[{", encoding="utf-8")
    with pytest.raises(TangpoemError, match="poet.tang.0.json .* is not valid JSON"):
        list(read_poems(tmp_path))


def test_fetch_without_npm_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    with pytest.raises(TangpoemError, match="npm is not installed.*--source"):
        corpus.fetch_corpus(tmp_path)


def test_fetch_refuses_a_tarball_with_the_wrong_checksum(tmp_path: Path):
    (tmp_path / corpus.TARBALL_NAME).write_bytes(b"tampered")
    with pytest.raises(TangpoemError, match="expected 25b549e4"):
        corpus.fetch_corpus(tmp_path)
    assert not (tmp_path / corpus.TARBALL_NAME).exists()
    assert (tmp_path / (corpus.TARBALL_NAME + ".bad")).exists()


# --------------------------------------------------------------- titles


@pytest.mark.parametrize(
    "title, cleaned",
    [("春夜喜雨", "春夜喜雨"),
     ("秋夜寄丘二十二員外", "秋夜寄丘二十二员外"),  # a person's number stays: no space before it
     ("奉和聖製立春日侍宴內殿出翦綵花應制", "奉和圣制立春日侍宴内殿出翦彩花应制"),
     ("送孟八浩然歸襄陽 二", "送孟八浩然归襄阳"),  # Tang numbering: the poem's place in a set, after a space
     ("雜詩四首  其一", "杂诗"),  # Song numbering, then the size of the set
     ("雜詩 其一○", "杂诗"),  # ○ is zero: the tenth
     ("一○○", ""),  # only a number: no title
     ("晚次（一作「歇」）湘源縣", "晚次湘源县"),
     ("讀《漢書》作", "读汉书作"),  # the book is what the poem is about: kept
     ("及第後讀書院詠物[一]十首上禮部李侍郎", "及第后读书院咏物十首上礼部李侍郎"),  # [一] is a footnote's number
     ("賦得[澧]浦", "赋得澧浦"),  # [澧] a supplied character: kept
     ("新樂府 七德舞\t美撥亂，陳王業也", "新乐府七德舞"),  # after a tab: a note
     ("思君吟寄□□生", "思君吟寄生"),
     ("（缺）", "")],
)  # fmt: skip
def test_titles_are_cleaned_for_asking(title, cleaned):
    assert corpus.clean_title(title) == cleaned


def test_a_title_longer_than_the_cap_is_dropped_not_cut():
    at_cap = "月" * corpus.TITLE_MAX_CHARS
    assert corpus.clean_title(at_cap) == at_cap
    assert corpus.clean_title(at_cap + "月") == ""
    preface = "令狐僕射與余投分素深縱山川阻修然音問相繼今年十一月僕射疾不起聞予已承訃書寢門長慟"
    assert corpus.clean_title(preface) == ""


# --------------------------------------------------------------- malformed records


@pytest.mark.parametrize(
    "record, message",
    [({"title": "靜夜思", "paragraphs": ["床前明月光，", 7]}, r"poem \[1\] '靜夜思' has a paragraph that is a number"),
     ({"title": "靜夜思", "paragraphs": [None]}, r"poem \[1\] '靜夜思' has a paragraph that is null"),
     ({"title": "靜夜思", "paragraphs": [["床前明月光"]]}, r"poem \[1\] '靜夜思' has a paragraph that is a list"),
     ({"title": "靜夜思", "paragraphs": "床前明月光"}, r"poem \[1\] '靜夜思' has no 'paragraphs' list \(text\)"),
     ({"title": 12, "paragraphs": ["床前明月光。"]}, r"poem \[1\] has a 'title' that is a number, not text"),
     ({"title": ["靜夜思"], "paragraphs": ["床前明月光。"]}, r"poem \[1\] has a 'title' that is a list, not text"),
     ("床前明月光", r"poem \[1\] is text, not an object")],
    ids=["number", "null", "nested-list", "string", "title-number", "title-list", "not-an-object"],
)  # fmt: skip
def test_a_malformed_poem_is_named_by_file_index_and_title(tmp_path, capsys, record, message):
    from tangpoem.data import main

    records = [{"title": "春曉", "paragraphs": ["春眠不覺曉，處處聞啼鳥。"]}, record]
    (tmp_path / "poet.tang.3000.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    assert main(["build", "--source", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(rf"poet\.tang\.3000\.json in .*: {message}", err), err


def test_a_missing_or_null_title_is_no_title(tmp_path):
    records = [
        {"paragraphs": ["床前明月光，疑是地上霜。"]},
        {"title": None, "paragraphs": ["白日依山盡，黃河入海流。"]},
    ]
    (tmp_path / "poet.tang.0.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    poems, _ = build_poems(tmp_path, format_version=2)
    assert poems.titles == ["", ""] and len(poems.texts()) == 2
