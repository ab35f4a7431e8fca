"""World-model data and evaluation: lossless Atari recordings, actions aligned to clip frames, the
scripted players, the player detector against the emulator RAM, and `magi eval world-model`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from magi.data import VideoFolder, build_dataset, read_all_frames
from magi.world.atari import load_actions, load_ram, record_atari, resize_frame

import ale_py  # noqa: E402,F401  a hard dependency (pyproject): a broken install fails here, never skips


@pytest.fixture(scope="module")
def boxing(tmp_path_factory):
    """Two short Boxing episodes (sticky and scripted) + one validation episode, 64x64, lossless."""
    root = tmp_path_factory.mktemp("boxing")
    record_atari(root, game="Boxing", episodes=3, max_frames=60, size=64, policy="mix", progress=False)
    return root


def test_lossless_recording_decodes_to_the_emulators_frames(tmp_path):
    import gymnasium

    paths = record_atari(tmp_path, game="Boxing", episodes=1, max_frames=30, size=64, policy="sticky",
                         progress=False)
    assert paths[0].suffix == ".mkv"
    meta = json.loads(paths[0].with_suffix(".json").read_text())
    # replay the recorded actions in a fresh emulator: every decoded frame equals the emulator's
    gymnasium.register_envs(ale_py)
    env = gymnasium.make(meta["env"], frameskip=meta["frameskip"], full_action_space=False)
    obs, _ = env.reset(seed=meta["env_seed"])
    expected = [resize_frame(obs, 64)]
    for a in load_actions(paths[0])[:-1]:
        obs, *_ = env.step(int(a))
        expected.append(resize_frame(obs, 64))
    env.close()
    decoded = read_all_frames(paths[0], None).numpy()  # (T, 3, 64, 64)
    assert decoded.shape == (30, 3, 64, 64)
    assert np.array_equal(decoded, np.stack(expected))
    assert load_ram(paths[0]).shape == (30, 128)


def test_the_hud_layout_keeps_the_score_strip_at_screen_resolution_and_the_ring_as_it_was(tmp_path):
    from magi.world.atari import BOXING_HUD, HUD_ROWS, atari_env

    env = atari_env("Boxing")
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        obs, *_ = env.step(0)
    env.close()
    screen, hud = resize_frame(obs, 64), resize_frame(obs, 64, "hud")
    assert hud.shape == screen.shape == (3, 64, 64)
    assert np.array_equal(hud[:, HUD_ROWS:], screen[:, HUD_ROWS:])  # the ring and the boxers: unchanged
    col = 0
    for (r0, r1), (c0, c1) in BOXING_HUD:  # each block: the screen's pixels, one to one
        assert np.array_equal(hud[:, :HUD_ROWS, col:col + c1 - c0], obs[r0:r1, c0:c1].transpose(2, 0, 1))
        col += c1 - c0
    assert col == 64
    with pytest.raises(ValueError, match="hud"):
        record_atari(tmp_path / "pong", game="Pong", episodes=1, max_frames=5, layout="hud", progress=False)
    with pytest.raises(ValueError, match="layout"):
        record_atari(tmp_path / "x", game="Boxing", episodes=1, max_frames=5, layout="crop", progress=False)
    # a folder recorded in one layout is not read back as another
    record_atari(tmp_path / "b", game="Boxing", episodes=1, max_frames=5, progress=False)
    with pytest.raises(ValueError, match="recorded with layout 'screen'"):
        record_atari(tmp_path / "b", game="Boxing", episodes=1, max_frames=5, layout="hud", progress=False)


def test_the_lagged_hud_draws_the_strip_of_the_frame_before_and_labels_follow_it(tmp_path):
    """hud_lag: frame t is the hud frame t with frame t - 1's strip (frame 0: its own), and the rewards and RAM a
    reader or reward model learns from move one frame later with it, so a score change is labelled where it shows."""
    from magi.world.atari import HUD_ROWS, as_shown, load_rewards, recorded_layout
    from magi.world.reward import load_episode

    hud = record_atari(tmp_path / "hud", game="Boxing", episodes=1, max_frames=40, layout="hud", policy="agent",
                       progress=False)[0]
    lag = record_atari(tmp_path / "lag", game="Boxing", episodes=1, max_frames=40, layout="hud_lag", policy="agent",
                       progress=False)[0]
    a, b = read_all_frames(hud, None).numpy(), read_all_frames(lag, None).numpy()  # (40, 3, 64, 64)
    assert recorded_layout(lag) == "hud_lag" and recorded_layout(hud) == "hud"
    assert np.array_equal(b[:, :, HUD_ROWS:], a[:, :, HUD_ROWS:])  # the ring: the same frames
    assert np.array_equal(b[1:, :, :HUD_ROWS], a[:-1, :, :HUD_ROWS])  # the strip: one frame late
    assert np.array_equal(b[0], a[0])
    assert not np.array_equal(b[:, :, :HUD_ROWS], a[:, :, :HUD_ROWS])  # the clock ticks within 40 frames
    rewards = np.arange(5.0)
    assert as_shown(rewards, "hud_lag").tolist() == [0, 0, 1, 2, 3]
    assert as_shown(rewards, "hud").tolist() == rewards.tolist()
    ep = load_episode(lag)
    assert np.array_equal(ep.rewards[1:], load_rewards(lag)[0][:-1])
    assert np.array_equal(ep.ram[1:], load_ram(lag)[:-1])
    assert np.array_equal(load_episode(hud).ram, load_ram(hud))


def test_actions_are_aligned_to_the_clip_frames(boxing):
    ds = VideoFolder(boxing, num_frames=5, size=None, interval=1, actions=True, seed=3, progress=False)
    recorded = load_actions(ds.path_of(0))
    for epoch in range(3):
        ds.set_epoch(epoch)
        item = ds[0]
        interval, start = ds.choose(0)
        assert torch.equal(item["actions"], torch.from_numpy(recorded[start:start + 5]))
        frames = read_all_frames(ds.path_of(0), None)[start:start + 5]
        assert torch.equal(((item["video"] + 1) * 127.5).round().to(torch.uint8), frames)
    # interval 2: the action taken at each clip frame (the first of the two between clip frames)
    assert torch.equal(ds.actions_of(0, 4, 2, 3), torch.from_numpy(recorded[[4, 6, 8]]))
    # past the end of the recording: -1 (no action)
    assert ds.actions_of(0, len(recorded) - 2, 1, 3).tolist()[-1] == -1


def test_video_without_actions_file_is_skipped_and_counted(boxing, tmp_path):
    import shutil

    for f in boxing.glob("Boxing/episode_000[01].*"):
        (tmp_path / "Boxing").mkdir(exist_ok=True)
        shutil.copy(f, tmp_path / "Boxing" / f.name)
    (tmp_path / "Boxing" / "episode_0001.actions.npy").unlink()
    with pytest.warns(UserWarning, match="no actions file"):
        ds = VideoFolder(tmp_path, num_frames=4, actions=True, progress=False)
    assert len(ds) == 1 and ds.skipped == 1


def test_policy_mix_alternates_sticky_and_the_scripted_player(boxing):
    metas = [json.loads((boxing / "Boxing" / f"episode_{k:04d}.json").read_text()) for k in range(3)]
    assert [m["policy"] for m in metas] == ["sticky", "agent", "sticky"]
    scripted = load_actions(boxing / "Boxing" / "episode_0001.mkv")[:-1]
    sticky = load_actions(boxing / "Boxing" / "episode_0000.mkv")[:-1]
    assert len(set(sticky.tolist())) > 5  # covers the action space
    # the scripted boxer walks toward the opponent: the player-opponent distance shrinks
    ram = load_ram(boxing / "Boxing" / "episode_0001.mkv").astype(int)
    gap = np.abs(ram[:, 33] - ram[:, 32]) + np.abs(ram[:, 35] - ram[:, 34])
    assert gap[-10:].mean() < gap[:5].mean()
    assert len(scripted) == 59
    with pytest.raises(ValueError, match="no scripted agent"):
        record_atari(boxing / "x", game="Tennis", episodes=1, max_frames=5, policy="agent", progress=False)


def test_atari_dataset_splits_by_episode(tmp_path):
    train = build_dataset("atari", root=str(tmp_path), num_frames=4, size=64, game="Boxing", episodes=2,
                          val_episodes=1, max_frames=20, policy="sticky", progress=False)
    val = build_dataset("atari", root=str(tmp_path), num_frames=4, size=64, game="Boxing", episodes=2,
                        val_episodes=1, max_frames=20, policy="sticky", split="val", progress=False)
    assert len(train) == 2 and len(val) == 1
    assert {train.path_of(i) for i in range(2)}.isdisjoint({val.path_of(0)})
    assert train[0]["actions"].shape == (4,)


def test_boxing_detector_tracks_the_emulator_ram(boxing):
    from magi.world.detect import calibrate, player_detector

    det = player_detector("Boxing")
    frames = torch.cat([read_all_frames(p, None) for p in sorted(boxing.glob("Boxing/*.mkv"))])
    ram = np.concatenate([load_ram(p) for p in sorted(boxing.glob("Boxing/*.mkv"))])
    report = calibrate(det, frames, ram)
    assert report["found_rate"] == 1.0
    assert report["axes"]["x"]["corr"] > 0.98 and report["axes"]["y"]["corr"] > 0.98
    assert report["mean_error_px"] < 1.5
    # a frame with the boxer painted out has no player
    blank = frames[:1].clone()
    blank[:] = 100
    assert np.isnan(det.detect(blank)).all()


def test_boxing_opponent_detector_tracks_the_emulator_ram(boxing):
    from magi.world.detect import calibrate, opponent_detector, player_detector

    det = opponent_detector("Boxing")
    assert det.sprite == "opponent" and det.ram_bytes == (33, 35)
    assert opponent_detector("Breakout") is None
    paths = sorted(boxing.glob("Boxing/*.mkv"))
    frames = torch.cat([read_all_frames(p, None) for p in paths])
    ram = np.concatenate([load_ram(p) for p in paths])
    report = calibrate(det, frames, ram)
    assert report["found_rate"] == 1.0
    assert report["axes"]["x"]["corr"] > 0.98 and report["axes"]["y"]["corr"] > 0.98
    assert report["mean_error_px"] < 1.0
    # the two detectors see different boxers: at every frame their positions differ as the RAM's do
    gap_px = np.abs(det.detect(frames) - player_detector("Boxing").detect(frames)).sum(axis=-1)
    gap_ram = np.abs(ram[:, 33].astype(int) - ram[:, 32]) + np.abs(ram[:, 35].astype(int) - ram[:, 34])
    assert np.corrcoef(gap_px, gap_ram)[0, 1] > 0.9
    # the black boxer painted out (ring colour): no opponent, the white one still found
    ring = torch.tensor([110, 156, 66], dtype=torch.uint8).view(3, 1, 1)
    painted = frames[:1].clone()
    dark = painted[0].float().mean(dim=0) < 55  # (H, W)
    dark[:8] = False  # keep the score and the clock
    dark[56:] = False
    painted[0][:, dark] = ring.view(3, 1).expand(3, int(dark.sum()))
    assert np.isnan(det.detect(painted)).all()
    assert not np.isnan(player_detector("Boxing").detect(painted)).any()


def test_colour_metrics_charge_a_gray_prediction_and_the_vae_space_ones_do_not(boxing):
    """The reported PSNR/SSIM are colour (against the emulator's RGB); *_vae_space compare with the
    truth's VAE round trip, so the gray VAE's own loss is not charged there."""
    from magi.world.detect import opponent_detector, player_detector
    from magi.world.evaluate import score_frames
    from magi.vae import load_vae

    real = read_all_frames(sorted(boxing.glob("Boxing/*.mkv"))[0], None)[None, :8]  # (1, 8, 3, 64, 64)
    vae = load_vae("pixels:4:gray")
    with torch.no_grad():
        gray = ((vae.decode(vae.encode(real.float() / 127.5 - 1)) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    assert not torch.equal(gray, real)
    detectors = {"player": player_detector("Boxing"), "opponent": opponent_detector("Boxing")}
    perfect = score_frames(real, real, gray, detectors)
    as_gray = score_frames(gray, real, gray, detectors)
    assert min(perfect["psnr"]) > 90 and min(perfect["ssim"]) == pytest.approx(1.0)
    assert max(as_gray["psnr"]) < 40 and max(as_gray["ssim"]) < 0.99  # the colour it lost
    assert min(as_gray["psnr_vae_space"]) > 90 and min(as_gray["ssim_vae_space"]) == pytest.approx(1.0)
    # positions: the gray frames keep both boxers where they are
    assert max(as_gray["error_px"]) == pytest.approx(0.0) and max(as_gray["opponent"]["error_px"]) == pytest.approx(0.0)
    shifted = real.clone()
    shifted[..., 4:] = real[..., 4:].roll(3, dims=-1)  # all but the black border 3 px right
    moved = score_frames(shifted, real, gray, detectors)
    assert np.mean(moved["opponent"]["error_px"]) == pytest.approx(3.0, abs=0.3)
    assert np.mean(moved["error_px"]) == pytest.approx(3.0, abs=0.3)


def test_sticky_player_holds_keys_and_opens_with_noop():
    from magi.world.policies import StickyPlayer

    player = StickyPlayer(18, context_frames=4, seed=0)
    taken = [player(t) for t in range(400)]
    assert taken[:3] == [0, 0, 0]
    changes = np.count_nonzero(np.diff(taken[3:]))
    assert 60 < changes < 110  # ~ a quarter of the frames (a few draws repeat the key)
    assert set(taken) <= set(range(18)) and len(set(taken)) > 12
    again = StickyPlayer(18, 4, seed=0)
    assert [again(t) for t in range(400)] == taken == player.taken


def test_position_error_counts_a_missing_player():
    from magi.world.detect import player_detector
    from magi.world.evaluate import position_error

    det = player_detector("Boxing")
    truth = torch.full((2, 3, 3, 64, 64), 100, dtype=torch.uint8)
    truth[..., 20:30, 30:34] = 255  # a white boxer at x 31.5, y 24.5
    pred = truth.clone()
    pred[0, :, :, 20:30, 30:34] = 100
    pred[0, :, :, 20:30, 34:38] = 255  # moved 4 px right
    pred[1, 2] = 100  # gone in the last frame
    err = position_error(det, pred, truth)
    assert err["error_px"][0] == pytest.approx(2.0)  # (4 + 0) / 2
    assert err["error_px"][2] == pytest.approx((4 + 32 * 2 ** 0.5) / 2)
    assert err["missing_rate"] == [0.0, 0.0, 0.5]
    assert err["rollout_error_first8_px"] == pytest.approx([4.0, 32 * 2 ** 0.5 / 3])


def test_eval_world_model_end_to_end(tmp_path):
    """A (tiny, briefly trained) action model through `magi eval world-model`: JSON, PNG and GIF."""
    from magi.cli import main

    root = tmp_path / "data"
    run = tmp_path / "run"
    assert main(["train", "--config", "configs/atari_world_model.yaml", "--out", str(run),
                 "--set", f"data.options.root={root}", "--set", "data.options.episodes=2",
                 "--set", "data.options.val_episodes=1", "--set", "data.options.max_frames=40",
                 "--set", "model.width=32", "--set", "model.head_width=32", "--set", "model.depth=1",
                 "--set", "train.max_steps=2", "--set", "train.global_batch_size=2",
                 "--set", "train.sample.num_videos=0", "--set", "train.progress=false",
                 "--set", "train.num_threads=null"]) == 0
    out = tmp_path / "eval"
    assert main(["eval", "world-model", f"tiny={run}", "--out", str(out), "--rollouts", "3", "--horizon", "4",
                 "--mask-steps", "1", "--diffusion-steps", "2", "--no-progress"]) == 0
    result = json.loads((out / "world_model.json").read_text())
    runs = result["models"]["tiny"]
    assert len(runs["true_actions"]["psnr"]) == 4 and len(runs["shuffled_actions"]["error_px"]) == 4
    assert result["detector"]["on_real_frames"]["found_rate"] > 0.9
    assert (out / "world_model.png").is_file() and (out / "rollouts_tiny.gif").is_file()
    assert (out / "rollouts_tiny_worst.gif").is_file()
    errors = runs["true_actions"]["rollout_error_first8_px"]
    worst = [w["player_error_first8_px"] for w in runs["worst_rollouts"]]
    assert worst == sorted(worst, reverse=True) and worst[0] == pytest.approx(max(e for e in errors if e is not None))
    assert runs["model"]["teacher_forcing"] == "ctf"
    assert runs["model"]["trained"]["steps"] == runs["model"]["step"] and runs["model"]["trained"]["wall_time_s"] > 0
    # colour and VAE-space metrics, the opponent, and the copy baseline in both spaces
    for key in ("psnr", "ssim", "psnr_vae_space", "ssim_vae_space"):
        assert len(runs["true_actions"][key]) == 4 and len(result["baselines"]["copy_last_frame"][key]) == 4
    assert len(runs["null_action"]["opponent"]["error_px"]) == 4
    assert result["opponent_detector"]["ram_bytes"] == [33, 35]
    assert "opponent_error_first8_shuffled_px" in runs["summary"] and "at_play_setting" not in runs
    assert runs["setting"] == {"mask_steps": 1, "diffusion_steps": 2, "sampler": "ddim", "window": None, "cfg": 1.0}
    # what a frame of the play stream costs at that setting, measured in the same evaluation
    assert runs["cost"]["frames"] == 40 and runs["summary"]["cpu_ms_per_frame"] == runs["cost"]["cpu_ms_per_frame_median"] > 0

    # --play-setting: the model's play.json setting too, next to the evaluation setting
    (run / "play.json").write_text(json.dumps({"mask_steps": 2, "diffusion_steps": 3, "sampler": "ddim", "window": 2,
                                               "cfg": 1.5}))
    out2 = tmp_path / "eval2"
    assert main(["eval", "world-model", f"tiny={run}", "--out", str(out2), "--rollouts", "2", "--horizon", "3",
                 "--mask-steps", "1", "--diffusion-steps", "2", "--play-setting", "--no-progress"]) == 0
    runs = json.loads((out2 / "world_model.json").read_text())["models"]["tiny"]
    play = runs["at_play_setting"]
    assert {k: play["setting"][k] for k in ("mask_steps", "diffusion_steps", "sampler", "window", "cfg")} == \
        {"mask_steps": 2, "diffusion_steps": 3, "sampler": "ddim", "window": 2, "cfg": 1.5}
    assert play["setting"]["source"].endswith("play.json")
    assert len(play["shuffled_actions"]["psnr"]) == 3 and "opponent_error_first8_px" in play["summary"]
    assert play["true_actions"]["psnr"] != runs["true_actions"]["psnr"]  # sampled at another setting
    assert play["summary"]["cpu_ms_per_frame"] > 0

    # --stream-frames alone: the play loop's stream, both boxers counted, per-block timing
    assert main(["eval", "world-model", f"tiny={run}", "--out", str(out2), "--rollouts", "0",
                 "--stream-frames", "12", "--no-progress"]) == 0
    stream = json.loads((out2 / "stream_tiny.json").read_text())
    assert stream["frames"] == 12 and stream["setting"]["diffusion_steps"] == 3 and stream["sprites"] == ["player", "opponent"]
    assert stream["setting"]["window"] == 2
    assert 0.0 <= stream["both_detected_fraction"] <= min(stream["player_detected_fraction"],
                                                         stream["opponent_detected_fraction"])
    assert len(stream["blocks"]) == 1 and stream["blocks"][0]["ms_median"] > 0
    assert stream["blocks"][0]["cpu_ms_median"] > 0 and len(stream["load_average_1min"]) == 2
    assert (out2 / "stream_tiny.png").is_file()

    # --policy recorded,person: the same model on the held-out recordings and on fresh PersonPlayer
    # episodes recorded on a seed the training never used, side by side
    out3 = tmp_path / "eval3"
    assert main(["eval", "world-model", f"tiny={run}", "--out", str(out3), "--rollouts", "2", "--horizon", "3",
                 "--mask-steps", "1", "--diffusion-steps", "2", "--policy", "recorded,person", "--no-progress"]) == 0
    side = json.loads((out3 / "policies.json").read_text())
    assert set(side["tiny m1-d2"]) == {"recorded", "person"}
    assert side["tiny m1-d2"]["person"]["player_error_first8_px"] is not None
    person = json.loads((out3 / "person" / "world_model.json").read_text())
    recordings = person["policy"]["recordings"]
    assert person["policy"]["name"] == "person" and recordings["policy"] == "person" and recordings["record_seed"] != 0
    meta = json.loads(sorted(Path(recordings["root"]).glob("Boxing/*.json"))[0].read_text())
    assert meta["policy"] == "person" and meta["seed"] == recordings["record_seed"]
    assert main(["eval", "world-model", f"tiny={run}", "--out", str(out3), "--policy", "robot", "--no-progress"]) == 2
    assert main(["eval", "world-model", f"tiny={run}", "--out", str(out2), "--rollouts", "0"]) == 2


def test_stream_check_counts_detections_per_block(tmp_path):
    """stream_check's bookkeeping (blocks, snapshots, shares) on a tiny random-weight model: the shares
    are whatever the detectors find in its frames, counted per block and overall."""
    from magi import Magi, MagiConfig
    from magi.world.stream_check import stream_check
    from magi.pretrained import LoadedCheckpoint
    from magi.vae import load_vae

    cfg = MagiConfig.preset("test", latent_channels=16, latent_size=16, num_frames=3, num_actions=18)
    ckpt = LoadedCheckpoint(Magi(cfg).eval(), load_vae("pixels:4:gray"), "random", None, False,
                            "pixels:4:gray", None)
    report, snapshots = stream_check(ckpt, "Boxing", frames=7, mask_steps=1, diffusion_steps=2, block=3,
                                     snapshot_every=5, progress=False)
    assert [b["frames"] for b in report["blocks"]] == [[0, 3], [3, 6], [6, 7]]
    assert report["snapshot_frames"] == [0, 5, 6] and snapshots.shape == (3, 3, 64, 64)
    assert report["context_frames"] == 2 and report["frames"] == 7
    both = [b["both_detected"] for b in report["blocks"]]
    assert report["both_detected_fraction"] == pytest.approx((3 * both[0] + 3 * both[1] + both[2]) / 7)
    assert report["passes"] == (report["both_detected_fraction"] >= 0.95)


def test_a_world_model_refuses_data_without_actions_before_training(tmp_path):
    from magi.config import RunConfig
    from magi.trainer import Trainer

    common = [f"data.options.root={tmp_path / 'data'}", "data.options.episodes=2", "data.options.val_episodes=1",
              "data.options.max_frames=20", "data.options.progress=false", "train.global_batch_size=2",
              "model.width=32", "model.head_width=32", "model.depth=1"]
    run = RunConfig.load("configs/atari_world_model.yaml", common + ["data.options.actions=false"])
    with pytest.raises(ValueError, match="model.num_actions=18 but the data has no actions"):
        Trainer(run, tmp_path / "run")
    run = RunConfig.load("configs/atari_world_model.yaml", common + ["model.num_actions=3"])
    with pytest.raises(ValueError, match="model.num_actions=3 but the data has action"):
        Trainer(run, tmp_path / "run2")


def test_the_training_behind_a_fine_tuned_export_counts_its_earlier_stages(tmp_path):
    from magi.checkpoint import training_behind

    first = {"steps": 7000, "wall_time_s": 100.0}
    (tmp_path / "training.json").write_text(json.dumps(
        {"steps": 1100, "wall_time_s": 20.0, "init_from": {"path": "pretrained/atari", "training": first}}))
    assert training_behind(tmp_path) == {"steps": 8100, "wall_time_s": 120.0}
    assert training_behind(tmp_path / "nothing") is None


# --------------------------------------------------------------------------------------------------
# One --device convention for the world model's parts; the shipped model as `magi play` serves it


def test_world_model_commands_share_one_device_convention(monkeypatch, capsys):
    """`magi eval world-model`, `magi play` and `magi tokenizer train` take `--device` as `magi sample`
    does: default "auto" (CUDA when present), resolved by `pick_device`; the onnx engine plays on the CPU."""
    from magi.cli import main as magi_main
    from magi.evaluate.cli import build_parser
    from magi.play.server import play_device
    from magi.pretrained import pick_device

    assert build_parser().parse_args(["world-model", "x", "--out", "o"]).device == "auto"
    for argv in (["tokenizer", "train", "--help"], ["play", "--help"], ["eval", "world-model", "--help"]):
        with pytest.raises(SystemExit):
            magi_main(argv)
        assert "auto (CUDA when present" in " ".join(capsys.readouterr().out.split()), argv

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")
    assert play_device("torch", "auto") == "cuda" and play_device("onnx", "auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu") and play_device("torch", "auto") == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="--device 'gpu0'"):
        pick_device("gpu0")
    with pytest.raises(ValueError, match="--engine onnx runs on the CPU"):
        play_device("onnx", "cuda")


def test_tokenizer_trains_on_the_device_it_is_given(tmp_path):
    """The tokenizer's model, batches and checkpoints follow `device` (here pinned to the CPU)."""
    from safetensors.torch import load_file

    from magi.world.tokenizer import FramePairs, TokenizerRunConfig, train_tokenizer

    run = TokenizerRunConfig.from_dict({
        "model": {"block_out_channels": [8, 16], "latent_channels": 4, "norm_num_groups": 8},
        "data": {"kind": "atari", "options": {"root": str(tmp_path / "rec"), "num_frames": 2, "size": 32,
                                              "game": "Boxing", "episodes": 1, "max_frames": 8,
                                              "policy": "sticky", "progress": False}},
        "train": {"max_steps": 2, "batch_size": 2, "warmup_steps": 1, "decay_steps": 0, "checkpoint_every": 2,
                  "log_every": 1, "num_threads": 1, "stats_frames": 8},
    })
    frames = FramePairs(build_dataset(run.data.kind, **run.data.options), progress=False)
    result = train_tokenizer(run, tmp_path / "run", frames=frames, progress=False, device=torch.device("cpu"))
    weights = load_file(str(tmp_path / "run/checkpoints/2/model.safetensors"))
    assert result["step"] == 2 and all(w.device.type == "cpu" for w in weights.values())


def test_the_shipped_world_model_loads_and_streams_both_boxers():
    """`pretrained/atari` — what `magi play` serves by default — loads as `magi play` loads it (on the
    CPU, pinned) and streams frames at its play setting in which both boxers are found."""
    from pathlib import Path

    from magi.play.server import DEFAULT_MODEL
    from magi.play.session import load_world
    from magi.world.evaluate import play_setting_of
    from magi.world.stream_check import stream_check

    model = Path(__file__).resolve().parents[1] / DEFAULT_MODEL
    world = load_world(model, device="cpu")
    assert (world.game, world.size, world.ckpt.model.config.num_actions) == ("Boxing", (64, 64), 18)
    setting = play_setting_of(model)
    torch.set_num_threads(1)
    report, snapshots = stream_check(world.ckpt, "Boxing", frames=12, mask_steps=setting["mask_steps"],
                                     diffusion_steps=setting["diffusion_steps"], sampler=setting["sampler"],
                                     block=12, progress=False, window=setting["window"], cfg=setting["cfg"])
    assert snapshots.dtype == torch.uint8 and snapshots.shape[1:] == (3, 64, 64)
    assert report["device"] == "cpu" and report["both_detected_fraction"] == 1.0, report


# --------------------------------------------------------------------------------------------------
# A person at the keyboard: recordings and the evaluation's policy


def test_person_player_holds_keys_1_to_60_frames_in_all_actions_and_reaches_ropes_and_corners():
    from magi.world.atari import atari_env
    from magi.world.policies import BOXING_RING, MAX_HOLD, PersonPlayer

    env = atari_env("Boxing")
    meanings, ale = env.unwrapped.get_action_meanings(), env.unwrapped.ale
    state = np.random.get_state()[1].copy()

    def play(seed, frames=3000):
        obs, _ = env.reset(seed=seed)
        player, taken, xy = PersonPlayer(meanings, np.random.default_rng(seed)), [], []
        for _ in range(frames):
            action = player(obs, ale.getRAM(), taken[-1] if taken else -1)
            obs, *_ = env.step(action)
            taken.append(action)
            xy.append((int(ale.getRAM()[32]), int(ale.getRAM()[34])))
        return np.array(taken), np.array(xy), player

    taken, xy, player = play(0)
    env.close()
    assert (np.random.get_state()[1] == state).all()  # no global RNG
    runs = np.diff(np.r_[0, np.flatnonzero(np.diff(taken)) + 1, len(taken)])
    assert runs.min() >= 1 and runs.max() <= MAX_HOLD and runs.max() >= 50  # holds of 1-60 frames
    assert np.median(runs) >= 10 and (runs <= 3).any()  # mostly long, some taps
    assert set(taken.tolist()) == set(range(18))  # all 18 actions
    assert {"rope", "clinch", "key"} <= set(player.intents)
    x0, x1, y0, y1 = BOXING_RING
    x, y = xy[:, 0], xy[:, 1]
    at_x, at_y = (x <= x0 + 4) | (x >= x1 - 4), (y <= y0 + 4) | (y >= y1 - 4)
    assert (at_x | at_y).mean() > 0.2 and (at_x & at_y).any()  # along the ropes, into corners


def test_person_policy_records_and_is_seeded(tmp_path):
    a = record_atari(tmp_path / "a", game="Boxing", episodes=2, max_frames=80, size=32, policy="person-mix",
                     progress=False)
    b = record_atari(tmp_path / "b", game="Boxing", episodes=2, max_frames=80, size=32, policy="person-mix",
                     progress=False)
    assert all((load_actions(p) == load_actions(q)).all() for p, q in zip(a, b))
    assert [json.loads(p.with_suffix(".json").read_text())["policy"] for p in a] == ["person", "agent"]
    with pytest.raises(ValueError, match="'person' plays Boxing"):
        record_atari(tmp_path / "c", game="Pong", episodes=1, max_frames=5, policy="person", progress=False)
    c = record_atari(tmp_path / "d", game="Boxing", episodes=4, max_frames=10, size=32, policy="all-mix",
                     progress=False)
    assert [json.loads(p.with_suffix(".json").read_text())["policy"] for p in c] == ["person", "sticky", "agent",
                                                                                      "person"]


def test_the_person_evaluation_plays_on_seeds_never_recorded_for_training():
    from magi.world.evaluate import EVAL_RECORD_SEED, evaluation_data_options

    train = {"root": "data_cache/atari/boxing64", "game": "Boxing", "episodes": 40, "val_episodes": 8,
             "policy": "mix", "split": "train"}
    assert evaluation_data_options(train, "recorded") == {**train, "split": "val"}
    person = evaluation_data_options(train, "person", seed=2)
    assert person["policy"] == "person" and person["record_seed"] == EVAL_RECORD_SEED + 2 != 0
    assert person["episodes"] == 0 and person["val_episodes"] == 8 and person["split"] == "val"
    assert person["root"] != train["root"]
    # the same episodes for a model trained on whole rounds in the hud layout, drawn in its layout
    rounds = evaluation_data_options({**train, "max_frames": 2000, "layout": "hud"}, "person", seed=2)
    assert rounds["max_frames"] == person["max_frames"] == 1000 and rounds["layout"] == "hud"
    with pytest.raises(ValueError, match="training recordings' own"):
        evaluation_data_options({**train, "record_seed": EVAL_RECORD_SEED}, "person")
    with pytest.raises(ValueError, match="--policy"):
        evaluation_data_options(train, "robot")
