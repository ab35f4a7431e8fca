"""The reward and episode-end model (docs/world-model.md): its targets from recordings, its training path (tiny, on
synthetic episodes whose rewards and end are drawn on the frames), saving and loading, and the
environment's reward and `terminated` from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from magi.world.atari import load_rewards
from magi.world.reward import (Episode, RewardEndConfig, RewardEndModel, score_reward_model, train_reward_model,
                               windows)


def synthetic_episode(seed: int, length: int = 120, end: bool = True) -> Episode:
    """Noise frames; a reward of +1 (a white bar in the top rows) or -1 (a bar lower in them) appears on the
    frames that score it, and the last frame of an ending episode turns its top rows red."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(length, 3, 64, 64), dtype=np.uint8)
    rewards = np.zeros(length, np.float32)
    hits = rng.choice(np.arange(4, length - 4), size=min(8, length - 8), replace=False)
    rewards[hits] = rng.choice([-1.0, 1.0], size=len(hits))
    for t in hits:
        rows = slice(0, 3) if rewards[t] > 0 else slice(4, 7)
        frames[t, :, rows, 8:40] = 255
    terminals = np.zeros(length, bool)
    if end:
        terminals[-1] = True
        frames[-1, 0, :8] = 255
    actions = rng.integers(0, 18, size=length)
    actions[-1] = -1
    return Episode(frames, actions, rewards, terminals, f"synthetic_{seed}")


def test_windows_pad_before_the_start_and_carry_the_actions_between_frames():
    e = synthetic_episode(0, length=10)
    x, a = windows(e, np.array([0, 5]), 4)
    assert x.shape == (2, 4, 3, 64, 64) and a.shape == (2, 3)
    assert (x[0] == e.frames[0]).all() and (a[0] == -1).all()
    assert np.array_equal(x[1], e.frames[2:6]) and np.array_equal(a[1], e.actions[2:5])


def test_training_learns_the_rewards_and_the_end_and_loads_back(tmp_path):
    torch.manual_seed(0)
    train = [synthetic_episode(s) for s in range(4)]
    val = [synthetic_episode(10)]
    model, log = train_reward_model(train, val, steps=80, batch=16, lr=2e-3, blur=0.0, progress=False,
                                    config=RewardEndConfig(frames=2, width=8, reward_values=[-1.0, 0.0, 1.0]))
    assert np.mean(log["loss"][-10:]) < 0.5 * np.mean(log["loss"][:10])
    held = [synthetic_episode(20), synthetic_episode(21, end=False)]
    s = score_reward_model(model, held)
    assert s["precision"] >= 0.8 and s["recall"] >= 0.8 and s["value_right_on_found"] >= 0.8
    assert s["ends_within_tolerance"] == "1/1" and s["false_ends_in_unfinished"] == 0
    model.save_pretrained(tmp_path / "reward")
    back = RewardEndModel.from_pretrained(tmp_path / "reward")
    x, a = windows(held[0], np.arange(len(held[0].frames)), 2)
    assert all(np.array_equal(u, v) for u, v in zip(model.predict(x, a), back.predict(x, a)))
    assert back.config.reward_threshold == model.config.reward_threshold


def test_rewards_and_terminals_load_from_new_and_old_recordings(tmp_path):
    from magi.world import record_atari

    video = record_atari(tmp_path, game="Boxing", episodes=1, max_frames=12, policy="agent", progress=False)[0]
    rewards, terminals = load_rewards(video)
    meta = json.loads(video.with_suffix(".json").read_text())
    assert len(rewards) == meta["num_frames"] == 12 and rewards.dtype == np.float32
    assert meta["terminated"] is False and not terminals.any()
    del meta["terminated"]  # a recording from before the flag: game_over stands for it
    meta["game_over"] = True
    video.with_suffix(".json").write_text(json.dumps(meta))
    rewards, terminals = load_rewards(video)
    assert terminals[-1] and terminals.sum() == 1


class Always(RewardEndModel):
    """Says +2 and 'ended' on every frame: to see the env pass the model's outputs on."""

    def predict(self, frames, actions=None):
        assert frames.dtype == np.uint8 and frames.shape[1:] == (2, 3, 64, 64) and actions.shape[1:] == (1,)
        return np.full(len(frames), 2.0, np.float32), np.ones(len(frames), bool)


def test_the_env_takes_reward_and_terminated_from_the_model(tmp_path):
    from test_play import tiny_world_model

    from magi.world.env import WorldModelEnv, WorldModelVectorEnv

    model = tiny_world_model(tmp_path / "world", vae="pixels:4")
    fast = {"mask_steps": 1, "diffusion_steps": 1, "sampler": "ddim"}
    env = WorldModelEnv(model, setting=fast, reward_model=Always(RewardEndConfig(frames=2)))
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(1)
    assert reward == 2.0 and terminated and not truncated
    envs = WorldModelVectorEnv(2, core=env.core)
    envs.reset(seed=0)
    _, reward, terminated, _, _ = envs.step(np.array([1, 2]))
    assert (reward == 2.0).all() and terminated.all()
    _, reward, terminated, _, _ = envs.step(np.array([1, 2]))  # both reset at this step
    assert (reward == 0).all() and not terminated.any()
    (model / "reward").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        WorldModelEnv(model, setting=fast)  # an empty reward/ folder is an error, not silently no reward
    env.close()


def test_the_clock_path_reads_boxings_clock_from_the_ram():
    from magi.world.reward import boxing_clock

    ram = np.zeros((3, 128), np.uint8)
    ram[:, 16] = [27, 11, 11]  # minutes 1, 0, 0 in bit 4
    ram[:, 17] = [0x59, 0x01, 0x00]
    assert boxing_clock(ram).tolist() == [[1, 5, 9], [0, 0, 1], [0, 0, 0]]
    episodes = [synthetic_episode(s, length=40) for s in range(2)]
    with pytest.raises(ValueError, match="RAM"):
        train_reward_model(episodes, steps=1, progress=False, clock=True)
    for e in episodes:  # the clock counts down to 0:00 at the last frame, drawn as a bar in the top rows
        left = np.arange(len(e.frames))[::-1]
        e.ram = np.zeros((len(e.frames), 128), np.uint8)
        e.ram[:, 17] = (left // 10) << 4 | left % 10
        for t, n in enumerate(left):
            e.frames[t, :, 7, :] = 0
            e.frames[t, :, 7, :min(n, 63)] = 200
    model, log = train_reward_model(episodes, steps=40, batch=16, progress=False, clock=True, blur=0.0,
                                    config=RewardEndConfig(frames=2, width=8, reward_values=[-1.0, 0.0, 1.0],
                                                           clock=True))
    assert np.mean(log["loss"][-5:]) < np.mean(log["loss"][:5])
    assert model.config.end_delay == log["end_delay"] == 1  # the last second (0:01, 0:00) is 2 frames long here
    x, a = windows(episodes[0], np.array([0, 38]), 2)
    _, p_end = model.probabilities(x, a)  # the end call: p(the clock reads its last second)
    assert ((0 < p_end) & (p_end < 1)).all() and p_end[1] > p_end[0]


def test_the_episode_ends_a_delay_after_its_first_end_call():
    from magi.world.reward import EndLatch, end_frame

    called = np.array([0, 0, 1, 0, 1, 1, 0, 0], bool)  # later calls, or none, change nothing once called
    assert end_frame(called, 3) == 5 and end_frame(called, 0) == 2 and end_frame(called[:2], 3) is None
    assert end_frame(called[:4], 3) == 5  # past the recording's last frame
    latch = EndLatch(2, delay=3)
    ended = [latch.step(np.array([0]), called[t:t + 1])[0] for t in range(len(called))]
    assert np.flatnonzero(ended).tolist() == [5, 6, 7]  # ended, it stays ended until cleared
    latch.clear(0)
    assert not latch.step(np.array([0, 1]), np.array([True, False])).any()
    assert latch.left.tolist() == [3, -1]  # environment 1 untouched by environment 0's call
    now = EndLatch(1, delay=0)
    assert not now.step(np.array([0]), np.array([False]))[0] and now.step(np.array([0]), np.array([True]))[0]


def test_the_threshold_cuts_just_below_a_rare_events_scores():
    from magi.world.reward import _best_threshold

    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 0.99, 10_000)
    truth = np.zeros(10_000, bool)
    truth[[5, 500, 5000]] = True
    scores[[5, 500, 5000]] = [0.9995, 0.9993, 0.9991]  # three ends, barely above everything else
    th = _best_threshold(scores, truth)
    assert np.array_equal(scores > th, truth), th
    assert _best_threshold(scores, np.zeros(10_000, bool)) == 0.5


def test_blanked_boxes_are_never_read():
    torch.manual_seed(0)
    model = RewardEndModel(RewardEndConfig(frames=2, width=8, blank=[[0, 7, 0, 16], [0, 7, 48, 64]])).eval()
    x = torch.randint(0, 256, (3, 2, 3, 64, 64), dtype=torch.uint8)
    y = x.clone()
    y[..., 0:7, 0:16] = torch.randint(0, 256, y[..., 0:7, 0:16].shape, dtype=torch.uint8)  # the scores change
    y[..., 0:7, 48:64] = 0
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x, None), model(y, None)))
        y[..., 0:7, 20:30] = 255 - y[..., 0:7, 20:30]  # outside the boxes (the clock) is read
        assert not torch.equal(model(x, None)[0], model(y, None)[0])


def test_punch_counts_are_per_sequence_and_add_up():
    from magi.world.reward import punch_counts, punch_scores

    pred = np.array([[0, 0, 0, 1], [1, 0, 0, 0]], bool)
    truth = np.array([[0, 0, 1, 0], [0, 0, 0, 1]], bool)  # row 0: one frame late; row 1: a call 3 frames off
    counts = punch_counts(pred, truth)
    assert counts.tolist() == [0, 2, 2, 1, 1]  # the end of row 0 is not next to the start of row 1
    assert (punch_counts(pred[0], truth[0]) + punch_counts(pred[1], truth[1])).tolist() == counts.tolist()
    assert punch_scores(counts) == {"precision": 0.0, "recall": 0.0, "precision_within_1": 0.5, "recall_within_1": 0.5}
