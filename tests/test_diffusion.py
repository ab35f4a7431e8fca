"""The diffusion maths: schedules, respacing, and a head that learns a 2-D Gaussian mixture."""

import math

import pytest
import torch

from magi.model.diffusion import GaussianDiffusion, cosine_betas, respaced_timesteps
from magi.model.diffusion_head import DiffusionHead


def test_cosine_schedule_shape_and_range():
    betas = cosine_betas(1000)
    assert betas.shape == (1000,)
    assert (betas > 0).all() and (betas <= 0.999).all()
    a_bar = torch.cumprod(1 - betas, 0)
    assert a_bar[0] > 0.9999 and a_bar[-1] < 1e-4
    assert (a_bar[1:] < a_bar[:-1]).all()


def test_respacing_keeps_cumulative_alphas():
    d = GaussianDiffusion.create(1000, "cosine")
    r = d.respaced(100)
    assert r.num_timesteps == 100 and r.timestep_map[0] == 0 and r.timestep_map[-1] == 999
    # the respaced chain visits the same marginals q(x_t | x_0) at the kept timesteps
    torch.testing.assert_close(r.alphas_cumprod, d.alphas_cumprod[r.timestep_map], rtol=1e-9, atol=1e-12)
    assert respaced_timesteps(1000, 1000) == list(range(1000))
    with pytest.raises(ValueError, match="diffusion_steps"):
        respaced_timesteps(1000, 0)


def test_q_sample_marginal_statistics():
    d = GaussianDiffusion.create(1000, "cosine")
    x0 = torch.full((20000, 2), 1.5)
    t = torch.full((20000,), 500)
    xt = d.q_sample(x0, t, torch.randn_like(x0))
    a = d.alphas_cumprod[500].item()
    assert abs(xt.mean().item() - math.sqrt(a) * 1.5) < 0.03
    assert abs(xt.var().item() - (1 - a)) < 0.03


def test_perfect_eps_gives_true_posterior_and_zero_mse():
    d = GaussianDiffusion.create(1000, "cosine")
    x0 = torch.randn(64, 3)
    noise = torch.randn(64, 3)
    t = torch.randint(1, 1000, (64,))
    xt = d.q_sample(x0, t, noise)
    out = d.p_mean_variance(torch.cat([noise, torch.full_like(noise, -1.0)], -1), xt, t)
    mean, logvar = d.q_posterior(x0, xt, t)
    torch.testing.assert_close(out["x0"], x0, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(out["mean"], mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["log_variance"], logvar.expand_as(xt))  # v = -1 -> the posterior variance
    losses = d.training_losses(lambda x, s: torch.cat([noise, -torch.ones_like(noise)], -1), x0, t, noise)
    assert losses["mse"].abs().max() < 1e-10
    assert losses["vb"].abs().max() < 1e-3  # the KL vanishes for the true posterior


MEANS = torch.tensor([[-1.5, 0.5], [1.5, -0.5]])
COVS = torch.tensor([[[0.3, 0.1], [0.1, 0.5]], [[0.6, -0.2], [-0.2, 0.3]]])


def _exact_eps(d: GaussianDiffusion, mean: torch.Tensor, cov: torch.Tensor):
    """The optimal denoiser for Gaussian data: E[eps | x_t] in closed form (variance output v = 0)."""

    def model_fn(x, t):  # t: original timesteps
        a = d.alphas_cumprod[t].float()[:, None, None]  # (M, 1, 1)
        cov_t = a * cov + (1 - a) * torch.eye(2)
        r = (x - a[:, :, 0].sqrt() * mean).unsqueeze(-1)
        eps = (1 - a).sqrt() * torch.linalg.solve(cov_t, r)
        return torch.cat([eps.squeeze(-1), torch.zeros_like(x)], -1)

    return model_fn


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("sampler,steps", [("ddpm", 100), ("ddim", 25)])
def test_samplers_with_exact_denoiser(schedule, sampler, steps):
    """With the true eps, respaced DDPM and DDIM reproduce the data distribution."""
    d = GaussianDiffusion.create(1000, schedule)
    p = d.respaced(steps)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(20000, 2, generator=g)
    fn = _exact_eps(d, MEANS[0], COVS[0])
    x = p.ddpm_sample(fn, noise, generator=g) if sampler == "ddpm" else p.ddim_sample(fn, noise)
    assert (x.mean(0) - MEANS[0]).abs().max() < 0.02
    # DDIM with 25 uniform steps under-disperses by up to ~20% even with the true eps (discretization)
    rtol = 0.06 if sampler == "ddpm" else 0.25
    torch.testing.assert_close(torch.cov(x.T), COVS[0], rtol=rtol, atol=0.01)


def _mixture(n: int, g: torch.Generator):
    comp = torch.randint(0, 2, (n,), generator=g)
    chol = torch.linalg.cholesky(COVS)
    x = MEANS[comp] + (chol[comp] @ torch.randn(n, 2, 1, generator=g)).squeeze(-1)
    return x, torch.nn.functional.one_hot(comp, 2).float(), comp


def _train_head(steps: int) -> DiffusionHead:
    """MAR's head (3 AdaLN blocks) trained with the hybrid loss on a 2-component mixture, each
    component given as the condition z. The linear schedule: see the note on the presets in
    magi/config.py for why a briefly trained head cannot use the cosine one."""
    torch.manual_seed(0)
    head = DiffusionHead(channels=2, cond_dim=2, width=128, depth=3, batch_mul=4, schedule="linear")
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, z, _ = _mixture(128, g)
        loss = head(x, z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head


@pytest.fixture(scope="module")
def trained_head():
    """Trained to match the mixture: DDIM's deterministic sampler needs an accurate eps field (1,500
    steps are not enough): 3,000 steps, ~70 s on a fast free 2-core machine, ~160 s on a slow one."""
    return _train_head(3000)


@pytest.fixture(scope="module")
def brief_head():
    """Trained enough to tell the components apart, for what the samplers do with it (temperature,
    guidance, seeds): 600 steps."""
    return _train_head(600)


# `trained_head` is trained inside the first test's own timeout
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sampler,steps", [("ddpm", 100), ("ddim", 25)])
def test_head_learns_gaussian_mixture(trained_head, sampler, steps):
    g = torch.Generator().manual_seed(2)
    for k in range(2):
        z = torch.nn.functional.one_hot(torch.full((4000,), k), 2).float()
        x = trained_head.sample(z, steps=steps, sampler=sampler, generator=g)
        mean, cov = x.mean(0), torch.cov(x.T)
        assert (mean - MEANS[k]).abs().max() < 0.08, (sampler, k, mean)
        rtol = 0.15 if sampler == "ddpm" else 0.3  # DDIM-25's own discretization error: see above
        torch.testing.assert_close(cov, COVS[k], rtol=rtol, atol=0.03, msg=f"{sampler} {k} {cov}")


@pytest.mark.timeout(900)  # may train `brief_head` (above)
def test_temperature_and_cfg(brief_head):
    g = torch.Generator().manual_seed(3)
    z = torch.nn.functional.one_hot(torch.zeros(3000, dtype=torch.long), 2).float()
    for sampler in ("ddpm", "ddim"):  # DDIM (deterministic) scales its starting noise: it was ignored
        cold = brief_head.sample(z, steps=50, temperature=0.5, sampler=sampler, generator=g)
        warm = brief_head.sample(z, steps=50, temperature=1.0, sampler=sampler, generator=g)
        assert torch.cov(cold.T).trace() < 0.8 * torch.cov(warm.T).trace(), sampler
    # guidance towards component 0 away from component 1 pushes samples past component 0's mean
    zz = torch.cat([z[:2000], torch.nn.functional.one_hot(torch.ones(2000, dtype=torch.long), 2).float()])
    guided = brief_head.sample(zz, steps=50, cfg=2.0, generator=g)
    assert guided.shape == (2000, 2)
    assert guided.mean(0)[0] < MEANS[0][0] - 0.3  # pushed away from component 1 (x = +1.5)


@pytest.mark.timeout(900)  # may train `brief_head` (above)
def test_sampling_is_reproducible(brief_head):
    z = torch.eye(2).repeat(8, 1)
    for sampler in ("ddpm", "ddim"):
        a = brief_head.sample(z, steps=10, sampler=sampler, generator=torch.Generator().manual_seed(5))
        b = brief_head.sample(z, steps=10, sampler=sampler, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow  # compiles the DDIM loop (~20 s)
def test_a_compiled_ddim_sampler_draws_what_the_eager_one_draws():
    """`compile_sampler` changes the speed, not the samples: same noise, same tokens to float rounding,
    with and without guidance; eager again when turned off. DDPM stays eager."""
    torch.manual_seed(0)
    head = DiffusionHead(channels=3, cond_dim=8, width=32, depth=2)
    for p in head.parameters():  # untrained heads output zeros (zero-initialised modulations)
        torch.nn.init.normal_(p, std=0.05)
    z = torch.randn(12, 8)

    def draw(cfg=1.0):
        zz = torch.cat([z, torch.zeros_like(z)]) if cfg != 1.0 else z
        return head.sample(zz, steps=5, cfg=cfg, sampler="ddim", generator=torch.Generator().manual_seed(3))

    eager, guided = draw(), draw(cfg=2.0)
    head.compile_sampler()
    torch.testing.assert_close(draw(), eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(draw(cfg=2.0), guided, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(guided, eager, atol=1e-3)  # guidance did change the samples
    head.compile_sampler(False)
    torch.testing.assert_close(draw(), eager, rtol=0, atol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_one_diffusion_step_samples(sampler):
    """`--diffusion-steps 1` is accepted by every command; a process respaced to one step had no
    clipped posterior variance to index (an IndexError traceback)."""
    one = GaussianDiffusion.create(1000, "cosine").respaced(1)
    assert one.num_timesteps == 1 and torch.isfinite(one.posterior_log_variance_clipped).all()
    x0 = torch.full((4, 3), 0.5)

    def model_fn(x_t, t):  # the exact noise of x0 (t is the original timestep 999; the step's index is 0)
        i = torch.zeros_like(t)
        eps = (x_t - one._extract(one.sqrt_alphas_cumprod, i, x_t) * x0) / one._extract(
            one.sqrt_one_minus_alphas_cumprod, i, x_t)
        return torch.cat([eps, torch.zeros_like(eps)], dim=-1)

    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    sample = one.ddpm_sample(model_fn, noise) if sampler == "ddpm" else one.ddim_sample(model_fn, noise)
    torch.testing.assert_close(sample, x0, atol=1e-2, rtol=0)  # one step from pure noise to x0 (float32)
