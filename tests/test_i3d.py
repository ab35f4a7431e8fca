"""The FVD network: exact key set of i3d_pretrained_400.pt, TF "SAME" padding, shapes, load checks."""

import math

import pytest
import torch
import torch.nn.functional as F

from magi.evaluate.i3d import (FrozenBatchNorm3d, InceptionI3d, MaxPool3dSame, Unit3D,
                               load_i3d, tf_same_padding)

# The reference file's tensors, written out from the I3D architecture (Carreira & Zisserman, Inception-v1
# channel table), independently of the module under test.
STEM = [("Conv3d_1a_7x7", 3, 64, 7), ("Conv3d_2b_1x1", 64, 64, 1), ("Conv3d_2c_3x3", 64, 192, 3)]
MIXED = {  # in_channels, (b0, b1a, b1b, b2a, b2b, b3b)
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def reference_shapes() -> dict:
    units = [(name, cin, cout, k) for name, cin, cout, k in STEM]
    for block, (cin, (c0, c1a, c1b, c2a, c2b, c3b)) in MIXED.items():
        units += [(f"{block}.b0", cin, c0, 1), (f"{block}.b1a", cin, c1a, 1),
                  (f"{block}.b1b", c1a, c1b, 3), (f"{block}.b2a", cin, c2a, 1),
                  (f"{block}.b2b", c2a, c2b, 3), (f"{block}.b3b", cin, c3b, 1)]
    shapes = {}
    for name, cin, cout, k in units:
        shapes[f"{name}.conv3d.weight"] = (cout, cin, k, k, k)
        for t in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{t}"] = (cout,)
    shapes["logits.conv3d.weight"] = (400, 1024, 1, 1, 1)
    shapes["logits.conv3d.bias"] = (400,)
    return shapes


def random_state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in reference_shapes().items():
        if k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith("bn.weight"):
            state[k] = torch.ones(shape)
        elif k.endswith("conv3d.weight"):
            fan_in = math.prod(shape[1:])
            state[k] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
        else:
            state[k] = torch.randn(shape, generator=g) * 0.1
    return state


def test_reference_key_set_has_287_tensors():
    assert len(reference_shapes()) == 287
    own = {k: tuple(v.shape) for k, v in InceptionI3d().state_dict().items()}
    assert own == reference_shapes()


def test_load_standard_file_strict_and_intermediate_shapes(tmp_path):
    path = tmp_path / "i3d_pretrained_400.pt"
    state = random_state()
    torch.save(state, path)
    model = load_i3d(path)
    assert not model.training
    model.load_state_dict(state, strict=True)  # the same key set loads strictly
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k

    seen = {}
    names = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3", "Mixed_3c",
             "MaxPool3d_4a_3x3", "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5c"]
    for n in names:
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.shape[1:]))
    x = torch.rand(1, 3, 9, 224, 224, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 400) and torch.isfinite(out).all()
    # TF "SAME" output sizes: ceil(in / stride) in every dimension.
    assert seen == {
        "Conv3d_1a_7x7": (64, 5, 112, 112), "MaxPool3d_2a_3x3": (64, 5, 56, 56),
        "Conv3d_2c_3x3": (192, 5, 56, 56), "MaxPool3d_3a_3x3": (192, 5, 28, 28),
        "Mixed_3c": (480, 5, 28, 28), "MaxPool3d_4a_3x3": (480, 3, 14, 14),
        "Mixed_4f": (832, 3, 14, 14), "MaxPool3d_5a_2x2": (832, 2, 7, 7),
        "Mixed_5c": (1024, 2, 7, 7),
    }


def test_logits_are_averaged_over_time():
    # 17 frames leave 2 time steps after the 2x7x7 pool: the output is the mean of their logits.
    model = InceptionI3d().eval()
    model.load_state_dict(random_state(3))
    feats = {}
    model.logits.register_forward_hook(lambda m, i, o: feats.__setitem__("logits", o))
    x = torch.rand(1, 3, 17, 224, 224, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        out = model(x)
    per_time = feats["logits"]  # (1, 400, T', 1, 1) with T' = 3 - 2 + 1 = 2
    assert per_time.shape == (1, 400, 2, 1, 1)
    assert not torch.allclose(per_time[:, :, 0], per_time[:, :, 1])
    torch.testing.assert_close(out, per_time.flatten(2).mean(2))


def test_rejects_short_clips_and_wrong_sizes():
    model = InceptionI3d().eval()
    with pytest.raises(ValueError, match="at least 9 frames"):
        model(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match="224x224"):
        model(torch.zeros(1, 3, 16, 128, 128))


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("Mixed_4d.b1b.bn.running_var"), "1 missing tensor.*Mixed_4d.b1b.bn.running_var"),
    (lambda s: s.__setitem__("fc.weight", torch.zeros(3)), "1 unexpected tensor.*fc.weight"),
    (lambda s: s.__setitem__("Mixed_5c.b0.conv3d.weight", torch.zeros(384, 832, 3, 3, 3)),
     r"wrong shape.*Mixed_5c.b0.conv3d.weight is \(384, 832, 3, 3, 3\), expected \(384, 832, 1, 1, 1\)"),
    (lambda s: (s.__setitem__("logits.conv3d.weight", torch.zeros(600, 1024, 1, 1, 1)),
                s.__setitem__("logits.conv3d.bias", torch.zeros(600))), "600 classes"),
])
def test_wrong_files_are_rejected_with_what_differs(tmp_path, edit, message):
    state = random_state()
    edit(state)
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=message) as info:
        load_i3d(path)
    assert str(path) in str(info.value) and "i3d_pretrained_400.pt" in str(info.value)


def test_unrelated_state_dict_and_missing_file(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(10)}, path)
    with pytest.raises(ValueError, match="not an I3D state dict"):
        load_i3d(path)
    with pytest.raises(FileNotFoundError, match="i3d_pretrained_400.pt"):
        load_i3d(tmp_path / "nope.pt")


class NotATensor:
    pass


def test_pickled_objects_are_not_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": NotATensor()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_i3d(path)


def test_num_batches_tracked_tolerated_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = random_state()
    with_counters = dict(state, **{"Conv3d_1a_7x7.bn.num_batches_tracked": torch.tensor(0)})
    torch.save(with_counters, tmp_path / "a.pt")
    save_file(state, str(tmp_path / "a.safetensors"))
    m1, m2 = load_i3d(tmp_path / "a.pt"), load_i3d(tmp_path / "a.safetensors")
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])


@pytest.mark.parametrize("eps", [1e-3, 1e-5])
def test_batchnorm_matches_torch_eval_batchnorm(eps):
    g = torch.Generator().manual_seed(0)
    bn = FrozenBatchNorm3d(6, eps)
    ref = torch.nn.BatchNorm3d(6, eps=eps).eval()
    vals = {"weight": torch.rand(6, generator=g), "bias": torch.randn(6, generator=g),
            "running_mean": torch.randn(6, generator=g), "running_var": torch.rand(6, generator=g) * 1e-2}
    bn.load_state_dict(vals)
    ref.load_state_dict(vals, strict=False)
    x = torch.randn(2, 6, 3, 4, 4, generator=g)
    torch.testing.assert_close(bn(x), ref(x))
    # the two epsilons are distinguishable on small variances
    other = FrozenBatchNorm3d(6, 1e-5 if eps == 1e-3 else 1e-3)
    other.load_state_dict(vals)
    assert not torch.allclose(bn(x), other(x))


def test_bn_eps_option_reaches_every_batchnorm():
    model = InceptionI3d(bn_eps=1e-5)
    eps = {m.eps for m in model.modules() if isinstance(m, FrozenBatchNorm3d)}
    assert eps == {1e-5}
    assert {m.eps for m in InceptionI3d().modules() if isinstance(m, FrozenBatchNorm3d)} == {1e-3}


def test_tf_same_padding_rule():
    # TF's definition: out = ceil(in / s); total = max((out - 1) * s + k - in, 0); smaller half first.
    for size in range(1, 40):
        for k in range(1, 8):
            for s in (1, 2, 3):
                out = -(-size // s)
                total = max((out - 1) * s + k - size, 0)
                assert tf_same_padding(size, k, s) == (total // 2, total - total // 2)
    assert tf_same_padding(224, 7, 2) == (2, 3)
    assert tf_same_padding(9, 7, 2) == (3, 3)


def test_unit_and_pool_padding():
    g = torch.Generator().manual_seed(0)
    unit = Unit3D(2, 3, (7, 7, 7), (2, 2, 2), batch_norm=False, relu=False)
    x = torch.randn(1, 2, 10, 12, 12, generator=g)
    # 10 and 12 are even: total padding 7 - 2 = 5 -> (2 before, 3 after) in every dimension
    expected = F.conv3d(F.pad(x, (2, 3, 2, 3, 2, 3)), unit.conv3d.weight, stride=2)
    torch.testing.assert_close(unit(x), expected)
    # max pools ignore padded positions (TF): an all-negative input stays negative at the borders
    pool = MaxPool3dSame((3, 3, 3), (2, 2, 2))
    y = pool(-1 - torch.rand(1, 1, 5, 6, 6, generator=g))
    assert y.shape == (1, 1, 3, 3, 3) and (y < -1).all()
