"""User errors on the command line: one line naming the argument or file and what was expected, exit 2.

Every `magi` subcommand parses its arguments with `ArgumentParser` (argparse's, with a one-line error
instead of the usage block) and turns the errors a user can cause (`USER_ERRORS`: a bad value, a
missing or unreadable file) into `fail(prog, error)`: one line on stderr, exit status 2, no traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import re
import sys

from magi.data.decode import VideoError

EXIT_USAGE = 2
#: errors a user's input causes: a bad value, a missing path, an unreadable video, an existing output
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
               VideoError)
MAX_MESSAGE = 600  # characters; longer messages (e.g. a library's nested error) are cut


def one_line(error: BaseException | str, limit: int = MAX_MESSAGE) -> str:
    """The message on one line: whitespace runs (newlines included) collapsed, cut at `limit` chars."""
    text = str(error)
    if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)) \
            and error.filename and error.strerror:  # OSError(errno, strerror, filename): say which file
        text = f"{error.filename}: {error.strerror}"
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def fail(prog: str, error: BaseException | str) -> int:
    """Print `prog: message` as one line on stderr and return the usage exit status (2)."""
    print(f"{prog}: {one_line(error)}", file=sys.stderr)
    return EXIT_USAGE


def missing_local_path(text: str) -> bool:
    """True when `text` does not exist but reads as a local path rather than a Hugging Face Hub id
    ("namespace/name"): absolute, starting with "." or "~", more than one "/", a "\\", or a first
    component that exists here (a typo in `runs/myrun` when `runs/` exists). Such a name is reported as
    missing instead of being looked up on the Hub (which, offline, ends in a long connection error)."""
    from pathlib import Path

    path = Path(text).expanduser()
    if path.exists() or text.startswith("pixels"):
        return False
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") != 1 or "\\" in text:
        return True
    return Path(text.split("/")[0]).is_dir()


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (`magi train: --frames: ... (see magi train --help)`), exit 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        print(f"{self.prog}: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


__all__ = ["ArgumentParser", "USER_ERRORS", "EXIT_USAGE", "fail", "missing_local_path", "one_line"]
