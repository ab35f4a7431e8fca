"""Prediction metrics: PSNR, SSIM (against an independent scipy computation), adjacent-frame L2."""

import json
import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from magi.evaluate.metrics import adjacent_frame_l2, prediction_metrics, psnr, save_curves, ssim


def rand_video(seed, shape=(2, 3, 3, 24, 20)):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def test_psnr_known_mse():
    target = torch.zeros(1, 2, 3, 8, 8, dtype=torch.uint8)
    pred = target.clone()
    pred[0, 0] = 10  # MSE 100 on frame 0
    pred[0, 1, 0] = 30  # MSE 900 / 3 = 300 on frame 1
    out = psnr(pred, target)
    assert out.shape == (1, 2)
    assert out[0, 0].item() == pytest.approx(10 * math.log10(255**2 / 100))
    assert out[0, 1].item() == pytest.approx(10 * math.log10(255**2 / 300))
    assert math.isinf(psnr(target, target)[0, 0].item())


def ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. with scipy's Gaussian filter (sigma 1.5, truncate 3.5 -> 11 taps), borders cropped."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    f = lambda a: scipy.ndimage.gaussian_filter(a, 1.5, truncate=3.5)
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s[5:-5, 5:-5].mean()


def test_ssim_matches_independent_reference():
    target = rand_video(0)
    noise = torch.randint(-40, 41, target.shape, generator=torch.Generator().manual_seed(1))
    pred = (target.int() + noise).clamp(0, 255).to(torch.uint8)
    out = ssim(pred, target)
    assert out.shape == (2, 3)
    for b in range(2):
        for t in range(3):
            ref = np.mean([ssim_reference(pred[b, t, c].numpy(), target[b, t, c].numpy())
                           for c in range(3)])
            assert out[b, t].item() == pytest.approx(ref, abs=1e-10)


def test_ssim_properties():
    target = rand_video(2)
    assert torch.allclose(ssim(target, target), torch.ones(2, 3, dtype=torch.float64))
    other = rand_video(3)
    torch.testing.assert_close(ssim(other, target), ssim(target, other))
    assert (ssim(other, target) < 0.5).all()
    with pytest.raises(ValueError, match="uint8"):
        ssim(target.float(), target.float())
    with pytest.raises(ValueError, match="same shape"):
        ssim(target[:, :2], target)


def test_adjacent_frame_l2_hand_values():
    video = torch.zeros(1, 4, 3, 5, 5, dtype=torch.uint8)
    video[0, 1, 0] = 255  # frame 1 red: distance 1 from frame 0
    video[0, 2, :2] = 255  # frame 2 yellow: differs from red in green only -> 1
    video[0, 3] = 0  # back to black: sqrt(2)
    out = adjacent_frame_l2(video)
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0, math.sqrt(2)]], dtype=torch.float64))
    static = torch.full((2, 6, 3, 4, 4), 77, dtype=torch.uint8)
    assert adjacent_frame_l2(static).eq(0).all()


def test_prediction_metrics_skip_context():
    target = rand_video(4, (2, 5, 3, 16, 16))
    pred = target.clone()
    pred[:, 2:] = rand_video(5, (2, 3, 3, 16, 16))
    m = prediction_metrics(pred, target, context_frames=2)
    assert m["psnr_per_frame"][:2] == [None, None] and m["identical_frames"] == 0
    assert m["ssim_per_frame"][0] == pytest.approx(1.0)
    assert m["psnr"] == pytest.approx(psnr(pred, target)[:, 2:].mean().item())
    assert m["ssim"] < 0.5


def test_save_curves_json_and_png(tmp_path):
    gt = adjacent_frame_l2(rand_video(6))
    gen = adjacent_frame_l2(rand_video(7))
    json_path, png_path = save_curves(tmp_path / "l2" / "adjacent", {"ground truth": gt,
                                                                     "generated": gen})
    record = json.loads(json_path.read_text())
    assert record["curves"]["generated"]["x"] == [1, 2]
    assert record["curves"]["ground truth"]["mean"] == pytest.approx(gt.mean(0).tolist())
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_digit_classifier_reads_held_out_digits_and_notices_a_changed_digit():
    from magi.data import MovingDigits
    from magi.evaluate import DigitClassifier
    from magi.recipe import collate

    clf = DigitClassifier(16, 8, num_videos=1500)
    data = MovingDigits(num_videos=100, num_frames=3, size=16, digit_size=8, num_digits=1, speed=(0.5, 1.5),
                        split="test", seed=1)  # digit images the classifier never saw
    batch = collate([data[i] for i in range(len(data))])
    assert clf.accuracy(batch["video"], batch["label"]).min() > 0.8
    assert clf.agreement(batch["video"], batch["video"]).min() == 1.0
    other = batch["video"].roll(1, 0)  # each clip's frames replaced by another clip's digit
    assert clf.agreement(other, batch["video"]).mean() < 0.3
    assert clf.kept(other, batch["video"]).shape == (100, 3)
    with pytest.raises(ValueError, match="16x16"):
        clf.predict(torch.zeros(1, 1, 3, 32, 32))
