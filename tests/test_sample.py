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


# ----------------------------------------------------------------------------------- magi sample

import json  # noqa: E402

import yaml  # noqa: E402

from magi.sample import (SamplingOptions, generate, load_checkpoint, main,  # noqa: E402
                         resolve_checkpoint)

FAST = ["--mask-steps", "3", "--diffusion-steps", "4", "--no-progress", "--no-gif"]


def make_run(root, preset="tiny", steps=(1, 2), vae="pixels:4:gray", data=None, seed=0, **overrides):
    """A run directory laid out like the trainer's: checkpoints/<step>/ with config, weights, run config."""
    from magi import Magi, MagiConfig

    torch.manual_seed(seed)  # only for the random initial weights of this test model
    model = Magi(MagiConfig.preset(preset, **overrides))
    data = data or {"kind": "moving-digits",
                    "options": {"num_videos": 16, "num_frames": 6, "size": 32, "seed": 0}}
    for step in steps:
        d = root / "checkpoints" / str(step)
        model.save_pretrained(d)
        model.save_pretrained(d, weights_name="ema.safetensors")
        if vae is not None:
            (d / "train_config.yaml").write_text(yaml.safe_dump({"vae": {"spec": vae, "options": {}},
                                                                  "data": data}))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


def frames_of(path):
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_resolve_checkpoint(run_dir, tmp_path):
    assert resolve_checkpoint(run_dir) == (run_dir / "checkpoints" / "2", 2)
    assert resolve_checkpoint(run_dir, step=1) == (run_dir / "checkpoints" / "1", 1)
    assert resolve_checkpoint(run_dir / "checkpoints" / "1") == (run_dir / "checkpoints" / "1", 1)
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 7"):
        resolve_checkpoint(run_dir, step=7)
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_checkpoint(tmp_path / "missing")
    bare = make_run(tmp_path / "bare", preset="test", steps=(3,), vae=None)
    with pytest.raises(ValueError, match="--vae"):
        load_checkpoint(bare)
    with pytest.raises(ValueError, match="latent channels"):
        load_checkpoint(bare, vae="pixels:4:gray")
    assert load_checkpoint(bare, vae="pixels:2:gray").frame_size == (8, 8)


def test_unconditional_four_times_the_training_length(run_dir, tmp_path):
    out = tmp_path / "uncond"
    assert main([str(run_dir), "--out", str(out), "--num-samples", "2", "--frames", "4x", *FAST]) == 0
    record = json.loads((out / "samples.json").read_text())
    assert record["task"] == "unconditional" and record["frames"] == 24 and record["train_frames"] == 6
    assert record["ema"] and record["step"] == 2 and record["vae"] == "pixels:4:gray"
    for name in record["files"]["mp4"]:
        assert frames_of(out / name) == 24
    assert (out / "grid.png").is_file()


def test_class_conditional_with_cfg(run_dir, tmp_path, capsys):
    out = tmp_path / "cls"
    args = [str(run_dir), "--out", str(out), "--classes", "3,7", "--num-samples", "1", "--cfg", "3",
            "--sampler", "ddim", "--frames", "8", *FAST]
    assert main(args) == 0
    record = json.loads((out / "samples.json").read_text())
    assert record["task"] == "class-conditional" and record["labels"] == [3, 7]
    assert [frames_of(out / n) for n in record["files"]["mp4"]] == [8, 8]
    assert main([str(run_dir), "--out", str(out), "--classes", "12", *FAST]) == 2
    assert "index 12 out of range 0..9" in capsys.readouterr().err


def test_prediction_from_a_video_file_and_a_dataset_clip(run_dir, tmp_path):
    from magi.data import MovingDigits

    clip = MovingDigits(num_videos=1, num_frames=30, size=32, seed=5).frames(0)  # uint8 (30, 3, 32, 32)
    source = write_video(tmp_path / "source.mp4", clip, fps=8)
    out = tmp_path / "from_file"
    args = [str(run_dir), "--out", str(out), "--context-video", str(source), "--context-frames", "2",
            "--frames", "24", "--interval", "1", "--num-samples", "1", *FAST]
    assert main(args) == 0
    record = json.loads((out / "samples.json").read_text())
    assert record["task"] == "prediction" and record["context_frames"] == 2
    assert frames_of(out / record["files"]["mp4"][0]) == 24
    assert frames_of(out / record["files"]["compare_mp4"][0]) == 24  # ground truth | generated
    assert len(record["metrics"]["psnr_per_frame"]) == 24 and record["metrics"]["ssim"] is not None
    assert (out / "adjacent_l2.png").is_file()

    out = tmp_path / "from_dataset"
    args = [str(run_dir), "--out", str(out), "--context-dataset", "--index", "0", "3",
            "--context-frames", "3", "--frames", "4x", "--long-video", "window", "--num-samples", "1",
            *FAST]
    assert main(args) == 0
    record = json.loads((out / "samples.json").read_text())
    assert [s["index"] for s in record["sources"]] == [0, 3]
    assert [frames_of(out / n) for n in record["files"]["mp4"]] == [24, 24]


def test_generation_is_deterministic_and_keeps_the_context(run_dir):
    ckpt = load_checkpoint(run_dir)
    g = torch.Generator().manual_seed(1)
    context = torch.randint(0, 256, (2, 2, 3, 32, 32), generator=g, dtype=torch.uint8)
    options = SamplingOptions(mask_steps=2, diffusion_steps=3)
    a = generate(ckpt, 7, context=context, labels=[1, 2], options=options, seed=3, progress=False)
    b = generate(ckpt, 7, context=context, labels=[1, 2], options=options, seed=3, progress=False)
    c = generate(ckpt, 7, context=context, labels=[1, 2], options=options, seed=4, progress=False)
    assert a.shape == (2, 7, 3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    # gray pixel VAE: the context frames come back as their gray version
    gray = (context.float().mean(2, keepdim=True)).round().expand(-1, -1, 3, -1, -1)
    assert (a[:, :2].float() - gray).abs().max() <= 1
    with pytest.raises(ValueError, match="disagrees"):
        generate(ckpt, 7, count=3, labels=[1, 2], options=options, progress=False)
