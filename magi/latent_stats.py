"""Per-channel statistics of the latents a model trains on, and the VAE normalization that makes them
unit scale.

The eps-prediction diffusion schedule assumes data of about unit variance: MAR rescales its KL-16
latents by 0.2325 for that reason. The paper's Cosmos 0.1 tokenizer publishes no statistics, so its
latents are used raw (mean 0, std 1, scale 1) unless measured. `magi cache-latents` and the first
training batches measure them (`LatentStats`); training warns when they are far from unit scale, and
`magi cache-latents --write-vae-options FILE` writes the measured `latents_mean` / `latents_std` into
FILE's `vae.options` (composed with the VAE's current normalization, so re-encoding gives mean 0 and
std 1 per channel).
"""

from __future__ import annotations

from typing import Any

import torch

#: a channel whose std is off unit scale by more than this factor, or whose mean is more than
#: MEAN_TOLERANCE from 0, is "far from unit scale"
STD_TOLERANCE = 2.0
MEAN_TOLERANCE = 0.5


class LatentStats:
    """Running per-channel mean and std of normalized latents `(..., C, h, w)` (channels third from the
    end, as in (B, T', C, h, w) and (T', C, h, w)), accumulated in float64."""

    def __init__(self) -> None:
        self.count = 0
        self._sum: torch.Tensor | None = None
        self._sumsq: torch.Tensor | None = None

    def update(self, latents: torch.Tensor) -> None:
        x = latents.detach().to("cpu", torch.float64).movedim(-3, 0)
        x = x.reshape(x.shape[0], -1)  # (C, values)
        if self._sum is None:
            self._sum, self._sumsq = torch.zeros(len(x), dtype=torch.float64), torch.zeros(len(x), dtype=torch.float64)
        self._sum += x.sum(1)
        self._sumsq += (x * x).sum(1)
        self.count += x.shape[1]

    @property
    def mean(self) -> torch.Tensor:
        return self._sum / max(self.count, 1)

    @property
    def std(self) -> torch.Tensor:
        return (self._sumsq / max(self.count, 1) - self.mean ** 2).clamp_min(0).sqrt()

    def update_from_record(self, record: dict) -> None:
        """Restore what `record()` wrote (mean, std and count per channel)."""
        mean = torch.tensor(record["mean"], dtype=torch.float64)
        std = torch.tensor(record["std"], dtype=torch.float64)
        self.count = int(record["values_per_channel"])
        self._sum, self._sumsq = mean * self.count, (std ** 2 + mean ** 2) * self.count

    def record(self) -> dict:
        """JSON-serializable: per-channel mean and std, and how many values each channel saw."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "values_per_channel": self.count}

    def describe(self) -> str:
        mean, std = self.mean, self.std
        return (f"{len(mean)} channels, mean {float(mean.min()):+.3f}..{float(mean.max()):+.3f}, "
                f"std {float(std.min()):.3f}..{float(std.max()):.3f} (per channel: mean "
                f"{' '.join(f'{v:+.2f}' for v in mean.tolist())}; std {' '.join(f'{v:.2f}' for v in std.tolist())})")

    def far_from_unit(self) -> str | None:
        """Why these latents are far from unit scale (None when every channel is within tolerance)."""
        mean, std = self.mean, self.std
        off = [c for c in range(len(std)) if not 1 / STD_TOLERANCE <= float(std[c]) <= STD_TOLERANCE
               or abs(float(mean[c])) > MEAN_TOLERANCE]
        if not off:
            return None
        return (f"latent channel{'s' if len(off) > 1 else ''} {', '.join(map(str, off))} of {len(std)} "
                f"{'are' if len(off) > 1 else 'is'} far from unit scale (std outside "
                f"{1 / STD_TOLERANCE:g}..{STD_TOLERANCE:g} or |mean| > {MEAN_TOLERANCE:g}): {self.describe()}")

    def vae_options(self, vae: Any) -> dict:
        """`latents_mean` / `latents_std` for `vae.options` that map these latents to mean 0, std 1 per
        channel, composed with the VAE's current normalization `(z - m0) / s0 * k`: m1 = m0 + m * s0 / k,
        s1 = s * s0 (k kept). Per channel, or per channel and latent frame when the VAE's are."""
        m0, s0 = getattr(vae, "latents_mean", None), getattr(vae, "latents_std", None)
        if m0 is None or s0 is None:
            name = "no VAE" if vae is None else f"VAE {vae.identity().get('spec') or type(vae).__name__}"
            raise ValueError(f"{name}: no latents_mean / latents_std normalization to set (e.g. pixels)")
        k = float(getattr(vae, "scaling", 1.0))
        m, s = self.mean.float()[:, None], self.std.float()[:, None]  # (C, 1)
        m0, s0 = m0.detach().float().cpu(), s0.detach().float().cpu()  # (C, K)
        mean, std = m0 + m * s0 / k, (s * s0).clamp_min(1e-8)  # (C, K); a constant channel stays finite
        flat = mean.shape[1] == 1
        as_list = (lambda t: [round(float(v), 6) for v in t[:, 0]]) if flat else \
            (lambda t: [round(float(v), 6) for v in t.flatten()])
        return {"latents_mean": as_list(mean), "latents_std": as_list(std)}


def write_vae_options(path, options: dict) -> None:
    """Set `vae.options` keys of the YAML run config `path` (created with just that section when it does
    not exist). The file is rewritten from its parsed content: comments are not kept."""
    from pathlib import Path

    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    if data is None:
        data = {}
    if isinstance(data, dict) and isinstance(data.get("vae"), str):  # `vae: SPEC`
        data["vae"] = {"spec": data["vae"]}
    if not isinstance(data, dict) or not isinstance(data.get("vae", {}), dict):
        raise ValueError(f"--write-vae-options: {path} is not a run config with a `vae:` mapping")
    vae = data.setdefault("vae", {})
    if not isinstance(vae.get("options") or {}, dict):
        raise ValueError(f"--write-vae-options: {path}: vae.options is not a mapping")
    vae["options"] = {**(vae.get("options") or {}), **options}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


__all__ = ["LatentStats", "write_vae_options", "STD_TOLERANCE", "MEAN_TOLERANCE"]
