"""VAEs behind one small interface: video (B, T, 3, H, W) in [-1, 1] <-> normalized latents (B, T', C, h, w).

Three kinds:
- `PixelVAE` ("pixels", "pixels:4", "pixels:4:gray"): no weights, space-to-depth by a factor. Exactly
  invertible. For tests and small data (moving digits at 32 px -> 8x8 grid with "pixels:4").
- `DiffusersImageVAE`: a 2D diffusers VAE (e.g. `AutoencoderKL`) applied to every frame independently.
- `DiffusersVideoVAE`: a 3D diffusers VAE (e.g. `AutoencoderKLCosmos`), causal in time: T frames ->
  1 + (T - 1) / temporal_stride latent frames. Diffusers uses (B, C, T, H, W); we convert at the boundary.

Latents are normalized with the constants in the VAE's own config, following diffusers' pipelines:
`z_norm = (z - mean) / std * scaling_factor`, where mean/std are `latents_mean`/`latents_std` when the
config has them (per channel, or per channel and latent frame as in Cosmos) and otherwise
`shift_factor` (or 0) and 1. `decode` inverts exactly that.

Encoding and decoding are chunked (frames for 2D, videos for 3D) to bound memory; the result equals the
unchunked one. The wrapped model is frozen (`requires_grad=False`). Inputs are cast to the model's
dtype (load with `dtype=torch.bfloat16` for bf16) and outputs returned as float32.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def _check_video(video: torch.Tensor, name: str) -> None:
    if video.ndim != 5 or video.shape[2] != 3:
        raise ValueError(f"{name}.encode: expected video (B, T, 3, H, W), got shape {tuple(video.shape)}")


class VideoVAE(nn.Module):
    """The interface every VAE here implements.

    Attributes:
        latent_channels: C of the latents.
        spatial_stride: H / h.
        temporal_stride: frames per latent frame (1 for per-frame VAEs).
        causal: True when the first frame is encoded alone (T' = 1 + (T - 1) / temporal_stride).
    """

    latent_channels: int
    spatial_stride: int
    temporal_stride: int = 1
    causal: bool = False

    def latent_frames(self, num_video_frames: int) -> int:
        """Latent frames T' for a clip of `num_video_frames` frames; ValueError if it does not divide."""
        s, n = self.temporal_stride, num_video_frames
        if self.causal:
            if n < 1 or (n - 1) % s:
                raise ValueError(f"{type(self).__name__}: a causal VAE with temporal stride {s} needs "
                                 f"1 + {s}k frames, got {n}")
            return 1 + (n - 1) // s
        if n < 1 or n % s:
            raise ValueError(f"{type(self).__name__}: temporal stride {s} needs a multiple of {s} frames, got {n}")
        return n // s

    def video_frames(self, num_latent_frames: int) -> int:
        """Video frames decoded from `num_latent_frames` latent frames (inverse of `latent_frames`)."""
        s = self.temporal_stride
        return 1 + (num_latent_frames - 1) * s if self.causal else num_latent_frames * s

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(T', C, h, w) of the latents of a (num_frames, 3, height, width) clip."""
        s = self.spatial_stride
        if height % s or width % s:
            raise ValueError(f"{type(self).__name__}: frame size {height}x{width} is not divisible by the "
                             f"spatial stride {s}")
        return (self.latent_frames(num_frames), self.latent_channels, height // s, width // s)

    def identity(self) -> dict:
        """JSON-serializable description of this VAE and its normalization (recorded in latent caches)."""
        raise NotImplementedError

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------
# Pixels


class PixelVAE(VideoVAE):
    """Space-to-depth "VAE" without weights: (B, T, 3, H, W) -> (B, T, c * f^2, H/f, W/f), exactly invertible.

    With `grayscale=True` only one channel is kept (c = 1; decode repeats it to RGB): exact for
    grayscale video such as moving digits, where it cuts the latent channels by 3.
    """

    temporal_stride = 1
    causal = False

    def __init__(self, factor: int = 1, grayscale: bool = False) -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"PixelVAE.factor: expected a positive integer, got {factor!r}")
        self.factor, self.grayscale = factor, grayscale
        self.spatial_stride = factor
        self.latent_channels = (1 if grayscale else 3) * factor * factor

    def identity(self) -> dict:
        return {"kind": "pixels", "factor": self.factor, "grayscale": self.grayscale,
                "spec": f"pixels:{self.factor}" + (":gray" if self.grayscale else "")}

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        _check_video(video, "PixelVAE")
        B, T, _, H, W = video.shape
        f = self.factor
        if H % f or W % f:
            raise ValueError(f"PixelVAE.encode: frame size {H}x{W} is not divisible by the factor {f}")
        x = video.float().flatten(0, 1)  # (B*T, 3, H, W)
        if self.grayscale:
            # Mean of the channels written so that R = G = B returns R bit-exactly.
            x = x[:, :1] + ((x[:, 1:2] - x[:, :1]) + (x[:, 2:3] - x[:, :1])) / 3  # (B*T, 1, H, W)
        z = F.pixel_unshuffle(x, f)  # (B*T, c*f*f, H/f, W/f)
        return z.reshape(B, T, self.latent_channels, H // f, W // f)  # (B, T, C, h, w)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[2] != self.latent_channels:
            raise ValueError(f"PixelVAE.decode: expected latents (B, T, {self.latent_channels}, h, w), "
                             f"got shape {tuple(latents.shape)}")
        B, T, C, h, w = latents.shape
        x = F.pixel_shuffle(latents.float().flatten(0, 1), self.factor)  # (B*T, c, H, W)
        if self.grayscale:
            x = x.expand(-1, 3, -1, -1)  # (B*T, 3, H, W)
        return x.reshape(B, T, 3, h * self.factor, w * self.factor)  # (B, T, 3, H, W)


# --------------------------------------------------------------------------------------------------
# diffusers adapters


def _normalization(config: Any, channels: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mean (C, K), std (C, K), scaling) from a diffusers VAE config; K = 1 or latent frames (Cosmos)."""
    scaling = getattr(config, "scaling_factor", None)
    scaling = 1.0 if scaling is None else float(scaling)
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean, dtype=torch.float32)
        std = torch.tensor(std, dtype=torch.float32)
        if mean.numel() % channels or mean.shape != std.shape:
            raise ValueError(f"VAE config: latents_mean/latents_std of {mean.numel()}/{std.numel()} values do "
                             f"not fit {channels} latent channels")
        return mean.view(channels, -1), std.view(channels, -1), scaling
    shift = getattr(config, "shift_factor", None)
    shift = 0.0 if shift is None else float(shift)
    return torch.full((channels, 1), shift), torch.ones(channels, 1), scaling


def _config_value(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


class _DiffusersVAE(VideoVAE):
    """Shared parts of the diffusers adapters: the wrapped model, normalization and identity."""

    def __init__(self, model: nn.Module, chunk_size: int, sample: bool, source: str | None) -> None:
        super().__init__()
        if not hasattr(model, "encode") or not hasattr(model, "decode") or not hasattr(model, "config"):
            raise TypeError(f"{type(self).__name__}: expected a diffusers VAE (encode/decode/config), "
                            f"got {type(model).__name__}")
        if chunk_size < 1:
            raise ValueError(f"{type(self).__name__}.chunk_size: expected >= 1, got {chunk_size}")
        self.model = model.eval().requires_grad_(False)
        self.chunk_size, self.sample, self.source = chunk_size, sample, source
        channels = _config_value(model.config, "latent_channels", "z_dim")
        if channels is None:
            raise ValueError(f"{type(model).__name__} config has no latent_channels/z_dim")
        self.latent_channels = int(channels)
        mean, std, self.scaling = _normalization(model.config, self.latent_channels)
        self.register_buffer("latents_mean", mean, persistent=False)  # (C, K)
        self.register_buffer("latents_std", std, persistent=False)  # (C, K)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _stats(self, num_latent_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """mean, std as (1, T', C, 1, 1); per-frame stats beyond the config's frames reuse the last one."""
        mean, std = self.latents_mean, self.latents_std  # (C, K)
        idx = torch.arange(num_latent_frames, device=mean.device).clamp(max=mean.shape[1] - 1)
        mean = mean[:, idx].T[None, :, :, None, None]  # (1, T', C, 1, 1)
        std = std[:, idx].T[None, :, :, None, None]  # (1, T', C, 1, 1)
        return mean, std

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents (B, T', C, h, w) -> normalized."""
        mean, std = self._stats(z.shape[1])
        return (z.float() - mean) / std * self.scaling

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Normalized latents (B, T', C, h, w) -> raw VAE latents."""
        mean, std = self._stats(z.shape[1])
        return z.float() / self.scaling * std + mean

    def _latent(self, dist: Any, generator: torch.Generator | None) -> torch.Tensor:
        return dist.sample(generator=generator) if self.sample else dist.mode()

    def fingerprint(self) -> str:
        """A short hash of the weights (sums per tensor to 4 significant digits: stable across devices
        and dtypes, different for different checkpoints). Computed once; the weights are frozen."""
        if getattr(self, "_fingerprint", None) is None:
            import hashlib

            sums = ";".join(f"{name}:{p.detach().float().sum().item():.4g}:{p.detach().float().abs().sum().item():.4g}"
                            for name, p in self.model.state_dict().items())
            self._fingerprint = hashlib.sha1(sums.encode()).hexdigest()[:16]
        return self._fingerprint

    def identity(self) -> dict:
        return {
            "kind": type(self).__name__,
            "class": type(self.model).__name__,
            "source": self.source,
            "weights": self.fingerprint(),
            "config": {k: v for k, v in dict(self.model.config).items() if not k.startswith("_")},
            "normalization": {"formula": "(z - mean) / std * scaling",
                              "mean": self.latents_mean.tolist(), "std": self.latents_std.tolist(),
                              "scaling": self.scaling},
            "sample_posterior": self.sample,
        }


class DiffusersImageVAE(_DiffusersVAE):
    """A 2D diffusers VAE (AutoencoderKL and friends) applied to each frame; T' = T.

    Args:
        model: the diffusers VAE.
        chunk_size: frames encoded/decoded per call.
        sample: encode to a posterior sample (with the `generator` passed to `encode`) instead of its mode.
    """

    temporal_stride = 1
    causal = False

    def __init__(self, model: nn.Module, chunk_size: int = 32, sample: bool = False,
                 source: str | None = None) -> None:
        super().__init__(model, chunk_size, sample, source)
        blocks = _config_value(model.config, "block_out_channels")
        ratio = _config_value(model.config, "spatial_compression_ratio")
        if ratio is None and blocks is None:
            raise ValueError(f"{type(model).__name__} config has neither block_out_channels nor "
                             f"spatial_compression_ratio")
        self.spatial_stride = int(ratio) if ratio is not None else 2 ** (len(blocks) - 1)

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_video(video, type(self).__name__)
        B, T = video.shape[:2]
        frames = video.flatten(0, 1).to(self.dtype)  # (B*T, 3, H, W)
        z = torch.cat([self._latent(self.model.encode(x).latent_dist, generator)
                       for x in frames.split(self.chunk_size)])  # (B*T, C, h, w)
        return self.normalize(z.unflatten(0, (B, T)))  # (B, T, C, h, w)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        B, T = latents.shape[:2]
        z = self.denormalize(latents).flatten(0, 1).to(self.dtype)  # (B*T, C, h, w)
        x = torch.cat([self.model.decode(c).sample for c in z.split(self.chunk_size)])  # (B*T, 3, H, W)
        return x.float().unflatten(0, (B, T))  # (B, T, 3, H, W)


class DiffusersVideoVAE(_DiffusersVAE):
    """A 3D diffusers VAE (AutoencoderKLCosmos; others with the same API), causal in time.

    Args:
        model: the diffusers VAE; its config gives the strides (`temporal_compression_ratio`,
            `spatial_compression_ratio`) and the normalization.
        chunk_size: videos encoded/decoded per call.
        sample: encode to a posterior sample instead of its mode (Cosmos' posterior is deterministic).
    """

    causal = True

    def __init__(self, model: nn.Module, chunk_size: int = 1, sample: bool = False,
                 source: str | None = None) -> None:
        super().__init__(model, chunk_size, sample, source)
        t = _config_value(model.config, "temporal_compression_ratio", "scale_factor_temporal")
        s = _config_value(model.config, "spatial_compression_ratio", "scale_factor_spatial")
        if t is None or s is None:
            raise ValueError(f"{type(model).__name__} config lacks temporal/spatial compression ratios")
        self.temporal_stride, self.spatial_stride = int(t), int(s)

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_video(video, type(self).__name__)
        self.latent_frames(video.shape[1])  # raises on a frame count the VAE cannot take
        x = video.to(self.dtype).transpose(1, 2)  # (B, 3, T, H, W)
        z = torch.cat([self._latent(self.model.encode(c).latent_dist, generator)
                       for c in x.split(self.chunk_size)])  # (B, C, T', h, w)
        return self.normalize(z.transpose(1, 2))  # (B, T', C, h, w)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = self.denormalize(latents).transpose(1, 2).to(self.dtype)  # (B, C, T', h, w)
        x = torch.cat([self.model.decode(c).sample for c in z.split(self.chunk_size)])  # (B, 3, T, H, W)
        return x.float().transpose(1, 2)  # (B, T, 3, H, W)


# --------------------------------------------------------------------------------------------------
# Construction

_VIDEO_VAE_CLASSES = ("AutoencoderKLCosmos", "AutoencoderKLWan", "AutoencoderKLHunyuanVideo",
                      "AutoencoderKLLTXVideo", "AutoencoderKLMochi", "AutoencoderKLCogVideoX")


def from_diffusers(model: nn.Module, chunk_size: int | None = None, sample: bool = False,
                   source: str | None = None) -> VideoVAE:
    """Wrap an already-built diffusers VAE: 3D video VAEs get `DiffusersVideoVAE`, others the per-frame adapter."""
    video = type(model).__name__ in _VIDEO_VAE_CLASSES or \
        _config_value(model.config, "temporal_compression_ratio", "scale_factor_temporal") is not None
    if video:
        return DiffusersVideoVAE(model, chunk_size=chunk_size or 1, sample=sample, source=source)
    return DiffusersImageVAE(model, chunk_size=chunk_size or 32, sample=sample, source=source)


def parse_pixels_spec(spec: str) -> PixelVAE:
    """"pixels", "pixels:4" or "pixels:4:gray" -> PixelVAE."""
    parts = spec.split(":")
    if parts[0] != "pixels" or len(parts) > 3:
        raise ValueError(f"VAE spec {spec!r}: expected 'pixels', 'pixels:FACTOR' or 'pixels:FACTOR:gray'")
    factor = 1
    if len(parts) >= 2:
        if not parts[1].isdigit() or int(parts[1]) < 1:
            raise ValueError(f"VAE spec {spec!r}: the factor must be a positive integer, got {parts[1]!r}")
        factor = int(parts[1])
    if len(parts) == 3 and parts[2] != "gray":
        raise ValueError(f"VAE spec {spec!r}: the only option after the factor is 'gray', got {parts[2]!r}")
    return PixelVAE(factor, grayscale=len(parts) == 3)


def load_vae(spec: str, *, subfolder: str | None = None, dtype: torch.dtype = torch.float32,
             device: str | torch.device | None = None, chunk_size: int | None = None,
             sample: bool = False, **from_pretrained_kwargs: Any) -> VideoVAE:
    """Build a VAE from a spec string.

    - "pixels", "pixels:F", "pixels:F:gray": `PixelVAE` (no weights).
    - a local directory or a Hugging Face hub id: loaded with diffusers' own `from_pretrained`; the class
      comes from the directory's `config.json` (`_class_name`). For a pipeline repository pass
      `subfolder="vae"`; for the Cosmos tokenizer e.g. `load_vae("nvidia/Cosmos-1.0-Diffusion-7B-Text2World",
      subfolder="vae")`.
    """
    if spec == "pixels" or spec.startswith("pixels:"):
        vae: VideoVAE = parse_pixels_spec(spec)
        return vae.to(device) if device is not None else vae
    import diffusers
    from diffusers import AutoencoderKL

    cls_name = None
    local = Path(spec) / (subfolder or "") / "config.json"
    if local.is_file():
        import json

        cls_name = json.loads(local.read_text()).get("_class_name")
    elif Path(spec).exists():
        raise FileNotFoundError(f"VAE {spec}: no config.json in {local.parent}")
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(spec, "config.json", subfolder=subfolder)
            import json

            cls_name = json.loads(Path(path).read_text()).get("_class_name")
        except Exception as e:  # noqa: BLE001 - any failure here is "cannot find that VAE"
            raise ValueError(f"VAE spec {spec!r}: not 'pixels', not a local directory, and the hub lookup "
                             f"failed: {e}") from e
    cls = getattr(diffusers, cls_name, None) if cls_name else AutoencoderKL
    if cls is None:
        raise ValueError(f"VAE {spec}: config names class {cls_name!r}, which diffusers does not have")
    model = cls.from_pretrained(spec, subfolder=subfolder, torch_dtype=dtype, **from_pretrained_kwargs)
    vae = from_diffusers(model, chunk_size=chunk_size, sample=sample,
                         source=spec if subfolder is None else f"{spec}/{subfolder}")
    return vae.to(device) if device is not None else vae


__all__ = ["VideoVAE", "PixelVAE", "DiffusersImageVAE", "DiffusersVideoVAE", "from_diffusers", "load_vae",
           "parse_pixels_spec"]
