"""Text conditioning (docs/design.md §9), pinned by perturbation like the masks of docs/design.md §3.

Every way text enters ("prefix" in the temporal stream, "cross" attention, "pooled" vector) must:
change every frame when the caption changes; let nothing of the video reach the caption; give the
same conditions through the KV cache as through the training forward; fall back to the learned null
caption (dropout, None, guidance).
"""

import pytest
import torch

from magi import Magi, MagiConfig

T, L, E = 3, 5, 6  # frames, caption tokens, encoder width
MODES = ["prefix", "cross", "pooled"]


def _model(mode="prefix", tf="ctf", seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = MagiConfig.preset("test", num_frames=T, teacher_forcing=tf, text_dim=E, text_len=L,
                            text_mode=mode, attention="sdpa", **overrides)
    model = Magi(cfg).eval()
    with torch.no_grad():  # a non-trivial head (it starts near zero)
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _inputs(B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(B, T, 4, 4, 4, generator=g)
    mask = torch.rand(B, T, 4, generator=g) < 0.6
    text = torch.randn(B, L, E, generator=g)
    return latents, mask, text


def _changed(a, b):
    """Per frame: does anything differ? (B, T, N, D) -> list of T bools."""
    return [(a[:, t] - b[:, t]).abs().max().item() > 1e-5 for t in range(a.shape[1])]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tf", ["ctf", "mtf"])
def test_a_changed_caption_changes_every_frame(mode, tf):
    model = _model(mode, tf)
    latents, mask, text = _inputs()
    base = model.conditions(latents, mask, text=text)
    other = text.clone()
    other[:, 2] += 1.0  # one token of the caption
    assert _changed(base, model.conditions(latents, mask, text=other)) == [True] * T


def test_nothing_of_the_video_reaches_the_caption():
    """Prefix: the caption's rows after every temporal layer are the same whatever the video is. (Cross
    attention has no path from video to text: its keys/values are the projected caption.)"""
    model = _model("prefix", depth=2)
    latents, mask, text = _inputs()
    seen = []
    hooks = [b.temporal.register_forward_hook(lambda m, i, o: seen.append(o[:, :L].clone()))
             for b in model.backbone.blocks]
    model.conditions(latents, mask, text=text)
    first, seen[:] = list(seen), []
    model.conditions(torch.randn_like(latents), ~mask, text=text)
    for h in hooks:
        h.remove()
    assert len(first) == 2 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(first, seen))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tf", ["ctf", "mtf"])
def test_kv_cache_with_text_equals_the_training_forward(mode, tf):
    if tf == "mtf":  # MTF's training forward sees masked earlier frames, generation clean ones
        pytest.skip("the KV cache reproduces the CTF forward only (docs/design.md §3)")
    model = _model(mode, tf, depth=2)
    latents, mask, text = _inputs()
    full = model.conditions(latents, mask, text=text)
    inc = model.conditions_incremental(latents, mask, text=text)
    assert torch.allclose(full, inc, atol=1e-5), (full - inc).abs().max()


def test_prefix_caption_tokens_are_a_clean_slot_before_every_frame():
    """The mask with a caption prefix: the caption sees itself only, every frame sees the caption."""
    model = _model("prefix")
    mask = model.temporal_mask(T, "cpu", prefix=L)
    dense = mask.dense  # (L + S*N, L + S*N)
    assert dense[:L, :L].all() and not dense[:L, L:].any()
    assert dense[L:, :L].all()
    plain = model.temporal_mask(T, "cpu").dense
    assert torch.equal(dense[L:, L:], plain)


@pytest.mark.parametrize("mode", MODES)
def test_null_caption_and_dropout(mode):
    model = _model(mode, text_dropout=0.5)
    latents, mask, text = _inputs(B=4)
    null = model.null_text[None].expand(4, -1, -1)
    assert torch.equal(model.conditions(latents, mask, text=None), model.conditions(latents, mask, text=null))
    seen = []
    hook = model.backbone.text_proj.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    model.train()
    for seed in range(8):  # what entered the projection, each sample: its caption or the null caption
        torch.manual_seed(seed)
        model(latents, text=text)
    model.config.text_dropout = 0.0
    model(latents, text=text)
    hook.remove()
    kinds = [["null" if torch.equal(raw[b], null[b]) else "caption" if torch.equal(raw[b], text[b]) else "?"
              for b in range(4)] for raw in seen]
    assert all(k in ("null", "caption") for row in kinds for k in row)
    drawn = [k for row in kinds[:-1] for k in row]
    assert 8 <= drawn.count("null") <= 24, drawn  # 32 draws at p = 0.5
    assert kinds[-1] == ["caption"] * 4  # no dropout: every caption kept


@pytest.mark.parametrize("mode", MODES)
def test_guidance_towards_the_null_caption_is_no_guidance(mode):
    """cfg mixes the caption's prediction with the null caption's: asked for the null caption itself,
    any cfg gives exactly the unguided sample; asked for a caption, it differs."""
    model = _model(mode)
    _, _, text = _inputs(B=1)
    kw = dict(mask_steps=2, diffusion_steps=3, sampler="ddim")
    run = lambda cfg, txt: model.generate(2, text=txt, cfg=cfg, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.allclose(run(1.0, None), run(4.0, None), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(run(1.0, text), run(4.0, text), rtol=1e-2, atol=1e-2)


def test_a_sliding_window_keeps_the_caption():
    """Past the training length the window rebuilds its frames (`rewind`); the caption's keys/values stay."""
    model = _model("prefix")
    _, _, text = _inputs(B=1)
    kw = dict(mask_steps=2, diffusion_steps=2, sampler="ddim", text=text)
    model.generate(T + 2, long_video="window", generator=torch.Generator().manual_seed(0), **kw)
    cache = model.backbone.new_cache(T, model._text_states(text, 1, "cpu"))
    k0 = cache.k[0][:, :, :L].clone()
    cache.rewind()
    assert torch.equal(cache.k[0][:, :, :L], k0) and cache.frames == 0


def test_text_inputs_are_checked():
    model = _model("prefix")
    latents, mask, text = _inputs()
    with pytest.raises(ValueError, match=r"text: expected caption embeddings \(2, 5, 6\)"):
        model.conditions(latents, mask, text=text[:, :3])
    plain = Magi(MagiConfig.preset("test", num_frames=T)).eval()
    with pytest.raises(ValueError, match="text: the model has no text conditioning"):
        plain.conditions(latents, mask, text=text)
    with pytest.raises(ValueError, match="MagiConfig.text_len"):
        MagiConfig.preset("test", text_dim=8)
    with pytest.raises(ValueError, match="text_mode"):
        MagiConfig.preset("test", text_dim=8, text_len=4, text_mode="concat")


def test_classes_and_text_together():
    model = _model("cross")
    latents, mask, text = _inputs()
    a = model.conditions(latents, mask, labels=[0, 1], text=text)
    b = model.conditions(latents, mask, labels=[2, 1], text=text)
    assert _changed(a[:1], b[:1]) == [True] * T and not any(_changed(a[1:], b[1:]))
    video = model.generate(2, labels=[0, 1], text=text, cfg=2.0, mask_steps=2, diffusion_steps=2, sampler="ddim")
    assert video.shape == (2, 2, 4, 4, 4)


def test_save_and_load_a_text_model(tmp_path):
    model = _model("prefix")
    model.save_pretrained(tmp_path)
    again = Magi.from_pretrained(tmp_path)
    latents, mask, text = _inputs()
    assert torch.equal(model.conditions(latents, mask, text=text), again.conditions(latents, mask, text=text))


@pytest.mark.parametrize("mode", ["cross", "pooled"])
def test_a_text_model_started_from_a_class_model_is_its_unconditional_model(tmp_path, mode):
    """`load_reconditioned`: the class model's video path loads, its null class becomes the text model's
    class row, and the added caption paths start at zero, so whatever the caption, the text model computes
    what the class model computes for the null class. A prefix model loads the same weights; its caption
    tokens are new attention context, so it is only checked to load and to hear the caption."""
    torch.manual_seed(0)
    source = Magi(MagiConfig.preset("test", num_frames=T, num_classes=10, attention="sdpa")).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    source.save_pretrained(tmp_path)
    latents, mask, text = _inputs()
    unconditional = source.conditions(latents, mask, labels=[10, 10])
    for m in (mode, "prefix"):
        model = _model(m).load_reconditioned(tmp_path)
        assert torch.equal(model.backbone.class_embed.weight[-1], source.backbone.class_embed.weight[-1])
        assert torch.equal(model.backbone.blocks[0].spatial.attn.qkv.weight,
                           source.backbone.blocks[0].spatial.attn.qkv.weight)
        got = model.conditions(latents, mask, text=text)
        if m == mode:
            torch.testing.assert_close(got, unconditional)
        else:
            assert not torch.allclose(got, unconditional)


def test_reconditioning_refuses_another_video_model(tmp_path):
    Magi(MagiConfig.preset("test", num_frames=T, num_classes=10, width=16)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="only the conditioning.*width"):
        _model("prefix").load_reconditioned(tmp_path)


def test_caption_positions_make_word_order_heard():
    """Cross-attention to caption states is blind to their order ("left then right" and "right then left"
    are the same bytes to a small frozen encoder); `text_positions` adds where each token sits."""
    latents, mask, text = _inputs()
    swapped = text[:, [1, 0, 2, 3, 4]]  # two caption tokens change places
    blind = _model("cross")
    torch.testing.assert_close(blind.conditions(latents, mask, text=swapped),
                               blind.conditions(latents, mask, text=text))
    placed = _model("cross", text_positions=True)
    assert _changed(placed.conditions(latents, mask, text=text),
                    placed.conditions(latents, mask, text=swapped)) == [True] * T


def test_kv_cache_with_caption_positions_equals_the_training_forward():
    model = _model("cross", depth=2, text_positions=True)
    latents, mask, text = _inputs()
    full = model.conditions(latents, mask, text=text)
    inc = model.conditions_incremental(latents, mask, text=text)
    assert torch.allclose(full, inc, atol=1e-5), (full - inc).abs().max()


def test_positions_added_to_a_text_model_start_as_that_model(tmp_path):
    """`load_reconditioned` from a text model without positions: the new table starts at zero, so the
    model computes what the checkpoint computes, and the table then learns."""
    source = _model("cross", seed=3)
    source.save_pretrained(tmp_path)
    latents, mask, text = _inputs()
    model = _model("cross", seed=4, text_positions=True).load_reconditioned(tmp_path)
    assert torch.equal(model.backbone.text_pos, torch.zeros(L, model.config.width))
    torch.testing.assert_close(model.conditions(latents, mask, text=text),
                               source.conditions(latents, mask, text=text))
    with pytest.raises(ValueError, match="text_positions"):
        MagiConfig.preset("test", text_dim=E, text_len=L, text_positions="yes")
