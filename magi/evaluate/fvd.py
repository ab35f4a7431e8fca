"""Fréchet Video Distance, computed the way the published numbers were.

The reference is Google's `frechet_video_distance` (Unterthiner et al. 2018), which the video
generation literature (and the MAGI paper) report:

1. generated frames are quantized to uint8 (`magi.video_io.to_uint8` rounds);
2. every frame is resized to 224x224 with TF1's `tf.image.resize_bilinear` (legacy rule: source
   coordinate = destination * in / out, no half-pixel offset, upper neighbour clamped) —
   `F.interpolate(..., align_corners=False)` uses half-pixel centres and gives different features;
3. scaled to `2 x / 255 - 1` and fed to the Kinetics-400 I3D (`magi.evaluate.i3d`) in fp32 with
   TF32 off; the embedding is the 400 logits averaged over time;
4. mean and covariance in float64 with the N-1 normalization, and the Fréchet distance
   `|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})`.

Two detector files are accepted (`load_detector`): the project's `i3d_pretrained_400.pt` (a state
dict for `magi.evaluate.i3d.InceptionI3d`, preprocessed as above), and StyleGAN-V's TorchScript I3D
`i3d_torchscript.pt`, which most recent UCF-101 / K600 FVDs (StyleGAN-V, Latte, FAR, ...) use. The
latter is called the way StyleGAN-V's `src/metrics/frechet_video_distance.py` and `metric_utils.py`
call it: uint8 clips laid out `(B, 3, T, H, W)` on the detector's device, with keyword arguments
`rescale=True, resize=True, return_features=True` (the archive itself scales [0, 255] to [-1, 1],
resizes to 224x224 and returns the 400 pre-softmax features). Loading a TorchScript archive runs the
graph code stored in it: load only files you trust. StyleGAN-V's covariance divides by N (not N - 1);
the statistics below keep N - 1 (a 1/N relative difference, 0.05% at 2,048 clips).

The trace term is computed without an unsymmetric matrix square root: `tr((S1 S2)^{1/2})` equals the
sum of singular values of `S1^{1/2} S2^{1/2}` (the eigenvalues of `S1^{1/2} S2 S1^{1/2}` are their
squares), and symmetric square roots come from `eigh` with eigenvalues clipped at 0. That stays exact
when N < 400 makes both covariances singular, where `scipy.linalg.sqrtm(S1 @ S2)` needs an eps
offset and can return complex noise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from magi.evaluate.i3d import (I3D_INPUT_SIZE, I3D_MIN_FRAMES, InceptionI3d, TF_BN_EPS,
                               load_i3d)

__all__ = ["load_i3d", "load_detector", "TorchScriptI3D", "resize_bilinear_tf1", "preprocess", "i3d_features",
           "feature_stats", "frechet_distance", "fvd", "StatsCache", "stats_key", "file_sha256", "fp32_exact",
           "is_torchscript"]


# --------------------------------------------------------------------------------------------------
# Preprocessing


def _tf1_legacy_weights(in_size: int, out_size: int, device: torch.device
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower index, upper index and lerp weight per output position, exactly as TF1 computes them.

    TF's `compute_interpolation_weights` with the legacy scaler: `in = out_index * scale` in float32
    with `scale = in_size / out_size`; lower = floor(in), upper = min(ceil(in), in_size - 1),
    lerp = in - floor(in).
    """
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    src = torch.arange(out_size, dtype=torch.float32) * scale  # float32, like TF
    lower = src.floor()
    upper = torch.minimum(src.ceil(), torch.tensor(in_size - 1.0))
    lerp = src - lower
    return lower.long().to(device), upper.long().to(device), lerp.to(device)


def resize_bilinear_tf1(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """TF1 legacy bilinear resize of `(..., H, W)` float images to `size` (align_corners=False).

    Matches `tf.compat.v1.image.resize_bilinear(..., align_corners=False, half_pixel_centers=False)`:
    interpolate along x on the two source rows, then along y, `a + (b - a) * lerp` each time.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if not images.is_floating_point():
        images = images.float()
    in_h, in_w = images.shape[-2:]
    y0, y1, ly = _tf1_legacy_weights(in_h, out_h, images.device)
    x0, x1, lx = _tf1_legacy_weights(in_w, out_w, images.device)
    lx, ly = lx.to(images.dtype), ly.to(images.dtype)
    top, bottom = images[..., y0, :], images[..., y1, :]  # (..., out_h, in_w)
    top = top[..., x0] + (top[..., x1] - top[..., x0]) * lx  # (..., out_h, out_w)
    bottom = bottom[..., x0] + (bottom[..., x1] - bottom[..., x0]) * lx
    return top + (bottom - top) * ly[:, None]


def preprocess(video: torch.Tensor, size: int = I3D_INPUT_SIZE) -> torch.Tensor:
    """uint8 `(B, T, 3, H, W)` -> float32 `(B, 3, T, size, size)` in [-1, 1], the I3D input."""
    if video.dtype != torch.uint8:
        raise ValueError(f"FVD input must be uint8 frames (quantize generated videos with "
                         f"magi.video_io.to_uint8), got {video.dtype}")
    if video.ndim != 5 or video.shape[2] != 3:
        raise ValueError(f"FVD input: expected (B, T, 3, H, W), got shape {tuple(video.shape)}")
    B, T = video.shape[:2]
    if T < I3D_MIN_FRAMES:
        raise ValueError(f"FVD input: the I3D needs clips of at least {I3D_MIN_FRAMES} frames, "
                         f"got T={T}")
    x = resize_bilinear_tf1(video.float(), size)  # on [0, 255] like the reference: (B, T, 3, S, S)
    x = x * (2.0 / 255.0) - 1.0
    return x.permute(0, 2, 1, 3, 4).contiguous()  # (B, 3, T, S, S)


@contextlib.contextmanager
def fp32_exact() -> Iterator[None]:
    """Disable TF32 in matmuls and cuDNN convolutions for the block, restoring the settings after."""
    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision") and hasattr(getattr(b.cudnn, "conv", None),
                                                             "fp32_precision"):
        saved = (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision)
        b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision = "ieee", "ieee"
        try:
            yield
        finally:
            b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision = saved
    else:  # older PyTorch
        saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32)
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32 = False, False
        try:
            yield
        finally:
            b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32 = saved


class TorchScriptI3D:
    """StyleGAN-V's TorchScript I3D (`i3d_torchscript.pt`), called as its publishers call it.

    `features(video)` takes uint8 `(B, T, 3, H, W)` and passes `(B, 3, T, H, W)` uint8 with
    `CALL_KWARGS`; the archive rescales, resizes and returns `(B, 400)` features.
    """

    kind = "stylegan-v-torchscript"
    CALL_KWARGS = {"rescale": True, "resize": True, "return_features": True}

    def __init__(self, module: torch.jit.ScriptModule, device: torch.device):
        self.module, self.device = module, torch.device(device)

    def describe(self) -> dict:
        return {"kind": self.kind, "input": "uint8 (B, 3, T, H, W), values 0..255, at the clip's own size",
                "kwargs": dict(self.CALL_KWARGS),
                "reference": "universome/stylegan-v src/metrics/frechet_video_distance.py"}

    def features(self, video: torch.Tensor) -> torch.Tensor:
        if video.dtype != torch.uint8 or video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"TorchScript I3D input: expected uint8 (B, T, 3, H, W), got {video.dtype} "
                             f"{tuple(video.shape)}")
        x = video.permute(0, 2, 1, 3, 4).contiguous().to(self.device)  # (B, 3, T, H, W) uint8
        return self.module(x, **self.CALL_KWARGS).float().cpu()  # (B, 400)


def is_torchscript(path: str | Path) -> bool:
    """Whether `path` is a TorchScript archive (a zip holding graph code), not a plain state dict."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in name for name in z.namelist())


def load_detector(path: str | Path, bn_eps: float = TF_BN_EPS, device: str | torch.device = "cpu"):
    """The FVD feature network in `path`: StyleGAN-V's TorchScript I3D (`TorchScriptI3D`; loading it
    runs the archive's code) or the `i3d_pretrained_400.pt` state dict (`InceptionI3d`)."""
    path = Path(path)
    if not path.is_file():
        return load_i3d(path, bn_eps=bn_eps, device=device)  # raises with the download hint
    if is_torchscript(path):
        module = torch.jit.load(str(path), map_location=torch.device(device)).eval()
        return TorchScriptI3D(module, torch.device(device))
    return load_i3d(path, bn_eps=bn_eps, device=device)


def describe_detector(detector, path: str | Path, bn_eps: float) -> dict:
    """What the result JSON records about the detector: file, hash, kind and how it was called."""
    info = {"path": str(path), "sha256": file_sha256(path)}
    if isinstance(detector, TorchScriptI3D):
        return {**info, **detector.describe()}
    return {**info, "kind": "tfhub-i3d-port", "bn_eps": bn_eps,
            "input": "float32 (B, 3, T, 224, 224) in [-1, 1] after TF1 legacy bilinear resize of uint8 frames",
            "preprocess": PREPROCESS_VERSION}


@torch.no_grad()
def i3d_features(i3d, video: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """FVD embeddings of uint8 clips `(B, T, 3, H, W)` -> float32 `(B, 400)` on the CPU.

    `i3d` is an `InceptionI3d` or a `TorchScriptI3D` (`load_detector`). Runs in fp32 with TF32 off
    on the detector's device, `batch_size` clips at a time (the resized 224x224 input of one
    16-frame clip is 9.6 MB, its activations a few hundred MB).
    """
    out = []
    with fp32_exact():
        if isinstance(i3d, TorchScriptI3D):
            return torch.cat([i3d.features(chunk) for chunk in video.split(batch_size)])
        device = next(i3d.parameters()).device
        for chunk in video.split(batch_size):
            x = preprocess(chunk.to(device))  # (b, 3, T, 224, 224)
            out.append(i3d(x.float()).float().cpu())  # (b, 400)
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------
# Statistics and the distance


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean `(D,)` and covariance `(D, D)` of `(N, D)` features, float64, N-1 normalization."""
    f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) \
        else np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"feature_stats: expected features (N, D), got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"feature_stats: need at least 2 feature vectors for a covariance, "
                         f"got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise ValueError("feature_stats: features contain NaN or inf")
    mu = f.mean(axis=0)
    centred = f - mu
    sigma = centred.T @ centred / (f.shape[0] - 1)
    return mu, sigma


def _as_f64(x, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) \
        else np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"frechet_distance: {name} contains NaN or inf")
    return a


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix.

    Eigenvalues below eigh's rounding floor (D * eps * the largest) are set to 0: for a singular
    covariance (N <= D) they are noise of either sign, and their square roots (~1e-8) would bias the
    trace term.
    """
    sym = (sigma + sigma.T) / 2
    vals, vecs = np.linalg.eigh(sym)
    floor = max(float(vals.max()), 0.0) * sym.shape[0] * np.finfo(np.float64).eps
    vals = np.where(vals > floor, vals, 0.0)
    return (vecs * np.sqrt(vals)) @ vecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """`tr((S1 S2)^{1/2})` = nuclear norm of `S1^{1/2} S2^{1/2}` (exact for singular S1, S2)."""
    return float(np.linalg.svd(_psd_sqrt(sigma1) @ _psd_sqrt(sigma2), compute_uv=False).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Accepts numpy arrays or tensors. Symmetric in its two distributions and 0 for identical ones
    (up to float64 rounding; tiny negative results are clipped to 0).
    """
    mu1, mu2 = _as_f64(mu1, "mu1"), _as_f64(mu2, "mu2")
    sigma1, sigma2 = _as_f64(sigma1, "sigma1"), _as_f64(sigma2, "sigma2")
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"frechet_distance: means must be vectors of one size, got {mu1.shape} "
                         f"and {mu2.shape}")
    D = mu1.shape[0]
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (D, D):
            raise ValueError(f"frechet_distance: {name} must be ({D}, {D}), got {s.shape}")
    diff = mu1 - mu2
    d = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(float(d), 0.0)


def fvd(features_real, features_fake) -> float:
    """FVD between two feature sets `(N, 400)`."""
    return frechet_distance(*feature_stats(features_real), *feature_stats(features_fake))


# --------------------------------------------------------------------------------------------------
# Real-set statistics cache


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (identifies the exact I3D weights next to a score)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def stats_key(protocol: dict) -> str:
    """A short stable hash of a JSON-serializable protocol description (sorted keys)."""
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StatsCache:
    """Real-set FVD statistics on disk, one `.npz` per protocol.

    The file name carries `stats_key(protocol)`, and the file stores the protocol itself, checked on
    load, so changing anything that affects the real features (dataset root, split, N, resolution,
    frames, interval, seed, I3D file, BN eps, preprocessing version) computes fresh statistics.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path(self, protocol: dict) -> Path:
        name = str(protocol.get("name", "real"))
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        return self.directory / f"{safe}-{stats_key(protocol)}.npz"

    def load(self, protocol: dict) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(mu, sigma, n) if cached for exactly this protocol, else None."""
        path = self.path(protocol)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            stored = json.loads(str(data["protocol"]))
            if stored != json.loads(json.dumps(protocol, sort_keys=True, default=str)):
                return None  # a hash collision or an edited file: recompute
            return data["mu"].astype(np.float64), data["sigma"].astype(np.float64), int(data["n"])

    def save(self, protocol: dict, mu: np.ndarray, sigma: np.ndarray, n: int) -> Path:
        path = self.path(protocol)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, mu=mu, sigma=sigma, n=np.int64(n),
                 protocol=np.array(json.dumps(protocol, sort_keys=True, default=str)))
        tmp.replace(path)
        return path

    def get_or_compute(self, protocol: dict, compute: Callable[[], np.ndarray | torch.Tensor]
                       ) -> tuple[np.ndarray, np.ndarray, int, bool]:
        """(mu, sigma, n, was_cached); on a miss `compute()` returns the (N, D) features."""
        hit = self.load(protocol)
        if hit is not None:
            return (*hit, True)
        features = compute()
        mu, sigma = feature_stats(features)
        self.save(protocol, mu, sigma, len(features))
        return mu, sigma, len(features), False


#: Bumped if the preprocessing above ever changes, so cached real statistics are recomputed.
PREPROCESS_VERSION = "tf1-legacy-bilinear-224/uint8/2x-1/fp32"
DEFAULT_BN_EPS = TF_BN_EPS
