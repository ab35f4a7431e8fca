"""VAEs behind one small interface: video (B, T, 3, H, W) in [-1, 1] <-> normalized latents (B, T', C, h, w).

Four kinds:
- `PixelVAE` ("pixels", "pixels:4", "pixels:4:gray"): no weights, space-to-depth by a factor. Exactly
  invertible. For tests and small data (moving digits at 32 px -> 8x8 grid with "pixels:4").
- `DiffusersImageVAE`: a 2D diffusers VAE (e.g. `AutoencoderKL`) applied to every frame independently.
- `DiffusersVideoVAE`: a 3D diffusers VAE (e.g. `AutoencoderKLCosmos`), causal in time: T frames ->
  1 + (T - 1) / temporal_stride latent frames. Diffusers uses (B, C, T, H, W); we convert at the boundary.
- `CosmosTokenizerVAE`: NVIDIA's Cosmos tokenizer run from its published TorchScript files
  (`encoder.jit`, `decoder.jit`), e.g. the paper's Cosmos 0.1 CV4x8x8: 17 frames -> 5 latent frames of
  16 channels at 1/8 the size. Loading it runs the archives' TorchScript code (see the class).

Latents are normalized with the constants in the VAE's own config, following diffusers' pipelines:
`z_norm = (z - mean) / std * scaling_factor`, where mean/std are `latents_mean`/`latents_std` when the
config has them (per channel, or per channel and latent frame as in Cosmos) and otherwise
`shift_factor` (or 0) and 1. `decode` inverts exactly that.

Encoding and decoding are chunked (frames for 2D, videos for 3D) to bound memory; the result equals the
unchunked one. The wrapped model is frozen (`requires_grad=False`). Inputs are cast to the model's
dtype (load with `dtype=torch.bfloat16` for bf16) and outputs returned as float32.
"""

from __future__ import annotations

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

    def compile_decoder(self, enabled: bool = True) -> bool:
        """torch.compile the decoder network (with `enabled`; eager again without); False where there is
        none worth compiling (this default)."""
        return False


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


class _NormalizedVAE(VideoVAE):
    """Latent normalization `(z - mean) / std * scaling` (mean/std (C, K), K = 1 or per latent frame) and
    a fingerprint of the frozen weights: the parts the weight-backed adapters share."""

    def _set_normalization(self, mean: torch.Tensor, std: torch.Tensor, scaling: float) -> None:
        self.scaling = scaling
        self.register_buffer("latents_mean", mean, persistent=False)  # (C, K)
        self.register_buffer("latents_std", std, persistent=False)  # (C, K)

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

    def _normalization_record(self) -> dict:
        return {"formula": "(z - mean) / std * scaling", "mean": self.latents_mean.tolist(),
                "std": self.latents_std.tolist(), "scaling": self.scaling}

    def _weights(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A short hash of the weights (sums per tensor to 4 significant digits: stable across devices
        and dtypes, different for different checkpoints). Computed once; the weights are frozen."""
        if getattr(self, "_fingerprint", None) is None:
            import hashlib

            sums = ";".join(f"{name}:{p.detach().float().sum().item():.4g}:{p.detach().float().abs().sum().item():.4g}"
                            for name, p in self._weights().items())
            self._fingerprint = hashlib.sha1(sums.encode()).hexdigest()[:16]
        return self._fingerprint


class _DiffusersVAE(_NormalizedVAE):
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
        self._set_normalization(*_normalization(model.config, self.latent_channels))
        self._decode = model.decode  # or its compiled version (compile_decoder)

    def compile_decoder(self, enabled: bool = True) -> bool:
        """torch.compile the diffusers decoder for fixed shapes: each new batch of latents compiles once.
        A 64x64 AutoencoderKL decode took 29 ms eager and 24 ms compiled on one thread of a 2.0 GHz
        EPYC core."""
        self._decode = torch.compile(self.model.decode, dynamic=False) if enabled else self.model.decode
        return True

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _latent(self, dist: Any, generator: torch.Generator | None) -> torch.Tensor:
        return dist.sample(generator=generator) if self.sample else dist.mode()

    def _weights(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def identity(self) -> dict:
        return {
            "kind": type(self).__name__,
            "class": type(self.model).__name__,
            "source": self.source,
            "weights": self.fingerprint(),
            "config": {k: v for k, v in dict(self.model.config).items() if not k.startswith("_")},
            "normalization": self._normalization_record(),
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
        x = torch.cat([self._decode(c).sample for c in z.split(self.chunk_size)])  # (B*T, 3, H, W)
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
        x = torch.cat([self._decode(c).sample for c in z.split(self.chunk_size)])  # (B, 3, T, H, W)
        return x.float().transpose(1, 2)  # (B, T, 3, H, W)


# --------------------------------------------------------------------------------------------------
# NVIDIA's Cosmos tokenizer as published: TorchScript files

COSMOS_ENCODER, COSMOS_DECODER, COSMOS_MEAN_STD = "encoder.jit", "decoder.jit", "mean_std.pt"
COSMOS_CV4x8x8 = "nvidia/Cosmos-0.1-Tokenizer-CV4x8x8"  # the paper's 3D VAE: 17 frames -> 5 latent frames
_PROBE_FRAMES, _PROBE_SIZE = 17, 32  # the geometry probe: 17 frames (1 + 16) of 32 x 32


class CosmosTokenizerVAE(_NormalizedVAE):
    """NVIDIA's continuous causal video tokenizer (Cosmos 0.1 CV4x8x8, the paper's 3D VAE, and its CV
    siblings) run from the TorchScript files it is published as: `encoder.jit` and `decoder.jit`.

    Decision: run the TorchScript modules themselves rather than convert their weights into
    `diffusers.AutoencoderKLCosmos`. What NVIDIA's code (github.com/NVIDIA/Cosmos-Tokenizer) fixes:
    - `cosmos_tokenizer/video_lib.py` (`CausalVideoTokenizer`) and `utils.py` (`load_jit_model`): the
      reference inference loads each file with `torch.jit.load` and calls it directly. The encoder takes
      (B, 3, T, H, W) in [-1, 1] in the model's dtype (bf16 by default there) and returns a tuple whose
      first element is the latent (B, 16, T', h, w); the decoder takes that latent and returns
      (B, 3, T, H, W) in [-1, 1].
    - `networks/continuous_video.py`: encoder.jit = encoder -> quant_conv -> distribution, decoder.jit =
      post_quant_conv -> decoder; `networks/configs.py`: 16 latent channels, Haar patching of 4, the
      "AE" formulation, whose `IdentityDistribution` (`modules/distributions.py`) returns the latent
      itself and a placeholder: encoding is deterministic, there is no posterior to sample.
    - `modules/layers3d.py` (`EncoderFactorized`, `DecoderFactorized`): with temporal compression 4 the
      4x in time comes from the causal Haar patcher alone (the first frame is encoded on its own), so
      T = 1 + 4k frames -> 1 + k latent frames, 8x in space; the 4x decoder has one up level fewer
      than the encoder (`channels_mult` [2, 4]).
    - No latent statistics are published for the 0.1 tokenizers; NVIDIA's library returns raw latents.
      diffusers' converter reads a `mean_std.pt` where a repository has one (Cosmos 1.0).
    Why not a conversion: diffusers' converter (`scripts/convert_cosmos_to_diffusers.py`) knows only the
    CV8x8x8 configs, and its key map assumes three decoder levels; a CV4x8x8 conversion would need a
    config and key map nobody has checked against the released weights, and a mistake there shows only
    as worse reconstructions. The TorchScript files are NVIDIA's own inference path, exact by
    construction, and serve every CV tokenizer. Nothing is lost for MAGI: the VAE is frozen and its
    clips are short (no gradient checkpointing or tiling needed).

    Loading TorchScript runs the archive's code: `torch.jit.load` compiles the TorchScript program stored
    in the file and `encode`/`decode` execute it. It is not arbitrary Python, but it is code from the file:
    load only archives you trust (NVIDIA's hub repositories, or files you made).

    The geometry (latent channels, spatial and temporal strides) is read by encoding a probe clip of
    17 frames of 32 x 32 once at construction and decoding its latent back (which also checks that the
    two files belong together). Latents are normalized `(z - mean) / std * scaling` with `latents_mean`,
    `latents_std` (per channel, or per channel and latent frame), `scaling_factor` when given, else from a
    `mean_std.pt` next to the files when there is one, else left raw (mean 0, std 1, scaling 1).

    Args:
        encoder, decoder: the loaded TorchScript modules (or any modules with their call signature).
        chunk_size: videos encoded/decoded per call.
        latents_mean, latents_std, scaling_factor: the normalization (see above).
        source: where the files came from (recorded in `identity()`).
    """

    causal = True

    def __init__(self, encoder: nn.Module, decoder: nn.Module, chunk_size: int = 1,
                 latents_mean: Any = None, latents_std: Any = None, scaling_factor: float | None = None,
                 source: str | None = None) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"CosmosTokenizerVAE.chunk_size: expected >= 1, got {chunk_size}")
        self.encoder, self.decoder = encoder.eval(), decoder.eval()
        for p in [*encoder.parameters(), *decoder.parameters()]:  # ScriptModules lack requires_grad_
            p.requires_grad_(False)
        self.chunk_size, self.source = chunk_size, source
        self._probe()
        config = type("Normalization", (), {"latents_mean": latents_mean, "latents_std": latents_std,
                                            "scaling_factor": scaling_factor})
        self._set_normalization(*_normalization(config, self.latent_channels))

    @property
    def dtype(self) -> torch.dtype:
        p = next(iter(self.encoder.parameters()), None)
        return torch.float32 if p is None else p.dtype

    @property
    def device(self) -> torch.device:
        p = next(iter(self.encoder.parameters()), None)
        return torch.device("cpu") if p is None else p.device

    def _encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """NVIDIA layout in, NVIDIA layout out: (b, 3, T, H, W) -> latent (b, C, T', h, w)."""
        out = self.encoder(x)
        z = out if isinstance(out, torch.Tensor) else out[0]  # the tokenizer returns (latent, ...)
        if not isinstance(z, torch.Tensor) or z.ndim != 5 or not z.is_floating_point():
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{self.source or 'Cosmos tokenizer'}: {COSMOS_ENCODER} returned {got}, not a "
                             f"continuous latent (B, C, T', h, w); MAGI needs a continuous (CV) tokenizer, "
                             f"not a discrete (DV) one")
        return z

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        return out if isinstance(out, torch.Tensor) else out[0]  # (b, 3, T, H, W)

    @torch.no_grad()
    def _probe(self) -> None:
        T, S = _PROBE_FRAMES, _PROBE_SIZE
        x = torch.zeros(1, 3, T, S, S, dtype=self.dtype, device=self.device)  # (1, 3, T, H, W)
        z = self._encode_raw(x)  # (1, C, T', h, w)
        C, t, h, w = z.shape[1:]
        if h != w or S % h or t < 2 or (T - 1) % (t - 1):
            raise ValueError(f"{self.source or 'Cosmos tokenizer'}: a {T}-frame {S}x{S} probe clip encodes to "
                             f"{tuple(z.shape)}, which is no causal video tokenizer's geometry")
        self.latent_channels, self.spatial_stride = int(C), S // h
        self.temporal_stride = (T - 1) // (t - 1)
        y = self._decode_raw(z)
        if tuple(y.shape) != (1, 3, T, S, S):
            raise ValueError(f"{self.source or 'Cosmos tokenizer'}: {COSMOS_DECODER} turns the probe latent "
                             f"{tuple(z.shape)} into {tuple(y.shape)}, not (1, 3, {T}, {S}, {S}): the encoder "
                             f"and decoder files do not belong together")

    def _weights(self) -> dict[str, torch.Tensor]:
        return {**{f"encoder.{k}": v for k, v in self.encoder.state_dict().items()},
                **{f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}}

    def identity(self) -> dict:
        return {
            "kind": type(self).__name__,
            "class": "Cosmos tokenizer (TorchScript)",
            "source": self.source,
            "weights": self.fingerprint(),
            "config": {"latent_channels": self.latent_channels, "spatial_stride": self.spatial_stride,
                       "temporal_stride": self.temporal_stride, "causal": True},
            "normalization": self._normalization_record(),
            "sample_posterior": False,
        }

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """video (B, T, 3, H, W) in [-1, 1], T = 1 + k * temporal_stride -> normalized latents (B, T', C, h, w).
        `generator` is accepted for the common signature; the tokenizer is deterministic."""
        _check_video(video, type(self).__name__)
        self.latent_shape(*video.shape[1:2], *video.shape[3:])  # raises on a clip the tokenizer cannot take
        x = video.to(self.dtype).transpose(1, 2)  # (B, 3, T, H, W)
        z = torch.cat([self._encode_raw(c) for c in x.split(self.chunk_size)])  # (B, C, T', h, w)
        return self.normalize(z.transpose(1, 2))  # (B, T', C, h, w)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents (B, T', C, h, w) -> video (B, 1 + (T' - 1) * temporal_stride, 3, H, W), float32."""
        if latents.ndim != 5 or latents.shape[2] != self.latent_channels:
            raise ValueError(f"{type(self).__name__}.decode: expected latents (B, T', {self.latent_channels}, "
                             f"h, w), got shape {tuple(latents.shape)}")
        z = self.denormalize(latents).transpose(1, 2).to(self.dtype)  # (B, C, T', h, w)
        x = torch.cat([self._decode_raw(c) for c in z.split(self.chunk_size)])  # (B, 3, T, H, W)
        return x.float().transpose(1, 2)  # (B, T, 3, H, W)


def _read_mean_std(path: Path) -> tuple[Any, Any]:
    """(mean, std) from a Cosmos `mean_std.pt` (a pair of tensors; loaded without unpickling code)."""
    pair = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{path}: expected a (mean, std) pair of tensors")
    return pair[0].float().flatten().tolist(), pair[1].float().flatten().tolist()


def load_cosmos_tokenizer(directory: str | Path, *, dtype: torch.dtype = torch.float32,
                          device: str | torch.device | None = None, chunk_size: int | None = None,
                          latents_mean: Any = None, latents_std: Any = None,
                          scaling_factor: float | None = None, source: str | None = None) -> CosmosTokenizerVAE:
    """A `CosmosTokenizerVAE` from a directory holding NVIDIA's `encoder.jit` and `decoder.jit`.

    Runs the archives' TorchScript code (see `CosmosTokenizerVAE`): load only files you trust.
    """
    directory = Path(directory)
    for name in (COSMOS_ENCODER, COSMOS_DECODER):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"Cosmos tokenizer: {directory / name} not found (a TorchScript tokenizer "
                                    f"directory holds {COSMOS_ENCODER} and {COSMOS_DECODER}, as in the hub's "
                                    f"{COSMOS_CV4x8x8})")
    import warnings

    device = torch.device(device) if device is not None else torch.device("cpu")
    with warnings.catch_warnings():  # NVIDIA publishes TorchScript only: torch's deprecation note is not actionable
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning)
        modules = [torch.jit.load(str(directory / name), map_location=device).to(dtype)
                   for name in (COSMOS_ENCODER, COSMOS_DECODER)]
    if latents_mean is None and latents_std is None and (directory / COSMOS_MEAN_STD).is_file():
        latents_mean, latents_std = _read_mean_std(directory / COSMOS_MEAN_STD)
    vae = CosmosTokenizerVAE(*modules, chunk_size=chunk_size or 1, latents_mean=latents_mean,
                             latents_std=latents_std, scaling_factor=scaling_factor,
                             source=source or str(directory))
    return vae.to(device)  # the normalization buffers join the modules


def _has_torchscript_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in (COSMOS_ENCODER, COSMOS_DECODER, "autoencoder.jit"))


def _diffusers_class_name(config_file: Path) -> str | None:
    import json

    return json.loads(config_file.read_text()).get("_class_name")


def _download_cosmos_tokenizer(spec: str, subfolder: str | None) -> Path:
    """The hub repository's TorchScript tokenizer files (and `mean_std.pt` if any) in the local cache."""
    from huggingface_hub import snapshot_download

    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    snapshot = snapshot_download(spec, allow_patterns=[prefix + n for n in (COSMOS_ENCODER, COSMOS_DECODER,
                                                                             COSMOS_MEAN_STD)])
    return Path(snapshot) / (subfolder or "")


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


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """torch.bfloat16 or "bfloat16" (as a YAML config writes it) -> torch.bfloat16."""
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"VAE dtype: expected a torch dtype such as 'float32' or 'bfloat16', got {dtype!r}")
    return value


def load_vae(spec: str, *, subfolder: str | None = None, dtype: torch.dtype | str = torch.float32,
             device: str | torch.device | None = None, chunk_size: int | None = None,
             sample: bool = False, what: str = "VAE spec", **options: Any) -> VideoVAE:
    """Build a VAE from a spec string.

    A spec that reads as a local path but does not exist raises FileNotFoundError, starting with `what`
    (the flag or config key it came from), instead of being looked up on the Hub (see
    `magi.errors.missing_local_path`).

    - "pixels", "pixels:F", "pixels:F:gray": `PixelVAE` (no weights).
    - a local directory or a Hugging Face hub id (with `subfolder` inside it):
      - with a diffusers `config.json` (`_class_name`): loaded with diffusers' own `from_pretrained`. For
        a pipeline repository pass `subfolder="vae"`, e.g. `load_vae("nvidia/Cosmos-1.0-Tokenizer-CV8x8x8",
        subfolder="vae")`. `options` go to `from_pretrained`.
      - with NVIDIA's TorchScript `encoder.jit` / `decoder.jit` (Cosmos tokenizers, e.g. the paper's
        `load_vae("nvidia/Cosmos-0.1-Tokenizer-CV4x8x8")`): `CosmosTokenizerVAE`, which runs the files'
        TorchScript code (load only files you trust); `options` may set `latents_mean`, `latents_std`,
        `scaling_factor`. From the hub only those files (and a `mean_std.pt`) are downloaded.
    `dtype` is the VAE's compute dtype (a torch dtype or its name, e.g. "bfloat16").
    """
    from magi.errors import missing_local_path

    if missing_local_path(str(spec)):  # a typo in a local path: say so rather than ask the Hub
        raise FileNotFoundError(f"{what}: {spec} does not exist (expected 'pixels[:F[:gray]]', a local "
                                f"diffusers VAE folder or a Hugging Face Hub id)")
    if spec == "pixels" or spec.startswith("pixels:"):
        vae: VideoVAE = parse_pixels_spec(spec)
        return vae.to(device) if device is not None else vae
    dtype = _as_dtype(dtype)
    source = spec if subfolder is None else f"{spec}/{subfolder}"

    def cosmos(directory: Path) -> VideoVAE:
        if sample:
            raise ValueError(f"VAE {source}: sample=True, but the Cosmos CV tokenizers are deterministic "
                             f"autoencoders (no posterior to sample)")
        return load_cosmos_tokenizer(directory, dtype=dtype, device=device, chunk_size=chunk_size,
                                     source=source, **options)

    where = Path(spec) / (subfolder or "")
    config_file = where / "config.json"
    if Path(spec).exists():  # a local directory
        cls_name = _diffusers_class_name(config_file) if config_file.is_file() else None
        if cls_name is None and _has_torchscript_tokenizer(where):
            return cosmos(where)
        if not config_file.is_file():
            raise FileNotFoundError(f"VAE {spec}: no config.json (a diffusers VAE) and no {COSMOS_ENCODER} / "
                                    f"{COSMOS_DECODER} (a Cosmos TorchScript tokenizer) in {where}")
    else:  # a hub id
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            config_path = hf_hub_download(spec, "config.json", subfolder=subfolder)
        except EntryNotFoundError:  # the repository exists, the file does not (or is not cached offline)
            config_path = None
        except Exception as e:  # noqa: BLE001 - any other failure here is "cannot find that VAE"
            raise ValueError(f"VAE spec {spec!r}: not 'pixels', not a local directory, and the hub lookup "
                             f"failed: {e}") from e
        cls_name = _diffusers_class_name(Path(config_path)) if config_path else None
        if cls_name is None:
            try:
                directory = _download_cosmos_tokenizer(spec, subfolder)
            except Exception as e:  # noqa: BLE001
                if config_path is None:
                    raise ValueError(f"VAE spec {spec!r}: the hub repository{f' (subfolder {subfolder})' if subfolder else ''} "
                                     f"has neither a config.json nor {COSMOS_ENCODER} / {COSMOS_DECODER}: {e}") from e
                directory = None
            if directory is not None and _has_torchscript_tokenizer(directory):
                return cosmos(directory)
            if config_path is None:
                raise ValueError(f"VAE spec {spec!r}: the hub repository{f' (subfolder {subfolder})' if subfolder else ''} "
                                 f"has neither a config.json nor {COSMOS_ENCODER} / {COSMOS_DECODER}")
    import diffusers
    from diffusers import AutoencoderKL

    cls = getattr(diffusers, cls_name, None) if cls_name else AutoencoderKL
    if cls is None:
        raise ValueError(f"VAE {spec}: config names class {cls_name!r}, which diffusers does not have")
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:  # diffusers would warn and fall back to this anyway
        options.setdefault("low_cpu_mem_usage", False)
    model = cls.from_pretrained(spec, subfolder=subfolder, torch_dtype=dtype, **options)
    vae = from_diffusers(model, chunk_size=chunk_size, sample=sample, source=source)
    return vae.to(device) if device is not None else vae


__all__ = ["VideoVAE", "PixelVAE", "DiffusersImageVAE", "DiffusersVideoVAE", "CosmosTokenizerVAE",
           "from_diffusers", "load_vae", "load_cosmos_tokenizer", "parse_pixels_spec"]
