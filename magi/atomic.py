"""Files that are never half-written: write under a temporary name beside the target, then rename over it.

A reader (a resumed run, `magi play` reading play.json, a data loader opening a latent shard) sees the
old file or the new one, never a truncated one, even when the writer is killed mid-write.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Union


def atomic_write(target: Union[str, Path], write: Callable[[str], object]) -> Path:
    """Call `write(tmp)` with a temporary path in `target`'s directory (same suffix, so writers that go by
    the extension, like matplotlib's savefig, write the right format), then rename it over `target`;
    the temporary file is removed if `write` fails. Returns `target` as a Path."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(target: Union[str, Path], text: str) -> Path:
    """`target` holds `text` (UTF-8), written atomically."""
    return atomic_write(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


__all__ = ["atomic_write", "atomic_write_text"]
