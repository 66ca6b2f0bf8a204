"""Format 2: titles, collections (Tang and Song), the shared vocabulary and its rare characters, the split."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tangpoem import corpus
from tangpoem.data import (
    SEP,
    SPECIALS,
    SPECIALS_V2,
    STYLE_MARKS,
    build_poems,
    is_heldout,
    load_npz,
    main,
    save_npz,
    stats_text,
)
from tangpoem.errors import TangpoemError
from tests.conftest import write_corpus

ROOT = Path(__file__).resolve().parent.parent

# The Tang build as it was before titles (commit 7379a46) from the chinese-poetry@2.0.1 Tang files, the folder
# or the tarball alike: 56,436 poems, 1,135 held out. sha256 of each array's bytes (ix2word: joined by "\n",
# heldout: np.packbits); the held-out poems' texts joined by "\n".
TODAY = {
    "data": "cbefa3311bfd1fd3b572aff997bf961555065358f6ccabbeab6c61cbfd4b6397",
    "ix2word": "d936759999f3a1c75592d16b12c7fb8b3b345ce131b1601c886c0d6b42c2d338",
    "heldout": "451f3d31cf72a8fc1365c783391b552edc68d6c0177adc9e09119d37b66dd7e1",
    "lengths": "678eb6291f994f88fe69352e909eb60ea474ac9315ac71a129a9eb7f8f9bffc5",
    "heldout_texts": "6f8be0765e51668597b062bef6a4b6a36eb6dd8f7b496b3e804237e100f0d6aa",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def heldout_texts(texts: list[str], heldout: np.ndarray) -> str:
    return sha256("\n".join(t for t, h in zip(texts, heldout, strict=True) if h).encode())


def write_records(directory: Path, records: list[dict], name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return directory


def poem(title: str, *paragraphs: str) -> dict:
    return {"author": "某", "title": title, "paragraphs": list(paragraphs)}


@pytest.fixture(scope="module")
def tang_v2(corpus_dir: Path, tmp_path_factory) -> tuple:
    """The full Tang corpus in format 2 (titles): (PoemData, npz path)."""
    poems, _ = build_poems(corpus_dir, format_version=2)
    path = tmp_path_factory.mktemp("v2") / "tang_v2.npz"
    save_npz(poems, path)
    return poems, path


# --------------------------------------------------------------- the real Tang corpus


def test_tang_split_in_format_2_is_todays(built_corpus, tang_v2):
    v1, _ = built_corpus
    v2, _ = tang_v2
    # The format-1 build is today's, array for array ...
    assert sha256(v1.data.tobytes()) == TODAY["data"] and sha256(v1.lengths.tobytes()) == TODAY["lengths"]
    assert sha256("\n".join(v1.ix2word).encode()) == TODAY["ix2word"]
    assert sha256(np.packbits(v1.heldout).tobytes()) == TODAY["heldout"] and v1.heldout.sum() == 1135
    # ... and the format-2 build has the same poems in the same rows, cut alike, and holds out the same ones.
    v2_texts = v2.texts()
    assert v2_texts == v1.texts()
    assert np.array_equal(v2.heldout, v1.heldout) and np.array_equal(v2.lengths, v1.lengths)
    assert heldout_texts(v2_texts, v2.heldout) == TODAY["heldout_texts"]


def test_tang_titles_are_kept_and_cleaned(tang_v2):
    poems, path = tang_v2
    assert len(poems.titles) == len(poems.data) and poems.collection_names == ["tang"]
    assert (poems.collections == 0).all()
    texts = poems.texts()
    spring = [i for i, t in enumerate(poems.titles) if t == "春夜喜雨"]
    assert len(spring) == 1 and texts[spring[0]].startswith("好雨知时节")
    assert "秋夜寄丘二十二员外" in poems.titles  # a person's number in a title stays
    titled = sum(t != "" for t in poems.titles)
    assert 0.97 * len(poems.titles) < titled < len(poems.titles)
    assert max(len(t) for t in poems.titles) == corpus.TITLE_MAX_CHARS
    assert not any(ch in t for t in poems.titles for ch in " ，。（）《》□○")
    with np.load(path, allow_pickle=False) as npz:
        assert npz["titles"].dtype.kind == "U" and npz["collection"].dtype == np.int8
        assert npz["collection_names"].tolist() == ["tang"] and int(npz["version"]) == 2


def test_format_2_vocabulary_covers_titles_and_ends_with_the_six_specials(built_corpus, tang_v2):
    v1, _ = built_corpus
    v2, _ = tang_v2
    assert v2.ix2word[-6:] == list(SPECIALS_V2) == [*STYLE_MARKS.values(), SEP, *SPECIALS]
    assert (v2.eop_id, v2.start_id, v2.pad_id) == (v2.vocab_size - 3, v2.vocab_size - 2, v2.vocab_size - 1)
    title_chars = {ch for t in v2.titles for ch in t}
    assert title_chars <= set(v2.ix2word)
    assert set(v1.ix2word) < set(v2.ix2word)  # the title-only characters came in, none left
    assert 8931 < v2.vocab_size < 9100


def test_format_2_build_is_byte_for_byte_the_same(tang_v2, corpus_dir, tmp_path):
    _, path = tang_v2
    out = tmp_path / "again.npz"
    env = {**os.environ, "PYTHONHASHSEED": "4321"}
    subprocess.run(
        [sys.executable, "-m", "tangpoem.data", "build", "--source", str(corpus_dir), "--format-version", "2",
         "--out", str(out)],
        check=True, env=env, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    assert out.read_bytes() == Path(path).read_bytes()


def test_stats_of_format_2_counts_titles(tang_v2):
    poems, _ = tang_v2
    text = stats_text(poems)
    assert "(format 2)" in text
    tang = [line for line in text.splitlines() if line.startswith("tang ")]
    assert len(tang) == 1 and "56,436 poems (1,135 held out)" in tang[0]
    assert f"{sum(t != '' for t in poems.titles):,} titled" in tang[0]


# --------------------------------------------------------------- small hand-made corpora


def two_collections(root: Path) -> Path:
    write_records(root, [poem("春曉", "春眠不覺曉，處處聞啼鳥。"), poem("靜夜思", "床前明月光，疑是地上霜。")],
                  "poet.tang.0.json")  # fmt: skip
    write_records(root, [poem("登樓 其一", "白日依山盡，黃河入海流。")], "poet.tang.1000.json")
    write_records(root, [poem("重出", "牀前明月光，疑是地上霜。"), poem("梅花", "牆角數枝梅，淩寒獨自開。")],
                  "poet.song.0.json")  # fmt: skip
    write_records(root, [poem("又梅", "牆角數枝梅，淩寒獨自開。"), poem("", "遙知不是雪，為有暗香來。")],
                  "poet.song.1000.json")  # fmt: skip
    return root


def test_tang_and_song_share_a_vocabulary_and_song_repeats_of_tang_are_dropped(tmp_path):
    source = two_collections(tmp_path / "src")
    poems, report = build_poems(source, 32, ["song", "tang"])  # any order asked: Tang comes first
    assert poems.collection_names == ["tang", "song"] and poems.format_version == 2
    assert poems.texts() == ["春眠不觉晓，处处闻啼鸟。", "床前明月光，疑是地上霜。", "白日依山尽，黄河入海流。",
                             "墙角数枝梅，凌寒独自开。", "遥知不是雪，为有暗香来。"]  # fmt: skip
    assert poems.titles == ["春晓", "静夜思", "登楼", "梅花", ""]
    assert poems.collections.tolist() == [0, 0, 0, 1, 1]
    song = report.collections["song"]
    assert (report.collections["tang"].kept, song.duplicates, song.of_earlier) == (3, 2, 1)
    assert song.titled == 1
    assert poems.heldout.tolist() == [is_heldout(t) for t in poems.texts()]


def test_titles_and_collections_round_trip(tmp_path):
    poems, _ = build_poems(two_collections(tmp_path / "src"), 32, ["tang", "song"])
    save_npz(poems, tmp_path / "ts.npz")
    back = load_npz(tmp_path / "ts.npz")
    assert back.titles == poems.titles and back.collection_names == ["tang", "song"]
    assert back.collections.dtype == np.int8 and back.collections.tolist() == [0, 0, 0, 1, 1]
    assert back.ix2word == poems.ix2word and back.texts() == poems.texts() and back.format_version == 2


def test_a_song_build_reads_song_files_from_the_tarball_alone(tmp_path):
    tgz = tmp_path / corpus.TARBALL_NAME
    records = {
        "package/dist/quantangshi/poet.song.1000.json": [poem("第二", "第二首詩，在此。")],
        "package/dist/strains/json/poet.song.0.json": [{"id": "x", "strains": ["平平"]}],
        "package/dist/quantangshi/poet.song.0.json": [poem("第一", "第一首詩，在此。")],
        "package/dist/quantangshi/error/poet.song.0.json": [poem("錯", "錯。")],
        "package/dist/quantangshi/poet.tang.0.json": [poem("唐", "唐詩一首，在此。")],
    }
    with tarfile.open(tgz, "w:gz") as tar:
        for name, value in records.items():  # archive order: 1000 before 0
            payload = json.dumps(value, ensure_ascii=False).encode()
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    poems, _ = build_poems(tgz, collections=["song"])
    assert poems.texts() == ["第一首诗，在此。", "第二首诗，在此。"] and poems.titles == ["第一", "第二"]
    assert poems.collection_names == ["song"]


def test_song_from_a_folder_without_song_files_says_where_they_are(tmp_path):
    source = write_corpus(tmp_path / "tang", [["床前明月光，疑是地上霜。"]])
    with pytest.raises(TangpoemError, match=r"no poet\.song\.\*\.json files under .*chinese-poetry-2\.0\.1\.tgz"):
        build_poems(source, collections=["tang", "song"])


def rare_corpus(root: Path) -> Path:
    return write_records(root, [
        poem("山月", "山月照山，月照山月。"),
        poem("山鶴", "山月照鶴，鶴照山月。"),  # 鹤 twice in the body, once in a title: 3
        poem("山月魑", "月照山山，山照月月。"),  # 魑 once, in a title: it loses it
        poem("月", "山月照魅，月照山月。"),  # 魅 once, in the body: the poem goes
    ], "poet.tang.0.json")  # fmt: skip


def test_rare_characters_drop_the_poem_and_leave_the_title(tmp_path):
    source = rare_corpus(tmp_path / "src")
    poems, report = build_poems(source, 32, min_char_count=2, format_version=2)
    assert poems.titles == ["山月", "山鹤", "山月"]
    assert len(poems.texts()) == 3 and "魅" not in poems.word2ix and "魑" not in poems.word2ix
    assert report.collections["tang"].rare == 1 and report.rare == 1
    everything, _ = build_poems(source, 32, format_version=2)  # the default keeps every character
    assert "魅" in everything.word2ix and len(everything.texts()) == 4


def test_build_command_takes_collections_and_min_char_count(tmp_path, capsys):
    out = tmp_path / "ts.npz"
    assert main(["build", "--source", str(two_collections(tmp_path / "src")), "--collections", "tang,song",
                 "--out", str(out), "--maxlen", "20"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "format 2" in printed and "  song: read 4; dropped 0 empty, 2 duplicates (1 of an earlier" in printed
    assert load_npz(out).collection_names == ["tang", "song"]
    assert main(["stats", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("song ") and "2 poems" in line and "1 titled" in line for line in lines)
    assert main(["build", "--source", str(rare_corpus(tmp_path / "rare")), "--min-char-count", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    assert "kept 3" in capsys.readouterr().out and "魅" not in load_npz(out).word2ix


@pytest.mark.parametrize(
    "args, message",
    [(["--collections", "tang,yuan"], "unknown collection 'yuan'; name one or more of tang, song"),
     (["--collections", ","], "no collection named; name one or more of tang, song"),
     (["--collections", "tang,song", "--format-version", "1"], "format 1 holds Tang poems alone"),
     (["--min-char-count", "0"], "--min-char-count must be 1 or more")],
)  # fmt: skip
def test_bad_build_options_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    source = write_corpus(tmp_path / "src", [["床前明月光，疑是地上霜。"]])
    out = tmp_path / "x.npz"
    assert main(["build", "--source", str(source), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()


# --------------------------------------------------------------- the real tarball: Tang and Song


@pytest.fixture(scope="module")
def tang_song(corpus_tarball: Path, tmp_path_factory) -> tuple:
    poems, report = build_poems(corpus_tarball, collections=["tang", "song"])
    path = tmp_path_factory.mktemp("ts") / "tang_song.npz"
    save_npz(poems, path)
    return poems, report, path


@pytest.mark.slow
@pytest.mark.once
def test_tang_and_song_from_the_tarball(tang_song, built_corpus):
    poems, report, path = tang_song
    v1, _ = built_corpus
    tang = poems.collections == 0
    texts = poems.texts()
    tang_texts = [t for t, k in zip(texts, tang, strict=True) if k]
    assert tang_texts == v1.texts() and np.array_equal(poems.heldout[tang], v1.heldout)  # Tang as today
    song = report.collections["song"]
    assert song.read == 254_248 and 250_000 < song.kept < 254_248 and 0 < song.of_earlier < song.duplicates
    assert 0.015 < poems.heldout[~tang].mean() < 0.025 and song.heldout == int(poems.heldout[~tang].sum())
    whole = poems.lengths < poems.maxlen  # rows cut at the end may begin alike
    assert set(np.array(texts)[tang & whole]).isdisjoint(np.array(texts)[~tang & whole])
    assert poems.ix2word[-6:] == list(SPECIALS_V2) and 12_000 < poems.vocab_size < 12_600
    assert 0.95 < song.titled / song.kept < 1
    back = load_npz(path)
    assert back.titles == poems.titles and np.array_equal(back.collections, poems.collections)
    assert back.collection_names == ["tang", "song"] and np.array_equal(back.data, poems.data)
