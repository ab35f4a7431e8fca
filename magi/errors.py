"""User errors on the command line: one line naming the argument or file and what was expected, exit 2.

Every `magi` subcommand parses its arguments with `ArgumentParser` (argparse's, with a one-line error
instead of the usage block) and turns the errors a user can cause (`USER_ERRORS`: a bad value, a
missing or unreadable file) into `fail(prog, error)`: one line on stderr, exit status 2, no traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import re
import sys

from magi.data.decode import VideoError

EXIT_USAGE = 2
#: errors a user's input causes: a bad value, a missing path, an unreadable video, an existing output
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
               VideoError)
MAX_MESSAGE = 600  # characters; longer messages (e.g. a library's nested error) are cut
#: OSError numbers that mean "the output cannot be written here": not permitted, read-only, full, too large
WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_failure(error: OSError) -> str:
    """"cannot write PATH: reason" for an output a command could not write."""
    return f"cannot write {error.filename or 'the output'}: {error.strerror or error}"


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


def number(kind=float, low: float | None = None, high: float | None = None, above: float | None = None):
    """argparse type: a finite `kind` (int or float) with low <= value <= high and value > above, where
    given; nan and inf are refused with what was expected (`--cfg nan` would otherwise sample black)."""
    import math

    bounds = [f">= {low:g}" if low is not None else "", f"> {above:g}" if above is not None else "",
              f"<= {high:g}" if high is not None else ""]
    expected = ("an integer" if kind is int else "a finite number") + "".join(
        f"{' and' if i else ''} {b}" for i, b in enumerate(b for b in bounds if b))

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if (not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high)
                or (above is not None and value <= above)):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected  # what argparse would name in its own messages
    return parse


@contextlib.contextmanager
def one_line_warnings(prog: str):
    """While a command runs, show warnings as `prog: warning: message` on one line, without Python's
    `file.py:127: UserWarning:` prefix and source line: a command's warnings are for its user (a
    skipped video, a folder of small frames). Python's own format comes back afterwards."""
    import warnings

    def formatwarning(message, category, filename, lineno, line=None):  # noqa: ARG001 - warnings' hook
        return f"{prog}: warning: {one_line(message)}\n"

    before, warnings.formatwarning = warnings.formatwarning, formatwarning
    try:
        yield
    finally:
        warnings.formatwarning = before


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (`magi train: --frames: ... (see magi train --help)`), exit 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        print(f"{self.prog}: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


__all__ = ["ArgumentParser", "USER_ERRORS", "EXIT_USAGE", "WRITE_ERRNOS", "write_failure", "fail", "missing_local_path", "number", "one_line",
           "one_line_warnings"]
