"""Gaussian diffusion for one token at a time: schedules, the hybrid training loss, DDPM and DDIM.

The process owns noise and sampling; the network (the diffusion head) only predicts. The model
predicts eps and an interpolation `v` in [-1, 1] between the lower (posterior) and upper (beta) log
variances, as in improved DDPM; the loss is MSE on eps plus the variational bound for the variance
with the mean stopped (MAR's and DiT's "hybrid" loss). Sampling can be respaced to fewer steps.

Shapes: tokens are (M, C) — M tokens of C channels each; timesteps are (M,) longs.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (M, C), t (M,)) -> (M, 2C)


def cosine_betas(num_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule, in float64."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
             for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float64)


def linear_betas(num_steps: int) -> torch.Tensor:
    """DDPM's linear schedule scaled to `num_steps` (1e-4 .. 0.02 at 1000 steps), in float64."""
    scale = 1000 / num_steps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)


def respaced_timesteps(num_steps: int, sample_steps: int) -> list[int]:
    """`sample_steps` evenly strided timesteps out of `num_steps`, always including 0 and the last."""
    if not 1 <= sample_steps <= num_steps:
        raise ValueError(f"diffusion_steps: expected 1..{num_steps}, got {sample_steps}")
    if sample_steps == 1:
        return [num_steps - 1]
    stride = (num_steps - 1) / (sample_steps - 1)
    return sorted({round(i * stride) for i in range(sample_steps)})


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x, means, log_scales) -> torch.Tensor:
    """Log-likelihood of data in [-1, 1] under a Gaussian discretized to 256 bins (DDPM's decoder)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))


class GaussianDiffusion:
    """A discrete-time Gaussian diffusion with learned-range variances.

    `timestep_map[i]` is the original (1000-step) timestep that index i of this (possibly respaced)
    process corresponds to; the network is always called with original timesteps.
    """

    def __init__(self, betas: torch.Tensor, timestep_map: Optional[list[int]] = None):
        betas = betas.to(torch.float64)
        self.num_timesteps = len(betas)
        self.timestep_map = torch.tensor(timestep_map if timestep_map is not None
                                         else list(range(self.num_timesteps)), dtype=torch.long)
        alphas = 1.0 - betas
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1).sqrt()
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # log of the posterior variance, clipped: it is 0 at t = 0 (t = 1's stands in for it; a process
        # respaced to one step has no t = 1, and its beta stands in: `--diffusion-steps 1` samples)
        first = self.posterior_variance[1:2] if self.num_timesteps > 1 else betas[:1]
        self.posterior_log_variance_clipped = torch.log(torch.cat([first, self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / (1.0 - self.alphas_cumprod)

    @classmethod
    def create(cls, num_steps: int = 1000, schedule: str = "cosine") -> "GaussianDiffusion":
        if schedule == "cosine":
            return cls(cosine_betas(num_steps))
        if schedule == "linear":
            return cls(linear_betas(num_steps))
        raise ValueError(f"noise_schedule: expected 'cosine' or 'linear', got {schedule!r}")

    def respaced(self, sample_steps: int) -> "GaussianDiffusion":
        """The same process on `sample_steps` of the original timesteps (improved DDPM respacing)."""
        use = respaced_timesteps(self.num_timesteps, sample_steps)
        last, betas = 1.0, []
        for i in use:
            betas.append(1 - self.alphas_cumprod[i].item() / last)
            last = self.alphas_cumprod[i].item()
        return GaussianDiffusion(torch.tensor(betas, dtype=torch.float64),
                                 [int(self.timestep_map[i]) for i in use])

    @staticmethod
    def _extract(arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """arr[t] as a float tensor broadcastable to `like` (M, C)."""
        out = arr.to(device=t.device)[t].to(torch.float32)
        return out.view(-1, *([1] * (like.dim() - 1)))

    # ---- forward process
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def q_posterior(self, x0, x_t, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log variance of q(x_{t-1} | x_t, x0)."""
        mean = (self._extract(self.posterior_mean_coef1, t, x_t) * x0
                + self._extract(self.posterior_mean_coef2, t, x_t) * x_t)
        return mean, self._extract(self.posterior_log_variance_clipped, t, x_t)

    # ---- reverse process
    def p_mean_variance(self, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> dict:
        """Turn the network's (eps, v) output into p(x_{t-1} | x_t): mean, log variance, x0 and eps."""
        eps, v = model_out.float().chunk(2, dim=-1)  # (M, C) each
        min_log = self._extract(self.posterior_log_variance_clipped, t, x_t)
        max_log = self._extract(torch.log(self.betas), t, x_t)
        frac = (v + 1) / 2
        log_variance = frac * max_log + (1 - frac) * min_log
        x0 = (self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
              - self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)
        mean, _ = self.q_posterior(x0, x_t, t)
        return {"mean": mean, "log_variance": log_variance, "x0": x0, "eps": eps}

    def training_losses(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor) -> dict:
        """Hybrid loss per token (M,): MSE on eps + the VLB term for the variance (mean detached)."""
        x_t = self.q_sample(x0, t, noise)
        out = model_fn(x_t, self.timestep_map.to(t.device)[t]).float()  # (M, 2C)
        eps, v = out.chunk(2, dim=-1)
        mse = (eps - noise).pow(2).mean(dim=-1)
        # the variational bound trains only the variance: the mean goes in frozen
        frozen = torch.cat([eps.detach(), v], dim=-1)
        p = self.p_mean_variance(frozen, x_t, t)
        true_mean, true_log_var = self.q_posterior(x0, x_t, t)
        kl = normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"]).mean(dim=-1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(
            x0, p["mean"], 0.5 * p["log_variance"]).mean(dim=-1) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        return {"loss": mse + vb, "mse": mse, "vb": vb}

    def ddpm_sample(self, model_fn: ModelFn, noise: torch.Tensor, temperature: float = 1.0,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Ancestral sampling from `noise` (M, C); temperature scales the noise added at each step."""
        x = noise
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            p = self.p_mean_variance(model_fn(x, self.timestep_map.to(x.device)[t]), x, t)
            if i > 0:
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = p["mean"] + torch.exp(0.5 * p["log_variance"]) * z * temperature
            else:
                x = p["mean"]
        return x

    def ddim_sample(self, model_fn: ModelFn, noise: torch.Tensor, eta: float = 0.0,
                    temperature: float = 1.0,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """DDIM sampling from `noise` (M, C); eta = 0 is deterministic given the initial noise, and
        `temperature` scales only the noise added when eta > 0 (the head scales `noise` itself)."""
        x = noise
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            p = self.p_mean_variance(model_fn(x, self.timestep_map.to(x.device)[t]), x, t)
            a_bar = self._extract(self.alphas_cumprod, t, x)
            a_bar_prev = self._extract(self.alphas_cumprod_prev, t, x)
            sigma = (eta * ((1 - a_bar_prev) / (1 - a_bar)).sqrt() * (1 - a_bar / a_bar_prev).sqrt())
            x = p["x0"] * a_bar_prev.sqrt() + (1 - a_bar_prev - sigma**2).sqrt() * p["eps"]
            if i > 0 and eta > 0:
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + sigma * z * temperature
        return x
