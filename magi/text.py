"""Text encoders: captions -> token embeddings (B, L, E) for a text model (docs/design.md §9).

A frozen `transformers` encoder and its tokenizer, loaded by hub id or local folder:
`T5EncoderModel` for T5 / mT5 / umT5 checkpoints (only the encoder's weights are read, as MAGI-1,
Open-Sora and PixArt use `google/t5-v1_1-xxl`), `CLIPTextModel` for CLIP, and `AutoModel` for any other
encoder. Captions are padded or truncated to `max_length` tokens (a longer caption is truncated with a
warning), and each caption is encoded once: the embeddings are memoised, so a training run over a
finite set of captions, or a sampler asked the same prompt again, runs the encoder once per caption.
The model (`Magi`) never sees this code: it takes the embeddings (NOVA's split of text encoder and
generator), and its learned null caption stands for "no caption".

`byte_t5` builds the small byte-level T5 encoder (the file-less `ByT5Tokenizer`) that the tests and
the built-in captioned digits use offline.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

CACHE_LIMIT = 100_000  # memoised captions; past it the oldest are forgotten


class TextEncoder:
    """A frozen transformers text encoder with its tokenizer; `encode(captions)` -> (B, L, E) float32.

    `device`: where the encoder runs (bf16 on CUDA unless `dtype` says otherwise, fp32 on the CPU).
    Embeddings come back on the CPU in float32 (the trainer moves them with the batch).
    """

    def __init__(self, model, tokenizer, max_length: int, device: Union[str, torch.device] = "cpu",
                 dtype: Optional[torch.dtype] = None, name: str = ""):
        device = torch.device(device)
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.device, self.dtype, self.name = device, dtype, name
        self._memo: dict[str, torch.Tensor] = {}
        if self.max_length <= 0:
            raise ValueError(f"text_encoder.max_length: expected > 0, got {max_length}")

    @property
    def width(self) -> int:
        """E, the encoder's hidden size."""
        config = self.model.config
        return int(getattr(config, "d_model", None) or config.hidden_size)

    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, Path], max_length: int = 120,
                        device: Union[str, torch.device] = "cpu", dtype: Optional[torch.dtype] = None,
                        **hub_kwargs) -> "TextEncoder":
        """Load an encoder and its tokenizer from a local folder or a Hugging Face Hub id."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        name = str(name_or_path)
        try:
            config = AutoConfig.from_pretrained(name, **hub_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(name, **hub_kwargs)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"text_encoder.name: {name!r} is neither a local folder with a "
                                    f"transformers encoder and its tokenizer nor a reachable hub id ({e})") from e
        model_cls = AutoModel
        if config.model_type in ("t5", "mt5", "umt5"):
            import transformers

            model_cls = getattr(transformers, {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel",
                                               "umt5": "UMT5EncoderModel"}[config.model_type])
        elif config.model_type == "clip":
            from transformers import CLIPTextModel as model_cls
        model = model_cls.from_pretrained(name, **hub_kwargs)
        return cls(model, tokenizer, max_length, device, dtype, name=name)

    def save_pretrained(self, path: Union[str, Path]) -> Path:
        """The encoder (safetensors) and its tokenizer into folder `path`, loadable by `from_pretrained`."""
        path = Path(path)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        return path

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """Captions -> embeddings (B, max_length, E) float32 on the CPU, each caption encoded once."""
        if isinstance(captions, str):
            raise ValueError("captions: expected a list of strings, got one string")
        bad = [c for c in captions if not isinstance(c, str)]
        if bad:
            raise ValueError(f"captions: expected strings, got {bad[:3]}")
        todo = list(dict.fromkeys(c for c in captions if c not in self._memo))
        if todo:
            for caption, emb in zip(todo, self._run(todo)):
                if len(self._memo) >= CACHE_LIMIT:
                    self._memo.pop(next(iter(self._memo)))
                self._memo[caption] = emb
        return torch.stack([self._memo[c] for c in captions])

    def remember(self, captions: Sequence[str], embeddings: torch.Tensor) -> None:
        """Memoise precomputed embeddings (K, max_length, E) of `captions` (a latent cache's, computed by
        this encoder), so `encode` returns them without running the encoder. Past `CACHE_LIMIT` captions
        the oldest are forgotten."""
        if isinstance(captions, str):
            raise ValueError("captions: expected a list of strings, got one string")
        expected = (len(captions), self.max_length, self.width)
        if tuple(embeddings.shape) != expected:
            raise ValueError(f"TextEncoder.remember: embeddings {tuple(embeddings.shape)} for {len(captions)} "
                             f"captions; this encoder gives {expected} (captions, max_length, width)")
        for caption, emb in zip(captions, embeddings.detach().float().cpu()):
            if caption not in self._memo and len(self._memo) >= CACHE_LIMIT:
                self._memo.pop(next(iter(self._memo)))
            self._memo[str(caption)] = emb

    def same_encoder(self, name: str, max_length: int) -> bool:
        """Whether embeddings recorded as made by `name` at `max_length` tokens are this encoder's: the
        same hub id, or the same folder however it is spelt."""
        if int(max_length) != self.max_length:
            return False
        if str(name) == self.name:
            return True
        a, b = Path(str(name)), Path(self.name)
        return a.is_dir() and b.is_dir() and a.resolve() == b.resolve()

    def _run(self, captions: list[str]) -> torch.Tensor:
        full = self.tokenizer(captions, padding="longest", truncation=False)["input_ids"]
        long = [c for c, ids in zip(captions, full) if len(ids) > self.max_length]
        if long:
            warnings.warn(f"{len(long)} caption(s) longer than the text encoder's {self.max_length} tokens are "
                          f"truncated, e.g. {long[0][:80]!r}", stacklevel=3)
        batch = self.tokenizer(captions, padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        out = self.model(input_ids=batch["input_ids"].to(self.device),
                         attention_mask=batch["attention_mask"].to(self.device))
        return out.last_hidden_state.float().cpu()  # (B, L, E)


def byte_t5(width: int = 64, layers: int = 2, heads: int = 4, seed: int = 0):
    """A small byte-level T5 encoder and the file-less ByT5 tokenizer, built offline.

    The weights are T5's initialisation from `seed` (no training): frozen, its output at each position
    still carries the byte there and its context, which is what a text model's projection and attention
    read. Tests use it as the stand-in for a real encoder; the built-in captioned digits ship one."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    tokenizer = ByT5Tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=width // heads, d_ff=2 * width,
                      num_layers=layers, num_heads=heads, feed_forward_proj="gated-gelu",
                      is_encoder_decoder=False, use_cache=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = T5EncoderModel(config)
    return model, tokenizer


def load_text_encoder(name: Union[str, Path], max_length: int, device="cpu",
                      dtype: Optional[torch.dtype] = None) -> TextEncoder:
    """The run config's `text_encoder` as a TextEncoder (a folder or hub id)."""
    return TextEncoder.from_pretrained(name, max_length=max_length, device=device, dtype=dtype)


__all__ = ["TextEncoder", "byte_t5", "load_text_encoder"]


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m magi.text byte-t5 DIR [--width W --layers N --seed S]`: write the small byte-level T5
    encoder (and its tokenizer) that a run config's `text_encoder.name: DIR` loads."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m magi.text", description=main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("byte-t5", help="write a small byte-level T5 encoder folder")
    b.add_argument("out")
    b.add_argument("--width", type=int, default=64)
    b.add_argument("--layers", type=int, default=2)
    b.add_argument("--heads", type=int, default=4)
    b.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model, tokenizer = byte_t5(args.width, args.layers, args.heads, args.seed)
    path = Path(args.out)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    print(f"wrote {path} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
