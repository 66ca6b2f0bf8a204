"""The chinese-poetry corpus: where to find it, how to fetch it, how to clean a poem and its title.

Sources: a directory anywhere above `poet.tang.*.json` (and `poet.song.*.json`) files (npm layout
`package/dist/quantangshi/`, a git clone's `全唐诗/`, or the shared copy), or the npm tarball
`chinese-poetry-2.0.1.tgz`. Two collections: `tang` (全唐诗, 57,607 poems) and `song` (the Song shi of
全宋诗, 254,248 poems), in the same folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import unicodedata
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tangpoem.errors import TangpoemError

NPM_PACKAGE = "chinese-poetry@2.0.1"
TARBALL_NAME = "chinese-poetry-2.0.1.tgz"
TARBALL_SHA256 = "25b549e46919c3a0569db6b68ddc96956b04a484ea4518ad2bbd4f137e307e86"
COLLECTIONS = ("tang", "song")  # this order is the rows' order: a Song poem that repeats a Tang one is dropped
FILE_PATTERN = re.compile(r"poet\.(tang|song)\.(\d+)\.json$")

# Annotations are removed one pair at a time: a class that excludes both brackets can never span
# from the first opening bracket to the last closing one, which the classic greedy `（.*）` did.
ANNOTATIONS = [re.compile(p) for p in (r"（[^（）]*）", r"\([^()]*\)", r"\{[^{}]*\}", r"《[^《》]*》", r"〖[^〖〗]*〗")]
# [x] marks a character an editor supplied (還欲淚沾[襟]): keep the character, drop the brackets,
# as the classic recipe does.
SUPPLIED_MARKS = re.compile(r"[\[\]]")
DROPPED_CHARS = re.compile(r"[0-9\-]")
PUNCTUATION = set("，。！？；：、,.!?;:「」『』“”‘’·…　 ")

# Titles. In a title 《漢書》 names what the poem is about (讀《漢書》作), so book marks are kept there.
TITLE_NOTES = [p for p in ANNOTATIONS if "《" not in p.pattern]
# ○ stands for zero in the corpus's numbers (其一○ is the tenth poem of a set).
NUMERALS = "一二三四五六七八九十百千〇○零两"
FOOTNOTE_MARKS = re.compile(rf"\[[{NUMERALS}]+\]")  # 詠物[一]十首: a footnote's number, not a character
# A poem's place in a set: `送人 二` (Tang: after a space), `雜詩四首  其一` (Song), and the size of the set
# (`二首`). Neither says what the poem is about, and nobody asks for a poem on "二".
SET_NUMBER = re.compile(rf"(\s+[{NUMERALS}]+|\s*其[{NUMERALS}]+|[{NUMERALS}]+首)$")
ONLY_NUMBERS = re.compile(rf"[{NUMERALS}\s]*")
# After cleaning, Tang titles run p50 5, p95 14, p99 24 characters (Song: 5, 19, 42). Up to 24 keeps 99.0% of
# the Tang titles and 96.9% of the Song ones, the long 应制 titles among them (奉和圣制立春日侍宴内殿出翦彩花应制,
# 17); the longer ones are prose prefaces (up to 244) that nobody would ask for as a title, and cut short they
# would be fragments of a sentence, so they are dropped: the poem stays, without a title.
TITLE_MAX_CHARS = 24


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional to simplified Chinese with OpenCC `t2s`, as the classic tang.npz."""
    return _t2s().convert(text)


def _remove_notes(text: str, patterns: list[re.Pattern]) -> str:
    for pattern in patterns:
        # Nested brackets: repeat so the inner pair goes first, then its parent.
        while True:
            text, n = pattern.subn("", text)
            if n == 0:
                break
    return text


def clean_poem(paragraphs: list[str]) -> str:
    """Join the lines, convert to simplified, remove annotations; '' when nothing poem-like is left."""
    text = _remove_notes(to_simplified("".join(paragraphs)), ANNOTATIONS)
    text = SUPPLIED_MARKS.sub("", text)
    text = DROPPED_CHARS.sub("", text)
    while "。。" in text:
        text = text.replace("。。", "。")
    text = text.strip()
    if not text or text == "空。" or all(ch in PUNCTUATION for ch in text):
        return ""
    return text


def clean_title(title: str) -> str:
    """The title as a user would ask for it: simplified, without notes, numbering, spaces or punctuation.

    '' (no title) when nothing is left, when it was only a number (`一○○`), or when it is longer than
    TITLE_MAX_CHARS (a preface, not a title). Text after a tab is a note (`新樂府 七德舞\\t美撥亂，陳王業也`).
    """
    text = _remove_notes(to_simplified(title.split("\t", 1)[0]), TITLE_NOTES)
    text = SUPPLIED_MARKS.sub("", FOOTNOTE_MARKS.sub("", text)).strip()
    while (shorter := SET_NUMBER.sub("", text).strip()) != text:
        text = shorter
    if ONLY_NUMBERS.fullmatch(text):
        return ""
    # Letters only: punctuation, spaces, digits, □ (a lost character) and private-use code points go.
    text = "".join(ch for ch in text if unicodedata.category(ch) == "Lo")
    return text if len(text) <= TITLE_MAX_CHARS else ""


# ---------------------------------------------------------------- finding and reading the files


@dataclass
class CorpusFile:
    """One poet.<collection>.<number>.json, parsed and checked."""

    collection: str
    number: int
    name: str
    poems: list[dict]


def _file_key(name: str) -> tuple[str, int] | None:
    match = FILE_PATTERN.search(name)
    return (match.group(1), int(match.group(2))) if match else None


CORPUS_FOLDERS = ("quantangshi", "全唐诗")  # npm package, git clone; other folders hold derived data


def _pick_files(names: list[str], source: Path, collection: str) -> list[str]:
    """The poet.<collection>.*.json files of the one folder that holds the poems, in numeric order.

    The npm package also has such files under strains/, rank/ and quantangshi/error/: derived data, not
    poems, so the folder named like the corpus wins; otherwise there must be only one.
    """
    folders: dict[str, list[str]] = {}
    for name in names:
        key = _file_key(name)
        if key and key[0] == collection:
            folders.setdefault(name.rsplit("/", 1)[0] if "/" in name else "", []).append(name)
    if not folders:
        raise TangpoemError(
            f"no poet.{collection}.*.json files under {source}; point --source at the chinese-poetry "
            f"clone, its npm package, or {TARBALL_NAME}"
        )
    preferred = [f for f in folders if f.rsplit("/", 1)[-1] in CORPUS_FOLDERS]
    if len(preferred) == 1:
        chosen = preferred[0]
    elif len(folders) == 1:
        chosen = next(iter(folders))
    else:
        raise TangpoemError(
            f"several folders under {source} hold poet.{collection}.*.json files "
            f"({', '.join(sorted(folders))}); pass --source the one with the poems"
        )
    return sorted(folders[chosen], key=lambda name: _file_key(name)[1])


def _pick_all(names: list[str], source: Path, collections: tuple[str, ...]) -> list[str]:
    return [name for collection in collections for name in _pick_files(names, source, collection)]


def _read_directory(root: Path, collections: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    names = [p.relative_to(root).as_posix() for p in root.rglob("poet.*.json")]
    for name in _pick_all(names, root, collections):
        yield name, (root / name).read_bytes()


@contextmanager
def _tarball_errors(path: Path) -> Iterator[None]:
    """The tarball's faults, each as one TangpoemError."""
    try:
        yield
    except tarfile.TarError as err:
        reason = str(err).splitlines()[0].rstrip(":")  # tarfile lists every compression it tried
        raise TangpoemError(f"{path} is not a readable tarball ({reason}); download it again") from None
    except (EOFError, zlib.error, OSError) as err:  # cut short, or corrupt inside the compression
        raise TangpoemError(f"{path} is truncated or damaged ({err}); download it again") from None


def _read_tarball(path: Path, collections: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """The chosen files in the tarball's own order, one at a time: two passes of streaming decompression
    (names, then contents), where reading them in numeric order would seek back and decompress again."""
    with _tarball_errors(path):
        with tarfile.open(path, "r|*") as tar:
            names = [m.name for m in tar if m.isfile()]
        wanted = set(_pick_all(names, path, collections))
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if member.name in wanted:
                    yield member.name, tar.extractfile(member).read()


def read_files(source: str | Path, collections: tuple[str, ...] = ("tang",)) -> Iterator[CorpusFile]:
    """Every file of the collections under `source` (directory or tarball), one at a time, checked.

    A directory's files come in numeric order, a tarball's in its own order (sort by `(collection,
    number)` for the corpus's order). A wrong source fails here, before the caller starts reading.
    """
    source = Path(source)
    if source.is_dir():
        files = _read_directory(source, collections)
    elif source.is_file():
        files = _read_tarball(source, collections)
    else:
        raise TangpoemError(
            f"corpus source {source} does not exist; give a directory or {TARBALL_NAME}, "
            "or leave out --source to download it"
        )
    first = next(files)
    return _parse_files(first, files, source)


def _parse_files(first: tuple[str, bytes], rest: Iterator[tuple[str, bytes]], source: Path) -> Iterator[CorpusFile]:
    yield _parse_file(*first, source)
    for name, raw in rest:
        yield _parse_file(name, raw, source)


def _parse_file(name: str, raw: bytes, source: Path) -> CorpusFile:
    try:
        poems = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TangpoemError(f"{name} in {source} is not valid JSON ({err})") from None
    if not isinstance(poems, list):
        raise TangpoemError(f"{name} in {source} is not a list of poems")
    for index, poem in enumerate(poems):
        check_poem_record(poem, index, f"{name} in {source}")
    collection, number = _file_key(name)
    return CorpusFile(collection, number, name, poems)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    names = {type(None): "null", str: "text", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def check_poem_record(poem: object, index: int, where: str) -> None:
    """A poem as the corpus writes it: an object with a list of text `paragraphs` and a text `title` (or none).

    The error names the file, the poem's index in its list (from 0) and its title, so the bad poem can be found.
    """
    if not isinstance(poem, dict):
        raise TangpoemError(f"{where}: poem [{index}] is {_kind(poem)}, not an object with 'paragraphs'; fix it")
    title = poem.get("title")
    if title is not None and not isinstance(title, str):
        raise TangpoemError(f"{where}: poem [{index}] has a 'title' that is {_kind(title)}, not text; fix that poem")
    named = f"poem [{index}]" + (f" '{title[:30]}'" if title else "")
    paragraphs = poem.get("paragraphs")
    if not isinstance(paragraphs, list):
        raise TangpoemError(f"{where}: {named} has no 'paragraphs' list ({_kind(paragraphs)}); fix that poem")
    bad = next((p for p in paragraphs if not isinstance(p, str)), "")
    if not isinstance(bad, str):
        raise TangpoemError(f"{where}: {named} has a paragraph that is {_kind(bad)}, not text; fix that poem")


def read_poems(source: str | Path, collections: tuple[str, ...] = ("tang",)) -> Iterator[dict]:
    """Every poem of the collections' files under `source`, file after file (see read_files for the order)."""
    return (poem for file in read_files(source, collections) for poem in file.poems)


# ---------------------------------------------------------------- download


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_corpus(work_dir: str | Path = "work") -> Path:
    """Download the npm tarball into work_dir (once), verify its sha256, return its path."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    tarball = work_dir / TARBALL_NAME
    if not tarball.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise TangpoemError(
                "npm is not installed, so the corpus cannot be downloaded: install Node.js/npm "
                "(e.g. `apt-get install npm`), or clone https://github.com/chinese-poetry/chinese-poetry "
                "and pass --source PATH_TO_CLONE"
            )
        print(f"downloading the corpus: npm pack {NPM_PACKAGE} ...", file=sys.stderr, flush=True)
        done = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--pack-destination", str(work_dir)], capture_output=True, text=True
        )
        if done.returncode != 0 or not tarball.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TangpoemError(
                f"`npm pack {NPM_PACKAGE}` failed ({last}); check the network, "
                "or pass --source with a local copy of chinese-poetry"
            )
    actual = sha256_of(tarball)
    if actual != TARBALL_SHA256:
        bad = tarball.with_name(tarball.name + ".bad")
        tarball.replace(bad)
        raise TangpoemError(
            f"{tarball} has sha256 {actual}, expected {TARBALL_SHA256}; "
            f"moved it to {bad.name}, run again to download it anew"
        )
    return tarball
