"""The npz: building from the real corpus, its layout, loading classic files safely, bad inputs."""

from __future__ import annotations

import codecs
import io
import os
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tangpoem.data import (
    EOP,
    PAD,
    SPECIALS,
    SPECIALS_V2,
    START,
    encode_rows,
    load_npz,
    main,
    make_vocabulary,
    poem_form,
)
from tangpoem.errors import TangpoemError

ROOT = Path(__file__).resolve().parent.parent


def test_full_build_counts_and_layout(built_corpus):
    poems, path = built_corpus
    n = len(poems.data)
    assert 55_000 < n < 57_607  # 57,607 poems less the empty ones and the duplicates
    assert poems.data.shape == (n, 125) and poems.data.dtype == np.int32
    assert poems.ix2word[-3:] == list(SPECIALS) == [EOP, START, PAD]
    assert poems.ix2word[0] == "，"  # most frequent first
    assert 0.015 < poems.heldout.mean() < 0.025
    # Every row: padding in front, then <START>, the poem, and <EOP> unless cut at the end.
    for row, length in zip(poems.data[:2000], poems.lengths[:2000], strict=True):
        pad = len(row) - length
        assert (row[:pad] == poems.pad_id).all() and row[pad] == poems.start_id
        if length < 125:
            assert row[-1] == poems.eop_id
    cut = np.flatnonzero(poems.lengths == 125)
    assert len(cut) > 1000 and (poems.data[cut, 0] == poems.start_id).all()


def test_npz_loads_without_pickle(tang_npz):
    with np.load(tang_npz, allow_pickle=False) as npz:
        assert {"data", "word2ix", "ix2word", "heldout", "lengths"} <= set(npz.files)
        assert npz["ix2word"].dtype.kind == "U" and npz["word2ix"].dtype.kind == "U"


def test_build_is_the_same_in_a_new_process(tang_npz, corpus_dir, tmp_path):
    # A different hash seed changes set and dict iteration order: ids must not depend on it.
    out = tmp_path / "again.npz"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-m", "tangpoem.data", "build", "--source", str(corpus_dir), "--out", str(out)],
                   check=True, env=env, capture_output=True, cwd=ROOT)  # fmt: skip
    with np.load(tang_npz) as a, np.load(out) as b:
        for key in ("data", "ix2word", "heldout", "lengths"):
            assert np.array_equal(a[key], b[key]), key


def test_truncation_and_padding_sides():
    vocab = make_vocabulary(["床前明月光。", "白日依山尽，黄河入海流。"])
    word2ix = {w: i for i, w in enumerate(vocab)}
    data, lengths = encode_rows(["床前明月光。", "白日依山尽，黄河入海流。"], word2ix, maxlen=10)
    decode = [[vocab[i] for i in row] for row in data.tolist()]
    assert decode[0] == [PAD, PAD, START, *"床前明月光。", EOP]
    assert decode[1] == [START, *"白日依山尽，黄河入"]  # cut at the end, no <EOP>
    assert lengths.tolist() == [8, 10]


def test_vocabulary_order_is_by_frequency_then_code_point():
    assert make_vocabulary(["乙甲甲", "丙乙"]) == ["乙", "甲", "丙", *SPECIALS]


@pytest.mark.parametrize(
    "text, form",
    [("床前明月光，疑是地上霜。举头望明月，低头思故乡。", "五绝"),
     ("朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。", "七绝"),
     ("床前明月光，疑是地上霜。举头望明月，低头思故。", "other")],
)  # fmt: skip
def test_poem_form(text, form):
    assert poem_form(text) == form


# --------------------------------------------------------------- classic files


def classic_npz(path: Path, word2ix=None, ix2word=None, data=None) -> Path:
    """A tang.npz as the classic recipe wrote it: vocabularies as pickled dicts inside the npz."""
    words = ["，", "。", "床", "前", "明", "月", "光", EOP, START, PAD]
    word2ix = {w: i for i, w in enumerate(words)} if word2ix is None else word2ix
    ix2word = {i: w for w, i in word2ix.items()} if ix2word is None else ix2word
    if data is None:
        data = np.array([[9, 9, 8, 2, 3, 4, 5, 6, 1, 7], [8, 4, 5, 2, 3, 6, 0, 2, 3, 4]])
    np.savez(path, data=data, word2ix=np.array(word2ix, dtype=object), ix2word=np.array(ix2word, dtype=object))
    return path


def test_classic_pickled_npz_loads(tmp_path):
    poems = load_npz(classic_npz(tmp_path / "tang.npz"))
    assert poems.classic and poems.vocab_size == 10 and poems.pad_id == 9
    assert poems.texts() == ["床前明月光。", "明月床前光，床前明"]
    assert poems.lengths.tolist() == [8, 10]
    assert poems.heldout.dtype == bool and poems.heldout.shape == (2,)


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def replace_member(path: Path, name: str, blob: bytes) -> Path:
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members[name] = blob
    with zipfile.ZipFile(path, "w") as archive:
        for n, b in members.items():
            archive.writestr(n, b)
    return path


def npy_pickled(value: object, protocol: int) -> bytes:
    """An .npy of a 0-d object array as numpy writes it: a version 1.0 header, then the pickle. numpy before
    1.17 pickled at protocol 2 and named its module numpy.core (numpy 2 renamed it numpy._core)."""
    array = np.array(value, dtype=object)
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, np.lib.format.header_data_from_array_1_0(array))
    out.write(pickle.dumps(array, protocol=protocol).replace(b"numpy._core.", b"numpy.core."))
    return out.getvalue()


def test_classic_npz_written_at_pickle_protocol_2_loads(tmp_path):
    path = classic_npz(tmp_path / "tang.npz")
    with zipfile.ZipFile(path) as archive:
        word2ix = np.load(io.BytesIO(archive.read("word2ix.npy")), allow_pickle=True).item()
    for key, value in (("word2ix", word2ix), ("ix2word", {i: w for w, i in word2ix.items()})):
        blob = npy_pickled(value, protocol=2)
        assert b"c_codecs\nencode\n" in blob and b"numpy.core.multiarray" in blob  # as the classic files hold
        replace_member(path, f"{key}.npy", blob)
    poems = load_npz(path)
    assert poems.classic and poems.ix2word == list(word2ix)
    assert poems.texts() == ["床前明月光。", "明月床前光，床前明"]


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    classic_npz(path)
    evil = io.BytesIO()
    np.save(evil, np.array(RunsCode(marker), dtype=object), allow_pickle=True)
    assert b"system" in evil.getvalue()
    replace_member(path, "word2ix.npy", evil.getvalue())
    with pytest.raises(TangpoemError, match="refus"):
        load_npz(path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(RunsCode(marker)))  # the same payload does run when unpickled freely
    assert marker.exists()


class Encodes:
    """Unpickles as codecs.encode(*args): the call protocol 2 uses for bytes, with other arguments."""

    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return (codecs.encode, self.args)


@pytest.mark.parametrize(
    "args",
    [("eJwrzy/KSQEABjwCHg==", "base64"), ("x", "rot13"), ("x", "zlib"), (b"x", "latin1"), (7, "latin1"),
     ("床", "latin1"), ("x", "latin1", "strict"), ("x",)],
    ids=["base64", "rot13", "zlib", "bytes", "int", "not-latin1-text", "three-args", "one-arg"],
)  # fmt: skip
def test_codecs_encode_is_admitted_only_as_protocol_2_bytes(tmp_path, args):
    assert pickle.loads(pickle.dumps(Encodes("x", "latin1"), protocol=2)) == b"x"
    path = replace_member(classic_npz(tmp_path / "x.npz"), "word2ix.npy", npy_pickled({"a": Encodes(*args)}, 2))
    with pytest.raises(TangpoemError, match="refus"):
        load_npz(path)


def test_classic_vocabularies_that_disagree_are_refused(tmp_path):
    words = ["床", EOP, START, PAD]
    word2ix = {w: i for i, w in enumerate(words)}
    ix2word = {0: "床", 1: START, 2: EOP, 3: PAD}
    with pytest.raises(TangpoemError, match="disagree"):
        load_npz(classic_npz(tmp_path / "x.npz", word2ix, ix2word, np.array([[3, 2, 0, 1]])))


# --------------------------------------------------------------- bad input, through the command line


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "poems.txt"
    text.write_text("床前明月光", encoding="utf-8")
    no_vocab = tmp_path / "no_vocab.npz"
    np.savez(no_vocab, data=np.zeros((2, 3), np.int32))
    too_big = tmp_path / "too_big.npz"
    classic_npz(too_big, data=np.array([[9, 8, 2, 10, 7]]))
    one_array = tmp_path / "one.npy"
    np.save(one_array, np.zeros(3))
    return {
        "missing": (tmp_path / "nope.npz", "not found; build it with"),
        "text": (text, "is not an npz file"),
        "array": (one_array, "is not an npz file"),
        "keys": (no_vocab, "lacks word2ix, ix2word"),
        "vocab": (too_big, "vocabulary does not match the data"),
    }


@pytest.mark.parametrize("case", ["missing", "text", "array", "keys", "vocab"])
def test_bad_npz_gets_one_line_and_exit_2(tmp_path, capsys, case):
    path, message = bad_files(tmp_path)[case]
    assert main(["stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_input_from_a_real_shell_has_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tangpoem.data", "stats", str(tmp_path / "nope.npz")],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: data file") and "Traceback" not in done.stderr


def test_stats_prints_counts_and_forms(tang_npz, capsys):
    assert main(["stats", str(tang_npz)]) == 0
    out = capsys.readouterr().out
    for word in ("poems", "vocabulary", "p50", "五绝", "七绝", "五律", "七律", "other", "padding"):
        assert word in out


def test_build_from_a_missing_source_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["build", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


def test_build_command_writes_a_loadable_npz(tmp_path, capsys):
    from tests.conftest import write_corpus

    source = write_corpus(tmp_path / "src", [["床前明月光，疑是地上霜。"], ["白日依山盡，黃河入海流。"]])
    out = tmp_path / "sub" / "tang_poem.npz"
    assert main(["build", "--source", str(source), "--out", str(out), "--maxlen", "16"]) == 0
    assert "kept 2" in capsys.readouterr().out
    poems = load_npz(out)
    assert poems.data.shape == (2, 16) and poems.texts()[1] == "白日依山尽，黄河入海流。"
    assert [p.name for p in out.parent.iterdir()] == ["tang_poem.npz"]  # no temporary file left behind


def test_format_1_and_classic_files_have_no_titles(tmp_path, tang_npz):
    for poems in (load_npz(tang_npz), load_npz(classic_npz(tmp_path / "tang.npz"))):
        assert poems.format_version == 1 and poems.titles is None and poems.collections is None
        assert poems.collection_names == ["tang"] and poems.collection_of_rows().tolist() == [0] * len(poems.data)


# --------------------------------------------------------------- issue 23: bad files refused in one line


def test_a_text_file_named_npz_gets_no_advice_to_unpickle_it(tmp_path, capsys):
    path = tmp_path / "poems.npz"
    path.write_text("床前明月光，疑是地上霜。\n", encoding="utf-8")
    assert main(["stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert "allow_pickle" not in err and "pickle" not in err and len(err.strip().splitlines()) == 1
    assert "is not an npz file" in err and "python -m tangpoem.data build" in err


def test_an_npz_of_python_objects_gets_no_advice_to_unpickle_them(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, data=np.array([[1, "床"]], dtype=object), word2ix=np.array(["床"]), ix2word=np.array(["床"]))
    with pytest.raises(TangpoemError, match="'data' cannot be read") as caught:
        load_npz(path)
    assert "allow_pickle" not in str(caught.value)


V1_WORDS = np.array(["床", "前", "月", EOP, START, PAD])
V1_DATA = np.array([[5, 5, 4, 0, 1, 3], [4, 0, 1, 2, 2, 3]], np.int32)


def small_npz(path: Path, **changes) -> Path:
    """A well-formed format-1 file of two poems, with some of its arrays replaced."""
    arrays = {
        "data": V1_DATA,
        "word2ix": V1_WORDS,
        "ix2word": V1_WORDS,
        "heldout": np.array([False, True]),
        "lengths": np.array([4, 6], np.int32),
        "version": np.int32(1),
    }
    np.savez(path, **{**arrays, **changes})
    return path


@pytest.mark.parametrize(
    "lengths, message",
    [([-4, 6], r"'lengths' of row 0 is -4, outside 0\.\.6"),
     ([4, 7], r"'lengths' of row 1 is 7, outside 0\.\.6"),
     ([4, 2**32 + 6], r"'lengths' of row 1 is 4294967302, outside 0\.\.6"),  # int32 would wrap it to 6
     ([3, 6], r"'lengths' of row 0 is 3, but the row holds 4 tokens that are not padding")],
    ids=["negative", "too-large", "wraps-in-int32", "disagrees"],
)  # fmt: skip
def test_lengths_that_do_not_fit_the_rows_are_refused(tmp_path, capsys, lengths, message):
    assert load_npz(small_npz(tmp_path / "ok.npz")).texts() == ["床前", "床前月月"]
    path = small_npz(tmp_path / "bad.npz", lengths=np.array(lengths, np.int64))
    assert main(["stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1


def format_2(path: Path, **changes) -> Path:
    """A well-formed format-2 file of two poems (a Tang and a Song one), with some arrays replaced."""
    words = np.array(["床", "前", "月", *SPECIALS_V2])
    pad, start, eop = len(words) - 1, len(words) - 2, len(words) - 3
    arrays = {
        "data": np.array([[pad, pad, start, 0, 1, eop], [start, 0, 1, 2, 2, eop]], np.int32),
        "word2ix": words,
        "ix2word": words,
        "heldout": np.array([False, True]),
        "lengths": np.array([4, 6], np.int32),
        "version": np.int32(2),
        "titles": np.array(["床前", ""]),
        "collection": np.array([0, 1], np.int8),
        "collection_names": np.array(["tang", "song"]),
    }
    np.savez(path, **{**arrays, **changes})
    return path


@pytest.mark.parametrize(
    "changes, message",
    [({"collection": np.array([0, 2], np.int8)}, "'collection' holds 2, but 'collection_names' has 2 names"),
     ({"collection": np.array([0, -1], np.int8)}, "'collection' holds -1"),
     ({"collection_names": np.array(["tang", "yuan"])}, "'collection_names' is .*'yuan'"),
     ({"titles": np.array(["床前"])}, "'titles' holds <U2 \\(1,\\), not text, one per row"),
     ({"titles": np.array([1, 2])}, "'titles' holds int64"),
     ({"ix2word": V1_WORDS, "word2ix": V1_WORDS, "data": V1_DATA}, "the vocabulary lacks <TANG>, <SONG>, <SEP>"),
     ({"version": np.int32(3)}, "is in format 3, newer than this tangpoem reads \\(2\\); upgrade tangpoem")],
    ids=["collection-too-big", "collection-negative", "unknown-name", "titles-short", "titles-numbers",
         "no-new-specials", "newer-format"],
)  # fmt: skip
def test_damaged_format_2_files_are_refused(tmp_path, changes, message):
    good = load_npz(format_2(tmp_path / "good.npz"))
    assert good.titles == ["床前", ""] and good.texts() == ["床前", "床前月月"]
    with pytest.raises(TangpoemError, match=message):
        load_npz(format_2(tmp_path / "bad.npz", **changes))


def test_format_2_without_its_titles_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    format_2(path)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "titles"}
    np.savez(path, **arrays)
    with pytest.raises(TangpoemError, match="a format-2 file without titles"):
        load_npz(path)
