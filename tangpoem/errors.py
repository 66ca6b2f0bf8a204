"""Errors a user can act on, and the one place where commands turn them into exit status 2."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class TangpoemError(Exception):
    """A problem with the user's input or files: the message says what is wrong and how to fix it.

    field: the setting it is about (a Config field's name, e.g. "start_words"), when there is one; the
    server answers 422 naming it.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@contextmanager
def about(field: str) -> Iterator[None]:
    """A TangpoemError raised inside, which names no setting yet, is about this one."""
    try:
        yield
    except TangpoemError as err:
        if err.field is None:
            err.field = field
        raise


def excerpt(text: str, limit: int = 30) -> str:
    """User text as an error message quotes it: at most `limit` characters, then how long it was, so that a
    pasted page still gives a one-line error."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def write_chinese_or_utf8() -> None:
    """Standard output and error that cannot encode Chinese (PYTHONIOENCODING=ascii, a redirect under a
    non-UTF-8 locale) would end a command in UnicodeEncodeError: they write UTF-8 instead, with one note."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None)
        if encoding is None or not hasattr(stream, "reconfigure"):
            continue
        try:
            "诗，。".encode(encoding)
        except (UnicodeEncodeError, LookupError):
            stream.reconfigure(encoding="utf-8")
            changed.append(f"{stream.name.strip('<>')} ({encoding})")
    if changed:
        print(
            f"note: {' and '.join(changed)} cannot write Chinese; writing UTF-8 (set PYTHONIOENCODING=utf-8 or a "
            "UTF-8 locale, e.g. LANG=C.UTF-8, to match)",
            file=sys.stderr,
        )


def cli_main(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a command's main(argv): a TangpoemError becomes one line on stderr and exit status 2.

    `--debug` anywhere on the command line shows the traceback instead.
    """

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        write_chinese_or_utf8()
        args = sys.argv[1:] if argv is None else list(argv)
        debug = "--debug" in args
        args = [a for a in args if a != "--debug"]
        try:
            return int(main(args) or 0)
        except TangpoemError as err:
            if debug:
                traceback.print_exc()
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # `... | head`: the reader has gone, nothing to say
            sys.stderr.close()
            return 0
        except OSError as err:
            # a file the user named could not be read or written (permissions, a full disk, a folder
            # where a file was expected): the commands check the usual cases themselves; this is the net
            if debug:
                raise
            where = f"cannot use {err.filename}: " if err.filename else ""
            print(f"error: {where}{err.strerror or err}", file=sys.stderr)
            return 2

    return wrapper
