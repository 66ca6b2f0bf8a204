"""Errors a user can act on, and the one place where commands turn them into exit status 2."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable


class TangpoemError(Exception):
    """A problem with the user's input or files: the message says what is wrong and how to fix it."""


def cli_main(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a command's main(argv): a TangpoemError becomes one line on stderr and exit status 2.

    `--debug` anywhere on the command line shows the traceback instead.
    """

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
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
