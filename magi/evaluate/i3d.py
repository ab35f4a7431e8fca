"""Inception-I3D (Kinetics-400) for FVD, laid out exactly like the widely used PyTorch conversion.

FVD numbers are only comparable when they come from the same network as the published ones: the
TF-Hub module `deepmind/i3d-kinetics-400/1` used by Google's reference FVD code. Most PyTorch FVD code
loads `i3d_pretrained_400.pt`, a conversion of that module. Its state dict has 287 tensors:

* 57 units with a batch norm (`Conv3d_1a_7x7`, `Conv3d_2b_1x1`, `Conv3d_2c_3x3` and six per Inception
  block `Mixed_{3b,3c,4b,4c,4d,4e,4f,5b,5c}.{b0,b1a,b1b,b2a,b2b,b3b}`), each with
  `.conv3d.weight` (no conv bias) and `.bn.{weight,bias,running_mean,running_var}` — 5 tensors;
  `bn.weight` is all ones because the TF graph's batch norm has no scale (Sonnet `scale=False`);
  there is no `num_batches_tracked` (the file predates it);
* `logits.conv3d.{weight,bias}`: a 1x1x1 convolution with a bias and no batch norm.

The forward pass follows the TF graph, not the PyTorch port where the two differ:

* TF "SAME" padding for every convolution and max pool, computed from the input size:
  `pad = max(k - s, 0)` if `size % s == 0` else `max(k - size % s, 0)`, the smaller half in front.
  Max pools pad with -inf (TF ignores padded positions); all their inputs are post-ReLU, so zero
  padding (the PyTorch port) gives the same numbers.
* Batch norm epsilon 1e-3 (Sonnet's default, used by the TF-Hub graph). Ports that used PyTorch's
  default 1e-5 are reproduced with `bn_eps=1e-5`.
* Logits: 2x7x7 VALID average pool, the 1x1x1 convolution, then the mean over the remaining time
  steps. The FVD embedding is these 400 pre-softmax logits.

The network is for inference only: batch norm always uses its running statistics.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: Default batch-norm epsilon of the TF-Hub graph (Sonnet BatchNorm).
TF_BN_EPS = 1e-3
#: Spatial input size the logits' 7x7 average pool expects.
I3D_INPUT_SIZE = 224
#: Shortest clip the network accepts: after three temporal stride-2 stages a 2-frame average pool
#: must still fit, which needs ceil(ceil(ceil(T/2)/2)/2) >= 2, i.e. T >= 9.
I3D_MIN_FRAMES = 9
NUM_CLASSES = 400

# Inception blocks: (name, in_channels, [b0, b1a, b1b, b2a, b2b, b3b] output channels). From the
# Inception-v1 / I3D paper tables; the in_channels of each block is the concat of the previous one.
INCEPTION_BLOCKS: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)
LOGITS_IN_CHANNELS = 384 + 384 + 128 + 128  # Mixed_5c's concat


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for one dimension of `size` under `kernel` and `stride`."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
              value: float = 0.0) -> torch.Tensor:
    """Pad a (B, C, T, H, W) tensor the way TF "SAME" does for this kernel and stride."""
    pads: list[int] = []
    # F.pad takes the last dimension first: (W_before, W_after, H_before, H_after, T_before, T_after).
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        pads.extend(tf_same_padding(int(size), k, s))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


class FrozenBatchNorm3d(nn.Module):
    """Inference batch norm: `(x - running_mean) / sqrt(running_var + eps) * weight + bias`.

    Holds exactly the four tensors of the reference file (no `num_batches_tracked`); the statistics
    are never updated, in train mode or not.
    """

    def __init__(self, channels: int, eps: float = TF_BN_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, T, H, W)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1, 1) + shift.view(1, -1, 1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class Unit3D(nn.Module):
    """Conv3d with TF "SAME" padding, optional batch norm and ReLU (Sonnet's `Unit3D`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), batch_norm: bool = True,
                 relu: bool = True, bias: bool = False, bn_eps: float = TF_BN_EPS):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0,
                                bias=bias)
        self.bn = FrozenBatchNorm3d(out_channels, bn_eps) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max pool with TF "SAME" padding (padded positions never win: padded with -inf)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        x = _pad_same(x, self.kernel, self.stride, value=-math.inf)
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels: 1x1; 1x1->3x3; 1x1->3x3; 3x3 max pool->1x1."""

    def __init__(self, in_channels: int, out: tuple[int, ...], bn_eps: float = TF_BN_EPS):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = out
        self.b0 = Unit3D(in_channels, c0, bn_eps=bn_eps)
        self.b1a = Unit3D(in_channels, c1a, bn_eps=bn_eps)
        self.b1b = Unit3D(c1a, c1b, (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(in_channels, c2a, bn_eps=bn_eps)
        self.b2b = Unit3D(c2a, c2b, (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, c3b, bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)  # (B, c0 + c1b + c2b + c3b, T, H, W)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D (Carreira & Zisserman 2017), RGB stream, 400 Kinetics classes.

    `forward(x)` takes `(B, 3, T, 224, 224)` float in [-1, 1] with T >= 9 and returns the 400
    pre-softmax logits averaged over time, `(B, 400)`: the FVD embedding.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, bn_eps: float = TF_BN_EPS):
        super().__init__()
        self.num_classes, self.bn_eps = num_classes, bn_eps
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        for name, in_channels, out in INCEPTION_BLOCKS:
            self.add_module(name, InceptionBlock(in_channels, out, bn_eps))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.logits = Unit3D(LOGITS_IN_CHANNELS, num_classes, batch_norm=False, relu=False, bias=True)
        # The order of the graph, with the two pools placed between the Inception stages.
        self._order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3",
                       "MaxPool3d_3a_3x3", "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b",
                       "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "MaxPool3d_5a_2x2",
                       "Mixed_5b", "Mixed_5c"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D: expected (B, 3, T, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[2] < I3D_MIN_FRAMES:
            raise ValueError(f"I3D: clips need at least {I3D_MIN_FRAMES} frames (the network's "
                             f"2x7x7 logits pool does not fit fewer), got T={x.shape[2]}")
        if tuple(x.shape[3:]) != (I3D_INPUT_SIZE, I3D_INPUT_SIZE):
            raise ValueError(f"I3D: expected {I3D_INPUT_SIZE}x{I3D_INPUT_SIZE} frames, got "
                             f"{x.shape[3]}x{x.shape[4]}; resize with magi.evaluate.fvd.preprocess")
        for name in self._order:
            x = getattr(self, name)(x)
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)  # VALID: (B, 1024, T', 1, 1)
        x = self.logits(x)  # dropout is the identity at inference: (B, 400, T', 1, 1)
        return x.flatten(2).mean(dim=2)  # logits averaged over time: (B, 400)


# --------------------------------------------------------------------------------------------------
# The reference file's key set, and loading


def expected_shapes(num_classes: int = NUM_CLASSES) -> dict[str, tuple[int, ...]]:
    """Every tensor of the reference state dict with its shape (287 entries for 400 classes)."""
    return {k: tuple(v.shape) for k, v in InceptionI3d(num_classes).state_dict().items()}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickled code, a corrupt file, not a torch file at all
        raise ValueError(f"{path}: cannot be read as a tensor-only torch file "
                         f"(torch.load(weights_only=True) failed: {e})") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), "
                         f"got {type(obj).__name__}")
    return dict(obj)


def check_state_dict(state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Raise ValueError saying how `state` differs from the reference `i3d_pretrained_400.pt`."""
    expected = expected_shapes()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if not (missing or unexpected or wrong):
        return
    hint = ("expected the PyTorch conversion of TF-Hub deepmind/i3d-kinetics-400 "
            f"(i3d_pretrained_400.pt: {len(expected)} tensors, e.g. Conv3d_1a_7x7.conv3d.weight "
            f"{expected['Conv3d_1a_7x7.conv3d.weight']}, logits.conv3d.weight "
            f"{expected['logits.conv3d.weight']})")
    logits = state.get("logits.conv3d.weight")
    if logits is not None and logits.ndim == 5 and logits.shape[0] != NUM_CLASSES:
        hint += (f"; this file's logits have {logits.shape[0]} classes (the Kinetics-"
                 f"{logits.shape[0]} I3D?), FVD uses the 400-class network")
    if state and not any(k in expected for k in state):
        prefixes = sorted({k.split(".")[0] for k in state})[:5]
        hint += (f"; none of its {len(state)} tensors has a known name (top-level names: "
                 f"{', '.join(prefixes)}): it is not an I3D state dict in this layout")

    def show(keys: list[str], fmt) -> str:
        items = [fmt(k) for k in keys[:6]]
        return ", ".join(items) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing tensor(s): {show(missing, str)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s): {show(unexpected, str)}")
    if wrong:
        parts.append(f"{len(wrong)} wrong shape(s): "
                     + show(wrong, lambda k: f"{k} is {tuple(state[k].shape)}, expected {expected[k]}"))
    raise ValueError(f"{source} is not the expected I3D: {'; '.join(parts)}. {hint}")


def load_i3d(path: str | Path, bn_eps: float = TF_BN_EPS, device: str | torch.device = "cpu",
             ) -> InceptionI3d:
    """Build the I3D and load `path` (`.pt` read with `weights_only=True`, or `.safetensors`).

    The keys and shapes are checked against the reference file first, so a wrong file fails with a
    message naming what differs instead of a generic `load_state_dict` error. `num_batches_tracked`
    entries (added when a modern PyTorch re-saves the file) are ignored. Returns the network in
    eval mode with gradients off.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"I3D weights not found: {path}. FVD needs i3d_pretrained_400.pt (the PyTorch conversion "
            "of TF-Hub deepmind/i3d-kinetics-400, as used by VideoGPT/TATS/StyleGAN-V); download it "
            "once and pass its path")
    state = {k: v for k, v in _read_state_dict(path).items()
             if not k.endswith(".num_batches_tracked")}
    check_state_dict(state, source=str(path))
    model = InceptionI3d(NUM_CLASSES, bn_eps=bn_eps)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval().requires_grad_(False).to(device)


__all__ = ["InceptionI3d", "load_i3d", "check_state_dict", "expected_shapes", "tf_same_padding",
           "TF_BN_EPS", "I3D_INPUT_SIZE", "I3D_MIN_FRAMES"]
