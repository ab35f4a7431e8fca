"""Data: video decoding and datasets, built-in generated data, and the latent cache.

`build_dataset(kind, **options)` is what a training config's `data:` section calls, e.g.
`data: {kind: moving-digits, num_frames: 6, size: 32, interval: dynamic}`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from magi.data.builtin import MovingDigits
from magi.data.video import (MAX_INTERVAL, clip_span, draw_interval, max_interval_for, to_float_video,
                             to_uint8_video)


def _builders() -> dict[str, Callable[..., Any]]:
    return {
        "moving-digits": MovingDigits,
    }


def build_dataset(kind: str, **options: Any):
    """Build a dataset by kind; unknown kinds or options raise ValueError naming them.

    Kinds: "moving-digits" (`MovingDigits`).
    """
    builders = _builders()
    if kind not in builders:
        raise ValueError(f"build_dataset: unknown kind {kind!r}; known kinds: {', '.join(builders)}")
    builder = builders[kind]
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            known = ", ".join(n for n in params if n != "self")
            raise ValueError(f"build_dataset({kind!r}): unknown option(s) {', '.join(unknown)}; "
                             f"known options: {known}")
    return builder(**options)


__all__ = ["build_dataset", "MovingDigits", "MAX_INTERVAL", "clip_span", "draw_interval",
           "max_interval_for", "to_float_video", "to_uint8_video"]
