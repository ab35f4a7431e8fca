"""`magi sample` and the video writers it uses."""

import numpy as np
import pytest
import torch

from magi.video_io import (grid, read_video, save_grid_png, side_by_side, to_uint8, write_video)


# ------------------------------------------------------------------------------------- video_io

def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 1 / 255, 1.0, 3.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 128, 255, 255]  # 127.5 -> 128, 128.0 -> 128
    u = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(u.float() / 127.5 - 1), u)  # exact round trip of uint8 frames


@pytest.mark.parametrize("layout", ["thwc", "tchw"])
def test_mp4_and_gif_round_trip(tmp_path, layout):
    g = torch.Generator().manual_seed(0)
    # smooth content so H.264 at crf 18 stays close
    base = torch.linspace(0, 255, 32).view(1, 1, 32).expand(12, 32, 32)
    video = torch.stack([base.roll(t, dims=2) for t in range(12)])[:, 0]  # (T, H, W)
    video = video[..., None].expand(12, 32, 32, 3).round().to(torch.uint8).contiguous()
    video[:, :, :, 1] = torch.randint(100, 110, (12, 32, 32), generator=g, dtype=torch.uint8)
    frames = video if layout == "thwc" else video.permute(0, 3, 1, 2)
    mp4 = read_video(write_video(tmp_path / "a.mp4", frames, fps=8))
    gif = read_video(write_video(tmp_path / "a.gif", frames, fps=8))
    assert mp4.shape == (12, 32, 32, 3) and gif.shape == (12, 32, 32, 3)
    assert np.abs(mp4.astype(int) - video.numpy()).mean() < 6
    with pytest.raises(ValueError, match="extension"):
        write_video(tmp_path / "a.avi", frames)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "b.mp4", frames.float())


def test_odd_sizes_and_grids(tmp_path):
    video = torch.randint(0, 256, (5, 3, 9, 7), dtype=torch.uint8)
    assert read_video(write_video(tmp_path / "odd.mp4", video)).shape == (5, 10, 8, 3)
    image = grid([video, video[:3]], pad=1)
    assert image.shape == (1 + 2 * 10, 1 + 5 * 8, 3)
    assert np.array_equal(image[1:10, 1:8], video[0].permute(1, 2, 0).numpy())
    assert (image[11:20, 1 + 3 * 8: 8 + 3 * 8] == 255).all()  # the short row ends early
    assert grid([video], max_frames=3, pad=0).shape == (9, 21, 3)
    png = save_grid_png(tmp_path / "g.png", [video], scale=2)
    assert png.read_bytes()[:4] == b"\x89PNG"
    both = side_by_side(video, video, pad=2)
    assert both.shape == (5, 9, 16, 3)
