"""Evaluation: FVD comparable with published numbers (`fvd`, `i3d`), prediction metrics (`metrics`),
digit identity of moving-digit predictions (`digit_identity`) and the `magi eval` command (`cli`)."""

from magi.evaluate.digit_identity import DigitClassifier
from magi.evaluate.fvd import feature_stats, frechet_distance, i3d_features, load_i3d
from magi.evaluate.metrics import adjacent_frame_l2, psnr, ssim

__all__ = ["load_i3d", "i3d_features", "feature_stats", "frechet_distance", "psnr", "ssim",
           "adjacent_frame_l2", "DigitClassifier"]
