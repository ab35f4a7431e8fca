"""`MagiPipeline`: the public face of sampling, in diffusers' convention.

    from magi import MagiPipeline
    pipe = MagiPipeline.from_pretrained("pretrained/text_digits")
    video = pipe(prompt=["the digit 3 is moving up then down"], guidance_scale=7.0,
                 generator=torch.Generator().manual_seed(0))        # uint8 (B, T, H, W, 3)

One folder gives every component: the model (EMA weights), the VAE it was trained with and, for a text
model, its text encoder (the run config's `text_encoder.name`, read from inside the folder when the
folder carries it). The pipeline owns encoding the prompt (memoised per caption), guidance and
decoding; the model stays free of text-encoder code (NOVA's split). The same call serves class labels,
context frames and actions for the checkpoints that take them; inputs are checked up front and an
error names the argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from magi.pretrained import LoadedCheckpoint, load_pretrained


class MagiPipeline:
    """A loaded model + VAE (+ text encoder) that turns prompts / classes / context / actions into frames."""

    def __init__(self, checkpoint: LoadedCheckpoint, text_encoder=None):
        self.checkpoint = checkpoint
        self.model, self.vae = checkpoint.model, checkpoint.vae
        self.text_encoder = text_encoder
        if self.config.text_dim and text_encoder is None:
            raise ValueError(f"text_encoder: the model at {checkpoint.path} takes captions; give its text encoder")

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.checkpoint.device

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], step: Optional[int] = None, ema: bool = True,
                        vae: Optional[str] = None, text_encoder: Optional[str] = None,
                        device: Union[str, torch.device] = "cpu") -> "MagiPipeline":
        """Load from an exported folder, a training checkpoint or run directory, or a hub id. The text
        encoder is `text_encoder` if given, else the run config's `text_encoder.name` (a folder inside
        the model's own folder first, so the folder works wherever it is copied)."""
        return cls.from_checkpoint(load_pretrained(path, step=step, ema=ema, vae=vae, device=device), text_encoder)

    @classmethod
    def from_checkpoint(cls, ckpt: LoadedCheckpoint, text_encoder: Optional[str] = None) -> "MagiPipeline":
        """A pipeline over an already loaded checkpoint, with its text encoder loaded (text models)."""
        encoder = None
        if ckpt.model.config.text_dim:
            from magi.text import TextEncoder

            name = text_encoder or ((ckpt.run_config or {}).get("text_encoder") or {}).get("name")
            if not name:
                raise ValueError(f"{ckpt.path}: a text model without `text_encoder.name` in its train_config.yaml; "
                                 "pass text_encoder= (a transformers encoder's folder or hub id)")
            inside = Path(ckpt.path) / name  # an exported folder carries its encoder (magi.demo.export_pretrained)
            if text_encoder is None and not Path(name).is_absolute() and inside.is_dir():
                name = str(inside)
            encoder = TextEncoder.from_pretrained(name, max_length=ckpt.model.config.text_len, device=ckpt.device)
            if encoder.width != ckpt.model.config.text_dim:
                raise ValueError(f"text_encoder: {name!r} is {encoder.width} wide but the model takes "
                                 f"text_dim={ckpt.model.config.text_dim}")
        return cls(ckpt, encoder)

    # ---------------------------------------------------------------- inputs
    def encode_prompt(self, prompt: Sequence[str]) -> torch.Tensor:
        """Prompts -> caption embeddings (B, text_len, text_dim) on the model's device; an empty prompt is
        the learned null caption; a prompt longer than the encoder takes is truncated with a warning."""
        if self.text_encoder is None:
            raise ValueError("prompt: this model has no text conditioning (it was trained without captions)")
        emb = self.text_encoder.encode(list(prompt)).to(self.device)  # (B, L, E)
        empty = torch.tensor([p.strip() == "" for p in prompt], device=self.device)
        null = self.model.null_text.to(emb.dtype)[None]  # (1, L, E)
        return torch.where(empty[:, None, None], null, emb)

    def _batch(self, prompt, class_labels, context, actions, num_videos) -> int:
        """The batch size all given inputs agree on; errors name the argument that disagrees."""
        sizes = {}
        if prompt is not None:
            sizes["prompt"] = len(prompt)
        if class_labels is not None:
            sizes["class_labels"] = len(class_labels)
        if context is not None:
            sizes["context"] = len(context)
        if actions is not None and not callable(actions):
            sizes["actions"] = len(actions)
        if num_videos is not None:
            sizes["num_videos"] = num_videos
        if len(set(sizes.values())) > 1:
            first = next(iter(sizes))
            other = next(k for k in sizes if sizes[k] != sizes[first])
            raise ValueError(f"{other}: {sizes[other]} given, but {first} gives a batch of {sizes[first]} "
                             f"(all of {', '.join(sizes)} must agree)")
        n = next(iter(sizes.values()), 1)
        if n < 1:
            raise ValueError(f"{next(iter(sizes))}: nothing to generate (batch of {n})")
        return n

    # ---------------------------------------------------------------- call
    @torch.no_grad()
    def __call__(self, prompt: Union[str, Sequence[str], None] = None, num_frames: Optional[int] = None,
                 num_videos: Optional[int] = None, class_labels: Optional[Sequence[int]] = None,
                 context: Optional[np.ndarray] = None, actions=None, guidance_scale: float = 1.0,
                 mask_steps: int = 64, diffusion_steps: int = 100, sampler: str = "ddpm",
                 temperature: float = 1.0, interval: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, progress: bool = False) -> np.ndarray:
        """Generate videos -> uint8 numpy (B, T, H, W, 3), VAE decoding included.

        prompt: a caption or a list (text models); "" is the null caption.
        num_frames: video frames, context included (default: the training clip's length).
        num_videos: the batch when nothing else gives it (default 1).
        class_labels: class indices (class-conditional models).
        context: uint8 (B, k, H, W, 3) first frames to continue.
        actions: (B, >= latent frames - 1) action indices, or a callable t -> action (world models).
        guidance_scale: classifier-free guidance towards the prompt / class / action (1 = none).
        """
        c = self.config
        if isinstance(prompt, str):
            prompt = [prompt]
        if prompt is not None and not c.text_dim:
            raise ValueError("prompt: this model has no text conditioning (it was trained without captions)")
        if prompt is not None and any(not isinstance(p, str) for p in prompt):
            raise ValueError(f"prompt: expected strings, got {[type(p).__name__ for p in prompt]}")
        if class_labels is not None and not c.num_classes:
            raise ValueError("class_labels: this model has no classes (num_classes = 0)")
        if actions is not None and not c.num_actions:
            raise ValueError("actions: this model is not action-conditioned (num_actions = 0)")
        if not (np.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ValueError(f"guidance_scale: expected a finite number >= 0, got {guidance_scale}")
        batch = self._batch(prompt, class_labels, context, actions, num_videos)
        ckpt = self.checkpoint
        frames = num_frames if num_frames is not None else ckpt.train_frames
        latent_frames = ckpt.latent_frames(frames)
        latent_context = None
        if context is not None:
            ctx = torch.as_tensor(np.asarray(context))
            if ctx.dtype != torch.uint8 or ctx.dim() != 5 or ctx.shape[-1] != 3:
                raise ValueError(f"context: expected uint8 (B, k, H, W, 3) frames, got {ctx.dtype} {tuple(ctx.shape)}")
            latent_context = ckpt.encode(ctx.permute(0, 1, 4, 2, 3))  # (B, k', C, h, w)
            if latent_context.shape[1] >= latent_frames:
                raise ValueError(f"num_frames: {frames} frames leave nothing to generate after "
                                 f"{ctx.shape[1]} context frames")
        interval = interval if interval is not None else ckpt.default_interval
        ckpt.check_intervals(interval)
        text = self.encode_prompt(prompt) if prompt is not None else None
        labels = None if class_labels is None else torch.as_tensor(list(class_labels), device=self.device)
        latents = self.model.generate(
            latent_frames, context=latent_context, labels=labels, intervals=interval, cfg=guidance_scale,
            mask_steps=mask_steps, diffusion_steps=diffusion_steps, temperature=temperature, sampler=sampler,
            generator=generator, batch_size=batch, progress=progress, actions=actions, text=text)
        video = ckpt.decode(latents)[:, :frames]  # (B, T, 3, H, W) uint8
        return video.permute(0, 1, 3, 4, 2).numpy()  # (B, T, H, W, 3)


__all__ = ["MagiPipeline"]
