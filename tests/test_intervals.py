"""Dynamic intervals as the paper draws them (uniform on 1..25), the capped rule kept, and `magi data
check` reporting which videos hold which interval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from magi.data import VideoFolder, choose_clip
from magi.data.video import (UniformIntervals, clip_span, interval_histogram, interval_holders,
                             read_all_frames, to_uint8_video)
from conftest import make_video

# A mix of lengths like UCF-101's (median ~170 frames, a long tail): with 17-frame clips only the
# longest few percent hold interval 25 (401 frames).
UCF_LIKE = np.clip(np.random.default_rng(0).lognormal(np.log(170), 0.5, 600), 29, 1800).astype(int).tolist()


def _uniform_p(counts: dict[int, int], top: int = 25) -> float:
    return chisquare([counts.get(k, 0) for k in range(1, top + 1)]).pvalue


def test_uniform_rule_is_uniform_on_1_to_25_over_a_realistic_mix():
    rule = UniformIntervals(UCF_LIKE, num_frames=17, max_interval=25)
    drawn, substituted = [], 0
    for epoch in range(3):
        for i in range(len(UCF_LIKE)):
            video, k, start = rule.choose(7, epoch, i)
            drawn.append(k)
            assert start + clip_span(17, k) <= UCF_LIKE[video]  # the clip fits the video it comes from
            if video != i:
                substituted += 1
                assert clip_span(17, k) > UCF_LIKE[i]  # only items whose own video cannot hold k move
    counts = interval_histogram(drawn)
    assert set(counts) == set(range(1, 26)) and _uniform_p(counts) > 0.05
    assert max(counts.values()) - min(counts.values()) <= 3  # dealt in turn: at most one apart per epoch
    assert 0 < substituted < len(drawn)
    # the capped rule (today's behaviour) is far from uniform on the same videos
    capped = [choose_clip(7, e, i, 17, n, "dynamic")[0] for e in range(3) for i, n in enumerate(UCF_LIKE)]
    assert _uniform_p(interval_histogram(capped)) < 1e-6


def test_uniform_rule_is_a_pure_function_of_seed_epoch_index():
    a, b = UniformIntervals(UCF_LIKE, 17), UniformIntervals(UCF_LIKE, 17)
    order = np.random.default_rng(1).permutation(len(UCF_LIKE))  # any query order (ranks, workers)
    first = {i: a.choose(3, 5, i) for i in range(len(UCF_LIKE))}
    assert all(b.choose(3, 5, int(i)) == first[int(i)] for i in order)
    assert [a.choose(3, 6, i) for i in range(50)] != [first[i] for i in range(50)]


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Short and long videos: with 4-frame clips, 13 frames hold intervals 1..4 and 80 frames 1..25."""
    root = tmp_path_factory.mktemp("mixed")
    for i, n in enumerate([13, 16, 20, 25, 31, 40, 55, 80]):
        make_video(root / ("short" if n < 40 else "long") / f"v{i}.mp4", num_frames=n, height=16, width=16,
                   seed=i)
    return root


def test_video_folder_uniform_intervals_over_epochs(mixed_folder):
    ds = VideoFolder(mixed_folder, num_frames=4, size=16, interval="dynamic", interval_sampling="uniform", seed=2)
    assert ds.interval_range() == (1, 25)
    drawn = []
    for epoch in range(50):
        ds.set_epoch(epoch)
        drawn += [ds.interval_for(i) for i in range(len(ds))]
    counts = interval_histogram(drawn)
    assert set(counts) == set(range(1, 26)) and _uniform_p(counts) > 0.05
    # an item whose own video is too short is a clip of a video that holds the interval, labelled as it
    ds.set_epoch(0)
    moved = [i for i in range(len(ds)) if ds.pick(i)[0] != i]
    assert moved
    i = moved[0]
    video, k, start = ds.pick(i)
    item = ds[i]
    assert item["interval"] == k and item["path"] == ds.path_of(video) and item["label"] == ds.label_of(video)
    full = read_all_frames(ds.path_of(video), size=16)
    assert torch.equal(to_uint8_video(item["video"]), full[start:start + clip_span(4, k):k])


def test_capped_reproduces_todays_draws(mixed_folder):
    default = VideoFolder(mixed_folder, num_frames=4, size=16, interval="dynamic", seed=2)
    capped = VideoFolder(mixed_folder, num_frames=4, size=16, interval="dynamic", seed=2,
                         interval_sampling="capped")
    for epoch in (0, 3):
        default.set_epoch(epoch)
        capped.set_epoch(epoch)
        for i in range(len(default)):
            want = choose_clip(2, epoch, i, 4, default.video_frames(i), "dynamic", 25)
            assert default.choose(i) == capped.choose(i) == want and capped.pick(i)[0] == i
    drawn = []
    for epoch in range(50):
        capped.set_epoch(epoch)
        drawn += [capped.interval_for(i) for i in range(len(capped))]
    assert _uniform_p(interval_histogram(drawn)) < 1e-6
    with pytest.raises(ValueError, match="interval_sampling"):
        VideoFolder(mixed_folder, num_frames=4, interval="dynamic", interval_sampling="even")


def test_uniform_warns_when_no_video_holds_the_long_intervals(mixed_folder):
    # 5-frame clips: the longest video (80 frames) holds intervals up to (80 - 1) // 4 = 19
    with pytest.warns(UserWarning, match=r"at intervals 20\.\.25.*deals 1\.\.19 instead of 1\.\.25"):
        ds = VideoFolder(mixed_folder, num_frames=5, size=16, interval="dynamic", interval_sampling="uniform")
    assert ds.interval_range() == (1, 19)


def test_the_three_shares_under_each_rule():
    """Per interval, per video and per class, on UCF-like lengths whose classes differ in length."""
    from magi.data.clips import rule_shares

    labels = [int(n > 170) for n in UCF_LIKE]  # class 1: the longer half of the videos
    found = rule_shares(UCF_LIKE, 17, labels=labels, epochs=2)["rules"]
    # video first (the paper's order): every video drawn exactly once per epoch, classes as their videos
    video_first = found["video_first"]
    assert video_first["per_video"] == {"min": 1.0, "median": 1.0, "max": 1.0, "never": 0}
    assert video_first["per_class"]["share_vs_videos"] == {"min": 1.0, "max": 1.0}
    vf = video_first["per_interval"]
    assert set(vf) == set(range(1, 26)) and sum(vf.values()) == 2 * len(UCF_LIKE)
    # interval first: every interval equally often, but long videos stand in for short ones
    first = found["interval_first"]
    counts = list(first["per_interval"].values())
    assert max(counts) - min(counts) <= 2
    assert first["per_video"]["never"] > 0 and first["per_video"]["max"] > 2
    assert first["per_class"]["share_vs_videos"]["max"] > 1.2 > 0.8 > first["per_class"]["share_vs_videos"]["min"]
    # capped: video first too, but redrawing among held intervals favours short ones more than clamping
    capped = found["capped"]
    assert capped["per_video"]["never"] == 0 and capped["per_class"]["share_vs_videos"]["max"] == 1.0
    long_share = {rule: sum(v for k, v in found[rule]["per_interval"].items() if k >= 13) for rule in found}
    assert long_share["capped"] < long_share["video_first"] < long_share["interval_first"]


def test_video_first_clamps_a_too_short_video_to_its_longest_interval(mixed_folder):
    ds = VideoFolder(mixed_folder, num_frames=4, size=16, interval="dynamic", interval_sampling="video_first", seed=2)
    seen = {}
    for epoch in range(40):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            video, k, start = ds.pick(i)
            assert video == i and start + clip_span(4, k) <= ds.video_frames(i)
            seen.setdefault(i, []).append(k)
    short = [i for i in range(len(ds)) if ds.video_frames(i) == 13][0]
    assert seen[short].count(4) > len(seen[short]) / 2  # holds 1..4: draws of 5..25 (21 of 25) give 4
    # the rule is a pure function of (seed, epoch, index): the same draws from choose_clip
    ds.set_epoch(3)
    assert ds.choose(5) == choose_clip(2, 3, 5, 4, ds.video_frames(5), "dynamic", 25, rule="video_first")


def test_data_check_reports_videos_per_interval(mixed_folder, tmp_path, capsys):
    from magi.cli import main

    out = tmp_path / "check.json"
    assert main(["data", "check", str(mixed_folder), "--num-frames", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())["intervals"]
    lengths = [13, 16, 20, 25, 31, 40, 55, 80]
    holders = {int(k): v for k, v in report["holders"].items()}
    assert holders == interval_holders(lengths, 4) and holders[1] == 8 and holders[4] == 8
    assert holders[5] == 7 and holders[25] == 1  # only the 80-frame video holds interval 25
    first = report["rules"]["interval_first"]
    uniform = {int(k): v for k, v in first["per_interval"].items()}
    assert sum(uniform.values()) == 8 and max(uniform.values()) == 1  # 8 items dealt 8 distinct intervals
    # the three shares side by side: video-first draws each of the 8 videos once, in its class's share
    video_first = report["rules"]["video_first"]
    assert video_first["per_video"] == {"min": 1.0, "median": 1.0, "max": 1.0, "never": 0}
    assert video_first["per_class"]["share_vs_videos"] == {"min": 1.0, "max": 1.0}
    assert report["rules"]["capped"]["per_video"]["never"] == 0
    assert first["per_video"]["max"] > 1 and first["per_video"]["never"] > 0  # long videos stand in
    printed = capsys.readouterr().out
    assert "videos holding a 4-frame clip at interval k: 1:8 2:8" in printed and "25:1" in printed


def test_data_interval_dynamic_trains_what_it_writes(mixed_folder, tmp_path):
    """`magi train --data DIR --interval dynamic` and `magi train --config RUN/train_config.yaml`: the same
    first-epoch clips (the pre-flight dataset is built from the options the config records)."""
    from magi.config import RunConfig
    from magi.recipe import GlobalBatchSampler, build_dataset
    from magi.train import main

    first = tmp_path / "first"
    pinned = ["--preset", "tiny", "--vae", "pixels:2", "--size", "16", "--frames", "8",  # the CPU defaults,
              "--set", "model.attention=sdpa", "--set", "train.precision=fp32"]  # so a GPU machine builds the same
    assert main(["--data", str(mixed_folder), "--interval", "dynamic", "--steps", "1", "--out", str(first),
                 "--set", "train.progress=false", *pinned]) == 0
    run = RunConfig.load(first / "train_config.yaml")
    assert run.data.options["interval_sampling"] == "video_first"
    again = tmp_path / "again"
    assert main(["--config", str(first / "train_config.yaml"), "--out", str(again)]) == 0
    a, b = (json.loads((d / "intervals.json").read_text()) for d in (first, again))
    assert a == b
    ds = build_dataset(run.data.kind, run.data.options)
    items = GlobalBatchSampler(len(ds), run.train.global_batch_size, run.train.global_batch_size, 1, 0,
                               run.train.seed, 0).epoch_items()
    ds.set_epoch(0)
    dense = {k: v for k, v in interval_histogram([ds.pick(i)[1] for i in items]).items() if v}
    assert {int(k): v for k, v in a["histogram"].items()} == dense


def _folder_run(root, out, model=None, **data_options):
    from magi.config import RunConfig

    options = {"root": str(root), "num_frames": 4, "size": 16, **data_options}
    return RunConfig.from_dict({
        "model": {"preset": "test", "attention": "sdpa", "latent_channels": 16, "num_frames": 4, "num_classes": 2,
                  **(model or {})},
        "data": {"kind": "folder", "options": options},
        "vae": {"spec": "pixels:4:gray"},
        "train": {"max_steps": 1, "global_batch_size": 4, "warmup_steps": 1, "log_every": 1, "progress": False,
                  "num_threads": 1, "checkpoint_every": 10, "sample": {"num_videos": 0}}})


def test_training_start_writes_the_first_epochs_interval_histogram(mixed_folder, tmp_path, capsys):
    from magi.recipe import GlobalBatchSampler
    from magi.trainer import Trainer

    run = _folder_run(mixed_folder, tmp_path, interval="dynamic", interval_sampling="uniform")  # the old name
    trainer = Trainer(run, tmp_path / "run")
    trainer.fit()
    record = json.loads((tmp_path / "run" / "intervals.json").read_text())
    ds = trainer.dataset
    items = GlobalBatchSampler(len(ds), 4, 4, 1, 0, 0, 0).epoch_items()  # 2 global batches of 4
    ds.set_epoch(0)
    want = interval_histogram([ds.interval_for(i) for i in items])
    assert {int(k): v for k, v in record["histogram"].items()} == {k: v for k, v in want.items() if v}
    assert record["clips"] == 8 and record["interval_sampling"] == "interval_first"
    assert record["per_video"]["never"] > 0 and set(record["per_class"]["clips"]) <= {"0", "1"}
    assert "frame intervals of epoch 0 (8 clips, dynamic, interval_first)" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["ucf101_cosmos", "ucf101_cosmos_mtf", "ucf101_2dvae", "k600_cosmos"])
def test_paper_configs_draw_the_video_first(name):
    from pathlib import Path

    from magi.config import RunConfig
    from magi.data import _accepted_options, _builders

    run = RunConfig.load(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    options = run.data.options
    assert options["interval"] == "dynamic" and options["interval_sampling"] == "video_first"
    # the intervals their data can reach: a 10 s Kinetics clip holds 15 (25 fps) to 18 (30 fps) at 17 frames
    assert options["max_interval"] == (15 if name == "k600_cosmos" else 25)
    assert "interval_sampling" in _accepted_options(_builders()[run.data.kind])


# --------------------------------------------------------------------------------------------------
# Interval conditioning matches training


def test_checkpoint_records_the_trained_intervals(mixed_folder, tmp_path):
    from magi import Magi
    from magi.sample import load_checkpoint
    from magi.trainer import Trainer

    result = Trainer(_folder_run(mixed_folder, tmp_path, interval=3), tmp_path / "fixed").fit()
    saved = json.loads((result.checkpoint / "config.json").read_text())
    assert saved["trained_intervals"] == [3, 3] and saved["default_interval"] == 3
    model = Magi.from_pretrained(result.checkpoint)
    assert model._intervals(None, 2, "cpu").tolist() == [3, 3]  # generate() with no interval conditions on 3
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.trained_intervals == (3, 3) and ckpt.default_interval == 3

    trainer = Trainer(_folder_run(mixed_folder, tmp_path, interval="dynamic", interval_sampling="uniform"),
                      tmp_path / "dynamic")
    assert trainer.run.model.trained_intervals == (1, 25) and trainer.run.model.default_interval == 1
    # max_interval bounds the conditioning: data drawing beyond it is refused, naming both
    with pytest.raises(ValueError, match=r"up to 25 but model.max_interval=10"):
        Trainer(_folder_run(mixed_folder, tmp_path, model={"max_interval": 10}, interval="dynamic",
                            interval_sampling="uniform"), tmp_path / "x")


def test_interval_record_validation_and_fine_tuning():
    from magi import MagiConfig

    with pytest.raises(ValueError, match="trained_intervals"):
        MagiConfig.preset("test", trained_intervals=[1, 30])
    with pytest.raises(ValueError, match="outside the trained intervals 3..3"):
        MagiConfig.preset("test", trained_intervals=[3, 3])  # default_interval 1 was never trained
    a = MagiConfig.preset("test", trained_intervals=[3, 3], default_interval=3)
    assert a.diff(MagiConfig.preset("test")) == {}  # fine-tuning may change the training intervals
    assert MagiConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_sampling_refuses_untrained_intervals_unless_told(tmp_path, capsys):
    from test_sample import FAST, make_run

    from magi.sample import main

    run = make_run(tmp_path / "run", preset="test", steps=(1,), vae="pixels:2:gray",
                   trained_intervals=[3, 3], default_interval=3)
    out = tmp_path / "s"
    assert main([str(run), "--out", str(out), "--num-samples", "1", "--frames", "3", *FAST]) == 0
    assert json.loads((out / "samples.json").read_text())["interval"] == 3
    assert main([str(run), "--out", str(out), "--num-samples", "1", "--frames", "3", "--interval", "5", *FAST]) == 2
    err = capsys.readouterr().err
    assert "frame interval 5: this model was trained on interval 3 (from its config)" in err
    assert "--allow-untrained-interval" in err
    assert main([str(run), "--out", str(out), "--num-samples", "1", "--frames", "3", "--interval", "5",
                 "--allow-untrained-interval", "--overwrite", *FAST]) == 0
    assert json.loads((out / "samples.json").read_text())["interval"] == 5


def test_older_checkpoints_default_to_what_their_run_config_trained(tmp_path):
    from pathlib import Path

    from test_sample import make_run

    from magi.sample import load_checkpoint

    shipped = load_checkpoint(Path(__file__).resolve().parents[1] / "pretrained")  # moving digits, interval 1
    assert shipped.model.config.trained_intervals is None
    assert shipped.trained_intervals == (1, 1) and shipped.default_interval == 1
    # a folder run that never set `interval` trained VideoFolder's default 3, while its config said 1
    folder = make_run(tmp_path / "folder", preset="test", steps=(1,), vae="pixels:2:gray",
                      data={"kind": "folder", "options": {"root": "videos", "num_frames": 3}})
    ckpt = load_checkpoint(folder)
    assert ckpt.model.config.default_interval == 1
    assert ckpt.trained_intervals == (3, 3) and ckpt.default_interval == 3
    with pytest.raises(ValueError, match="trained on interval 3 \\(from its train_config.yaml\\)"):
        ckpt.check_intervals(1)
    dynamic = make_run(tmp_path / "dyn", preset="test", steps=(1,), vae="pixels:2:gray",
                       data={"kind": "ucf101", "options": {"root": "u", "num_frames": 3, "interval": "dynamic"}})
    assert load_checkpoint(dynamic).trained_intervals == (1, 25)


def test_k600_defaults_to_interval_1(tmp_path):
    from magi.data import build_dataset
    from magi.pretrained import intervals_of_run_config

    root = tmp_path / "k600"
    for i in range(2):
        make_video(root / "abseiling" / f"v{i}.mp4", num_frames=12, height=16, width=16, seed=i)
    (tmp_path / "list.txt").write_text("abseiling/v0.mp4\nabseiling/v1.mp4\n")
    ds = build_dataset("k600", root=str(root), num_frames=4, size=16, list_file=str(tmp_path / "list.txt"))
    assert ds.interval == 1 and ds.interval_range() == (1, 1)
    assert intervals_of_run_config({"data": {"kind": "k600", "options": {}}}) == (1, 1)
    assert intervals_of_run_config({"data": {"kind": "folder", "options": {}}}) == (3, 3)


def test_sampling_warns_on_an_interval_seen_in_under_1_percent(mixed_folder, tmp_path):
    from magi.sample import load_checkpoint
    from magi.trainer import Trainer

    result = Trainer(_folder_run(mixed_folder, tmp_path, interval="dynamic", interval_sampling="capped"),
                     tmp_path / "run").fit()
    saved = json.loads((result.checkpoint / "config.json").read_text())
    shares = saved["trained_interval_shares"]
    assert abs(sum(shares) - 1) < 1e-6 and len(shares) <= 25
    ckpt = load_checkpoint(result.checkpoint)
    seen = [k for k in range(1, len(shares) + 1) if shares[k - 1] >= 0.01]
    rare = [k for k in range(1, 26) if k > len(shares) or shares[k - 1] < 0.01]
    assert seen and rare  # 8 clips of one epoch cannot cover 25 intervals
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error")
        ckpt.check_intervals(seen[0])  # a seen interval: no warning
    with pytest.warns(UserWarning, match=rf"frame interval {rare[-1]}: within the trained range but seen in under 1%"):
        ckpt.check_intervals(rare[-1])
