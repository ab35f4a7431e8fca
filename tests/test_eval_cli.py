"""`magi eval fvd` / `magi eval predict` end to end on moving digits, and the protocols' settings."""

import json

import numpy as np
import pytest
import torch

from magi.evaluate.cli import build_parser, main, resolve_protocol
from magi.sample import load_checkpoint
from test_i3d import random_state
from test_sample import make_run

FAST = ["--mask-steps", "2", "--diffusion-steps", "3", "--no-progress", "--batch-size", "2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    run = make_run(root / "run", steps=(4,))
    i3d = root / "i3d_pretrained_400.pt"
    torch.save(random_state(0), i3d)
    return root, run, i3d


def test_fvd_end_to_end_deterministic_with_cached_real_stats(setup, tmp_path):
    root, run, i3d = setup
    args = [str(run), "--protocol", "custom", "--num-videos", "2", "--frames", "9", "--i3d", str(i3d),
            "--stats-cache", str(tmp_path / "stats"), *FAST]
    assert main(["fvd", *args, "--out", str(tmp_path / "a.json")]) == 0
    assert main(["fvd", *args, "--out", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert np.isfinite(a["fvd"]) and a["fvd"] > 0
    assert a["fvd"] == b["fvd"]  # same seed: same clips, same samples, same number
    assert not a["real"]["stats_cached"] and b["real"]["stats_cached"]
    p = a["protocol"]
    assert (p["num_videos"], p["frames"], p["eval_frames"], p["interval"], p["labels"]) == (2, 9, 9, 1, "real")
    assert a["model"]["ema"] and a["i3d"]["sha256"] and a["deviations"]
    manifest = json.loads((tmp_path / a["real"]["manifest"]).read_text())
    assert len(manifest) == 2 and all(m["num_frames"] == 9 for m in manifest)
    assert (tmp_path / a["generated"]["preview"]).is_file()
    # another seed draws other clips and samples
    assert main(["fvd", *args, "--seed", "1", "--out", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["fvd"] != a["fvd"]


def test_fvd_prediction_protocol_end_to_end(setup, tmp_path):
    root, run, i3d = setup
    args = ["fvd", str(run), "--protocol", "custom", "--num-videos", "2", "--frames", "10",
            "--context-frames", "3", "--i3d", str(i3d), "--stats-cache", "", "--unconditional",
            "--out", str(tmp_path / "p.json"), *FAST]
    assert main(args) == 0
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["protocol"]["context_frames"] == 3 and result["protocol"]["labels"] is None
    assert result["generated"]["num_clips"] == 2 and np.isfinite(result["fvd"])


def test_fvd_rejects_short_clips_and_wrong_i3d(setup, tmp_path, capsys):
    root, run, i3d = setup
    out = str(tmp_path / "x.json")
    assert main(["fvd", str(run), "--num-videos", "2", "--i3d", str(i3d), "--out", out, *FAST]) == 2
    assert "at least 9 frames" in capsys.readouterr().err  # the model's 6 training frames
    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    assert main(["fvd", str(run), "--num-videos", "2", "--frames", "9", "--i3d", str(bad), "--out", out,
                 *FAST]) == 2
    assert "not the expected I3D" in capsys.readouterr().err
    # the model trained on interval 1 only: the UCF-101 protocol's interval 3 is refused ...
    assert main(["fvd", str(run), "--protocol", "ucf101", "--i3d", str(i3d), "--out", out, *FAST]) == 2
    assert "trained on interval 1" in capsys.readouterr().err
    # ... unless conditioned on the trained interval explicitly
    assert main(["fvd", str(run), "--protocol", "ucf101", "--i3d", str(i3d), "--out", out,
                 "--condition-interval", "1", *FAST]) == 2
    assert "--data-root" in capsys.readouterr().err


class Causal4:
    """A stand-in for a 4x causal video VAE's frame arithmetic (T = 1 + 4 (T' - 1))."""

    latent_channels, spatial_stride, temporal_stride, causal = 16, 8, 4, True

    def latent_frames(self, n):
        if n < 1 or (n - 1) % 4:
            raise ValueError(f"needs 1 + 4k frames, got {n}")
        return 1 + (n - 1) // 4

    def video_frames(self, n):
        return 1 + 4 * (n - 1)


def test_protocol_defaults(setup):
    root, run, i3d = setup
    ckpt = load_checkpoint(run)
    parse = lambda *a: build_parser().parse_args(["fvd", str(run), "--i3d", "x", "--out", "y",
                                                  "--allow-untrained-interval", *a])
    ucf = resolve_protocol(parse("--protocol", "ucf101"), ckpt)
    assert (ucf["num_videos"], ucf["interval"], ucf["frames"], ucf["eval_frames"], ucf["split"],
            ucf["context_frames"], ucf["labels"]) == (2048, 3, 16, 16, "train", 0, "real")
    k600 = resolve_protocol(parse("--protocol", "k600", "--unconditional"), ckpt)
    assert (k600["num_videos"], k600["interval"], k600["frames"], k600["context_frames"],
            k600["labels"]) == (50_000, 1, 16, 5, None)
    # with a 4x causal VAE: 17-frame clips, the first 16 scored, 5 context frames = 2 latent frames
    ckpt.vae = Causal4()
    ucf3d = resolve_protocol(parse("--protocol", "ucf101"), ckpt)
    assert (ucf3d["frames"], ucf3d["eval_frames"]) == (17, 16)
    k6003d = resolve_protocol(parse("--protocol", "k600"), ckpt)
    assert (k6003d["frames"], k6003d["eval_frames"], k6003d["context_frames"]) == (17, 16, 5)
    custom = resolve_protocol(parse("--num-videos", "8", "--frames", "13", "--eval-frames", "12",
                                    "--interval", "2"), ckpt)
    assert (custom["frames"], custom["eval_frames"], custom["interval"]) == (13, 12, 2)


def test_predict_metrics_and_curves(setup, tmp_path):
    root, run, i3d = setup
    out = tmp_path / "pred"
    assert main(["predict", str(run), "--num-videos", "3", "--frames", "8", "--context-frames", "2",
                 "--out", str(out), *FAST]) == 0
    result = json.loads((out / "predict.json").read_text())
    m = result["metrics"]
    assert m["num_videos"] == 3 and len(m["psnr_per_frame"]) == 8 and m["ssim"] is not None
    curves = json.loads((out / "adjacent_l2.json").read_text())["curves"]
    assert set(curves) == {"ground truth", "generated"} and len(curves["generated"]["mean"]) == 7
    assert (out / "adjacent_l2.png").is_file() and (out / "samples.png").is_file()
