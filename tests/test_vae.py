"""VAEs: the pixels VAE (exact), and the diffusers adapters on tiny random configs (no downloads)."""

import pytest
import torch

from magi.vae import PixelVAE, load_vae


def _video(B=2, T=3, H=8, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 3, H, W, generator=g) * 2 - 1


@pytest.mark.parametrize("spec,channels,stride", [("pixels", 3, 1), ("pixels:2", 12, 2), ("pixels:4", 48, 4)])
def test_pixels_exactly_invertible(spec, channels, stride):
    vae = load_vae(spec)
    video = _video(H=16, W=8)
    z = vae.encode(video)
    assert z.shape == (2, 3, channels, 16 // stride, 8 // stride)
    assert vae.latent_channels == channels and vae.spatial_stride == stride
    assert vae.temporal_stride == 1 and not vae.causal and vae.latent_frames(7) == 7
    assert torch.equal(vae.decode(z), video)


def test_pixels_space_to_depth_layout():
    vae = PixelVAE(2)
    video = _video(B=1, T=1, H=4, W=4)
    z = vae.encode(video)
    # channel c*4 + i*2 + j of latent (y, x) is pixel (2y + i, 2x + j) of channel c
    assert torch.equal(z[0, 0, 1 * 4 + 1 * 2 + 0, 1, 0], video[0, 0, 1, 3, 0])


def test_pixels_gray_exact_on_gray_video():
    vae = load_vae("pixels:4:gray")
    assert vae.latent_channels == 16
    gray = _video(T=2, H=32, W=32)[:, :, :1].expand(-1, -1, 3, -1, -1)
    z = vae.encode(gray)
    assert z.shape == (2, 2, 16, 8, 8)
    assert torch.equal(vae.decode(z), gray)
    colour = _video(H=8, W=8)
    assert torch.allclose(vae.encode(colour), PixelVAE(4).encode(colour.mean(2, keepdim=True).expand_as(colour))
                          .view(2, 3, 3, 16, 2, 2)[:, :, 0], atol=1e-6)


def test_pixels_errors():
    with pytest.raises(ValueError, match="not divisible"):
        load_vae("pixels:3").encode(_video(H=8, W=8))
    with pytest.raises(ValueError, match="pixels:x"):
        load_vae("pixels:x")
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        load_vae("pixels").encode(torch.zeros(2, 3, 8, 8))


# ---- diffusers adapters on tiny random configs


def _tiny_kl(**config):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    kw = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
              up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4,
              latent_channels=4, sample_size=16)
    kw.update(config)
    return AutoencoderKL(**kw).eval()


def _tiny_cosmos(**config):
    from diffusers import AutoencoderKLCosmos

    torch.manual_seed(0)
    kw = dict(latent_channels=4, encoder_block_out_channels=(8, 8, 8, 8), decode_block_out_channels=(8, 8, 8, 8),
              attention_resolutions=(), resolution=32, num_layers=1, patch_size=2,
              spatial_compression_ratio=8, temporal_compression_ratio=4, latents_mean=None, latents_std=None)
    kw.update(config)
    return AutoencoderKLCosmos(**kw).eval()


def test_image_vae_shapes_strides_and_normalization():
    from magi.vae import DiffusersImageVAE, from_diffusers

    model = _tiny_kl(scaling_factor=0.5, shift_factor=0.25)
    vae = from_diffusers(model)
    assert isinstance(vae, DiffusersImageVAE)
    assert (vae.latent_channels, vae.spatial_stride, vae.temporal_stride, vae.causal) == (4, 2, 1, False)
    assert vae.latent_frames(16) == 16
    video = _video(B=2, T=3, H=16, W=16)
    z = vae.encode(video)
    assert z.shape == (2, 3, 4, 8, 8) and z.dtype == torch.float32
    with torch.no_grad():  # normalization applied: (mode - shift) * scale, frame by frame
        raw = model.encode(video[1, 2][None]).latent_dist.mode()
    assert torch.allclose(z[1, 2], (raw[0] - 0.25) * 0.5, atol=1e-5)
    # and inverted: decode(z) is the model's decode of the raw latents
    with torch.no_grad():
        ref = model.decode(raw).sample
    assert torch.allclose(vae.decode(z)[1, 2], ref[0], atol=1e-5)
    assert vae.decode(z).shape == (2, 3, 3, 16, 16)
    assert not any(p.requires_grad for p in vae.parameters())


@pytest.mark.slow  # compiles the decoder (~20 s)
def test_a_compiled_decoder_decodes_what_the_eager_one_does():
    from magi.vae import PixelVAE, from_diffusers

    vae = from_diffusers(_tiny_kl())
    z = vae.encode(_video(B=1, T=2, H=16, W=16))
    eager = vae.decode(z)
    assert vae.compile_decoder() is True
    torch.testing.assert_close(vae.decode(z), eager, rtol=0, atol=1e-4)
    vae.compile_decoder(False)
    torch.testing.assert_close(vae.decode(z), eager, rtol=0, atol=0)  # eager again
    assert PixelVAE(4).compile_decoder() is False  # nothing to compile


def test_image_vae_chunked_equals_unchunked():
    from magi.vae import from_diffusers

    model = _tiny_kl()
    video = _video(B=2, T=3, H=16, W=16)
    whole = from_diffusers(model, chunk_size=64)
    chunked = from_diffusers(model, chunk_size=2)
    z = whole.encode(video)
    assert torch.allclose(chunked.encode(video), z, atol=1e-6)
    assert torch.allclose(chunked.decode(z), whole.decode(z), atol=1e-6)


def test_image_vae_per_channel_latents_mean_std():
    from magi.vae import from_diffusers

    mean, std = [0.1, -0.2, 0.3, 0.0], [1.0, 2.0, 0.5, 4.0]
    model = _tiny_kl(latents_mean=mean, latents_std=std, scaling_factor=1.0)
    vae = from_diffusers(model)
    video = _video(B=1, T=2, H=16, W=16)
    with torch.no_grad():
        raw = model.encode(video[0]).latent_dist.mode()  # (T, C, h, w)
    expect = (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(vae.encode(video)[0], expect, atol=1e-5)


def test_cosmos_causal_strides_17_to_5():
    from magi.vae import DiffusersVideoVAE, from_diffusers

    vae = from_diffusers(_tiny_cosmos())
    assert isinstance(vae, DiffusersVideoVAE)
    assert (vae.latent_channels, vae.spatial_stride, vae.temporal_stride, vae.causal) == (4, 8, 4, True)
    assert vae.latent_frames(17) == 5 and vae.latent_frames(1) == 1 and vae.video_frames(5) == 17
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        vae.latent_frames(16)
    video = _video(B=1, T=17, H=32, W=32)
    z = vae.encode(video)
    assert z.shape == (1, 5, 4, 4, 4) == (1, *vae.latent_shape(17, 32, 32))
    assert vae.decode(z).shape == (1, 17, 3, 32, 32)


def test_cosmos_normalization_per_channel_and_frame_applied_and_inverted():
    from magi.vae import from_diffusers

    C, K = 4, 3  # stats for 3 latent frames, as Cosmos stores (C x frames) values
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(C, K, generator=g)
    std = torch.rand(C, K, generator=g) + 0.5
    model = _tiny_cosmos(latents_mean=mean.flatten().tolist(), latents_std=std.flatten().tolist())
    vae = from_diffusers(model)
    video = _video(B=2, T=9, H=16, W=16)
    with torch.no_grad():
        raw = model.encode(video.transpose(1, 2)).latent_dist.mode().transpose(1, 2)  # (B, T', C, h, w)
    z = vae.encode(video)
    assert z.shape == raw.shape == (2, 3, 4, 2, 2)
    expect = (raw - mean.T[None, :, :, None, None]) / std.T[None, :, :, None, None]
    assert torch.allclose(z, expect, atol=1e-5)
    assert torch.allclose(vae.denormalize(z), raw, atol=1e-5)
    with torch.no_grad():
        ref = model.decode(raw.transpose(1, 2)).sample.transpose(1, 2)
    assert torch.allclose(vae.decode(z), ref, atol=1e-5)


def test_cosmos_chunked_equals_unchunked():
    from magi.vae import from_diffusers

    model = _tiny_cosmos()
    video = _video(B=3, T=5, H=16, W=16)
    one = from_diffusers(model, chunk_size=1)
    all_ = from_diffusers(model, chunk_size=8)
    z = all_.encode(video)
    assert torch.allclose(one.encode(video), z, atol=1e-5)
    assert torch.allclose(one.decode(z), all_.decode(z), atol=1e-5)


def test_load_vae_from_local_directory(tmp_path):
    from magi.vae import DiffusersImageVAE, DiffusersVideoVAE

    _tiny_kl().save_pretrained(tmp_path / "kl")
    _tiny_cosmos().save_pretrained(tmp_path / "pipe" / "vae")
    kl = load_vae(str(tmp_path / "kl"))
    cosmos = load_vae(str(tmp_path / "pipe"), subfolder="vae")
    assert isinstance(kl, DiffusersImageVAE) and isinstance(cosmos, DiffusersVideoVAE)
    assert kl.identity()["source"] == str(tmp_path / "kl") and kl.identity()["class"] == "AutoencoderKL"
    video = _video(B=1, T=2, H=16, W=16)
    assert torch.allclose(kl.encode(video), load_vae(str(tmp_path / "kl")).encode(video))
    bf16 = load_vae(str(tmp_path / "kl"), dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.encode(video).dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_vae(str(tmp_path))
