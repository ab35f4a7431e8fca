"""The change-weighted loss (`MagiConfig.change_weight`): tokens that moved from the previous frame weigh
1 + change_weight in the loss, the rest 1; pinned on the weights, on the head's weighted mean and on
the model's loss (a clip where nothing moves gives the unweighted loss exactly)."""

import pytest
import torch

from magi import Magi, MagiConfig


def _model(change_weight=4.0, seed=0):
    torch.manual_seed(seed)
    return Magi(MagiConfig.preset("test", num_frames=3, attention="sdpa", change_weight=change_weight,
                                  change_threshold=0.1))


def test_change_weights_mark_the_tokens_that_moved():
    model = _model(change_weight=4.0)
    tokens = torch.zeros(2, 3, 4, 16)  # (B, T, N, P)
    tokens[0, 1:, 2] = 0.5  # token 2 appears in frame 1 and stays in frame 2
    tokens[1, 2, 0] = 0.05  # below the threshold (mean |difference| 0.05 <= 0.1)
    tokens[1, 2, 3, :4] = 1.0  # mean |difference| over 16 values: 0.25 > 0.1
    w = model.change_weights(tokens)  # (B, T, N)
    expected = torch.ones(2, 3, 4)
    expected[0, 1, 2] = 5.0  # moved from frame 0; unchanged from frame 1 to 2
    expected[1, 2, 3] = 5.0
    assert torch.equal(w, expected)
    assert torch.equal(w[:, 0], torch.ones(2, 4))  # a clip's first frame has no previous one


def test_change_rows_keep_the_weight_to_the_top_rows_of_the_token_grid():
    """`change_rows: 1` weighs only the first row of tokens (row-major; the 4x4 test latents make a 2x2 grid),
    where Boxing's hud layouts draw the score strip; a change in the second row weighs 1."""
    torch.manual_seed(0)
    model = Magi(MagiConfig.preset("test", num_frames=3, attention="sdpa", change_weight=4.0, change_rows=1))
    tokens = torch.zeros(1, 3, 4, 16)  # (B, T, N, P)
    tokens[0, 1:, 1] = 1.0  # a top-row token changes at frame 1
    tokens[0, 2, 2] = 1.0  # a second-row token changes at frame 2
    expected = torch.ones(1, 3, 4)
    expected[0, 1, 1] = 5.0
    assert torch.equal(model.change_weights(tokens), expected)
    assert _model(change_weight=4.0).change_weights(tokens)[0, 2, 2] == 5.0  # every row without change_rows
    for bad in (-1, 3, 1.5, True):
        with pytest.raises(ValueError, match="change_rows"):
            MagiConfig.preset("test", change_weight=4.0, change_rows=bad)


def test_head_weighted_mean():
    model = _model()
    head = model.head
    M, P = 6, model.config.token_dim
    target, z = torch.randn(M, P), torch.randn(M, model.config.width)
    torch.manual_seed(3)
    plain = head(target, z)
    torch.manual_seed(3)
    ones = head(target, z, torch.ones(M))
    assert torch.allclose(plain, ones, atol=1e-6)
    # all the weight on token 0: the loss is token 0's alone (the same draws of timesteps and noise)
    weight = torch.zeros(M)
    weight[0] = 1.0
    torch.manual_seed(3)
    only_first = head(target, z, weight)
    torch.manual_seed(3)
    t = torch.randint(0, head.diffusion.num_timesteps, (M * head.batch_mul,))
    noise = torch.randn(M * head.batch_mul, P)
    zz = z.repeat(head.batch_mul, 1)
    losses = head.diffusion.training_losses(lambda x, s: head.net(x, s, zz), target.repeat(head.batch_mul, 1),
                                            t, noise)["loss"]  # (mul*M,)
    per_copy = losses.view(head.batch_mul, M)[:, 0]
    assert torch.allclose(only_first, per_copy.mean(), atol=1e-6)
    assert not torch.allclose(only_first, plain)


def test_a_clip_where_nothing_moves_gives_the_unweighted_loss():
    weighted, plain = _model(change_weight=4.0), _model(change_weight=0.0)
    plain.load_state_dict(weighted.state_dict())
    static = torch.randn(2, 1, 4, 4, 4).expand(-1, 3, -1, -1, -1).contiguous()  # (B, T, C, h, w)
    torch.manual_seed(7)
    a = weighted(static)["loss"]
    torch.manual_seed(7)
    b = plain(static)["loss"]
    assert torch.allclose(a, b, atol=1e-6)
    moving = static.clone()
    moving[:, 1:, :, :2, :2] += 2.0  # one token changes from frame 0 to frame 1
    torch.manual_seed(7)
    a = weighted(moving)["loss"]
    torch.manual_seed(7)
    b = plain(moving)["loss"]
    assert not torch.allclose(a, b)


def test_config_checks_and_fine_tuning_with_another_weight(tmp_path):
    with pytest.raises(ValueError, match="change_weight"):
        MagiConfig.preset("test", change_weight=-1.0)
    with pytest.raises(ValueError, match="change_threshold"):
        MagiConfig.preset("test", change_threshold=float("nan"))
    plain = _model(change_weight=0.0)
    plain.save_pretrained(tmp_path / "plain")
    weighted = _model(change_weight=4.0, seed=1)
    weighted.load_pretrained(tmp_path / "plain", ema=False)  # the loss's weights are free to differ
    for a, b in zip(weighted.parameters(), plain.parameters()):
        assert torch.equal(a, b)
