"""Corpus -> npz -> Dataset.

    python -m tangpoem.data build [--source SRC] [--out work/tang_poem.npz] [--collections tang,song]
                                  [--min-char-count N] [--format-version {1,2}]
    python -m tangpoem.data stats work/tang_poem.npz
    python -m tangpoem.data fetch

The npz keeps the classic layout (`data` [N, maxlen] int32 = <START> + poem + <EOP>, padded in front
with </s>, cut at the end; `word2ix`, `ix2word`) but stores the vocabulary as string arrays, so
`np.load(path, allow_pickle=False)` reads it. It adds `heldout` (bool [N]) and `lengths` (int32 [N],
tokens of each row that are not padding). Classic files whose vocabularies are pickled dicts load
through a restricted unpickler that cannot run code.

Format 2 also keeps each poem's title and collection: `titles` (unicode [N], '' for none), `collection`
(int8 [N], an index into `collection_names`, e.g. ["tang", "song"]), and its vocabulary has three more
specials before the classic three: <TANG> <SONG> <SEP> (STYLE_MARKS, SEP), so EOP, START and PAD stay the
last three ids. Tang alone is built as format 1 unless asked (`--format-version 2`): that vocabulary is the
one the bundled model and the checkpoints trained so far know, and a checkpoint is only evaluated or
resumed on the vocabulary it was trained on. Rows hold the poem alone in both formats; where the title
and the style mark go is the trainer's choice.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import os
import pickle
import re
import sys
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tangpoem.corpus import COLLECTIONS
from tangpoem.errors import TangpoemError, cli_main

EOP, START, PAD = "<EOP>", "<START>", "</s>"
SPECIALS = (EOP, START, PAD)  # the last three ids, in this order, as in the classic tang.npz
SEP = "<SEP>"  # between a title and its poem
STYLE_MARKS = {"tang": "<TANG>", "song": "<SONG>"}  # which collection a poem is written like
SPECIALS_V2 = (*STYLE_MARKS.values(), SEP, *SPECIALS)  # the last six ids of a format-2 vocabulary
HELDOUT_PERCENT = 2.0
FORMAT_VERSION = 2  # the newest format this package reads and writes
CLAUSE_END = re.compile(r"[，。！？；]")


def is_heldout(text: str, percent: float = HELDOUT_PERCENT) -> bool:
    """Deterministic split by a hash of the poem's text: equal texts always land on the same side."""
    bucket = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") % 10_000
    return bucket < percent * 100


@dataclass
class PoemData:
    """The npz in memory: rows of token ids, the vocabulary and the split; in format 2, titles and collections."""

    data: np.ndarray  # int32 [N, maxlen]
    ix2word: list[str]
    heldout: np.ndarray  # bool [N]
    lengths: np.ndarray  # int32 [N], non-padding tokens per row
    path: str = ""
    classic: bool = False
    titles: list[str] | None = None  # format 2: each poem's cleaned title, '' for none; None before
    collections: np.ndarray | None = None  # format 2: int8 [N], an index into collection_names; None before
    collection_names: list[str] = field(default_factory=lambda: ["tang"])
    word2ix: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.word2ix = {w: i for i, w in enumerate(self.ix2word)}

    @property
    def format_version(self) -> int:
        return 1 if self.titles is None else 2

    @property
    def vocab_size(self) -> int:
        return len(self.ix2word)

    @property
    def pad_id(self) -> int:
        return self.word2ix[PAD]

    @property
    def start_id(self) -> int:
        return self.word2ix[START]

    @property
    def eop_id(self) -> int:
        return self.word2ix[EOP]

    @property
    def maxlen(self) -> int:
        return self.data.shape[1]

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """The poem in a row: specials dropped."""
        skip = {self.word2ix[s] for s in SPECIALS_V2 if s in self.word2ix}
        return "".join(self.ix2word[i] for i in np.asarray(ids).tolist() if i not in skip)

    def texts(self) -> list[str]:
        return [self.decode(row) for row in self.data]

    def collection_of_rows(self) -> np.ndarray:
        """int8 [N]: each row's index into collection_names (all 0, Tang, for format 1 and classic files)."""
        return np.zeros(len(self.data), np.int8) if self.collections is None else self.collections


# ---------------------------------------------------------------- build


def encode_rows(texts: list[str], word2ix: dict[str, int], maxlen: int) -> tuple[np.ndarray, np.ndarray]:
    """<START> + poem + <EOP>, cut at the end to maxlen, padded in front with </s>."""
    data = np.full((len(texts), maxlen), word2ix[PAD], dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int32)
    for i, text in enumerate(texts):
        ids = [word2ix[START], *(word2ix[ch] for ch in text), word2ix[EOP]][:maxlen]
        data[i, maxlen - len(ids) :] = ids
        lengths[i] = len(ids)
    return data, lengths


def count_characters(texts: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        counts.update(text)  # a str at a time: Counter counts its characters in C
    return counts


def make_vocabulary(texts: Iterable[str], specials: tuple[str, ...] = SPECIALS) -> list[str]:
    """Most frequent first, ties by code point, then the specials: the same every run."""
    counts = count_characters(texts)
    return sorted(counts, key=lambda ch: (-counts[ch], ch)) + list(specials)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(file) on a temporary file beside path, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def writable_folder(folder: str | Path, what: str) -> Path:
    """Make a folder a command will write to, now, before any work (not after an hour of training): one
    clear error if it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise TangpoemError(f"cannot create the {what} folder {folder}: a file is in the way of its folder") from None
    except OSError as err:
        raise TangpoemError(f"cannot create the {what} folder {folder}: {err.strerror or err}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TangpoemError(f"the {what} folder {folder} is not writable; choose another one")
    return folder


def writable_path(path: str | Path, what: str) -> Path:
    """writable_folder for the folder of a file the command will write, and the file's name is not a folder's."""
    path = Path(path)
    writable_folder(path.parent, what)
    if path.is_dir():
        raise TangpoemError(f"cannot write the {what} {path}: it is a folder; name a file")
    return path


def save_npz(poems: PoemData, path: str | Path) -> None:
    """Format 1 when the poems have no titles (byte for byte what earlier builds wrote), else format 2."""
    vocab = np.array(poems.ix2word, dtype=str)
    arrays = {
        "data": np.asarray(poems.data, np.int32),  # no copy of an int32 array (155 MB for tang,song)
        "word2ix": vocab,
        "ix2word": vocab,
        "heldout": poems.heldout,
        "lengths": poems.lengths,
        "version": np.int32(poems.format_version),
    }
    if poems.titles is not None:
        arrays["titles"] = np.array(poems.titles, dtype=str)
        arrays["collection"] = poems.collection_of_rows().astype(np.int8)
        arrays["collection_names"] = np.array(poems.collection_names, dtype=str)
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


@dataclass
class CollectionReport:
    read: int = 0
    empty: int = 0
    duplicates: int = 0  # of a poem before it, in this collection or an earlier one
    of_earlier: int = 0  # of those, repeats of an earlier collection's poem (a Song poem of a Tang one)
    rare: int = 0  # dropped for a character seen fewer than min_char_count times
    kept: int = 0
    heldout: int = 0
    titled: int = 0


@dataclass
class BuildReport:
    collections: dict[str, CollectionReport]
    seconds: float = 0.0

    def total(self, name: str) -> int:
        return sum(getattr(c, name) for c in self.collections.values())

    read = property(lambda self: self.total("read"))
    empty = property(lambda self: self.total("empty"))
    duplicates = property(lambda self: self.total("duplicates"))
    rare = property(lambda self: self.total("rare"))
    kept = property(lambda self: self.total("kept"))


@dataclass
class Rows:
    """The poems kept so far, in the corpus's order: parallel lists."""

    collections: list[int] = field(default_factory=list)  # index into the collections built
    titles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def check_collections(names: Iterable[str]) -> tuple[str, ...]:
    """The collections asked for, in the corpus's order (Tang first: its poems win over Song repeats)."""
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in COLLECTIONS]
    if unknown or not names:
        what = f"unknown collection {', '.join(map(repr, unknown))}" if unknown else "no collection named"
        raise TangpoemError(f"{what}; name one or more of {', '.join(COLLECTIONS)}, e.g. --collections tang,song")
    return tuple(c for c in COLLECTIONS if c in names)


def _format_for(collections: tuple[str, ...], format_version: int | None) -> int:
    if format_version is None:
        return 1 if collections == ("tang",) else 2
    if format_version not in (1, FORMAT_VERSION):
        raise TangpoemError(f"format version {format_version} is not one this tangpoem writes; use 1 or 2")
    if format_version == 1 and collections != ("tang",):
        raise TangpoemError("format 1 holds Tang poems alone; build other collections with --format-version 2")
    return format_version


def _clean_files(source: str | Path, collections: tuple[str, ...], titles: bool, report: BuildReport) -> dict:
    """{(collection index, file number): [(title, poem), ...]}, cleaned one file at a time as the source
    gives them (a tarball in its own order), so only one file's raw JSON is in memory."""
    from tqdm import tqdm

    from tangpoem.corpus import clean_poem, clean_title, read_files

    cleaned = {}
    files = read_files(source, collections)  # a wrong source fails here, before the progress bar
    # disable=None: a bar on a terminal only, so an error in a log or a pipe is its one line
    with tqdm(desc="cleaning", unit=" poems", mininterval=1.0, disable=None) as bar:
        for file in files:
            cleaned[(collections.index(file.collection), file.number)] = [
                (clean_title(poem.get("title") or "") if titles else "", clean_poem(poem["paragraphs"]))
                for poem in file.poems
            ]
            report.collections[file.collection].read += len(file.poems)
            bar.update(len(file.poems))
    return cleaned


def _unique_poems(cleaned: dict, collections: tuple[str, ...], report: BuildReport) -> Rows:
    """In the corpus's order (collection, file number, place in the file): empty poems and repeats dropped,
    the first of equal poems kept. Emptied file by file, so the poems are held once."""
    rows = Rows()
    seen: dict[str, int] = {}  # poem -> the collection it came from
    for key in sorted(cleaned):
        counts = report.collections[collections[key[0]]]
        for title, text in cleaned.pop(key):
            if not text:
                counts.empty += 1
            elif text in seen:
                counts.duplicates += 1
                counts.of_earlier += seen[text] != key[0]
            else:
                seen[text] = key[0]
                rows.collections.append(key[0])
                rows.titles.append(title)
                rows.texts.append(text)
    return rows


def _cut_rare(rows: Rows, min_count: int, collections: tuple[str, ...], report: BuildReport) -> Rows:
    """Characters seen fewer than min_count times (in poems and titles) leave the vocabulary: a poem that
    holds one is dropped (the network could not read or write it), a title just loses it."""
    if min_count <= 1:
        return rows
    counts = count_characters(itertools.chain(rows.texts, rows.titles))
    rare = {ch for ch, n in counts.items() if n < min_count}
    kept = Rows()
    for collection, title, text in zip(rows.collections, rows.titles, rows.texts, strict=True):
        if rare.isdisjoint(text):
            kept.collections.append(collection)
            kept.titles.append("".join(ch for ch in title if ch not in rare))
            kept.texts.append(text)
        else:
            report.collections[collections[collection]].rare += 1
    return kept


def build_poems(
    source: str | Path,
    maxlen: int = 125,
    collections: Iterable[str] = ("tang",),
    *,
    min_char_count: int = 1,
    format_version: int | None = None,
) -> tuple[PoemData, BuildReport]:
    """Clean the collections' poems into rows, one vocabulary and a held-out split (HELDOUT_PERCENT).

    Poems come in the corpus's order, Tang before Song, so a Song poem that repeats a Tang one is dropped and
    the Tang rows are the same whatever else is built. The split hashes each poem's text (`is_heldout`):
    Tang's held-out poems are those of every earlier build, Song's are 2% of their own.

    Rare characters: one vocabulary serves every collection built, counted over the poems and their titles.
    Every entry is a column of the output layer, paid at every step of training; the Song shi bring some
    3,200 characters the Tang poems lack, many seen once or twice. `min_char_count` (default 1: every
    character, as the Tang builds always had) cuts the characters seen fewer times: a poem holding one is
    dropped, since the network could neither read nor write it; a title just loses it, as it is only a hint.

    format_version: 1 (Tang alone, no titles: the classic vocabulary) or 2 (titles, collections, the style
    marks and <SEP>); None picks 1 for Tang alone and 2 otherwise.
    """
    collections = check_collections(collections)
    version = _format_for(collections, format_version)
    if min_char_count < 1:
        raise TangpoemError(f"--min-char-count must be 1 or more, not {min_char_count}")
    report = BuildReport({c: CollectionReport() for c in collections})
    started = time.perf_counter()
    rows = _unique_poems(_clean_files(source, collections, version == 2, report), collections, report)
    rows = _cut_rare(rows, min_char_count, collections, report)
    if not rows.texts:
        raise TangpoemError(f"no poems left after cleaning {source}")
    if version == 1:
        ix2word = make_vocabulary(rows.texts)
    else:
        ix2word = make_vocabulary(itertools.chain(rows.texts, rows.titles), SPECIALS_V2)
    data, lengths = encode_rows(rows.texts, {w: i for i, w in enumerate(ix2word)}, maxlen)
    heldout = np.fromiter((is_heldout(t) for t in rows.texts), bool, len(rows.texts))
    poems = PoemData(data, ix2word, heldout, lengths)
    if version == 2:
        poems.titles = rows.titles
        poems.collections = np.array(rows.collections, np.int8)
        poems.collection_names = list(collections)
    _count_kept(poems, report)
    report.seconds = time.perf_counter() - started
    return poems, report


def _count_kept(poems: PoemData, report: BuildReport) -> None:
    which = poems.collection_of_rows()
    titled = np.zeros(len(which), bool) if poems.titles is None else np.array([t != "" for t in poems.titles])
    for i, counts in enumerate(report.collections.values()):
        mine = which == i
        counts.kept = int(mine.sum())
        counts.heldout = int(poems.heldout[mine].sum())
        counts.titled = int(titled[mine].sum())


# ---------------------------------------------------------------- load


def _latin1_bytes(*args) -> bytes:
    """`_codecs.encode(text, 'latin1')`, the only call allowed: how pickle protocol 2 (numpy before 1.17)
    spells a bytes object, such as the b'b' in every ndarray's reconstruction. Any other encoding is a
    codec the file would choose (zlib, base64, ...), so it is refused, as PyTorch's weights-only unpickler does."""
    if len(args) != 2 or type(args[0]) is not str or args[1] not in ("latin1", "latin-1"):
        shown = ", ".join(type(a).__name__ if type(a) is not str else repr(a[:20]) for a in args)
        raise pickle.UnpicklingError(f"refused _codecs.encode({shown}): only (str, 'latin1') rebuilds bytes")
    return args[0].encode("latin-1")


class _VocabularyUnpickler(pickle.Unpickler):
    """Admits only what numpy needs to rebuild an object array holding plain dicts, str and int."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):  # protocol 2's bytes, checked when called
            return _latin1_bytes
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module, name)


def _read_pickled_dict(archive: zipfile.ZipFile, key: str, where: str) -> dict:
    try:
        raw = io.BytesIO(archive.read(f"{key}.npy"))
        version = np.lib.format.read_magic(raw)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        read_header(raw)
        value = _VocabularyUnpickler(raw).load()
    except Exception as err:  # any fault in a file from the wild is the file's, not ours
        raise TangpoemError(f"{where}: '{key}' is not a plain dictionary ({err}); refusing to load it") from None
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        value = value.item()
    if not isinstance(value, dict):
        raise TangpoemError(f"{where}: '{key}' is not a dictionary; refusing to load it")
    return value


def _classic_vocabulary(path: str, archive: zipfile.ZipFile) -> list[str]:
    word2ix = _read_pickled_dict(archive, "word2ix", path)
    ix2word = _read_pickled_dict(archive, "ix2word", path)
    ok = all(isinstance(w, str) and isinstance(i, (int, np.integer)) for w, i in word2ix.items())
    ok = ok and all(isinstance(w, str) and isinstance(i, (int, np.integer)) for i, w in ix2word.items())
    if not ok:
        raise TangpoemError(f"{path}: vocabularies must map characters to ids; refusing to load it")
    vocab = [ix2word.get(i) for i in range(len(ix2word))]
    if None in vocab or any(word2ix.get(w) != i for i, w in enumerate(vocab)) or len(word2ix) != len(vocab):
        raise TangpoemError(f"{path}: word2ix and ix2word disagree; the file is damaged or was edited")
    return vocab


def _numpy_reason(err: Exception) -> str:
    """numpy's complaint, without its advice to load the file with allow_pickle (which would run its code)."""
    return "it holds pickled Python objects" if "pickle" in str(err) else str(err)


def _read(npz, key: str, path: str) -> np.ndarray:
    try:
        return npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise TangpoemError(f"{path}: its '{key}' cannot be read ({_numpy_reason(err)}); rebuild the file") from None


def _array(npz, key: str, path: str) -> np.ndarray:
    """One array of the npz; a TangpoemError when it is damaged or holds objects (pickles) where numbers belong."""
    value = _read(npz, key, path)
    if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
        raise TangpoemError(f"{path}: '{key}' holds {value.dtype}, not numbers; rebuild the file")
    return value


def _text_array(npz, key: str, path: str, n: int | None = None) -> list[str]:
    value = _read(npz, key, path)
    if value.dtype.kind != "U" or value.ndim != 1 or (n is not None and len(value) != n):
        wanted = "text, one per row of 'data'" if n is not None else "a list of text"
        raise TangpoemError(f"{path}: '{key}' holds {value.dtype} {value.shape}, not {wanted}; rebuild the file")
    return value.tolist()


def _open_npz(path: str) -> np.lib.npyio.NpzFile:
    """np.load of an npz, and nothing else: one clear error for a text file, a lone .npy or a broken zip."""
    hint = "build one with `python -m tangpoem.data build`"
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x93NUMPY"):
        raise TangpoemError(f"{path} is not an npz file (it is a single .npy array); {hint}")
    if not head.startswith(b"PK"):
        raise TangpoemError(f"{path} is not an npz file (an npz is a zip archive and this file is not one); {hint}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise TangpoemError(f"{path} is not an npz file ({_numpy_reason(err)}); {hint}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise TangpoemError(f"{path} is not an npz file (it holds a single array); {hint}")
    return npz


def _format_version(npz, path: str) -> int:
    """1 for files without a version (classic ones), else the version they say, if this tangpoem reads it."""
    if "version" not in npz.files:
        return 1
    version = _array(npz, "version", path)
    if version.shape != () or not np.issubdtype(version.dtype, np.integer) or version < 1:
        raise TangpoemError(f"{path}: 'version' is {version!r}, not a format version; rebuild the file")
    if version > FORMAT_VERSION:
        raise TangpoemError(
            f"{path} is in format {int(version)}, newer than this tangpoem reads ({FORMAT_VERSION}); "
            "upgrade tangpoem, or rebuild the file with this one"
        )
    return int(version)


def _vocabulary(npz, path: str) -> tuple[list[str], bool]:
    """(ix2word, classic): string arrays, or a classic file's pickled dicts through the restricted unpickler."""
    try:
        ix2word = [str(w) for w in npz["ix2word"]]
        word2ix = [str(w) for w in npz["word2ix"]]
    except ValueError:  # object arrays: a classic file with pickled dicts
        with zipfile.ZipFile(path) as archive:
            return _classic_vocabulary(path, archive), True
    if word2ix != ix2word:
        raise TangpoemError(f"{path}: word2ix and ix2word disagree; rebuild the file")
    return ix2word, False


def _titles_and_collections(npz, path: str, n: int) -> tuple[list[str], np.ndarray, list[str]]:
    missing = [k for k in ("titles", "collection", "collection_names") if k not in npz.files]
    if missing:
        raise TangpoemError(f"{path}: a format-2 file without {', '.join(missing)}; rebuild the file")
    titles = _text_array(npz, "titles", path, n)
    names = _text_array(npz, "collection_names", path)
    unknown = [name for name in names if name not in COLLECTIONS]
    if unknown or len(set(names)) != len(names) or not names:
        raise TangpoemError(
            f"{path}: 'collection_names' is {names}; this tangpoem knows {', '.join(COLLECTIONS)}, each once"
        )
    collection = _array(npz, "collection", path)
    if collection.shape != (n,) or not np.issubdtype(collection.dtype, np.integer):
        raise TangpoemError(f"{path}: 'collection' must be one integer per row of 'data'; rebuild the file")
    if n and (collection.min() < 0 or collection.max() >= len(names)):
        bad = int(collection.min() if collection.min() < 0 else collection.max())
        raise TangpoemError(
            f"{path}: 'collection' holds {bad}, but 'collection_names' has {len(names)} names; rebuild the file"
        )
    return titles, collection.astype(np.int8), names


def _check_lengths(lengths: np.ndarray, data: np.ndarray, pad_id: int, path: str) -> np.ndarray:
    """'lengths' as int32, if each is the count of the row's tokens that are not padding."""
    if lengths.shape != (len(data),) or not np.issubdtype(lengths.dtype, np.integer):
        raise TangpoemError(f"{path}: 'lengths' must be one integer per row of 'data'; rebuild the file")
    outside = np.flatnonzero((lengths < 0) | (lengths > data.shape[1]))
    if len(outside):
        i = int(outside[0])
        raise TangpoemError(
            f"{path}: 'lengths' of row {i} is {int(lengths[i])}, outside 0..{data.shape[1]} (the row's length); "
            "rebuild the file"
        )
    counted = (data != pad_id).sum(axis=1)
    wrong = np.flatnonzero(counted != lengths)
    if len(wrong):
        i = int(wrong[0])
        raise TangpoemError(
            f"{path}: 'lengths' of row {i} is {int(lengths[i])}, but the row holds {int(counted[i])} tokens that "
            "are not padding; rebuild the file"
        )
    return lengths.astype(np.int32)


def load_npz(path: str | Path) -> PoemData:
    """Read our npz (format 1 or 2) or a classic tang.npz; one clear TangpoemError for anything else."""
    path = str(path)
    if os.path.isdir(path):
        raise TangpoemError(f"data file {path} is a folder; give the npz file (e.g. work/tang_poem.npz)")
    if not os.path.isfile(path):
        raise TangpoemError(f"data file {path} not found; build it with `python -m tangpoem.data build --out {path}`")
    with _open_npz(path) as npz:
        missing = [k for k in ("data", "word2ix", "ix2word") if k not in npz.files]
        if missing:
            raise TangpoemError(f"{path} lacks {', '.join(missing)}: not a Tang poem npz")
        data = _array(npz, "data", path)
        if data.ndim != 2 or not np.issubdtype(data.dtype, np.integer):
            raise TangpoemError(f"{path}: 'data' must be a 2-D integer array, got {data.dtype} {data.shape}")
        ix2word, classic = _vocabulary(npz, path)
        version = _format_version(npz, path)
        heldout = _array(npz, "heldout", path).astype(bool) if "heldout" in npz.files else None
        lengths = _array(npz, "lengths", path) if "lengths" in npz.files else None
        extra = _titles_and_collections(npz, path, len(data)) if version == 2 else None
    specials = SPECIALS_V2 if version == 2 else SPECIALS
    missing_specials = [s for s in specials if s not in ix2word]
    if missing_specials:
        raise TangpoemError(f"{path}: the vocabulary lacks {', '.join(missing_specials)}")
    if data.size and (data.min() < 0 or data.max() >= len(ix2word)):
        raise TangpoemError(
            f"{path}: the data holds ids up to {data.max()} but the vocabulary has "
            f"{len(ix2word)} entries; the vocabulary does not match the data"
        )
    poems = PoemData(
        data.astype(np.int32),
        ix2word,
        np.zeros(len(data), bool),
        np.zeros(len(data), np.int32),
        path=path,
        classic=classic,
    )
    if lengths is None:
        poems.lengths = (data != poems.pad_id).sum(axis=1).astype(np.int32)
    else:
        poems.lengths = _check_lengths(lengths, data, poems.pad_id, path)
    if heldout is None:  # classic files: the same rule as ours, on the decoded text
        heldout = np.array([is_heldout(t) for t in poems.texts()], dtype=bool)
    if heldout.shape != (len(data),):
        raise TangpoemError(f"{path}: 'heldout'/'lengths' do not match 'data'; rebuild the file")
    poems.heldout = heldout
    if extra is not None:
        poems.titles, poems.collections, poems.collection_names = extra
    return poems


# ---------------------------------------------------------------- stats


def poem_form(text: str) -> str:
    """五绝/七绝/五律/七律 by clause count and length, else 'other'."""
    clauses = [c for c in CLAUSE_END.split(text) if c]
    if not text or text[-1] not in "。！？" or len({len(c) for c in clauses}) != 1:
        return "other"
    names = {(4, 5): "五绝", (4, 7): "七绝", (8, 5): "五律", (8, 7): "七律"}
    return names.get((len(clauses), len(clauses[0])), "other")


FORMS = ("五绝", "七绝", "五律", "七律", "other")


def collection_lines(poems: PoemData, texts: list[str], forms: list[str]) -> list[str]:
    """One line per collection: poems, held out, characters, titled poems, forms."""
    which = poems.collection_of_rows().tolist()
    lines = []
    for i, name in enumerate(poems.collection_names):
        rows = [r for r, c in enumerate(which) if c == i]
        held = int(poems.heldout[rows].sum())
        chars = sum(len(texts[r]) for r in rows)
        titled = (
            "no titles (format 1)" if poems.titles is None else f"{sum(poems.titles[r] != '' for r in rows):,} titled"
        )
        counts = Counter(forms[r] for r in rows)
        lines.append(
            f"{name:<11} {len(rows):,} poems ({held:,} held out), {chars:,} characters, {titled}; "
            + ", ".join(f"{k} {counts[k]:,}" for k in FORMS)
        )
    return lines


def stats_text(poems: PoemData) -> str:
    chars = poems.lengths - 2
    n = len(poems.data)
    if n == 0:
        return f"file        {poems.path}\npoems       0 (the file holds no poems)"
    texts = poems.texts()
    forms = [poem_form(t) for t in texts]
    total = Counter(forms)
    pct = np.percentile(chars, [5, 25, 50, 75, 95, 99]).round().astype(int)
    kind = "classic" if poems.classic else f"format {poems.format_version}"
    lines = [
        f"file        {poems.path} ({kind})",
        f"poems       {n:,} (train {n - int(poems.heldout.sum()):,}, held out {int(poems.heldout.sum()):,})",
        f"vocabulary  {poems.vocab_size:,} (pad {poems.pad_id}, start {poems.start_id}, eop {poems.eop_id})",
        f"row length  {poems.maxlen} tokens; {int((poems.lengths >= poems.maxlen).sum()):,} poems cut at the end",
        "characters  p5 {} p25 {} p50 {} p75 {} p95 {} p99 {} (max {})".format(*pct, int(chars.max())),
        f"padding     {1 - poems.lengths.sum() / poems.data.size:.1%} of all positions",
        "forms       " + ", ".join(f"{k} {total[k]:,} ({total[k] / n:.1%})" for k in FORMS),
        *collection_lines(poems, texts, forms),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- CLI


def build_command(cfg, args: argparse.Namespace) -> None:
    """`data build`: the options checked before any download or reading, then the build and its report."""
    collections = check_collections(args.collections.split(","))
    _format_for(collections, args.format_version)
    if args.min_char_count < 1:
        raise TangpoemError(f"--min-char-count must be 1 or more, not {args.min_char_count}")
    writable_path(cfg.data_path, "npz")
    source = args.source
    if source is None:
        from tangpoem.corpus import fetch_corpus

        source = fetch_corpus(args.work_dir)
    poems, report = build_poems(
        source, cfg.maxlen, collections, min_char_count=args.min_char_count, format_version=args.format_version
    )
    save_npz(poems, cfg.data_path)
    rare = f", {report.rare:,} with a character seen fewer than {args.min_char_count} times" if report.rare else ""
    print(
        f"read {report.read:,} poems; dropped {report.empty:,} empty and {report.duplicates:,} duplicates{rare}; "
        f"kept {report.kept:,} ({int(poems.heldout.sum()):,} held out); vocabulary {poems.vocab_size:,}; "
        f"rows of {cfg.maxlen} tokens; format {poems.format_version}; wrote {cfg.data_path} in {report.seconds:.1f} s"
    )
    if len(collections) > 1 or poems.format_version == 2:
        for name, c in report.collections.items():
            print(
                f"  {name}: read {c.read:,}; dropped {c.empty:,} empty, {c.duplicates:,} duplicates "
                f"({c.of_earlier:,} of an earlier collection's), {c.rare:,} rare; "
                f"kept {c.kept:,} ({c.heldout:,} held out, {c.titled:,} titled)"
            )


@cli_main
def main(argv: list[str] | None = None) -> int:
    from tangpoem.config import COMMANDS, ArgumentParser, add_config_args, parse_config_args

    parser = ArgumentParser(prog="python -m tangpoem.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    build = sub.add_parser("build", help="clean the corpus into an npz")
    build.add_argument(
        "--source",
        help="directory with poet.tang.*.json (and poet.song.*.json), or chinese-poetry-2.0.1.tgz "
        "(default: download it with npm into --work-dir)",
    )
    build.add_argument("--work-dir", default="work", help="where a download goes (default: %(default)s)")
    build.add_argument(
        "--collections",
        default="tang",
        help=f"comma-separated, of {', '.join(COLLECTIONS)}: the poems to build (default: %(default)s)",
    )
    build.add_argument(
        "--min-char-count",
        type=int,
        default=1,
        help="characters seen fewer times leave the vocabulary, and poems holding one are dropped (default: "
        "%(default)s, keep every character)",
    )
    build.add_argument(
        "--format-version",
        type=int,
        choices=(1, 2),
        help="1: Tang alone, no titles, the vocabulary of the models trained so far; 2: titles and collections "
        "(default: 1 for tang alone, else 2)",
    )
    add_config_args(build, COMMANDS["tangpoem.data build"])  # --data-path (the npz written) and --maxlen
    build.add_argument("--out", dest="data_path", default=argparse.SUPPRESS, help="the npz to write (= --data-path)")
    stats = sub.add_parser("stats", help="counts, vocabulary, lengths and forms of an npz")
    stats.add_argument("path", nargs="?", default="work/tang_poem.npz")
    fetch = sub.add_parser("fetch", help="download and verify the corpus tarball; print its path")
    fetch.add_argument("--work-dir", default="work")
    args, _ = parser.parse_known_args(argv)
    if args.command == "fetch":
        from tangpoem.corpus import fetch_corpus

        parser.parse_args(argv)
        print(fetch_corpus(args.work_dir))
    elif args.command == "stats":
        parser.parse_args(argv)
        print(stats_text(load_npz(args.path)))
    else:
        cfg, args = parse_config_args(parser, argv)
        build_command(cfg, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
