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


# --------------------------------------------------------------------------------------------------
# Dynamic intervals through a clip cache (3D VAE)


def test_stratified_clips_cover_every_interval_evenly():
    import numpy as np

    from magi.data.latents import stratified_clips
    from magi.data.video import clip_span, interval_histogram, interval_holders

    lengths = np.clip(np.random.default_rng(0).lognormal(np.log(170), 0.5, 600), 29, 1800).astype(int).tolist()
    plan = stratified_clips(lengths, 17, clips_per_video=4, seed=1)
    assert all(len(clips) == 4 for clips in plan)
    assert all(s + clip_span(17, k) <= n for clips, n in zip(plan, lengths) for k, s in clips)
    counts = interval_histogram([k for clips in plan for k, _ in clips])
    holders = interval_holders(lengths, 17)
    assert set(counts) == set(range(1, 26))
    # as even as the lengths allow: the rarest intervals get a clip from every video that holds them,
    # the common ones no more than their even share (2,400 clips / 25 intervals) of what is left over
    assert counts[24] == holders[24] and counts[25] == holders[25]
    assert max(counts.values()) - min(counts[k] for k in range(1, 10)) <= 1
    # caching what epochs 0..3 draw (capped, the earlier caches) leaves the long intervals nearly empty
    from magi.data import choose_clip

    old = interval_histogram([choose_clip(1, e, i, 17, n, "dynamic")[0] for e in range(4) for i, n in enumerate(lengths)])
    assert old.get(25, 0) < counts[25] / 2 and old.get(20, 0) < counts[20] / 2


def _mixed_long_folder(root):
    from conftest import make_video

    for i, n in enumerate([20, 40, 100, 120]):  # 5-frame clips: intervals up to 4, 9, 24 and 25 (29)
        make_video(root / "c" / f"v{i}.mp4", num_frames=n, height=16, width=16, seed=i)
    return root


def test_clip_cache_trains_every_interval_within_25_epochs(tmp_path, capsys):
    from test_vae import _tiny_cosmos

    from magi.config import RunConfig
    from magi.trainer import Trainer
    from magi.vae import from_diffusers

    vae = from_diffusers(_tiny_cosmos())
    root = _mixed_long_folder(tmp_path / "videos")
    ds = VideoFolder(root, num_frames=5, size=16, interval="dynamic", interval_sampling="uniform", seed=0)
    out = cache_latents(ds, vae, tmp_path / "cache", clips_per_video=8, progress=False)
    printed = capsys.readouterr().out
    assert "latent cache: 4 videos x 8 clips of (2, 4, 2, 2) per video, float32: " in printed
    cache = LatentDataset(out)
    assert cache.clip_selection == "uniform" and cache.interval_warnings() == []
    assert sorted({k for r in cache.records for k in r["intervals"]}) == list(range(1, 26))

    run = RunConfig.from_dict({
        "model": {"preset": "test", "attention": "sdpa", "latent_size": 2, "num_frames": 2, "num_classes": 0},
        "data": {"kind": "latents", "options": {"root": str(out)}},
        "train": {"epochs": 25, "global_batch_size": 4, "progress": False, "num_threads": 1,
                  "sample": {"num_videos": 0}}})
    trainer = Trainer(run, tmp_path / "run")
    assert trainer.max_steps == 25  # one step per epoch
    batches, trained = trainer._micro_batches(), []
    for step in range(25):  # the loop's data path, without the optimizer steps
        trained += [k for batch in next(batches) for k in batch["interval"].tolist()]
        trainer.step += 1
    assert sorted(set(trained)) == list(range(1, 26)) and len(trained) == 100
    # each item's latents are the cached clip at its interval, of its own video when that video holds it
    cache.set_epoch(3)
    for i in range(len(cache)):
        video, k, j = cache.pick(i)
        assert cache.records[video]["intervals"][j] == k and cache[i]["interval"] == k
        assert video == i or k not in cache.records[i]["intervals"]


def test_old_style_clip_cache_warns_at_training_start(tmp_path):
    from test_vae import _tiny_cosmos

    from magi.vae import from_diffusers

    vae = from_diffusers(_tiny_cosmos())
    root = _mixed_long_folder(tmp_path / "videos")
    ds = VideoFolder(root, num_frames=5, size=16, interval="dynamic", seed=0)  # capped: clip e mod K
    cache = LatentDataset(cache_latents(ds, vae, tmp_path / "cache", clips_per_video=2, progress=False))
    assert cache.clip_selection == "epoch"
    messages = cache.interval_warnings()
    assert "epoch e reads clip e mod K" in messages[0] and "no cached clip at intervals" in messages[1]
    assert [cache[i]["interval"] for i in range(4)] == [r["intervals"][0] for r in cache.records]
    from magi.config import RunConfig
    from magi.trainer import Trainer

    run = RunConfig.from_dict({
        "model": {"preset": "test", "attention": "sdpa", "latent_size": 2, "num_frames": 2, "num_classes": 0},
        "data": {"kind": "latents", "options": {"root": str(tmp_path / "cache")}},
        "train": {"max_steps": 1, "global_batch_size": 4, "progress": False, "sample": {"num_videos": 0}}})
    trainer = Trainer(run, tmp_path / "run")
    with pytest.warns(UserWarning, match="epoch e reads clip e mod K"):
        record = trainer._report_intervals()
    assert sum(record["histogram"].values()) == 4


def test_latent_statistics_report_on_a_stand_in_vae(tmp_path):
    """`magi cache-latents` measures per-channel mean/std (the stand-in Cosmos tokenizer's raw latents are
    far from unit scale), --write-vae-options writes the normalization that makes them unit scale, and the
    first training batches report the same and warn."""
    from cosmos_standin import make_cosmos_dir
    from safetensors.torch import load_file

    from magi.data.latents import main
    from magi.trainer import Trainer

    cosmos = make_cosmos_dir(tmp_path / "cosmos")
    config = tmp_path / "run.yaml"
    config.write_text("data: {kind: moving-digits, num_videos: 6, num_frames: 17, size: 32, interval: 1}\n"
                      "vae: {spec: pixels}  # replaced by the flag's values below\n")
    data = ["kind=moving-digits", "num_videos=6", "num_frames=17", "size=32", "interval=1"]
    with pytest.warns(UserWarning, match="far from unit scale"):
        assert main([*sum((["--data", d] for d in data), []), "--vae", str(cosmos), "--out", str(tmp_path / "raw"),
                     "--clips-per-video", "1", "--workers", "0", "--write-vae-options", str(config)]) == 0
    meta = json.loads((tmp_path / "raw" / "index.json").read_text())
    cached = torch.cat([t for s in range(meta["num_shards"])
                        for t in load_file(str(tmp_path / "raw" / f"shard_{s:05d}.safetensors")).values()])
    per_channel = cached.movedim(-3, 0).reshape(16, -1).double()  # (C, values)
    assert meta["latent_stats"]["mean"] == pytest.approx(per_channel.mean(1).tolist(), abs=1e-5)
    assert meta["latent_stats"]["std"] == pytest.approx(per_channel.std(1, unbiased=False).tolist(), abs=1e-5)
    options = __import__("yaml").safe_load(config.read_text())["vae"]["options"]
    assert len(options["latents_mean"]) == len(options["latents_std"]) == 16
    # re-encoding with the written normalization: mean 0 and std 1 in every channel
    vae = load_vae(str(cosmos), **options)
    digits = MovingDigits(num_videos=6, num_frames=17, size=32, interval=1)
    z = vae.encode(torch.stack([digits[i]["video"] for i in range(6)]))  # (6, 5, 16, 4, 4)
    z = z.movedim(-3, 0).reshape(16, -1)
    assert z.mean(1).abs().max() < 1e-3 and (z.std(1, unbiased=False) - 1).abs().max() < 1e-3

    # the first training batches: the same report and warning, written to OUT/latent_stats.json
    from magi.config import RunConfig

    run = RunConfig.from_dict({
        "model": {"preset": "test", "latent_channels": 16, "latent_size": 4, "num_frames": 5, "num_classes": 0,
                  "attention": "sdpa"},
        "data": {"kind": "moving-digits", "options": {"num_videos": 6, "num_frames": 17, "size": 32, "interval": 1}},
        "vae": {"spec": str(cosmos)},
        "train": {"max_steps": 4, "global_batch_size": 2, "warmup_steps": 1, "progress": False, "num_threads": 1,
                  "checkpoint_every": 100, "sample": {"num_videos": 0}}})
    with pytest.warns(UserWarning, match="far from unit scale"):
        Trainer(run, tmp_path / "train").fit()
    record = json.loads((tmp_path / "train" / "latent_stats.json").read_text())
    assert record["far_from_unit"] and record["suggested_vae_options"]["latents_std"] == pytest.approx(
        options["latents_std"], rel=0.2)  # 4 micro-batches of 2 clips: near the whole set's values
