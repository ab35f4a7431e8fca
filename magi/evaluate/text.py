"""Does a generated video show what its caption says? Caption accuracy on captioned moving digits.

A text-to-video model trained on `CaptionedDigits` is asked for "the digit 3 is moving up then down";
the `CaptionScorer` reads the video and says whether the digit(s) and each digit's motion are the ones
named. It is a small convolutional network trained on *real* clips of the dataset (every caption,
training digit images, softened and noisy copies so generated frames are read too), and it reports
its own accuracy on real clips it never saw (test digit images, a fresh seed): if it cannot read
real clips, a generator's caption accuracy means nothing.

What it reads, for one or two digits alike: which digit classes are present (10 independent yes/no,
so a video with a third or a missing digit is wrong), and for each class the motion it would have
(4-way). A caption is matched on "digit" when exactly its digits are present, on "motion" when each
named digit's motion is the named one, and on "both" when both hold. `summarize` splits accuracies
by seen / held-out captions (the compositional test of `HELD_OUT_PAIRS`) and one / two digits.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from magi.data.builtin import MOTIONS, CaptionedDigits, caption_for, is_held_out, parse_caption

NUM_CLASSES = 10
FORMAT = "magi-caption-scorer"
WEIGHTS, CONFIG = "scorer.safetensors", "scorer.json"


class _ScorerNet(nn.Module):
    """Clip -> per-class presence logits (B, 10) and per-class motion logits (B, 10, 4).

    The same small convolutional net reads every frame into features on a grid, translation-invariant,
    so a digit is learnt once rather than once per place. Presence: a linear classifier on each
    frame's features' maximum over the grid (is there a 3 anywhere in it?), averaged over the frames
    (a digit must stay itself; every frame teaches). Motion: the same classifier applied at
    every cell gives a map of each class's evidence (a class activation map); per frame, its
    evidence-weighted mean position (a spatial soft-argmax) is where that digit is, and the class's
    trajectory, (B, 10, T, 2), goes through an MLP shared by all classes. So which digit moves how is
    bound by construction, two digits included, and a clip's frame order ("up then down" against
    "down then up") is kept. Sized to train on one CPU thread: `magi eval text`'s 3,000 steps at 16 px take
    about a quarter of an hour.
    """

    def __init__(self, num_frames: int, work_size: int = 32, width: int = 64, hidden: int = 64) -> None:
        super().__init__()
        if work_size % 4:
            raise ValueError(f"CaptionScorer.work_size: expected a multiple of 4, got {work_size}")
        self.frame = nn.Sequential(  # receptive field 30 px at the working size: a whole (half-canvas) digit
            nn.Conv2d(1, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width // 2, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.BatchNorm2d(width), nn.ReLU(),
        )
        self.classes = nn.Linear(width, NUM_CLASSES)
        grid = (torch.arange(work_size // 4) + 0.5) / (work_size // 4) * 2 - 1  # cell centres in [-1, 1]
        self.register_buffer("grid", grid, persistent=False)
        self.motion = nn.Sequential(nn.Linear(num_frames * 2, hidden), nn.ReLU(), nn.Linear(hidden, len(MOTIONS)))

    def forward(self, ink: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, H, W = ink.shape  # ink in [0, 1] at the working size
        f = self.frame(ink.reshape(B * T, 1, H, W))  # per frame: (B*T, C, h, w)
        h, w = f.shape[-2:]
        f = f.view(B, T, -1, h, w).movedim(2, -1)  # (B, T, h, w, C)
        presence = self.classes(f.flatten(2, 3).amax(2)).mean(1)  # per frame, then averaged: (B, 10)
        evidence = self.classes(f).flatten(2, 3)  # per cell: (B, T, h*w, 10)
        weights = torch.softmax(evidence, 2).view(B, T, h, w, NUM_CLASSES)
        y_pos = torch.einsum("bthwk,h->bkt", weights, self.grid)  # (B, 10, T)
        x_pos = torch.einsum("bthwk,w->bkt", weights, self.grid)  # (B, 10, T)
        path = torch.stack([y_pos, x_pos], -1).flatten(2)  # each class's trajectory: (B, 10, T*2)
        return presence, self.motion(path)  # (B, 10), (B, 10, 4)


class CaptionScorer:
    """Reads captioned-digit videos: `score(videos, captions)`, `read(videos)`, `save(dir)` / `load(dir)`.

    Build one with `train_scorer` (or `CaptionScorer.load`). `config` holds the data it reads
    (size, num_frames, digit_size, speed, interval) and the network's sizes; `report` its accuracy on
    real held-out clips, measured when it was trained.
    """

    def __init__(self, config: dict, report: dict | None = None, net: _ScorerNet | None = None) -> None:
        self.config = dict(config)
        self.report = dict(report or {})
        self.net = net if net is not None else _ScorerNet(
            self.config["num_frames"], self.config["work_size"], self.config["width"], self.config["hidden"])
        self.net.eval()

    # ---- reading videos
    def _ink(self, videos) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) or float (B, T, 3, H, W) in [-1, 1], numpy or torch -> float (B, T, w, w)
        ink in [0, 1] at the working size w (gray: the channel mean)."""
        x = torch.as_tensor(np.asarray(videos) if isinstance(videos, np.ndarray) else videos)
        if x.ndim != 5:
            raise ValueError(f"CaptionScorer: expected videos (B, T, H, W, 3) uint8 or (B, T, 3, H, W) float, "
                             f"got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            if x.shape[-1] != 3:
                raise ValueError(f"CaptionScorer: uint8 videos are (B, T, H, W, 3), got shape {tuple(x.shape)}")
            ink = x.float().mean(-1) / 255.0  # (B, T, H, W)
        else:
            if x.shape[2] != 3:
                raise ValueError(f"CaptionScorer: float videos are (B, T, 3, H, W) in [-1, 1], got shape {tuple(x.shape)}")
            ink = (x.float().mean(2) + 1) / 2  # (B, T, H, W)
        B, T, H, W = ink.shape
        if T != self.config["num_frames"]:
            raise ValueError(f"CaptionScorer: this scorer reads {self.config['num_frames']}-frame clips, got {T} frames")
        w = self.config["work_size"]
        if (H, W) != (w, w):
            ink = F.interpolate(ink.reshape(B * T, 1, H, W), size=(w, w), mode="area").reshape(B, T, w, w)
        return ink.clamp(0, 1).to(next(self.net.parameters()).device)

    @torch.no_grad()
    def predict(self, videos, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(presence probabilities (B, 10), motion probabilities (B, 10, 4)) per video."""
        presence, motion = [], []
        for start in range(0, len(videos), batch_size):
            p, m = self.net(self._ink(videos[start:start + batch_size]))
            presence.append(torch.sigmoid(p).cpu())
            motion.append(torch.softmax(m, -1).cpu())
        return torch.cat(presence).numpy(), torch.cat(motion).numpy()

    def read(self, videos, batch_size: int = 256) -> list[str | None]:
        """The caption the scorer reads in each video (digits in ascending order), or None when it sees
        no digit or more than two."""
        presence, motion = self.predict(videos, batch_size)
        out: list[str | None] = []
        for p, m in zip(presence, motion):
            digits = np.flatnonzero(p > 0.5)
            out.append(caption_for([(d, int(m[d].argmax())) for d in digits]) if 1 <= len(digits) <= 2 else None)
        return out

    def score(self, videos, captions: Sequence[str], batch_size: int = 256) -> dict[str, np.ndarray]:
        """Per video, does it show its caption? Returns per-sample arrays: `digit` (exactly the named
        digits are present), `digit_likeliest` (the named digits are the ones the scorer finds likeliest,
        without its presence threshold), `motion` (each named digit moves as named), `both`, plus `held_out` (the
        caption holds a held-out pair) and `num_digits` (1 or 2), which `summarize` groups by.
        Captions outside the grammar raise ValueError naming them."""
        if len(videos) != len(captions):
            raise ValueError(f"CaptionScorer.score: {len(videos)} videos but {len(captions)} captions")
        pairs = [parse_caption(c) for c in captions]
        presence, motion = self.predict(videos, batch_size)
        named = np.zeros((len(pairs), NUM_CLASSES), bool)  # (B, 10)
        for i, p in enumerate(pairs):
            named[i, [d for d, _ in p]] = True
        digit = ((presence > 0.5) == named).all(1)
        # softer: the k digits the scorer finds likeliest are the k named ones (no presence threshold), so
        # a model that draws faint or partial digits early in training still registers
        top = np.argsort(-presence, axis=1)  # (B, 10) digits by likelihood
        likeliest = np.array([set(top[i, :len(p)].tolist()) == {d for d, _ in p} for i, p in enumerate(pairs)], bool)
        read = motion.argmax(-1)  # (B, 10) the motion read for each class
        moves = np.array([all(read[i, d] == m for d, m in p) for i, p in enumerate(pairs)], bool)
        # the axis alone (MOTIONS come in pairs per axis: up/down first, then left/right): a model that
        # hears which words but not their order draws the right axis in the wrong direction
        axis = np.array([all(read[i, d] // 2 == m // 2 for d, m in p) for i, p in enumerate(pairs)], bool)
        return {"digit": digit, "digit_likeliest": likeliest, "motion": moves, "motion_axis": axis,
                "both": digit & moves,
                "held_out": np.array([is_held_out(p) for p in pairs], bool),
                "num_digits": np.array([len(p) for p in pairs], np.int64)}

    # ---- files: safetensors weights + a JSON config, no pickles
    def save(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
                  str(directory / WEIGHTS))
        (directory / CONFIG).write_text(json.dumps(
            {"format": FORMAT, "version": 1, "config": self.config, "report": self.report}, indent=1))
        return directory

    @classmethod
    def load(cls, directory, device: str | torch.device = "cpu") -> "CaptionScorer":
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
            raise FileNotFoundError(f"CaptionScorer.load: expected {CONFIG} and {WEIGHTS} in {directory}")
        meta = json.loads((directory / CONFIG).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"CaptionScorer.load: {directory / CONFIG} is not a caption scorer "
                             f"(format {meta.get('format')!r})")
        scorer = cls(meta["config"], meta.get("report"))
        scorer.net.load_state_dict(load_file(str(directory / WEIGHTS)))
        scorer.net.to(device)
        return scorer


def summarize(results: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Accuracies from `CaptionScorer.score`'s results, overall and split by caption kind: groups "all",
    "seen", "heldout", "one", "two", "seen/one", "seen/two", "heldout/one", "heldout/two" (empty groups
    left out), each {"n", "digit", "digit_likeliest", "motion", "motion_axis", "both"} (shares in [0, 1])."""
    held, count = np.asarray(results["held_out"], bool), np.asarray(results["num_digits"])
    masks = {"all": np.ones_like(held)}
    for name, m in (("seen", ~held), ("heldout", held)):
        masks[name] = m
    for name, m in (("one", count == 1), ("two", count == 2)):
        masks[name] = m
    for caption_kind in ("seen", "heldout"):
        for digits in ("one", "two"):
            masks[f"{caption_kind}/{digits}"] = masks[caption_kind] & masks[digits]
    keys = [k for k in ("digit", "digit_likeliest", "motion", "motion_axis", "both") if k in results]
    return {name: {"n": int(m.sum()), **{k: float(np.asarray(results[k])[m].mean()) for k in keys}}
            for name, m in masks.items() if m.any()}


def real_clips(split: str, num_videos: int, seed: int, **data) -> tuple[torch.Tensor, list[str]]:
    """Real `CaptionedDigits` clips and their captions: float (N, T, 3, S, S) in [-1, 1] and N strings."""
    ds = CaptionedDigits(num_videos=num_videos, split=split, seed=seed, cache=False, **data)
    items = [ds[i] for i in range(num_videos)]
    return torch.stack([it["video"] for it in items]), [it["caption"] for it in items]


def _augment(ink: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Softened, dimmed and noisy copies of crisp clips (B, T, H, W) in [0, 1], so that generated
    frames, softer and noisier than renderings, are read as well as real ones."""
    B = ink.shape[0]
    soft = F.avg_pool2d(F.pad(ink, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # (B, T, H, W)
    mix = torch.rand(B, 1, 1, 1, generator=g)
    gain = 0.6 + 0.4 * torch.rand(B, 1, 1, 1, generator=g)
    noise = 0.08 * torch.rand(B, 1, 1, 1, generator=g) * torch.randn(ink.shape, generator=g)
    return (gain * (mix * soft + (1 - mix) * ink) + noise).clamp(0, 1)


def _targets(pairs: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Presence (B, 10) float 0/1 and motion (B, 10) int64 targets (-100, ignored, for absent digits)."""
    presence = torch.zeros(len(pairs), NUM_CLASSES)
    motion = torch.full((len(pairs), NUM_CLASSES), -100, dtype=torch.long)
    for i, p in enumerate(pairs):
        for d, m in p:
            presence[i, d], motion[i, d] = 1.0, m
    return presence, motion


def train_scorer(
    size: int = 32,
    num_frames: int = 8,
    digit_size: int | None = None,
    speed: float | None = None,
    interval: int = 1,
    steps: int = 500,
    batch_size: int = 64,
    lr: float = 3e-3,
    two_digit_share: float = 0.5,
    augment: bool = True,
    work_size: int | None = None,
    width: int = 64,
    hidden: int = 64,
    eval_videos: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> CaptionScorer:
    """Train a `CaptionScorer` on real `CaptionedDigits` clips of the given data options, then measure it.

    Training clips: every caption (split "scorer": held-out pairs included, or the scorer could not
    read them), training digit images, `two_digit_share` of them two-digit, `steps * batch_size` fresh
    clips (each seen once). Measured on `eval_videos` clips each of the "seen" and "heldout" splits
    (test digit images, seed + 1): `scorer.report` holds `summarize`'s groups for the real clips' true
    captions, and training time and loss. Data options must match the videos it will score.
    """
    from tqdm.auto import tqdm

    data = {"num_frames": num_frames, "size": size, "digit_size": digit_size, "speed": speed, "interval": interval}
    train = CaptionedDigits(num_videos=steps * batch_size, split="scorer", two_digit_share=two_digit_share,
                            seed=seed, cache=False, **data)
    data.update(digit_size=train.digit_size, speed=train.speed)  # the resolved defaults
    # the clips' own size by default: upsampled 16-px clips cost 4x and read no better (measured: 16-px
    # clips, width 64, 3,000 steps at work size 16 read real one-digit clips at 97.5-97.9% likeliest digit,
    # where width 32 at work size 32 after 1,500 steps read 90.7% strict)
    config = {**data, "work_size": work_size or size, "width": width, "hidden": hidden}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        scorer = CaptionScorer(config)
    net = scorer.net.train()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    # Constant, then a linear decay over the last 30% (a short warm-up-and-anneal cycle learns the
    # digits far more slowly at these step counts).
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, max(0.05, (steps - k) / (0.3 * steps))))
    started, losses = time.perf_counter(), []
    for step in tqdm(range(steps), desc="training the caption scorer", disable=not progress):
        items = [train[i] for i in range(step * batch_size, (step + 1) * batch_size)]
        ink = scorer._ink(torch.stack([it["video"] for it in items]))  # (B, T, w, w)
        if augment:
            ink = _augment(ink, g)
        presence, motion = _targets([it["pairs"] for it in items])
        p_logits, m_logits = net(ink)
        loss = (F.binary_cross_entropy_with_logits(p_logits, presence)
                + F.cross_entropy(m_logits.reshape(-1, len(MOTIONS)), motion.reshape(-1), ignore_index=-100))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay.step()
        losses.append(loss.item())
    net.eval()
    seconds = time.perf_counter() - started
    merged: dict[str, list] = {}
    for split in ("seen", "heldout"):
        videos, captions = real_clips(split, eval_videos, seed + 1, two_digit_share=two_digit_share,
                                      **{k: data[k] for k in ("num_frames", "size", "digit_size", "speed", "interval")})
        for key, value in scorer.score(videos, captions).items():
            merged.setdefault(key, []).append(value)
    scorer.report = {"real_clips": summarize({k: np.concatenate(v) for k, v in merged.items()}),
                     "eval_videos_per_split": eval_videos, "eval_seed": seed + 1, "steps": steps,
                     "batch_size": batch_size, "seed": seed, "train_seconds": round(seconds, 1),
                     "final_loss": float(np.mean(losses[-50:]))}
    return scorer


__all__ = ["CaptionScorer", "train_scorer", "summarize", "real_clips"]
