"""The world model as a Gymnasium environment (docs/world-model.md): `magi.world.WorldModelEnv`, its vector form and the
registration, on a tiny random model and on the shipped `pretrained/atari`."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import magi.world  # noqa: F401 - registers magi/Boxing-v0
from magi.play.engine import TorchEngine
from magi.play.loop import play
from magi.world.env import WorldModelCore, WorldModelEnv, WorldModelVectorEnv
from test_play import tiny_world_model

SHIPPED = Path(__file__).resolve().parents[1] / "pretrained" / "atari"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_world_model(tmp_path_factory.mktemp("env_model"), vae="pixels:4")


@pytest.fixture(scope="module")
def core(tiny):
    core = WorldModelCore(tiny, setting={"mask_steps": 1, "diffusion_steps": 2, "sampler": "ddim"})
    yield core
    core.close()


def test_the_env_passes_gymnasiums_checker_on_a_tiny_model(core):
    env = WorldModelEnv(core=core, render_mode="rgb_array")
    check_env(env)
    assert env.action_space == gymnasium.spaces.Discrete(18)
    assert env.observation_space.shape == (64, 64, 3) and env.observation_space.dtype == np.uint8
    obs, info = env.reset(seed=3)
    assert info["emulator_seed"] >= magi.world.env.OPENING_SEED
    assert np.array_equal(env.render(), obs)


def test_registered_and_made_by_gymnasium(tiny):
    assert "magi/Boxing-v0" in gymnasium.envs.registry
    env = gymnasium.make("magi/Boxing-v0", model=tiny, setting={"mask_steps": 1, "diffusion_steps": 1,
                                                                 "sampler": "ddim"})
    obs, _ = env.reset(seed=0)
    obs2, reward, terminated, truncated, _ = env.step(1)
    assert obs2.shape == (64, 64, 3) and reward == 0.0 and not terminated and not truncated
    env.close()


def test_same_seed_same_frames_and_other_seed_other_frames(core):
    env = WorldModelEnv(core=core)

    def episode(seed: int) -> list[np.ndarray]:
        obs, _ = env.reset(seed=seed)
        return [obs] + [env.step(a)[0] for a in (1, 4, 4, 0)]

    a, b, c = episode(5), episode(5), episode(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a[1:], c[1:]))


def test_one_env_draws_the_play_loops_frames(core):
    """The env's step is the sliding window `magi play` rebuilds: the same opening, noise seed and keys give
    the play loop's frames, bit for bit."""
    env = WorldModelEnv(core=core)
    obs, info = env.reset(seed=11)
    env._generator.manual_seed(1234)  # the play loop seeds its generator with the session's seed
    keys = [3, 3, 1, 5, 0, 2]
    ours = [env.step(a)[0] for a in keys]

    k = core.k
    context = core.encode(core.opening(info["emulator_seed"])[None])  # (1, k, C, h, w)
    assert np.array_equal(obs, np.moveaxis(core.decode(context[:, -1]), 1, -1)[0])

    def player(t: int) -> int:
        return core.noop if t < k - 1 else keys[t - (k - 1)]

    frames = play(TorchEngine(core.world.ckpt), context, player, core.options, 1234)
    theirs = [np.moveaxis(next(frames).image, 0, -1) for _ in keys]
    frames.close()
    for t, (x, y) in enumerate(zip(ours, theirs)):
        assert np.array_equal(x, y), f"frame {t} differs"


def test_the_vector_env_steps_b_envs_in_one_pass_and_resets_each(core, monkeypatch):
    env = WorldModelVectorEnv(4, core=core, max_steps=3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 64, 64, 3) and obs.dtype == np.uint8 and len(set(info["emulator_seed"])) == 4
    calls = []
    step = core.step_latents
    monkeypatch.setattr(core, "step_latents", lambda *a: calls.append(a[0].shape[0]) or step(*a))
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(np.array([0, 1, 2, 3]))
    assert calls == [4, 4, 4] and truncated.all() and not terminated.any()
    seeds = info["emulator_seed"].copy()
    obs, reward, terminated, truncated, info = env.step(np.array([0, 1, 2, 3]))  # next-step autoreset
    assert calls == [4, 4, 4] and (reward == 0).all() and not truncated.any()
    assert (info["emulator_seed"] != seeds).all()
    env.close()


def test_the_vector_env_is_made_by_make_vec(tiny):
    env = gymnasium.make_vec("magi/Boxing-v0", num_envs=2, model=tiny,
                             setting={"mask_steps": 1, "diffusion_steps": 1, "sampler": "ddim"})
    obs, _ = env.reset(seed=1)
    obs, reward, terminated, truncated, _ = env.step(np.array([1, 2]))
    assert obs.shape == (2, 64, 64, 3) and reward.shape == (2,)
    env.close()


def test_the_shipped_model_passes_gymnasiums_checker():
    """~10 s on the 2-core CPU: loading, the tokenizer's openings, a few dozen frames."""
    env = gymnasium.make("magi/Boxing-v0", model=SHIPPED, render_mode="rgb_array")
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    for a in (1, 2, 3):
        obs, reward, terminated, truncated, _ = env.step(a)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and obs.std() > 10
    env.close()
