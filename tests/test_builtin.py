"""Built-in data: moving digits (deterministic, bouncing, dynamic intervals) and Atari recordings."""

import numpy as np
import pytest
import torch

from magi.data import MovingDigits, build_dataset


def test_moving_digits_item_structure():
    ds = MovingDigits(num_videos=4, num_frames=6, size=32, seed=0)
    item = ds[2]
    assert set(item) == {"video", "label", "interval", "path"}
    video = item["video"]
    assert video.shape == (6, 3, 32, 32) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    assert video.min() == -1 and video.max() > 0.5  # black background, bright digits
    assert torch.equal(video[:, 0], video[:, 1]) and torch.equal(video[:, 0], video[:, 2])  # grayscale
    assert item["interval"] == 1 and item["path"] == "moving-digits/000002"
    assert 0 <= item["label"] < 10 and item["label"] == ds.labels[2]


def test_moving_digits_deterministic_and_seeded():
    a = MovingDigits(num_videos=5, num_frames=4, seed=3)
    b = MovingDigits(num_videos=9, num_frames=4, seed=3, cache=False)  # video i independent of num_videos
    c = MovingDigits(num_videos=5, num_frames=4, seed=4)
    for i in range(5):
        assert torch.equal(a[i]["video"], b[i]["video"]) and a[i]["label"] == b[i]["label"]
    assert not all(torch.equal(a[i]["video"], c[i]["video"]) for i in range(5))
    # the cache returns what rendering returns
    assert torch.equal(a[1]["video"], a[1]["video"])
    assert torch.equal(a.frames(1), MovingDigits(num_videos=5, num_frames=4, seed=3, cache=False).frames(1))


def test_moving_digits_motion_and_bounce():
    ds = MovingDigits(num_videos=1, num_frames=200, size=32, num_digits=1, speed=2.0, seed=1, cache=False)
    frames = ds.frames(0).numpy()[:, 0]  # (T, S, S)
    assert (frames > 0).any(axis=(1, 2)).all()  # the digit never leaves the canvas
    # centre of mass moves, and along each axis it reverses direction (bounces) at least once
    ys, xs = np.indices(frames.shape[1:])
    mass = frames.sum(axis=(1, 2)).astype(float)
    cy = (frames * ys).sum(axis=(1, 2)) / mass
    cx = (frames * xs).sum(axis=(1, 2)) / mass
    assert np.abs(np.diff(cy)).max() > 0 or np.abs(np.diff(cx)).max() > 0
    for c in (cy, cx):
        d = np.sign(np.round(np.diff(c), 3))
        d = d[d != 0]
        assert len(d) == 0 or (d[1:] != d[:-1]).any()


def test_moving_digits_long_clips_extend_short_ones():
    short = MovingDigits(num_videos=3, num_frames=5, seed=2)
    long = MovingDigits(num_videos=3, num_frames=40, seed=2)
    assert torch.equal(long[1]["video"][:5], short[1]["video"])
    assert long[1]["video"].shape[0] == 40


def test_moving_digits_interval_subsamples_the_same_video():
    ds = MovingDigits(num_videos=2, num_frames=4, seed=0)
    dense = ds.frames(1, num_frames=13, interval=1)
    assert torch.equal(ds.frames(1, num_frames=4, interval=4), dense[::4])
    fixed = MovingDigits(num_videos=2, num_frames=4, seed=0, interval=3)
    assert fixed[1]["interval"] == 3 and torch.equal(fixed.frames(1, interval=3), dense[:10:3])


def test_moving_digits_dynamic_interval():
    ds = MovingDigits(num_videos=400, num_frames=3, seed=0, interval="dynamic")
    seen = [ds.interval_for(i) for i in range(len(ds))]
    assert set(seen) == set(range(1, 26))
    item = ds[7]
    k = item["interval"]
    assert torch.equal(ds.frames(7, num_frames=3, interval=k), ((item["video"] + 1) * 127.5).round().byte())
    before = [ds.interval_for(i) for i in range(20)]
    ds.set_epoch(1)
    assert [ds.interval_for(i) for i in range(20)] != before
    ds.set_epoch(0)
    assert [ds.interval_for(i) for i in range(20)] == before


def test_moving_digits_bad_options():
    with pytest.raises(ValueError, match="interval"):
        MovingDigits(num_videos=2, interval=0)
    with pytest.raises(ValueError, match="digit_size"):
        MovingDigits(num_videos=2, size=16, digit_size=20)
    with pytest.raises(ValueError, match="split"):
        MovingDigits(num_videos=2, split="val")


def test_moving_digits_splits_use_disjoint_digit_images():
    train = MovingDigits(num_videos=2, split="train")
    test = MovingDigits(num_videos=2, split="test")
    assert len(train._bank) == 1500 and len(test._bank) == 297


def test_build_dataset_moving_digits_and_unknown_options():
    ds = build_dataset("moving-digits", num_videos=3, num_frames=6, size=32, interval="dynamic",
                       speed=[1.0, 3.0])
    assert isinstance(ds, MovingDigits) and ds[0]["video"].shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="num_frame"):
        build_dataset("moving-digits", num_frame=6)
    with pytest.raises(ValueError, match="unknown kind 'mnist'"):
        build_dataset("mnist")


# ---- Atari


def test_record_atari_and_read_back(tmp_path):
    from magi.data import VideoFolder
    from magi.world.atari import load_actions, record_atari
    from magi.data.video import read_all_frames

    root = tmp_path / "rec"
    paths = record_atari(root, game=["Pong", "Breakout"], episodes=1, max_frames=40, size=32, seed=0,
                         progress=False)
    assert [p.relative_to(root).as_posix() for p in paths] == ["Pong/episode_0000.mkv",
                                                                  "Breakout/episode_0000.mkv"]
    pong = paths[0]
    frames = read_all_frames(pong)
    actions = load_actions(pong)
    import json
    meta = json.loads(pong.with_suffix(".json").read_text())
    assert frames.shape == (40, 3, 32, 32) and len(actions) == 40 and meta["num_frames"] == 40
    assert actions[-1] == -1 and ((0 <= actions[:-1]) & (actions[:-1] < len(meta["action_meanings"]))).all()
    assert meta["action_meanings"][0] == "NOOP" and len(meta["rewards"]) == 40
    assert frames.float().std(0).mean() > 0  # the game moves
    # same seed -> same episode, idempotent unless overwrite
    mtime = pong.stat().st_mtime_ns
    record_atari(root, game="Pong", episodes=1, max_frames=40, size=32, seed=0, progress=False)
    assert pong.stat().st_mtime_ns == mtime
    other = record_atari(tmp_path / "again", game="Pong", episodes=1, max_frames=40, size=32, seed=0,
                         progress=False)[0]
    assert (load_actions(other) == actions).all()
    # read back through VideoFolder: classes are the games
    ds = VideoFolder(root, num_frames=8, size=32, interval="dynamic")
    assert ds.classes == ["Breakout", "Pong"] and len(ds) == 2
    item = ds[1]
    assert item["video"].shape == (8, 3, 32, 32) and item["label"] == 1
    # the lossy codec, for viewing: an .mp4 beside the same actions
    mp4 = record_atari(tmp_path / "h264", game="Pong", episodes=1, max_frames=40, size=32, seed=0,
                       codec="h264", progress=False)[0]
    assert mp4.suffix == ".mp4" and (load_actions(mp4) == actions).all()
    with pytest.raises(ValueError, match="codec"):
        record_atari(tmp_path / "x", game="Pong", episodes=1, codec="vp9", progress=False)


def test_build_dataset_atari_records_then_reads(tmp_path):
    ds = build_dataset("atari", root=tmp_path / "atari", game="Pong", episodes=2, max_frames=30, size=32,
                       num_frames=6, interval=2, record_seed=1)
    assert len(ds) == 2 and ds.classes == ["Pong"]
    assert ds[0]["video"].shape == (6, 3, 32, 32) and ds[0]["interval"] == 2
    with pytest.raises(ValueError, match="unknown game"):
        build_dataset("atari", root=tmp_path / "x", game="NotAGame", episodes=1, max_frames=5, num_frames=2)
