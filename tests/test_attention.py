"""The CTF / MTF masks (docs/design.md §3), pinned by enumeration, by sparsity, and by perturbing inputs."""

import warnings

import pytest
import torch

from magi import Magi, MagiConfig
from magi.model.attention import CLEAN, MASKED, TemporalMask, ctf_visible, mtf_visible, slot_layout

CPU = torch.device("cpu")


def test_slot_layouts():
    assert slot_layout("ctf", 3) == ([0, 1, 0, 1, 2], [CLEAN, CLEAN, MASKED, MASKED, MASKED])
    assert slot_layout("mtf", 3) == ([0, 1, 2], [MASKED] * 3)
    with pytest.raises(ValueError, match="teacher_forcing"):
        slot_layout("xtf", 3)


def _slot_visibility(tf, T):
    frames, kinds = slot_layout(tf, T)
    fn = ctf_visible if tf == "ctf" else mtf_visible
    f, k = torch.tensor(frames), torch.tensor(kinds)
    return fn(f[:, None], k[:, None], f[None], k[None])


def test_ctf_predicate_by_enumeration():
    # slots: c0 c1 c2 | m0 m1 m2 m3
    vis = _slot_visibility("ctf", 4).int().tolist()
    expected = [
        # c0 c1 c2 m0 m1 m2 m3
        [1, 0, 0, 0, 0, 0, 0],  # clean 0: itself
        [1, 1, 0, 0, 0, 0, 0],  # clean 1: clean <= 1
        [1, 1, 1, 0, 0, 0, 0],  # clean 2
        [0, 0, 0, 1, 0, 0, 0],  # masked 0: only itself
        [1, 0, 0, 0, 1, 0, 0],  # masked 1: clean 0 + itself
        [1, 1, 0, 0, 0, 1, 0],  # masked 2: clean 0,1 + itself
        [1, 1, 1, 0, 0, 0, 1],  # masked 3: clean 0..2 + itself
    ]
    assert vis == expected


def test_mtf_predicate_is_block_causal():
    vis = _slot_visibility("mtf", 4)
    assert torch.equal(vis, torch.ones(4, 4, dtype=torch.bool).tril())


@pytest.mark.parametrize("T,N,ratio", [(5, 256, 1.00), (16, 64, 1.18), (5, 64, 1.48)])
def test_flex_sparsity_matches_design(T, N, ratio):
    """docs/design.md §3: CTF block-sparse work / naive dense MTF work, with 128-token blocks."""
    ctf = TemporalMask("ctf", T, N, CPU, block_size=128)
    assert ctf.computed_pairs() / (T * N) ** 2 == pytest.approx(ratio, abs=0.005)
    assert ctf.seq_len ** 2 / (T * N) ** 2 == pytest.approx((2 * T - 1) ** 2 / T ** 2)  # dense CTF
    # with frame-aligned blocks (the default for N = 64) CTF costs exactly what naive MTF costs
    aligned = TemporalMask("ctf", T, N, CPU)
    assert aligned.computed_pairs() == (T * N) ** 2


def test_block_mask_agrees_with_dense_mask():
    m = TemporalMask("ctf", 4, 16, CPU)
    tiles = m.block_mask.to_dense()[0, 0].bool()  # (blocks, blocks): one frame per block
    frames, kinds = slot_layout("ctf", 4)
    assert torch.equal(tiles, _slot_visibility("ctf", 4))
    assert m.dense.shape == (7 * 16, 7 * 16) and m.block_size == 16


# ---------------------------------------------------------------- perturbation (docs/design.md §3, 1-2)

def _model(tf, kernel, seed=0):
    torch.manual_seed(seed)
    cfg = MagiConfig.preset("test", teacher_forcing=tf, attention=kernel, num_frames=4)
    return Magi(cfg).eval()


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 4, 4, 4, generator=g)  # (B, T, C, h, w): N = 4 tokens per frame
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True  # tokens 0, 1 masked in every frame; 2, 3 visible
    return latents, mask


def _set_token(latents, frame, token, value=5.0):
    """Change one token (a 2x2 patch of all channels) of one frame."""
    out = latents.clone()
    r, c = divmod(token, 2)
    out[:, frame, :, 2 * r:2 * r + 2, 2 * c:2 * c + 2] = value
    return out


def _changed(a, b):
    return (a - b).abs().amax(dim=(0, 2, 3)) > 1e-5  # per frame of the masked stream


@pytest.mark.parametrize("kernel", ["sdpa", "flex"])
def test_ctf_perturbations(kernel):
    model, (x, mask) = _model("ctf", kernel), _inputs()
    base = model.conditions(x, mask)
    # a token that is MASKED in frame 2 changes: clean frame 2 changes, masked frame 2 does not.
    # Masked frames 0-2 are blind to clean frame 2; masked frame 3 sees it.
    z = model.conditions(_set_token(x, 2, 0), mask)
    assert _changed(base, z).tolist() == [False, False, False, True]
    # a masked token of frame i-1 = 1: masked frame 2 must change (it sees clean frame 1)
    z = model.conditions(_set_token(x, 1, 1), mask)
    assert _changed(base, z).tolist() == [False, False, True, True]
    # masked frames != i change (the mask of frame 1 changes, its clean frame does not):
    # only masked frame 1 itself moves
    m2 = mask.clone()
    m2[:, 1] = ~m2[:, 1]
    assert _changed(base, model.conditions(x, m2)).tolist() == [False, True, False, False]
    # a visible token of frame 3 changes: clean 3 is never attended; only masked 3 moves
    assert _changed(base, model.conditions(_set_token(x, 3, 3), mask)).tolist() == [False, False, False, True]


@pytest.mark.parametrize("kernel", ["sdpa", "flex"])
def test_mtf_perturbations(kernel):
    model, (x, mask) = _model("mtf", kernel), _inputs()
    base = model.conditions(x, mask)
    # a token masked in frame 1 changes: invisible everywhere under MTF (frames only masked)
    assert not _changed(base, model.conditions(_set_token(x, 1, 1), mask)).any()
    # a visible token of frame 1 changes: frames >= 1 change, frame 0 does not
    assert _changed(base, model.conditions(_set_token(x, 1, 3), mask)).tolist() == [False, True, True, True]
    # the mask of frame 2 changes: frames 0-1 are blind to it
    m2 = mask.clone()
    m2[:, 2] = ~m2[:, 2]
    assert _changed(base, model.conditions(x, m2)).tolist() == [False, False, True, True]


def test_ctf_and_mtf_differ_on_masked_context_token():
    """The acceptance case: frame i-1's masked token reaches frame i under CTF, not under MTF."""
    x, mask = _inputs()
    for tf, expect in (("ctf", True), ("mtf", False)):
        model = _model(tf, "sdpa")
        z0, z1 = model.conditions(x, mask), model.conditions(_set_token(x, 2, 0), mask)
        assert bool(_changed(z0, z1)[3]) is expect, tf


# ---------------------------------------------------------------- kernels and the KV cache

def test_flex_and_sdpa_agree_in_outputs_and_gradients():
    x, mask = _inputs()
    models = {k: _model("ctf", k) for k in ("flex", "sdpa")}
    models["flex"].load_state_dict(models["sdpa"].state_dict())
    outs, grads = {}, {}
    for k, m in models.items():
        m.train()
        z = m.conditions(x, mask, labels=[0, 2], intervals=[1, 4])
        (z.square().mean() + z.mean()).backward()
        outs[k] = z.detach()
        grads[k] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    torch.testing.assert_close(outs["flex"], outs["sdpa"], rtol=1e-5, atol=1e-5)
    assert grads["flex"].keys() == grads["sdpa"].keys() and len(grads["sdpa"]) > 10
    for n in grads["sdpa"]:
        torch.testing.assert_close(grads["flex"][n], grads["sdpa"][n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("kernel", ["sdpa", "flex"])
def test_kv_cache_equals_full_forward(kernel):
    """docs/design.md §3 property 3: the inference path computes the training forward's conditions."""
    model, (x, _) = _model("ctf", kernel), _inputs()
    mask = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(3)) < 0.6
    full = model.conditions(x, mask, labels=[1, 3], intervals=[2, 7])
    incremental = model.conditions_incremental(x, mask, labels=[1, 3], intervals=[2, 7])
    torch.testing.assert_close(incremental, full, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compiled_flex_matches_sdpa():
    x, mask = _inputs()
    torch.manual_seed(0)
    cfg = MagiConfig.preset("test", num_frames=4, latent_size=8, attention="flex", compile_flex=True)
    flex = Magi(cfg).eval()
    dense = Magi(cfg.replace(attention="sdpa")).eval()
    dense.load_state_dict(flex.state_dict())
    x = torch.randn(2, 4, 4, 8, 8)
    mask = torch.rand(2, 4, 16) < 0.7
    with torch.no_grad():
        torch.testing.assert_close(flex.conditions(x, mask), dense.conditions(x, mask), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled FlexAttention's Triton kernel needs CUDA")
@pytest.mark.parametrize("tokens_per_frame", [16, 64, 256])
@pytest.mark.parametrize("teacher_forcing", ["ctf", "mtf"])
def test_compiled_flex_matches_sdpa_on_cuda(teacher_forcing, tokens_per_frame):
    """The Triton kernel, forward and backward, on frame-aligned blocks smaller than its default tiles
    (16 and 64 tokens: the paper's UCF-101 shape) and on 128-token blocks."""
    from magi.model.attention import FlexKernel

    mask = TemporalMask(teacher_forcing, 5, tokens_per_frame, torch.device("cuda"))
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, mask.seq_len, 64, device="cuda", generator=gen, requires_grad=True)
               for _ in range(3))
    kernel = FlexKernel(compile=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="compiled FlexAttention unavailable")  # no fallback
        out = kernel(q, k, v, mask.block_mask)
    assert kernel.compile
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)  # TF32 inside the Triton kernel
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=5e-2, atol=5e-2)


def test_coarse_block_mask_is_the_same_mask():
    """The 128-token-block twin used for compiled bf16 training masks exactly the same pairs."""
    from torch.nn.attention.flex_attention import flex_attention

    from magi.model.attention import FlexKernel

    mask = TemporalMask("ctf", 5, 16, CPU)
    kernel = FlexKernel(compile=False)
    coarse = kernel.coarse(mask.block_mask)
    assert mask.block_mask.BLOCK_SIZE == (16, 16) and coarse.BLOCK_SIZE == (128, 128)
    assert kernel.coarse(mask.block_mask) is coarse  # cached
    q, k, v = (torch.randn(1, 2, mask.seq_len, 16, generator=torch.Generator().manual_seed(i)) for i in range(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fine_out = flex_attention(q, k, v, block_mask=mask.block_mask)
        coarse_out = flex_attention(q, k, v, block_mask=coarse)
    torch.testing.assert_close(coarse_out, fine_out)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense)
    torch.testing.assert_close(fine_out, dense)
