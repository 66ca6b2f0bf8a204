"""The chinese-poetry Tang corpus: where to find it, how to fetch it, how to clean a poem.

Sources: a directory anywhere above `poet.tang.*.json` files (npm layout `package/dist/quantangshi/`,
a git clone's `全唐诗/`, or the shared copy), or the npm tarball `chinese-poetry-2.0.1.tgz`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from tangpoem.errors import TangpoemError

NPM_PACKAGE = "chinese-poetry@2.0.1"
TARBALL_NAME = "chinese-poetry-2.0.1.tgz"
TARBALL_SHA256 = "25b549e46919c3a0569db6b68ddc96956b04a484ea4518ad2bbd4f137e307e86"
FILE_PATTERN = re.compile(r"poet\.tang\.(\d+)\.json$")

# Annotations are removed one pair at a time: a class that excludes both brackets can never span
# from the first opening bracket to the last closing one, which the classic greedy `（.*）` did.
ANNOTATIONS = [re.compile(p) for p in (r"（[^（）]*）", r"\([^()]*\)", r"\{[^{}]*\}", r"《[^《》]*》", r"〖[^〖〗]*〗")]
# [x] marks a character an editor supplied (還欲淚沾[襟]): keep the character, drop the brackets,
# as the classic recipe does.
SUPPLIED_MARKS = re.compile(r"[\[\]]")
DROPPED_CHARS = re.compile(r"[0-9\-]")
PUNCTUATION = set("，。！？；：、,.!?;:「」『』“”‘’·…　 ")


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional to simplified Chinese with OpenCC `t2s`, as the classic tang.npz."""
    return _t2s().convert(text)


def clean_poem(paragraphs: list[str]) -> str:
    """Join the lines, convert to simplified, remove annotations; '' when nothing poem-like is left."""
    text = to_simplified("".join(paragraphs))
    for pattern in ANNOTATIONS:
        # Nested brackets: repeat so the inner pair goes first, then its parent.
        while True:
            text, n = pattern.subn("", text)
            if n == 0:
                break
    text = SUPPLIED_MARKS.sub("", text)
    text = DROPPED_CHARS.sub("", text)
    while "。。" in text:
        text = text.replace("。。", "。")
    text = text.strip()
    if not text or text == "空。" or all(ch in PUNCTUATION for ch in text):
        return ""
    return text


def _sort_key(name: str) -> int:
    match = FILE_PATTERN.search(name)
    return int(match.group(1)) if match else -1


TANG_FOLDERS = ("quantangshi", "全唐诗")  # npm package, git clone; other folders hold derived data


def _pick_tang_files(names: list[str], source: Path) -> list[str]:
    """The poet.tang.*.json files of the one folder that holds the poems, in numeric order.

    The npm package also has poet.tang.*.json under strains/, rank/ and quantangshi/error/: derived
    data, not poems, so the folder named like the corpus wins; otherwise there must be only one.
    """
    folders: dict[str, list[str]] = {}
    for name in names:
        if FILE_PATTERN.search(name):
            folders.setdefault(name.rsplit("/", 1)[0] if "/" in name else "", []).append(name)
    if not folders:
        raise TangpoemError(
            f"no poet.tang.*.json files under {source}; point --source at the chinese-poetry "
            f"clone, its npm package, or {TARBALL_NAME}"
        )
    preferred = [f for f in folders if f.rsplit("/", 1)[-1] in TANG_FOLDERS]
    if len(preferred) == 1:
        chosen = preferred[0]
    elif len(folders) == 1:
        chosen = next(iter(folders))
    else:
        raise TangpoemError(
            f"several folders under {source} hold poet.tang.*.json files "
            f"({', '.join(sorted(folders))}); pass --source the one with the poems"
        )
    return sorted(folders[chosen], key=_sort_key)


def _read_directory(root: Path) -> Iterator[tuple[str, bytes]]:
    names = [p.relative_to(root).as_posix() for p in root.rglob("poet.tang.*.json")]
    for name in _pick_tang_files(names, root):
        yield name, (root / name).read_bytes()


def _read_tarball(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            for name in _pick_tang_files(list(members), path):
                yield name, tar.extractfile(members[name]).read()
    except tarfile.TarError as err:
        reason = str(err).splitlines()[0].rstrip(":")  # tarfile lists every compression it tried
        raise TangpoemError(f"{path} is not a readable tarball ({reason}); download it again") from None
    except (EOFError, zlib.error, OSError) as err:  # cut short, or corrupt inside the compression
        raise TangpoemError(f"{path} is truncated or damaged ({err}); download it again") from None


def read_poems(source: str | Path) -> Iterator[dict]:
    """Every poem of the Tang files under `source` (directory or tarball), in file order.

    A wrong source fails here, before the caller starts reading (and before any progress bar).
    """
    source = Path(source)
    if source.is_dir():
        files = _read_directory(source)
    elif source.is_file():
        files = _read_tarball(source)
    else:
        raise TangpoemError(
            f"corpus source {source} does not exist; give a directory or {TARBALL_NAME}, "
            "or leave out --source to download it"
        )
    first = next(files)
    return _parse(itertools.chain([first], files), source)


def _parse(files: Iterator[tuple[str, bytes]], source: Path) -> Iterator[dict]:
    for name, raw in files:
        try:
            poems = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise TangpoemError(f"{name} in {source} is not valid JSON ({err})") from None
        if not isinstance(poems, list):
            raise TangpoemError(f"{name} in {source} is not a list of poems")
        for poem in poems:
            if not isinstance(poem, dict) or not isinstance(poem.get("paragraphs"), list):
                raise TangpoemError(f"{name} in {source}: a poem without a 'paragraphs' list")
            yield poem


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
