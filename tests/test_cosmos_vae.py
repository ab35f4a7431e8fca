"""The Cosmos 0.1 CV4x8x8 tokenizer from its TorchScript files (stand-ins the tests script themselves):
geometry, round trip, normalization, bf16, errors, hub routing, and `magi eval fvd --protocol k600` on it."""

import json

import numpy as np
import pytest
import torch

from cosmos_standin import block_video, make_cosmos_dir
from magi.vae import CosmosTokenizerVAE, load_vae


@pytest.fixture(scope="module")
def cosmos_dir(tmp_path_factory):
    return make_cosmos_dir(tmp_path_factory.mktemp("cosmos") / "Cosmos-0.1-Tokenizer-CV4x8x8")


def test_geometry_17_frames_to_5_latent_frames(cosmos_dir):
    vae = load_vae(str(cosmos_dir))
    assert isinstance(vae, CosmosTokenizerVAE)
    assert (vae.latent_channels, vae.spatial_stride, vae.temporal_stride, vae.causal) == (16, 8, 4, True)
    assert vae.latent_frames(17) == 5 and vae.video_frames(5) == 17 and vae.latent_frames(5) == 2
    assert vae.latent_shape(17, 128, 128) == (5, 16, 16, 16)  # the paper's UCF-101 / K600 latents
    assert not any(p.requires_grad for p in vae.parameters())
    video = block_video(2, 5, 2, 3)  # (2, 17, 3, 16, 24)
    z = vae.encode(video)
    assert z.shape == (2, 5, 16, 2, 3) and z.dtype == torch.float32
    out = vae.decode(z)
    assert out.shape == video.shape and torch.allclose(out, video, atol=1e-5)  # exact on the stand-in's cells


def test_adapter_calls_the_files_as_nvidia_does(cosmos_dir):
    """(B, T, C, H, W) <-> NVIDIA's (B, C, T, H, W), the latent is the tuple's first element, the
    normalization is (z - mean) / std * scaling and decode inverts it; chunking changes nothing."""
    mean, std = torch.linspace(-1, 1, 16), torch.linspace(0.5, 2, 16)
    vae = load_vae(str(cosmos_dir), latents_mean=mean.tolist(), latents_std=std.tolist(), scaling_factor=0.5,
                   chunk_size=1)
    encoder = torch.jit.load(str(cosmos_dir / "encoder.jit"))
    decoder = torch.jit.load(str(cosmos_dir / "decoder.jit"))
    video = torch.rand(3, 9, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    raw = encoder(video.transpose(1, 2))[0]  # (B, 16, T', h, w)
    want = ((raw.transpose(1, 2) - mean[:, None, None]) / std[:, None, None] * 0.5)  # (B, T', 16, h, w)
    z = vae.encode(video)
    assert torch.allclose(z, want, atol=1e-5)
    assert torch.allclose(vae.decode(z), decoder(raw).transpose(1, 2), atol=1e-5)
    batched = load_vae(str(cosmos_dir), latents_mean=mean.tolist(), latents_std=std.tolist(),
                       scaling_factor=0.5, chunk_size=8)
    assert torch.allclose(batched.encode(video), z, atol=1e-6)
    record = vae.identity()
    assert record["kind"] == "CosmosTokenizerVAE" and record["normalization"]["scaling"] == 0.5
    assert record["config"] == {"latent_channels": 16, "spatial_stride": 8, "temporal_stride": 4, "causal": True}


def test_normalization_from_mean_std_file_and_identity(cosmos_dir, tmp_path):
    other = make_cosmos_dir(tmp_path / "with_stats")
    mean, std = torch.arange(16.0) / 10, torch.full((16,), 2.0)
    torch.save((mean, std), other / "mean_std.pt")
    plain, stats = load_vae(str(cosmos_dir)), load_vae(str(other))
    video = block_video(1, 2, 1, 1)
    assert torch.allclose(stats.encode(video), (plain.encode(video) - mean[:, None, None]) / 2, atol=1e-5)
    assert torch.allclose(stats.decode(stats.encode(video)), video, atol=1e-5)
    # explicit options win over the file
    assert torch.allclose(load_vae(str(other), latents_mean=[0.0] * 16, latents_std=[1.0] * 16).encode(video),
                          plain.encode(video))
    # same files: same identity (a latent cache accepts it); other weights: another fingerprint
    from magi.data.latents import same_vae

    assert same_vae(plain.identity(), load_vae(str(cosmos_dir)).identity())
    assert plain.identity()["weights"] != load_vae(str(make_cosmos_dir(tmp_path / "s1", seed=1))).identity()["weights"]


def test_bf16(cosmos_dir):
    fp32, bf16 = load_vae(str(cosmos_dir)), load_vae(str(cosmos_dir), dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    video = block_video(2, 5, 2, 2)
    z = bf16.encode(video)
    assert z.dtype == torch.float32 and torch.allclose(z, fp32.encode(video), atol=0.05)
    out = bf16.decode(z)
    assert out.dtype == torch.float32 and torch.allclose(out, video, atol=0.05)
    assert load_vae(str(cosmos_dir), dtype=torch.bfloat16).dtype == torch.bfloat16


def test_errors(cosmos_dir, tmp_path):
    half = make_cosmos_dir(tmp_path / "half", encoder=False)
    with pytest.raises(FileNotFoundError, match="encoder.jit"):
        load_vae(str(half))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json.*encoder.jit"):
        load_vae(str(tmp_path / "empty"))
    vae = load_vae(str(cosmos_dir))
    with pytest.raises(ValueError, match=r"1 \+ 4k frames, got 16"):
        vae.encode(torch.zeros(1, 16, 3, 16, 16))
    with pytest.raises(ValueError, match="not divisible by the spatial stride 8"):
        vae.encode(torch.zeros(1, 5, 3, 20, 16))
    with pytest.raises(ValueError, match="deterministic"):
        load_vae(str(cosmos_dir), sample=True)
    with pytest.raises(TypeError):
        load_vae(str(cosmos_dir), no_such_option=1)

    class Discrete(torch.nn.Module):  # a DV tokenizer's encoder: integer indices (B, T', h, w) first
        def forward(self, x: torch.Tensor):
            return x[:, 0, ::4, ::8, ::8].long(), x[:, :6, ::4, ::8, ::8]

    decoder = torch.jit.load(str(cosmos_dir / "decoder.jit"))
    with pytest.raises(ValueError, match="continuous"):
        CosmosTokenizerVAE(torch.jit.script(Discrete()), decoder)


def test_hub_id_downloads_only_the_tokenizer_files(cosmos_dir, monkeypatch):
    """A hub id without a diffusers config.json loads encoder.jit / decoder.jit from the repository
    (huggingface_hub replaced by local stand-ins: no network here)."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    calls = []

    def hf_hub_download(repo_id, filename, subfolder=None, **kw):
        calls.append(("file", repo_id, filename))
        raise EntryNotFoundError(f"{filename} not in {repo_id}")

    def snapshot_download(repo_id, allow_patterns=None, **kw):
        calls.append(("snapshot", repo_id, tuple(allow_patterns)))
        return str(cosmos_dir)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    vae = load_vae("nvidia/Cosmos-0.1-Tokenizer-CV4x8x8")
    assert isinstance(vae, CosmosTokenizerVAE) and vae.latent_frames(17) == 5
    assert vae.identity()["source"] == "nvidia/Cosmos-0.1-Tokenizer-CV4x8x8"
    assert calls == [("file", "nvidia/Cosmos-0.1-Tokenizer-CV4x8x8", "config.json"),
                     ("snapshot", "nvidia/Cosmos-0.1-Tokenizer-CV4x8x8",
                      ("encoder.jit", "decoder.jit", "mean_std.pt"))]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(cosmos_dir.parent))
    with pytest.raises(ValueError, match="neither a config.json nor encoder.jit"):
        load_vae("someone/not-a-vae")


# --------------------------------------------------------------------------------------------------
# magi eval fvd --protocol k600 on the 4x8x8 tokenizer: 17-frame clips, 5 context frames, interval 1


def _k600_layout(root, num_videos=3, frames=20, size=64):
    from conftest import make_video

    rows = ["label,youtube_id,time_start,time_end,split"]
    for i in range(num_videos):
        label = ["abseiling", "zumba"][i % 2]
        make_video(root / "val" / label / f"vid{i:03d}_{i:06d}_{i + 10:06d}.mp4", num_frames=frames,
                   height=size, width=size, seed=i)
        rows.append(f"{label},vid{i:03d},{i},{i + 10},validate")
    (root / "val.csv").write_text("\n".join(rows) + "\n")
    return root / "val", root / "val.csv"


def test_fvd_k600_protocol_end_to_end_on_the_4x8x8_tokenizer(cosmos_dir, tmp_path):
    from magi.evaluate.cli import main
    from test_eval_cli import FAST, StandInTorchScriptI3D
    from test_sample import make_run

    data_root, csv = _k600_layout(tmp_path / "k600")
    run = make_run(tmp_path / "run", preset="tiny", steps=(1,), vae=str(cosmos_dir),
                   data={"kind": "k600", "options": {"root": str(data_root), "list_file": str(csv),
                                                    "num_frames": 17, "size": 64, "interval": 1}},
                   num_frames=5, num_classes=0, latent_size=8)
    detector = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(StandInTorchScriptI3D()).save(str(detector))
    out = tmp_path / "k600.json"
    assert main(["fvd", str(run), "--protocol", "k600", "--data-root", str(data_root),
                 "--data-option", f"list_file={csv}", "--num-videos", "2", "--detector", str(detector),
                 "--stats-cache", "", "--out", str(out), *FAST]) == 0
    result = json.loads(out.read_text())
    p = result["protocol"]
    assert (p["name"], p["frames"], p["eval_frames"], p["context_frames"], p["interval"]) == ("k600", 17, 16, 5, 1)
    assert p["labels"] is None and p["resolution"] == 64
    assert result["generated"]["num_clips"] == 2 and result["real"]["num_clips"] == 2
    assert np.isfinite(result["fvd"]) and result["model"]["vae"] == str(cosmos_dir)
    assert result["model"]["config"]["num_frames"] == 5
    # besides the 2 real clips, only the fast sampling (2 x 3 steps) deviates from the paper (64 x 100 DDPM)
    assert [d for d in result["deviations"] if not d.startswith("num_videos") and "the paper samples" not in d] == []
    assert "mask_steps = 2, the paper samples with 64" in result["deviations"]
