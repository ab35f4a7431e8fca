"""Action conditioning (docs/design.md §8), pinned by perturbation like the masks of docs/design.md §3.

Convention: `actions[:, t]` is the action taken at frame t; it conditions frame t+1. Frame 0 and
missing actions (-1) get the null action.
"""

import pytest
import torch

from magi import Magi, MagiConfig

T, A = 4, 5  # frames, actions


def _model(tf="ctf", num_actions=A, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = MagiConfig.preset("test", num_frames=T, teacher_forcing=tf, num_actions=num_actions,
                            attention="sdpa", **overrides)
    model = Magi(cfg).eval()
    with torch.no_grad():  # a non-trivial action table and head (both start near zero)
        if model.backbone.action_embed is not None:
            model.backbone.action_embed.weight.normal_(0, 1.0)
            for p in model.head.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _inputs(B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(B, T, 4, 4, 4, generator=g)
    mask = torch.rand(B, T, 4, generator=g) < 0.6
    actions = torch.randint(0, A, (B, T), generator=g)
    return latents, mask, actions


def _changed(a, b):
    """Per frame: does anything differ? (B, T, N, D) -> list of T bools."""
    return [(a[:, t] - b[:, t]).abs().max().item() > 1e-5 for t in range(a.shape[1])]


@pytest.mark.parametrize("tf", ["ctf", "mtf"])
@pytest.mark.parametrize("t", [0, 1, 2])
def test_the_action_taken_at_frame_t_changes_frame_t_plus_1_and_nothing_before(tf, t):
    model = _model(tf)
    latents, mask, actions = _inputs()
    base = model.conditions(latents, mask, actions=actions)
    other = actions.clone()
    other[:, t] = (other[:, t] + 1) % A
    out = model.conditions(latents, mask, actions=other)
    changed = _changed(base, out)
    assert not any(changed[: t + 1]), f"frames <= {t} must not see the action taken at frame {t}"
    assert changed[t + 1], f"masked frame {t + 1} must see the action that led into it"
    if tf == "ctf":  # under CTF a masked frame sees only its own action (and clean frames' through them)
        assert changed[t + 1:] == [True] * (T - t - 1)


def test_last_action_of_a_clip_is_unused_and_minus_one_is_the_null_action():
    model = _model()
    latents, mask, actions = _inputs()
    base = model.conditions(latents, mask, actions=actions)
    other = actions.clone()
    other[:, -1] = -1
    assert torch.allclose(base, model.conditions(latents, mask, actions=other))
    assert torch.allclose(model.conditions(latents, mask, actions=torch.full_like(actions, -1)),
                          model.conditions(latents, mask, actions=None))


def test_ctf_clean_and_masked_copy_of_a_frame_carry_the_same_action():
    """A clean frame's action reaches later masked frames only through that clean copy: with every
    token of frames >= 2 masked, changing the action into frame 1 still changes masked frame 2."""
    model = _model("ctf")
    latents, mask, actions = _inputs()
    mask[:, 1] = False  # masked frame 1 fully visible: its clean and masked copies are the same tokens
    base_z = model.conditions(latents, mask, actions=actions)
    other = actions.clone()
    other[:, 0] = (other[:, 0] + 2) % A  # the action into frame 1
    z = model.conditions(latents, mask, actions=other)
    assert _changed(base_z, z) == [False, True, True, True]
    # both copies of frame 1 carry the action: z of masked frame 1 equals the clean slot's output
    seq_out = {}

    def grab(module, args, out):
        seq_out["x"] = out

    handle = model.backbone.norm_out.register_forward_hook(grab)
    model.conditions(latents, mask, actions=actions)
    handle.remove()
    x = seq_out["x"].view(2, 2 * T - 1, 2, -1)  # (B, S, N, D): clean 0..T-2, masked 0..T-1
    # clean slot 1 sees clean 0 and itself; masked slot 1 sees clean 0 and itself: same tokens, same action
    assert torch.allclose(x[:, 1], x[:, T - 1 + 1], atol=1e-5)


@pytest.mark.parametrize("tf", ["ctf", "mtf"])
def test_kv_cache_with_actions_equals_the_training_forward(tf):
    model = _model(tf)
    latents, mask, actions = _inputs()
    if tf == "mtf":  # MTF's training forward sees masked earlier frames; the cache holds clean ones
        mask[:, :-1] = False
    full = model.conditions(latents, mask, actions=actions)
    incremental = model.conditions_incremental(latents, mask, actions=actions)
    assert torch.allclose(full, incremental, atol=1e-5)


def test_model_without_actions_is_unchanged():
    """num_actions=0 builds the same parameters from the same seed and computes the same outputs."""
    plain = _model(num_actions=0)
    assert plain.backbone.action_embed is None
    torch.manual_seed(0)
    reference = Magi(MagiConfig.preset("test", num_frames=T, attention="sdpa")).eval()
    assert plain.state_dict().keys() == reference.state_dict().keys()
    for k, v in reference.state_dict().items():
        assert torch.equal(v, plain.state_dict()[k]), k
    latents, mask, _ = _inputs()
    torch.manual_seed(3)
    loss_a = plain.train()(latents)["loss"]
    torch.manual_seed(3)
    loss_b = reference.train()(latents)["loss"]
    assert torch.equal(loss_a, loss_b)
    with pytest.raises(ValueError, match="num_actions=0"):
        plain(latents, actions=torch.zeros(2, T, dtype=torch.long))


def test_config_without_num_actions_loads_as_before(tmp_path):
    model = _model(num_actions=0)
    model.save_pretrained(tmp_path)
    import json

    data = json.loads((tmp_path / "config.json").read_text())
    data.pop("num_actions"), data.pop("action_dropout")  # a checkpoint written before actions existed
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = Magi.from_pretrained(tmp_path)
    assert loaded.config.num_actions == 0
    latents, mask, _ = _inputs()
    assert torch.equal(loaded.conditions(latents, mask), model.conditions(latents, mask))


def test_action_dropout_and_bad_actions():
    model = _model(action_dropout=0.5).train()
    latents, _, actions = _inputs()
    torch.manual_seed(0)
    out = model(latents, actions=actions)
    out["loss"].backward()
    assert model.backbone.action_embed.weight.grad is not None  # trained (zero at init: MAR's head)
    prev = model._prev_actions(torch.zeros(4000, T, dtype=torch.long), 4000, T, "cpu", drop=True)
    assert (prev[:, 0] == A).all()  # frame 0: null
    assert abs((prev[:, 1:] == A).float().mean().item() - 0.5) < 0.03  # dropped to null at the rate
    with pytest.raises(ValueError, match="action indices in 0..4"):
        model(latents, actions=torch.full((2, T), 9))
    with pytest.raises(ValueError, match="at least 3 actions"):
        model(latents, actions=actions[:, :2])
    with pytest.raises(ValueError, match=r"\(2, frames\)"):
        model(latents, actions=actions[0])


def test_generate_with_tensor_or_callable_actions_is_the_same():
    model = _model()
    latents, _, actions = _inputs(B=2)
    kw = dict(context=latents[:, :2], mask_steps=2, diffusion_steps=3, sampler="ddim")
    a = model.generate(6, actions=torch.cat([actions, actions[:, :1]], 1),
                       generator=torch.Generator().manual_seed(0), long_video="window", **kw)
    calls = []

    def player(t):
        calls.append(t)
        return actions[:, t] if t < T else actions[:, 0]

    b = model.generate(6, actions=player, generator=torch.Generator().manual_seed(0),
                       long_video="window", **kw)
    assert torch.equal(a, b)
    assert calls == list(range(5))  # each action read once, in order, before the frame it leads into
    c = model.generate(6, actions=torch.zeros(2, 5, dtype=torch.long),
                       generator=torch.Generator().manual_seed(0), long_video="window", **kw)
    assert not torch.allclose(a[:, 2:], c[:, 2:])


def test_endless_stream_follows_a_callable():
    """The actions a callable returns reach the frames: two players who agree up to frame `turn` and then
    press different keys give the same frames up to frame `turn` and different ones from `turn + 1` on
    (the same noise), past the training length too; each action is asked once, in order."""
    model = _model()
    latents, _, _ = _inputs(B=1)
    turn = T + 1  # beyond the training length: the window's rebuilt cache carries the actions as well

    def frames_of(key_after_turn):
        asked = []

        def player(t):
            asked.append(t)
            return t % A if t < turn else key_after_turn

        stream = model.stream(None, context=latents[:, :1], actions=player, mask_steps=1, diffusion_steps=2,
                              sampler="ddim", long_video="window", generator=torch.Generator().manual_seed(0))
        frames = [next(stream) for _ in range(2 * T)]  # frames 1 .. 2T
        return frames, asked

    a, asked = frames_of(0)
    b, _ = frames_of(3)
    assert all(f.shape == (1, 4, 4, 4) for f in a)
    assert asked == list(range(2 * T))  # action t asked just before frame t + 1
    for i, (fa, fb) in enumerate(zip(a, b)):  # a[i] is frame i + 1
        if i + 1 <= turn:
            assert torch.equal(fa, fb), f"frame {i + 1} came before the keys differed"
        else:
            assert not torch.allclose(fa, fb), f"frame {i + 1} must follow the key pressed at frame {i}"
    with pytest.raises(ValueError, match="long_video='window'"):
        next(model.stream(None, context=latents[:, :1]))


def test_a_shorter_window_sees_only_its_last_frames():
    """`window=W` slides over the last W - 1 frames: a context frame older than that cannot change the
    next frame, one inside it does; the training length is the default, bit for bit."""
    model = _model()
    latents, _, actions = _inputs(B=1)
    context = latents[:, :3]  # 3 real frames, T = 4

    def next_frame(ctx, **kw):
        return model.generate(4, context=ctx, actions=actions, mask_steps=2, diffusion_steps=3,
                              sampler="ddim", generator=torch.Generator().manual_seed(0),
                              long_video="window", **kw)[:, 3]

    older, inside = context.clone(), context.clone()
    older[:, 0] += 1.0  # outside a window of 3 (frames 1, 2 and the new one)
    inside[:, 1] += 1.0
    assert torch.equal(next_frame(context, window=T), next_frame(context))
    assert torch.equal(next_frame(older, window=3), next_frame(context, window=3))
    assert not torch.allclose(next_frame(inside, window=3), next_frame(context, window=3))
    assert not torch.allclose(next_frame(older), next_frame(context))  # the default window holds frame 0
    for bad in (1, T + 1):
        with pytest.raises(ValueError, match="window: expected 2..4"):
            next_frame(context, window=bad)


@pytest.mark.parametrize("cached", [0, 2])
def test_prefilling_several_frames_equals_committing_them_one_by_one(cached):
    """A sliding window rebuilds its cache in one block-causal pass; it must hold exactly the keys
    and values that frame-by-frame commits give, and the next frame must see the same."""
    model = _model()
    latents, mask, actions = _inputs(B=2)
    tokens = model.patchify(torch.cat([latents, latents.flip(1)], dim=1))  # (B, 2T, N, P)
    cond = model._cond(None, None, 2, "cpu")
    conds = model.backbone.frame_condition(cond, actions.repeat(1, 2))  # (B, 2T, D) per-frame
    S = 3
    one, many = model.backbone.new_cache(8), model.backbone.new_cache(8)
    for f in range(cached):  # an earlier frame already in both caches
        model._commit(tokens[:, f], f, conds[:, f], one, 8)
        model._commit(tokens[:, f], f, conds[:, f], many, 8)
    for f in range(cached, cached + S):
        model.backbone.step(tokens[:, f], None, f, conds[:, f], one, 8)
        one.commit()
    model._commit(tokens[:, cached:cached + S], cached, conds[:, cached:cached + S], many, 8)
    assert one.frames == many.frames == cached + S
    end = (cached + S) * 4
    for layer in range(len(one.k)):
        assert torch.allclose(one.k[layer][:, :, :end], many.k[layer][:, :, :end], atol=1e-5)
        assert torch.allclose(one.v[layer][:, :, :end], many.v[layer][:, :, :end], atol=1e-5)
    t = cached + S
    z1 = model.backbone.step(tokens[:, t], mask[:, 0], t, conds[:, t], one, 8)
    z2 = model.backbone.step(tokens[:, t], mask[:, 0], t, conds[:, t], many, 8)
    assert torch.allclose(z1, z2, atol=1e-5)


@pytest.mark.parametrize("cfg", [0.0, 2.5])
def test_action_guidance_mixes_with_the_null_action_for_the_new_frame_only(cfg):
    """`cfg` in a world model guides towards the action that led into the new frame: its unconditional
    half sees the same history (context frames committed with their actions) and the null action for
    the new frame. With 1 mask step and 1 DDIM step the sample is affine in eps, so the guided frame is
    the unguided one moved along (conditional - that unconditional prediction) by MAR's scale."""
    model = _model()
    latents, _, actions = _inputs(B=2)
    k = 2
    null_new = actions.clone()
    null_new[:, k - 1] = -1  # the action that led into frame k: none

    def frame(acts, guidance):
        return model.generate(k + 1, context=latents[:, :k], actions=acts, cfg=guidance, mask_steps=1,
                              diffusion_steps=1, sampler="ddim",
                              generator=torch.Generator().manual_seed(0))[:, k]  # (B, C, h, w)

    cond, uncond = frame(actions, 1.0), frame(null_new, 1.0)
    assert (cond - uncond).abs().max() > 1e-3, "the new frame's action must matter"
    N = model.config.tokens_per_frame
    scale = 1.0 + (cfg - 1.0) * (N - 1) / N  # MAR's linear schedule at the only mask step
    torch.testing.assert_close(frame(actions, cfg), uncond + scale * (cond - uncond), rtol=1e-4, atol=1e-4)


def test_guidance_needs_classes_or_actions():
    model = _model(num_actions=0, num_classes=0)
    with pytest.raises(ValueError, match="action-conditioned"):
        model.generate(2, cfg=2.0, mask_steps=1, diffusion_steps=1)
