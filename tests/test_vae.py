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
