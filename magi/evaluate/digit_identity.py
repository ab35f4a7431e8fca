"""Does a generated moving digit stay the same digit? A classifier read on every frame.

PSNR barely separates a prediction that keeps its glyph from one that turns into another glyph near
the right place (results/reproduction.md): both are "ink near the right place". A digit classifier
can: "digit kept" is the share of clips whose predicted frame it reads as the same digit as the true
frame. The classifier is an RBF support-vector machine fitted on frames that `MovingDigits` renders
from the *training* digit images (crisp, and softened copies like generated frames), so on held-out
videos (test digit images) it reads images it never saw: ~91% right on true frames. One-digit videos
only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class DigitClassifier:
    """Classify the digit in each frame of one-digit `MovingDigits` videos.

    Each frame is cropped to a window around the ink's centre of mass (where the digit is, if it still
    is one) and the crop is classified. Fitting takes a second or two.
    """

    def __init__(self, size: int, digit_size: int, num_videos: int = 3000, seed: int = 0) -> None:
        from sklearn.svm import SVC

        from magi.data import MovingDigits
        from magi.video_io import to_float_video

        if not 1 <= digit_size <= size:
            raise ValueError(f"DigitClassifier.digit_size: expected 1..{size}, got {digit_size}")
        self.size, self.digit_size = size, digit_size
        data = MovingDigits(num_videos=num_videos, num_frames=1, size=size, digit_size=digit_size,
                            num_digits=1, speed=(0.0, 0.0), split="train", seed=seed, cache=False)
        frames = to_float_video(torch.stack([data.frames(i)[0] for i in range(num_videos)]))  # (V, 3, S, S)
        # Generated digits are softer and dimmer than the crisp renderings: train on blurred, dimmed and
        # noisy copies too, or a slightly soft but clearly recognisable digit is misread.
        g = torch.Generator().manual_seed(seed)
        ink = (frames[:, :1] + 1) / 2  # (V, 1, S, S) in [0, 1]
        soft = F.avg_pool2d(F.pad(ink, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # (V, 1, S, S)
        mix = torch.rand(num_videos, 1, 1, 1, generator=g)
        gain = 0.6 + 0.4 * torch.rand(num_videos, 1, 1, 1, generator=g)
        noisy = (gain * (mix * soft + (1 - mix) * ink) + 0.05 * torch.randn(ink.shape, generator=g)).clamp(0, 1)
        x = np.concatenate([self._crops(frames), self._crops(noisy * 2 - 1)])  # (2V, s*s)
        self.model = SVC(C=10.0).fit(x, np.concatenate([data.labels, data.labels]))

    def _crops(self, frames: torch.Tensor) -> np.ndarray:
        """(M, 3|1, S, S) frames in [-1, 1] -> (M, w*w) features in [0, 1], w = digit_size + 2: the
        window centred on the ink's centre of mass (robust to blur, unlike the inkiest window)."""
        if frames.shape[-1] != self.size or frames.shape[-2] != self.size:
            raise ValueError(f"DigitClassifier: expected {self.size}x{self.size} frames, "
                             f"got {tuple(frames.shape[-2:])}")
        w = self.digit_size + 2
        ink = ((frames.float().mean(1) + 1) / 2).clamp(0, 1)  # (M, S, S)
        grid = torch.arange(self.size, dtype=torch.float32) + 0.5
        mass = ink.sum((1, 2)).clamp(min=1e-6)  # (M,)
        cy = (ink.sum(2) * grid).sum(1) / mass  # (M,)
        cx = (ink.sum(1) * grid).sum(1) / mass
        padded = F.pad(ink, (w, w, w, w))  # (M, S+2w, S+2w): windows may reach past the canvas
        y0 = (cy - w / 2).round().long().clamp(-w, self.size) + w
        x0 = (cx - w / 2).round().long().clamp(-w, self.size) + w
        crops = torch.stack([padded[i, y:y + w, x:x + w]
                             for i, (y, x) in enumerate(zip(y0.tolist(), x0.tolist()))])  # (M, w, w)
        return crops.flatten(1).numpy()  # (M, w*w)

    def predict(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) video in [-1, 1] -> (B, T) int64 predicted digit per frame."""
        B, T = video.shape[:2]
        flat = video.reshape(B * T, *video.shape[2:])  # (B*T, 3, S, S)
        return torch.from_numpy(self.model.predict(self._crops(flat))).long().reshape(B, T)

    def accuracy(self, video: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(T,) share of clips whose frame t is classified as the clip's label."""
        return (self.predict(video) == labels.reshape(-1, 1)).float().mean(0)

    def kept(self, video: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """(B, T) 1.0 where frame t of clip b is read as the same digit as the true frame: "the digit is
        kept", insensitive to the classifier's misreadings of odd handwriting that truth shares."""
        return (self.predict(video) == self.predict(truth)).float()

    def agreement(self, video: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """(T,) share of clips whose frame t keeps the true frame's digit (`kept`, averaged over clips)."""
        return self.kept(video, truth).mean(0)


__all__ = ["DigitClassifier"]
