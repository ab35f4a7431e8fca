"""Noised context (GameNGen's fix for drift, `MagiConfig.context_noise`), pinned by perturbation.

In training the clean copies of a CTF clip's frames get Gaussian noise of a level drawn per sample, and
the level's embedding is added to them; generation commits its context clean (level 0). So: the KV cache
equals the training-style forward at level 0, a level moves only the masked frames that read a noised
clean frame, and a model without it has no level table.
"""

import pytest
import torch

from magi import Magi, MagiConfig

T, A = 4, 5


def _model(context_noise=0.5, num_actions=A, seed=0):
    torch.manual_seed(seed)
    cfg = MagiConfig.preset("test", num_frames=T, num_actions=num_actions, attention="sdpa",
                            context_noise=context_noise)
    model = Magi(cfg).eval()
    with torch.no_grad():  # a non-trivial level table and head (both start near zero)
        if model.backbone.noise_embed is not None:
            model.backbone.noise_embed.weight.normal_(0, 1.0)
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _inputs(B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(B, T, 4, 4, 4, generator=g)
    mask = torch.rand(B, T, 4, generator=g) < 0.6
    actions = torch.randint(0, A, (B, T), generator=g)
    return latents, mask, actions


def _stream(model, latents, mask, actions, levels):
    tokens = model.patchify(latents)
    cond = model._cond(None, None, latents.shape[0], latents.device)
    prev = model._prev_actions(actions, latents.shape[0], T, latents.device)
    return model._masked_stream_conditions(tokens, mask, cond, prev, levels)


@pytest.mark.parametrize("num_actions", [0, A])
def test_kv_cache_equals_the_training_forward_at_level_zero(num_actions):
    model = _model(num_actions=num_actions)
    latents, mask, actions = _inputs()
    actions = actions if num_actions else None
    full = model.conditions(latents, mask, actions=actions)
    incremental = model.conditions_incremental(latents, mask, actions=actions)
    assert torch.allclose(full, incremental, atol=1e-5)
    zero = torch.zeros(latents.shape[0], dtype=torch.long)
    assert torch.allclose(_stream(model, latents, mask, actions, zero), full, atol=1e-6)


def test_a_noise_level_moves_only_frames_that_read_noised_context():
    model = _model()
    latents, mask, actions = _inputs()
    clean = _stream(model, latents, mask, actions, None)
    torch.manual_seed(3)
    noised = _stream(model, latents, mask, actions, torch.tensor([9, 4]))
    changed = [(noised[:, t] - clean[:, t]).abs().max().item() > 1e-5 for t in range(T)]
    assert changed == [False, True, True, True]  # masked frame 0 reads no clean frame


def test_the_level_embedding_alone_changes_the_output():
    """Same (zero) noise, other bucket: only the embedding differs, and the model sees it."""
    model = _model(context_noise=1e-12)  # sigma ~ 0: the tokens are unchanged by the noise
    latents, mask, actions = _inputs()
    a = _stream(model, latents, mask, actions, torch.tensor([0, 0]))
    b = _stream(model, latents, mask, actions, torch.tensor([5, 5]))
    assert not torch.allclose(a[:, 1:], b[:, 1:], atol=1e-5)
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-6)


def test_training_draws_levels_and_the_loss_is_finite():
    model = _model().train()
    latents, _, actions = _inputs()
    torch.manual_seed(0)
    loss = model(latents, actions=actions)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    grad = model.backbone.noise_embed.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_without_context_noise_there_is_no_level_table():
    model = _model(context_noise=0.0)
    assert model.backbone.noise_embed is None
    assert not any("noise_embed" in k for k in model.state_dict())


def test_context_noise_config_errors():
    with pytest.raises(ValueError, match="context_noise"):
        MagiConfig.preset("test", context_noise=0.5, teacher_forcing="mtf")
    with pytest.raises(ValueError, match="context_noise:"):
        MagiConfig.preset("test", context_noise=-1.0)
    with pytest.raises(ValueError, match="context_noise_buckets"):
        MagiConfig.preset("test", context_noise=0.5, context_noise_buckets=1)
