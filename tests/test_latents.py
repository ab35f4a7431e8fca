"""Latent cache: with the exact pixels VAE a cache yields what encoding on the fly yields."""

import json
from pathlib import Path

import pytest
import torch

from magi.data import BadVideoWarning, LatentDataset, MovingDigits, VideoFolder, build_dataset, cache_latents
from magi.vae import load_vae


def _same_items(cache, dataset, vae, epochs=(0, 1, 2)):
    assert len(cache) == len(dataset)
    for epoch in epochs:
        cache.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            a, b = cache[i], dataset[i]
            assert a["interval"] == b["interval"] and a["label"] == b["label"] and a["path"] == b["path"]
            assert torch.equal(a["latents"], vae.encode(b["video"][None])[0])


def test_frames_cache_equals_on_the_fly_video_folder(video_folder, tmp_path):
    vae = load_vae("pixels:4")
    ds = VideoFolder(video_folder, num_frames=4, size=16, interval="dynamic", seed=3)
    out = cache_latents(ds, vae, tmp_path / "cache", shard_size=3, progress=False)
    meta = json.loads((out / "index.json").read_text())
    assert meta["mode"] == "frames" and meta["num_shards"] == 3 and meta["vae"]["spec"] == "pixels:4"
    assert len(list(out.glob("shard_*.safetensors"))) == 3
    cache = LatentDataset(out, vae=vae)
    assert cache[0]["latents"].shape == (4, 48, 4, 4)
    _same_items(cache, ds, vae)
    # a frames cache serves other clip settings too (drawn at training time)
    fixed = LatentDataset(out, num_frames=3, interval=2, preload=True)
    fixed_ds = VideoFolder(video_folder, num_frames=3, size=16, interval=2, seed=3)
    _same_items(fixed, fixed_ds, vae, epochs=(0,))


def test_frames_cache_moving_digits_and_build_dataset(tmp_path):
    vae = load_vae("pixels:4:gray")
    ds = MovingDigits(num_videos=6, num_frames=3, size=16, interval="dynamic", max_interval=5, seed=1)
    cache_latents(ds, vae, tmp_path / "c", progress=False)
    cache = build_dataset("latents", root=tmp_path / "c")
    assert isinstance(cache, LatentDataset) and cache.unbounded
    _same_items(cache, ds, vae)
    with pytest.raises(ValueError, match="need 26 cached frames; the cache holds 11"):
        LatentDataset(tmp_path / "c", num_frames=6)


def test_clips_cache_for_a_3d_vae(video_folder, tmp_path):
    from test_vae import _tiny_cosmos
    from magi.vae import from_diffusers

    vae = from_diffusers(_tiny_cosmos())
    ds = VideoFolder(video_folder, num_frames=5, size=16, interval="dynamic", seed=0)
    out = cache_latents(ds, vae, tmp_path / "c3", clips_per_video=2, progress=False)
    cache = LatentDataset(out, vae=vae)
    assert cache.mode == "clips" and cache[0]["latents"].shape == (2, 4, 2, 2)
    for epoch in (0, 1, 2):  # epoch 2 reuses clip 0
        cache.set_epoch(epoch)
        ds.set_epoch(epoch % 2)
        for i in range(len(ds)):
            a, b = cache[i], ds[i]
            assert a["interval"] == b["interval"]
            assert torch.allclose(a["latents"], vae.encode(b["video"][None])[0], atol=1e-5)
    with pytest.raises(ValueError, match="fixed at num_frames=5"):
        LatentDataset(out, num_frames=9)
    with pytest.raises(ValueError, match="encoded with"):
        LatentDataset(out, vae=load_vae("pixels"))


def test_cache_skips_bad_videos_and_cli(bad_folder, tmp_path, capsys):
    from magi.cli import main

    out = tmp_path / "cli"
    with pytest.warns(BadVideoWarning) as caught:  # unreadable files are skipped while indexing
        code = main(["cache-latents", "--data", "kind=folder", "--data", f"root={bad_folder}",
                     "--data", "num_frames=4", "--data", "size=16", "--vae", "pixels:2", "--out", str(out),
                     "--workers", "0", "--dtype", "float16"])
    assert code == 0 and len(caught) == 3 and any("noise.avi" in str(w.message) for w in caught)
    meta = json.loads((out / "index.json").read_text())
    # the file cut short after its 10th frame is cached with the 10 frames that decode
    frames = {Path(v["path"]).relative_to(bad_folder).as_posix(): v["frames"] for v in meta["videos"]}
    assert frames == {"bad/truncated_faststart.mp4": 10, "good/a.mp4": 30, "good/b.mp4": 30}
    cache = LatentDataset(out)
    assert cache[0]["latents"].dtype == torch.float32 and cache[0]["latents"].shape == (4, 12, 8, 8)
    assert "cached 3 videos" in capsys.readouterr().out
    with pytest.raises(FileExistsError):
        cache_latents(MovingDigits(num_videos=1), load_vae("pixels"), out, progress=False)
