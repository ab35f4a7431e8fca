"""The reward and episode-end model (docs/world-model.md; DIAMOND's RewEndModel idea, our own code): what the world model
does not draw as a number, the emulator's per-frame reward and terminal flag, predicted from the frames.

`RewardEndModel` reads the last `frames` frames (uint8, the newest last) and the actions taken between them,
and predicts the reward received on arriving at the newest frame (one of the reward values seen in
training: Boxing's -2, -1, 0, 1, 2) and whether the episode ended there. A small CNN over the frames and
their differences, a full-resolution branch over the top rows (where Atari games draw their score and
clock), and an action embedding; ~0.6M parameters, trained on the CPU in minutes (`train_reward_model`).
A Boxing round ends when its clock runs out, which a handful of episode ends cannot teach; with `clock`
the model also reads the clock's digits (minutes, tens and units of seconds; labels from the emulator RAM
of every frame, `boxing_clock`). The RAM reads 0:00 only on a round's last frame, whose screen is the
same as the 14 before it (the display stops at 0:01), so what can be seen is the clock entering its last
second: the end call is p(the clock reads 0:01 or less), and the round ends `end_delay` frames after the
first frame so called (15 at Boxing's frameskip of 4, measured on the training rounds' RAM). The end is
therefore stateful: `end_frame` for a recorded sequence, `EndLatch` for stepped environments.
Targets come from the recordings (`magi.world.atari.load_rewards`). A frame is called rewarded when
p(reward != 0) passes `reward_threshold`, and terminal when p(end) passes `end_threshold`, both chosen on
validation episodes of the training recordings (best F1), never on the held-out ones.

It lives beside a world model as `<model>/reward/` (config.json + model.safetensors), where
`magi.world.WorldModelEnv` finds it for its reward and `terminated`.

    OMP_NUM_THREADS=1 python experiments/reward_model.py --out pretrained/atari/reward --steps 2000  # record, train, score
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

REWARD_DIR = "reward"  # beside a world model's weights: <model>/reward/
CLOCK_DIGITS = (2, 6, 10)  # Boxing's clock: minutes (0-1), tens and units of seconds
LAST_SECOND = 1  # the clock reading (seconds) from which the round's end is called
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def boxing_clock(ram: np.ndarray) -> np.ndarray:
    """Boxing's clock from its RAM (T, 128) -> int (T, 3): minutes (bit 4 of byte 16), tens and units of the
    seconds (byte 17, BCD). A round runs 1:59 -> 0:00 and ends at 0:00."""
    seconds = ram[:, 17].astype(int)
    return np.stack([(ram[:, 16].astype(int) >> 4) & 1, seconds >> 4, seconds & 15], axis=1)


@dataclass
class RewardEndConfig:
    frames: int = 4  # frames read, the newest last (the actions between them: frames - 1)
    num_actions: int = 18
    reward_values: list = field(default_factory=lambda: [-2.0, -1.0, 0.0, 1.0, 2.0])
    size: int = 64
    top_rows: int = 8  # the full-resolution branch's rows (score and clock)
    width: int = 32
    reward_threshold: float = 0.5  # p(reward != 0) above which a frame is rewarded
    end_threshold: float = 0.5  # p(end) above which a frame ends the episode
    clock: bool = False  # read Boxing's clock (RAM-labelled digits); the end call is its last second
    end_delay: int = 0  # frames from the first frame called at end to the episode's end
    blank: list = field(default_factory=list)  # [row0, row1, col0, col1] boxes blanked before reading (the scores)


class RewardEndModel(nn.Module):
    def __init__(self, config: RewardEndConfig) -> None:
        super().__init__()
        self.config = c = config
        if 0.0 not in c.reward_values:
            raise ValueError(f"reward_values: 0 must be one of them, got {c.reward_values}")
        w, channels = c.width, 3 * c.frames + 3 * (c.frames - 1)  # frames and their differences
        self.frames = c.frames
        self.body = nn.Sequential(  # (B, channels, 64, 64) -> (B, 2w, 4, 4)
            nn.Conv2d(channels, w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(w, w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU())
        self.top = nn.Sequential(  # the last two frames' top rows and their difference, full resolution
            nn.Conv2d(9, w, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(w, w, 3, 2, 1), nn.SiLU())
        top_out = w * ((c.top_rows + 1) // 2) * ((c.size + 1) // 2)
        self.top_proj = nn.Linear(top_out, 64)
        self.body_proj = nn.Linear(2 * w * (c.size // 16) ** 2, 128)
        self.action = nn.Embedding(c.num_actions + 1, 8)  # index num_actions: none
        self.head = nn.Sequential(nn.Linear(128 + 64 + 8 * (c.frames - 1), 128), nn.SiLU(),
                                  nn.Linear(128, len(c.reward_values) + 1))
        self.clock = nn.Sequential(nn.Linear(64 + 128, 64), nn.SiLU(), nn.Linear(64, sum(CLOCK_DIGITS))) \
            if c.clock else None
        self.zero = c.reward_values.index(0.0)

    def forward(self, frames: torch.Tensor, actions: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """frames uint8 (B, F, 3, H, W), actions long (B, F-1) (taken between them; -1 for none) ->
        reward logits (B, len(reward_values)), end logit (B,)."""
        B, Fr = frames.shape[:2]
        if Fr != self.frames:
            raise ValueError(f"frames: expected {self.frames} frames, got {Fr}")
        x = frames.float() / 127.5 - 1  # (B, F, 3, H, W)
        if self.config.blank:  # the scores unseen: rewards read from what a landed punch does to the boxers
            x = x.clone()
            for r0, r1, c0, c1 in self.config.blank:
                x[..., r0:r1, c0:c1] = 0
        diffs = x[:, 1:] - x[:, :-1]  # (B, F-1, 3, H, W)
        body = self.body(torch.cat([x.flatten(1, 2), diffs.flatten(1, 2)], dim=1))
        r = self.config.top_rows
        top = torch.cat([x[:, -2, :, :r], x[:, -1, :, :r], diffs[:, -1, :, :r]], dim=1)  # (B, 9, r, W)
        top = self.top(top)
        if actions is None:
            actions = torch.full((B, Fr - 1), -1, dtype=torch.long, device=frames.device)
        a = torch.where(actions < 0, torch.full_like(actions, self.config.num_actions), actions)
        seen = torch.cat([F.silu(self.body_proj(body.flatten(1))), F.silu(self.top_proj(top.flatten(1)))], dim=1)
        out = self.head(torch.cat([seen, self.action(a).flatten(1)], dim=1))
        self._clock_logits = self.clock(seen) if self.clock is not None else None  # (B, 18): read by training
        end = out[:, -1]
        if self.clock is not None:  # log p(the clock reads 0:01 or less: its last second), as a logit
            minutes, tens, units = (part.log_softmax(-1) for part in self._clock_logits.split(CLOCK_DIGITS, dim=-1))
            logp = minutes[:, 0] + tens[:, 0] + torch.logsumexp(units[:, :LAST_SECOND + 1], dim=-1)
            p = logp.exp().clamp(1e-6, 1 - 1e-6)
            end = torch.log(p) - torch.log1p(-p)
        return out[:, :-1], end

    @torch.no_grad()
    def probabilities(self, frames, actions=None) -> tuple[np.ndarray, np.ndarray]:
        """(p(reward value) (B, K), p(end) (B,)) for uint8 frames (B, F, 3, H, W) and actions (B, F-1)."""
        device = next(self.parameters()).device
        frames = torch.as_tensor(np.asarray(frames), device=device)
        actions = None if actions is None else torch.as_tensor(np.asarray(actions), dtype=torch.long, device=device)
        logits, end = self(frames, actions)
        return logits.softmax(-1).cpu().numpy(), torch.sigmoid(end).cpu().numpy()

    def decide(self, p_reward: np.ndarray, p_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The reward (B,) and the end call (B,) from the probabilities, at the model's thresholds. The
        episode ends `config.end_delay` frames after its first end call (`end_frame`, `EndLatch`)."""
        c = self.config
        values = np.asarray(c.reward_values, np.float32)
        nonzero = p_reward.copy()
        nonzero[:, self.zero] = -1
        rewarded = (1 - p_reward[:, self.zero]) > c.reward_threshold
        reward = np.where(rewarded, values[nonzero.argmax(-1)], 0.0).astype(np.float32)
        return reward, p_end > c.end_threshold

    def predict(self, frames, actions=None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 frames (B, F, 3, H, W) (newest last), actions (B, F-1) -> reward (B,) float32, end call (B,) bool."""
        return self.decide(*self.probabilities(frames, actions))

    def save_pretrained(self, directory: str | Path, extra: Optional[dict] = None) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps({**asdict(self.config), **(extra or {})}, indent=1) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_FILE))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> "RewardEndModel":
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{directory / CONFIG_FILE}: not found (a reward/end model folder has "
                                    f"{CONFIG_FILE} and {WEIGHTS_FILE})")
        raw = json.loads((directory / CONFIG_FILE).read_text())
        known = RewardEndConfig.__dataclass_fields__
        model = cls(RewardEndConfig(**{k: v for k, v in raw.items() if k in known}))
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return model.to(device).eval()


def end_frame(called: np.ndarray, delay: int) -> Optional[int]:
    """The frame a recorded sequence ends at: `delay` frames after its first end call (None: never called;
    it may lie past the sequence's last frame)."""
    hits = np.flatnonzero(called)
    return int(hits[0]) + delay if len(hits) else None


class EndLatch:
    """The end rule for B stepped environments: an environment's first end call starts a count of
    `delay` frames, at whose last it terminates (with delay 0: at the call), whatever later frames are
    called, and stays terminated until `clear` starts it afresh."""

    def __init__(self, num_envs: int, delay: int) -> None:
        self.delay = delay
        self.left = np.full(num_envs, -1, np.int64)  # frames until the end; -1: not called yet

    def clear(self, i) -> None:
        self.left[i] = -1

    def step(self, rows: np.ndarray, called: np.ndarray) -> np.ndarray:
        """One frame for the environments `rows` with their end calls (n,) bool -> terminated (n,) bool."""
        left = self.left[rows]
        left = np.where(left > 0, left - 1, left)  # a count already running goes on
        left = np.where((left < 0) & called, self.delay, left)  # a first call starts it
        self.left[rows] = left
        return left == 0


def in_last_second(ram: np.ndarray) -> np.ndarray:
    """Whether Boxing's clock reads its last second (0:01 or less) at each frame: RAM (T, 128) -> bool (T,)."""
    clock = boxing_clock(ram)
    return (clock[:, 0] == 0) & (clock[:, 1] == 0) & (clock[:, 2] <= LAST_SECOND)


def last_second_delay(episodes: Sequence[Episode]) -> int:
    """Frames from the clock's last second (RAM: 0:01 or less) to the episode's end, the median over the
    episodes that end by the clock (0 when none does)."""
    delays = []
    for e in episodes:
        ends = np.flatnonzero(e.terminals)
        if e.ram is None or not len(ends):
            continue
        last = in_last_second(e.ram[:ends[0] + 1])
        if last[-1]:
            start = len(last) - 1
            while start > 0 and last[start - 1]:
                start -= 1
            delays.append(len(last) - 1 - start)
    return int(np.median(delays)) if delays else 0


# --------------------------------------------------------------------------------------------------
# Data: recorded episodes


@dataclass
class Episode:
    frames: np.ndarray  # uint8 (T, 3, H, W)
    actions: np.ndarray  # int64 (T,): taken at frame t (-1 after the last)
    rewards: np.ndarray  # float32 (T,): received on arriving at frame t
    terminals: np.ndarray  # bool (T,)
    path: str = ""
    ram: Optional[np.ndarray] = None  # uint8 (T, 128) when recorded


def load_episode(video) -> Episode:
    """A recorded episode with its labels as its frames show them (`magi.world.atari.as_shown`): in the
    "hud_lag" layout a punch's reward and the clock's reading move to the frame after, where the strip
    draws them, so the model reads them off that frame and a world-model env pays a reward one step late."""
    from magi.data.decode import read_all_frames
    from magi.world.atari import as_shown, load_actions, load_ram, load_rewards, recorded_layout

    frames = read_all_frames(video).numpy()
    layout = recorded_layout(video)
    rewards, terminals = load_rewards(video)
    rewards = as_shown(rewards, layout)
    actions = load_actions(video)
    try:
        ram = as_shown(load_ram(video), layout)
    except FileNotFoundError:
        ram = None
    T = min(len(frames), len(rewards), len(actions), len(ram) if ram is not None else len(frames))
    return Episode(frames[:T], actions[:T], rewards[:T], terminals[:T], str(video), None if ram is None else ram[:T])


def windows(episode: Episode, ts: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's inputs at frames `ts`: uint8 (N, frames, 3, H, W) ending at t (frame 0 repeated before
    an episode's start) and the actions taken between them (N, frames - 1) (-1 before the start)."""
    offsets = np.arange(-(frames - 1), 1)
    idx = ts[:, None] + offsets[None]  # (N, frames)
    x = episode.frames[np.clip(idx, 0, None)]
    acts = np.where(idx[:, :-1] >= 0, episode.actions[np.clip(idx[:, :-1], 0, None)], -1)
    return x, acts


def _blur(x: torch.Tensor) -> torch.Tensor:
    """A cheap stand-in for the tokenizer's blur: area-halve and bilinear back, uint8 (..., 3, H, W)."""
    shape = x.shape
    y = x.reshape(-1, *shape[-3:]).float()
    y = F.interpolate(F.avg_pool2d(y, 2), scale_factor=2, mode="bilinear", align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).reshape(shape)


def _predict_episode(model: RewardEndModel, episode: Episode, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """p(reward value) (T, K) and p(end) (T,) at every frame of an episode (frame 0 included)."""
    ps, es = [], []
    for s in range(0, len(episode.frames), batch):
        ts = np.arange(s, min(s + batch, len(episode.frames)))
        x, a = windows(episode, ts, model.frames)
        p, e = model.probabilities(x, a)
        ps.append(p)
        es.append(e)
    return np.concatenate(ps), np.concatenate(es)


def _best_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold on `scores` with the best F1 against the bool `truth` (0.5 when there are no positives),
    over every cut between two distinct scores: a rare event (an episode end: a handful of frames in
    thousands) needs the cut just below its own scores, which a grid of quantiles steps over."""
    if not truth.any():
        return 0.5
    order = np.argsort(-scores, kind="stable")
    s, hits = scores[order], truth[order]
    tp = np.cumsum(hits)  # predicting the top i + 1 scores
    f1 = 2 * tp / (np.arange(1, len(s) + 1) + truth.sum())
    last = np.r_[s[1:] < s[:-1], True]  # a cut can only fall between distinct scores
    i = int(np.argmax(np.where(last, f1, -1.0)))
    return float((s[i] + s[i + 1]) / 2) if i + 1 < len(s) else float(s[i]) - 1e-12


def train_reward_model(train: Sequence[Episode], val: Sequence[Episode] = (), steps: int = 1500, batch: int = 32,
                       lr: float = 1e-3, seed: int = 0, config: Optional[RewardEndConfig] = None,
                       blur: float = 0.5, progress: bool = True, log_every: int = 100,
                       clock: bool = False, clock_weight: float = 0.5, blank: Sequence = (),
                       decay: bool = False) -> tuple[RewardEndModel, dict]:
    """Train on recorded episodes: half of each batch drawn from the frames with a reward or an end, half
    uniform; `blur` of the samples pass a 2x area blur (frames drawn by the world model come through its
    tokenizer, which blurs); AdamW at a constant lr (`decay`: cosine to 5%, which fitted the training
    events tighter and scored worse on held-out episodes). With `clock`, the clock's digits
    (RAM labels, `clock_weight`) instead of an end head, the end call set on the clock's last second and
    `end_delay` measured on `train`; `blank` boxes [row0, row1, col0, col1] (the scores) are blanked, so
    that rewards are read from the boxers. Thresholds are set on `val` (best F1; 0.5 without validation episodes).
    Returns the model (eval mode) and a log {"loss": [...], "seconds", ...}."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    values = sorted({float(v) for e in train for v in np.unique(e.rewards)} | {0.0})
    c = config or RewardEndConfig(reward_values=values, clock=clock, blank=[list(b) for b in blank])
    if c.clock and any(e.ram is None for e in [*train, *val]):
        raise ValueError("train_reward_model: clock=True reads the clock's labels from the RAM; an episode has none")
    if c.clock:
        c.end_delay = last_second_delay(train)
    model = RewardEndModel(c)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(  # cosine to 5% of lr (`decay`); constant measured better
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(s, steps) / max(steps, 1))) if decay else 1.0)
    value_index = {v: i for i, v in enumerate(c.reward_values)}
    events = [(i, t) for i, e in enumerate(train) for t in np.flatnonzero((e.rewards != 0) | e.terminals)]
    ends = [(i, t) for i, e in enumerate(train) for t in np.flatnonzero(e.terminals)]
    lengths = np.array([len(e.frames) for e in train])
    log = {"loss": [], "steps": steps, "batch": batch, "lr": lr, "events": len(events), "ends": len(ends),
           "frames": int(lengths.sum())}
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        picks = []
        n_event = batch // 2 if events else 0
        for j in rng.integers(len(events), size=n_event) if n_event else []:
            picks.append(events[j])
        if ends:  # ends are rare: a few in every batch
            picks += [ends[j] for j in rng.integers(len(ends), size=max(1, batch // 16))]
        while len(picks) < batch:
            i = int(rng.choice(len(train), p=lengths / lengths.sum()))
            picks.append((i, int(rng.integers(lengths[i]))))
        xs, acts, rew, end, clock = [], [], [], [], []
        for i, t in picks:
            x, a = windows(train[i], np.array([t]), c.frames)
            xs.append(x[0])
            acts.append(a[0])
            rew.append(value_index.get(float(train[i].rewards[t]), value_index[0.0]))
            end.append(float(train[i].terminals[t]))
            if c.clock:
                clock.append(boxing_clock(train[i].ram[t:t + 1])[0])
        x = torch.from_numpy(np.stack(xs))
        if blur > 0:
            chosen = torch.from_numpy(rng.random(len(x)) < blur)
            if chosen.any():
                x[chosen] = _blur(x[chosen])
        logits, end_logit = model(x, torch.from_numpy(np.stack(acts)))
        loss = F.cross_entropy(logits, torch.tensor(rew))
        if c.clock:  # the clock's digits; the end follows from them
            target = torch.from_numpy(np.stack(clock))
            loss = loss + clock_weight * sum(F.cross_entropy(part, target[:, j]) for j, part in
                              enumerate(model._clock_logits.split(CLOCK_DIGITS, dim=-1)))
        else:
            loss = loss + F.binary_cross_entropy_with_logits(end_logit, torch.tensor(end))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        log["loss"].append(round(loss.item(), 5))
        if progress and (step % log_every == 0 or step == steps - 1):
            print(f"step {step}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    log["seconds"] = round(time.perf_counter() - start, 1)
    if val:
        p_nonzero, p_end, truth_r, truth_e = [], [], [], []
        for e in val:
            p, pe = _predict_episode(model, e)
            p_nonzero.append(1 - p[:, model.zero])
            p_end.append(pe)
            truth_r.append(e.rewards != 0)
            truth_e.append(in_last_second(e.ram) if c.clock else e.terminals)  # the end call's truth
        c.reward_threshold = _best_threshold(np.concatenate(p_nonzero), np.concatenate(truth_r))
        c.end_threshold = _best_threshold(np.concatenate(p_end), np.concatenate(truth_e))
    log["thresholds"] = {"reward": c.reward_threshold, "end": c.end_threshold}
    log["end_delay"] = c.end_delay
    return model, log


def punch_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Frames called rewarded (`pred`) against the rewarded ones (`truth`), bool (..., T), each row one
    sequence -> int [hits, false calls, misses, calls within +-1 frame of a rewarded one, rewarded frames
    within +-1 frame of a call]; sums over sequences add up (`punch_scores`)."""
    def near(a: np.ndarray) -> np.ndarray:  # the frame or one next to it, along the last axis
        padded = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(1, 1)])
        return a | padded[..., :-2] | padded[..., 2:]

    return np.array([(pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum(),
                     (pred & near(truth)).sum(), (truth & near(pred)).sum()], np.int64)


def punch_scores(counts: np.ndarray) -> dict:
    """Precision and recall, exact and within +-1 frame, from `punch_counts`."""
    tp, fp, fn, tp1, found1 = (int(v) for v in counts)
    return {"precision": round(tp / max(tp + fp, 1), 3), "recall": round(tp / max(tp + fn, 1), 3),
            "precision_within_1": round(tp1 / max(tp + fp, 1), 3), "recall_within_1": round(found1 / max(tp + fn, 1), 3)}


def score_reward_model(model: RewardEndModel, episodes: Sequence[Episode], tolerance: int = 5) -> dict:
    """Against the emulator on `episodes`: precision and recall of landed punches (frames with a nonzero
    reward; exact frame, and within +-1 frame), the predicted value's accuracy on the frames found, the
    predicted return against the true one, and episode ends: an episode's predicted end is `end_delay`
    frames after its first end call (`end_frame`); it is right when within `tolerance` frames of the true
    end (or when neither ends)."""
    counts = np.zeros(5, np.int64)
    exact_value = 0
    ends = []
    returns = []
    for e in episodes:
        p, pe = _predict_episode(model, e)
        reward, end = model.decide(p, pe)
        truth = e.rewards != 0
        counts += punch_counts(reward != 0, truth)
        exact_value += int(((reward == e.rewards) & truth).sum())
        first = end_frame(end, model.config.end_delay)
        true_end = int(np.flatnonzero(e.terminals)[0]) if e.terminals.any() else None
        if true_end is None and first is not None and first >= len(e.frames):
            first = None  # an unfinished recording ending after its last frame: not a false end
        ok = (first is None) if true_end is None else (first is not None and abs(first - true_end) <= tolerance)
        ends.append({"episode": Path(e.path).name, "true_end": true_end, "predicted_end": first, "within": ok,
                     "end_calls": int(end.sum())})
        returns.append({"episode": Path(e.path).name, "true": float(e.rewards.sum()), "predicted": float(reward.sum())})
    terminated = [x for x in ends if x["true_end"] is not None]
    tp, fn = int(counts[0]), int(counts[2])
    return {
        "episodes": len(episodes), "frames": int(sum(len(e.frames) for e in episodes)), "punches": tp + fn,
        **punch_scores(counts), "value_right_on_found": round(exact_value / max(tp, 1), 3),
        "ends_within_tolerance": f"{sum(x['within'] for x in terminated)}/{len(terminated)}",
        "false_ends_in_unfinished": sum(x["predicted_end"] is not None for x in ends if x["true_end"] is None),
        "tolerance": tolerance, "ends": ends, "returns": returns}
