"""What a world model is beyond `Magi` itself (docs/design.md §6, §8):

- `atari`: the emulator (`atari_env`), recordings (`record_atari`, `load_actions`, `load_ram`) and the
  `atari` dataset that `magi.data.build_dataset("atari", ...)` builds;
- `policies`: who presses the keys in recordings (sticky, the scripted agents, mixes);
- `tokenizer`: the frame tokenizer (a small AutoencoderKL trained on recordings; `magi tokenizer`);
- `detect`: sprite detectors (where the player and the opponent are in a frame), checked against the RAM;
- `evaluate`: the world model measured against the emulator (`magi eval world-model`);
- `stream_check`: a long stream as `magi play` runs it, the sprites counted and each frame timed;
- `reward`: the reward and episode-end model (`RewardEndModel`, beside a world model in `<model>/reward/`);
- `score`: a digit reader for Boxing's score (`ScoreReader`: is the score legible through the tokenizer?);
- `env`: the world model as a Gymnasium environment (`WorldModelEnv`, `WorldModelVectorEnv`), registered
  as `magi/Boxing-v0` on import.

`magi/play/` is the app on top. `tokenizer`, `evaluate` and `stream_check` are imported on use
(`from magi.world.tokenizer import ...`): they pull in diffusers and the model, which recording does not need.
"""

from magi.world.atari import ATARI_CODECS, atari, atari_env, load_actions, load_ram, load_rewards, record_atari, resize_frame
from magi.world.env import WorldModelEnv, WorldModelVectorEnv, register
from magi.world.policies import ATARI_AGENTS, ATARI_POLICIES, atari_policy

register()

__all__ = ["atari_env", "record_atari", "load_actions", "load_ram", "load_rewards", "atari", "resize_frame", "ATARI_CODECS",
           "ATARI_POLICIES", "ATARI_AGENTS", "atari_policy", "WorldModelEnv", "WorldModelVectorEnv"]
