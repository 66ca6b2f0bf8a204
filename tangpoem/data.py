"""Corpus -> npz -> Dataset.

    python -m tangpoem.data build [--source SRC] [--out work/tang_poem.npz]
    python -m tangpoem.data stats work/tang_poem.npz
    python -m tangpoem.data fetch

The npz keeps the classic layout (`data` [N, maxlen] int32 = <START> + poem + <EOP>, padded in front
with </s>, cut at the end; `word2ix`, `ix2word`) but stores the vocabulary as string arrays, so
`np.load(path, allow_pickle=False)` reads it. It adds `heldout` (bool [N]) and `lengths` (int32 [N],
tokens of each row that are not padding). Classic files whose vocabularies are pickled dicts load
through a restricted unpickler that cannot run code.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import re
import sys
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tangpoem.errors import TangpoemError, cli_main

EOP, START, PAD = "<EOP>", "<START>", "</s>"
SPECIALS = (EOP, START, PAD)  # the last three ids, in this order, as in the classic tang.npz
HELDOUT_PERCENT = 2.0
FORMAT_VERSION = 1
CLAUSE_END = re.compile(r"[，。！？；]")


def is_heldout(text: str, percent: float = HELDOUT_PERCENT) -> bool:
    """Deterministic split by a hash of the poem's text: equal texts always land on the same side."""
    bucket = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") % 10_000
    return bucket < percent * 100


@dataclass
class PoemData:
    """The npz in memory: rows of token ids, the vocabulary and the split."""

    data: np.ndarray  # int32 [N, maxlen]
    ix2word: list[str]
    heldout: np.ndarray  # bool [N]
    lengths: np.ndarray  # int32 [N], non-padding tokens per row
    path: str = ""
    classic: bool = False
    word2ix: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.word2ix = {w: i for i, w in enumerate(self.ix2word)}

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
        skip = {self.pad_id, self.start_id, self.eop_id}
        return "".join(self.ix2word[i] for i in np.asarray(ids).tolist() if i not in skip)

    def texts(self) -> list[str]:
        return [self.decode(row) for row in self.data]


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


def make_vocabulary(texts: list[str]) -> list[str]:
    """Most frequent first, ties by code point, then the three specials: the same every run."""
    counts = Counter(ch for text in texts for ch in text)
    return sorted(counts, key=lambda ch: (-counts[ch], ch)) + list(SPECIALS)


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
    vocab = np.array(poems.ix2word, dtype=str)
    atomic_write(
        path,
        lambda f: np.savez_compressed(
            f,
            data=poems.data.astype(np.int32),
            word2ix=vocab,
            ix2word=vocab,
            heldout=poems.heldout,
            lengths=poems.lengths,
            version=np.int32(FORMAT_VERSION),
        ),
    )


@dataclass
class BuildReport:
    read: int = 0
    empty: int = 0
    duplicates: int = 0
    kept: int = 0
    seconds: float = 0.0


def build_poems(source: str | Path, maxlen: int = 125) -> tuple[PoemData, BuildReport]:
    from tqdm import tqdm

    from tangpoem.corpus import clean_poem, read_poems

    report = BuildReport()
    started = time.perf_counter()
    texts: list[str] = []
    seen: set[str] = set()
    for poem in tqdm(read_poems(source), desc="cleaning", unit=" poems", mininterval=1.0):
        report.read += 1
        text = clean_poem(poem["paragraphs"])
        if not text:
            report.empty += 1
        elif text in seen:
            report.duplicates += 1
        else:
            seen.add(text)
            texts.append(text)
    if not texts:
        raise TangpoemError(f"no poems left after cleaning {source}")
    ix2word = make_vocabulary(texts)
    data, lengths = encode_rows(texts, {w: i for i, w in enumerate(ix2word)}, maxlen)
    heldout = np.array([is_heldout(t) for t in texts], dtype=bool)
    report.kept = len(texts)
    report.seconds = time.perf_counter() - started
    return PoemData(data, ix2word, heldout, lengths), report


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


def _array(npz, key: str, path: str) -> np.ndarray:
    """One array of the npz; a TangpoemError when it is damaged or holds objects (pickles) where numbers belong."""
    try:
        value = npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise TangpoemError(f"{path}: its '{key}' cannot be read ({err}); rebuild the file") from None
    if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
        raise TangpoemError(f"{path}: '{key}' holds {value.dtype}, not numbers; rebuild the file")
    return value


def load_npz(path: str | Path) -> PoemData:
    """Read our npz or a classic tang.npz; one clear TangpoemError for anything else."""
    path = str(path)
    if os.path.isdir(path):
        raise TangpoemError(f"data file {path} is a folder; give the npz file (e.g. work/tang_poem.npz)")
    if not os.path.isfile(path):
        raise TangpoemError(f"data file {path} not found; build it with `python -m tangpoem.data build --out {path}`")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an npz archive")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        hint = "build one with `python -m tangpoem.data build`"
        raise TangpoemError(f"{path} is not an npz file ({err}); {hint}") from None
    with npz:
        missing = [k for k in ("data", "word2ix", "ix2word") if k not in npz.files]
        if missing:
            raise TangpoemError(f"{path} lacks {', '.join(missing)}: not a Tang poem npz")
        data = _array(npz, "data", path)
        if data.ndim != 2 or not np.issubdtype(data.dtype, np.integer):
            raise TangpoemError(f"{path}: 'data' must be a 2-D integer array, got {data.dtype} {data.shape}")
        try:
            ix2word = [str(w) for w in npz["ix2word"]]
            word2ix = [str(w) for w in npz["word2ix"]]
            classic = False
            if word2ix != ix2word:
                raise TangpoemError(f"{path}: word2ix and ix2word disagree; rebuild the file")
        except ValueError:  # object arrays: a classic file with pickled dicts
            with zipfile.ZipFile(path) as archive:
                ix2word = _classic_vocabulary(path, archive)
            classic = True
        heldout = _array(npz, "heldout", path).astype(bool) if "heldout" in npz.files else None
        lengths = _array(npz, "lengths", path).astype(np.int32) if "lengths" in npz.files else None
    missing_specials = [s for s in SPECIALS if s not in ix2word]
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
        poems.lengths = lengths
    if heldout is None:  # classic files: the same rule as ours, on the decoded text
        heldout = np.array([is_heldout(t) for t in poems.texts()], dtype=bool)
    if heldout.shape != (len(data),) or poems.lengths.shape != (len(data),):
        raise TangpoemError(f"{path}: 'heldout'/'lengths' do not match 'data'; rebuild the file")
    poems.heldout = heldout
    return poems


# ---------------------------------------------------------------- stats


def poem_form(text: str) -> str:
    """五绝/七绝/五律/七律 by clause count and length, else 'other'."""
    clauses = [c for c in CLAUSE_END.split(text) if c]
    if not text or text[-1] not in "。！？" or len({len(c) for c in clauses}) != 1:
        return "other"
    names = {(4, 5): "五绝", (4, 7): "七绝", (8, 5): "五律", (8, 7): "七律"}
    return names.get((len(clauses), len(clauses[0])), "other")


def stats_text(poems: PoemData) -> str:
    chars = poems.lengths - 2
    n = len(poems.data)
    if n == 0:
        return f"file        {poems.path}\npoems       0 (the file holds no poems)"
    forms = Counter(poem_form(t) for t in poems.texts())
    pct = np.percentile(chars, [5, 25, 50, 75, 95, 99]).round().astype(int)
    lines = [
        f"file        {poems.path}{' (classic)' if poems.classic else ''}",
        f"poems       {n:,} (train {n - int(poems.heldout.sum()):,}, held out {int(poems.heldout.sum()):,})",
        f"vocabulary  {poems.vocab_size:,} (pad {poems.pad_id}, start {poems.start_id}, eop {poems.eop_id})",
        f"row length  {poems.maxlen} tokens; {int((poems.lengths >= poems.maxlen).sum()):,} poems cut at the end",
        "characters  p5 {} p25 {} p50 {} p75 {} p95 {} p99 {} (max {})".format(*pct, int(chars.max())),
        f"padding     {1 - poems.lengths.sum() / poems.data.size:.1%} of all positions",
        "forms       "
        + ", ".join(f"{k} {forms[k]:,} ({forms[k] / n:.1%})" for k in ("五绝", "七绝", "五律", "七律", "other")),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- CLI


@cli_main
def main(argv: list[str] | None = None) -> int:
    from tangpoem.config import COMMANDS, ArgumentParser, add_config_args, parse_config_args

    parser = ArgumentParser(prog="python -m tangpoem.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    build = sub.add_parser("build", help="clean the corpus into an npz")
    build.add_argument(
        "--source",
        help="directory with poet.tang.*.json, or chinese-poetry-2.0.1.tgz "
        "(default: download it with npm into --work-dir)",
    )
    build.add_argument("--work-dir", default="work", help="where a download goes (default: %(default)s)")
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
        writable_path(cfg.data_path, "npz")
        source = args.source
        if source is None:
            from tangpoem.corpus import fetch_corpus

            source = fetch_corpus(args.work_dir)
        poems, report = build_poems(source, cfg.maxlen)
        save_npz(poems, cfg.data_path)
        print(
            f"read {report.read:,} poems; dropped {report.empty:,} empty and {report.duplicates:,} duplicates; "
            f"kept {report.kept:,} ({int(poems.heldout.sum()):,} held out); vocabulary {poems.vocab_size:,}; "
            f"rows of {cfg.maxlen} tokens; wrote {cfg.data_path} in {report.seconds:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
