"""Metrics sinks for training: one JSONL line per logged step and TensorBoard event files.

Only rank 0 writes (pass `enabled=False` elsewhere). The JSONL file is appended to, so a resumed run
continues the same file; `read_jsonl` reads it back for plots.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

import numpy as np


class MetricsLogger:
    """Write scalars to `OUT/metrics.jsonl` and `OUT/tensorboard/`; images to TensorBoard."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.jsonl_path = self.out_dir / "metrics.jsonl"
        self._tb = None
        self._file = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.jsonl_path, "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """One JSON line `{"step": ..., **metrics}` plus a TensorBoard scalar per metric."""
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, **clean}) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), step)

    def log_image(self, tag: str, image_hwc_uint8: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 image, e.g. a grid of sample frames."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, image_hwc_uint8, step, dataformats="HWC")

    def log_text(self, tag: str, text: str, step: int) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_text(tag, text, step)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, one per step in step order; records of the same step are
    merged, later values winning (a run resumed from an earlier checkpoint re-logs those steps)."""
    by_step: dict[int, dict[str, Any]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step.setdefault(int(rec["step"]), {}).update(rec)
    return [by_step[s] for s in sorted(by_step)]


def cpu_model() -> str:
    """The CPU's name and clock as Linux reports them ("AMD EPYC, 1996 MHz"): machines differ between runs."""
    try:
        pairs = (line.split(":", 1) for line in open("/proc/cpuinfo").read().splitlines() if ":" in line)
        info = {key.strip(): value for key, value in pairs}
        return f"{info['model name'].strip()}, {float(info['cpu MHz']):.0f} MHz"
    except (OSError, KeyError, ValueError):
        return platform.processor() or "unknown"


__all__ = ["MetricsLogger", "read_jsonl", "cpu_model"]

