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


# --------------------------------------------------------------------------------------------------
# StyleGAN-V's TorchScript I3D, generation seeds, the UCF-101 generated count


class StandInTorchScriptI3D(torch.nn.Module):
    """The call signature of StyleGAN-V's i3d_torchscript.pt: uint8 (B, 3, T, H, W) with
    rescale/resize/return_features; refuses to be called any other way."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 16, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.dim() != 5 or x.shape[1] != 3:
            raise RuntimeError("expected uint8 (B, 3, T, H, W)")
        if not (rescale and resize and return_features):
            raise RuntimeError("StyleGAN-V calls the detector with rescale, resize and return_features")
        v = x.float() / 127.5 - 1.0
        v = torch.nn.functional.interpolate(v, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        pooled = torch.nn.functional.adaptive_avg_pool3d(v, (1, 4, 4)).flatten(1)  # (B, 48)
        return self.proj(pooled)  # (B, 400)


@pytest.fixture(scope="module")
def torchscript_i3d(tmp_path_factory):
    path = tmp_path_factory.mktemp("ts") / "i3d_torchscript.pt"
    torch.jit.script(StandInTorchScriptI3D()).save(str(path))
    return path


def test_torchscript_detector_called_like_stylegan_v(torchscript_i3d, setup):
    from magi.evaluate.fvd import TorchScriptI3D, i3d_features, is_torchscript, load_detector

    _, _, i3d = setup
    assert is_torchscript(torchscript_i3d) and not is_torchscript(i3d)
    detector = load_detector(torchscript_i3d)
    assert isinstance(detector, TorchScriptI3D)
    video = torch.randint(0, 256, (3, 9, 3, 32, 32), dtype=torch.uint8)  # (B, T, 3, H, W)
    feats = i3d_features(detector, video, batch_size=2)
    direct = torch.jit.load(str(torchscript_i3d))(video.permute(0, 2, 1, 3, 4).contiguous(), rescale=True,
                                                   resize=True, return_features=True)
    assert feats.shape == (3, 400) and torch.allclose(feats, direct)


def test_fvd_with_the_torchscript_detector_over_seeds(setup, torchscript_i3d, tmp_path):
    root, run, _ = setup
    out = tmp_path / "ts.json"
    assert main(["fvd", str(run), "--protocol", "custom", "--num-videos", "2", "--frames", "9",
                 "--detector", str(torchscript_i3d), "--seeds", "0,1", "--stats-cache", str(tmp_path / "s"),
                 "--out", str(out), *FAST]) == 0
    result = json.loads(out.read_text())
    d = result["detector"]
    assert d["kind"] == "stylegan-v-torchscript" and d["sha256"] and d["path"] == str(torchscript_i3d)
    assert d["kwargs"] == {"rescale": True, "resize": True, "return_features": True}
    assert "uint8 (B, 3, T, H, W)" in d["input"]
    per_seed = result["fvd_per_seed"]
    assert set(per_seed) == {"0", "1"} and per_seed["0"] != per_seed["1"]
    assert result["fvd"] == pytest.approx(np.mean(list(per_seed.values())))
    assert result["fvd_std"] == pytest.approx(np.std(list(per_seed.values()), ddof=1))
    assert result["protocol"]["generation_seeds"] == [0, 1] and result["generated"]["seeds"] == [0, 1]
    # one generation seed: its score, no spread, the real statistics from the cache
    assert main(["fvd", str(run), "--protocol", "custom", "--num-videos", "2", "--frames", "9",
                 "--detector", str(torchscript_i3d), "--seeds", "1", "--stats-cache", str(tmp_path / "s"),
                 "--out", str(tmp_path / "one.json"), *FAST]) == 0
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["real"]["stats_cached"] and one["fvd_std"] is None and one["fvd"] == per_seed["1"]


def test_ucf101_protocol_generated_count(setup):
    root, run, i3d = setup
    ckpt = load_checkpoint(run)
    parse = lambda *a: build_parser().parse_args(["fvd", str(run), "--detector", "x", "--out", "y",
                                                  "--allow-untrained-interval", *a])
    ucf = resolve_protocol(parse("--protocol", "ucf101"), ckpt)
    assert ucf["num_generated"] == 2048 and ucf["generation_seeds"] == [0]
    from magi.evaluate.cli import deviations

    assert not [d for d in deviations(ucf, ckpt) if "num_generated" in d]
    table4 = resolve_protocol(parse("--protocol", "ucf101", "--num-generated", "10000", "--seeds", "0,1,2"), ckpt)
    assert table4["num_generated"] == 10000 and table4["generation_seeds"] == [0, 1, 2]
    assert any("Table 4" in d for d in deviations(table4, ckpt))
    with pytest.raises(ValueError, match="distinct integers"):
        resolve_protocol(parse("--seeds", "1,1", "--num-videos", "2", "--frames", "9"), ckpt)


def test_deviations_name_a_non_paper_sampling_setting(setup):
    """UCF-101's Table 4 samples with CFG 7, 64 x 100 DDPM, EMA weights: anything else is a deviation."""
    from dataclasses import replace

    from magi.evaluate.protocol import deviations
    from magi.pretrained import SamplingOptions

    root, run, i3d = setup
    ckpt = load_checkpoint(run)
    protocol = lambda *a: resolve_protocol(build_parser().parse_args(
        ["fvd", str(run), "--detector", "x", "--out", "y", "--allow-untrained-interval", *a]), ckpt)
    ucf = protocol("--protocol", "ucf101")
    paper = SamplingOptions(cfg=7.0)  # 64 mask x 100 DDPM steps by default
    sampling = lambda found: [d for d in found if "the paper samples" in d or "EMA" in d]
    assert sampling(deviations(ucf, ckpt, paper)) == []
    found = sampling(deviations(ucf, ckpt, SamplingOptions()))  # the CLI default --cfg 1
    assert found == ["cfg = 1.0, the paper samples with 7.0"]
    found = sampling(deviations(ucf, ckpt, replace(paper, sampler="ddim", diffusion_steps=25, mask_steps=8)))
    assert found == ["mask_steps = 8, the paper samples with 64", "diffusion_steps = 25, the paper samples with 100",
                     "sampler = 'ddim', the paper samples with 'ddpm'"]
    raw = load_checkpoint(run, ema=False)
    assert any("non-EMA" in d for d in deviations(ucf, raw, paper))
    k600 = protocol("--protocol", "k600", "--unconditional")
    assert sampling(deviations(k600, ckpt, SamplingOptions())) == []  # K600: no guidance
