"""FVD pieces: TF1 resize, preprocessing, statistics, the Fréchet distance, the real-stats cache."""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from magi.evaluate.fvd import (StatsCache, feature_stats, frechet_distance, fvd, i3d_features,
                               preprocess, resize_bilinear_tf1, stats_key)
from magi.evaluate.i3d import InceptionI3d


# ---------------------------------------------------------------------------------------- resize

def test_resize_matches_hand_computed_tf1_values():
    image = torch.tensor([[0.0, 30.0, 60.0], [90.0, 120.0, 150.0]])  # (H=2, W=3)
    # rows: src y = 0, 2/3, 4/3 -> (0,1,0), (0,1,2/3), (1,1 clamped,1/3)
    # cols: src x = 0, .75, 1.5, 2.25 -> (0,1,0), (0,1,.75), (1,2,.5), (2,2 clamped,.25)
    expected = torch.tensor([[0.0, 22.5, 45.0, 60.0],
                             [60.0, 82.5, 105.0, 120.0],
                             [90.0, 112.5, 135.0, 150.0]])
    out = resize_bilinear_tf1(image, (3, 4))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    # the half-pixel rule of F.interpolate gives other numbers
    half = F.interpolate(image[None, None], size=(3, 4), mode="bilinear", align_corners=False)[0, 0]
    assert (half - expected).abs().max() > 5


def test_resize_downsampling_samples_without_averaging():
    row = torch.arange(8.0).view(1, 1, 1, 8) * 10  # (1, 1, H=1, W=8)
    out = resize_bilinear_tf1(row, (1, 4))
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 20.0, 40.0, 60.0]))


def test_resize_same_size_is_identity_and_batched():
    x = torch.rand(2, 3, 3, 7, 5)
    torch.testing.assert_close(resize_bilinear_tf1(x, (7, 5)), x)
    big = resize_bilinear_tf1(x, 11)
    for i in range(2):
        torch.testing.assert_close(big[i, 1], resize_bilinear_tf1(x[i, 1], 11))


def test_preprocess_scaling_layout_and_checks():
    video = torch.zeros(2, 9, 3, 224, 224, dtype=torch.uint8)
    video[0, :, 1] = 255
    x = preprocess(video)
    assert x.shape == (2, 3, 9, 224, 224) and x.dtype == torch.float32
    assert x[0, 1].eq(1).all() and x[0, 0].eq(-1).all() and x[1].eq(-1).all()
    with pytest.raises(ValueError, match="uint8"):
        preprocess(video.float())
    with pytest.raises(ValueError, match="at least 9 frames"):
        preprocess(video[:, :8])


def test_i3d_features_shape_determinism_and_equivalence():
    torch.manual_seed(0)  # only for building the random test network
    model = InceptionI3d().eval()
    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (2, 9, 3, 16, 16), generator=g, dtype=torch.uint8)
    f1 = i3d_features(model, video, batch_size=1)
    f2 = i3d_features(model, video, batch_size=2)
    assert f1.shape == (2, 400) and f1.dtype == torch.float32
    torch.testing.assert_close(f1, f2, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(f1, model(preprocess(video)), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ statistics

def test_feature_stats_float64_unbiased():
    f = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    mu, sigma = feature_stats(f)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, f.double().numpy().mean(0))
    np.testing.assert_allclose(sigma, np.cov(f.double().numpy(), rowvar=False, ddof=1))
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(f[:1])


def random_cov(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1 * np.eye(d))


def test_frechet_closed_form_diagonal():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_closed_form_scaled_covariance():
    # S2 = c^2 S1 commutes with S1: tr((S1 S2)^1/2) = c tr(S1), so d = |dmu|^2 + (1 - c)^2 tr(S1).
    rng = np.random.default_rng(1)
    s1 = random_cov(rng, 6)
    c = 2.5
    mu = rng.standard_normal(6)
    expected = 1.0 + (1 - c) ** 2 * np.trace(s1)
    d = frechet_distance(mu, s1, mu + np.eye(6)[2], c**2 * s1)
    assert d == pytest.approx(expected, rel=1e-10)


def test_frechet_symmetric_zero_and_matches_scipy_sqrtm():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    s1, s2 = random_cov(rng, 20), random_cov(rng, 20)
    d12, d21 = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert d12 == pytest.approx(d21, rel=1e-12)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    # independent: the classic formula with scipy's (unsymmetric) sqrtm of S1 S2
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert d12 == pytest.approx(ref, rel=1e-9)
    # tensors are accepted
    assert frechet_distance(*(torch.from_numpy(a) for a in (mu1, s1, mu2, s2))) == pytest.approx(d12)


def test_frechet_with_fewer_samples_than_dimensions():
    # N < D: both covariances singular. Exact reference from the data: with centred X1, X2,
    # tr((S1 S2)^1/2) = nuclear norm of X1 X2^T / sqrt((n1 - 1)(n2 - 1)).
    rng = np.random.default_rng(3)
    f1, f2 = rng.standard_normal((12, 40)), rng.standard_normal((15, 40)) * 1.5 + 0.3
    (mu1, s1), (mu2, s2) = feature_stats(f1), feature_stats(f2)
    x1, x2 = f1 - mu1, f2 - mu2
    tr = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / np.sqrt(11 * 14)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)
    assert fvd(f1, f1) == pytest.approx(0.0, abs=1e-8)
    assert fvd(f1, f2) == pytest.approx(fvd(f2, f1), rel=1e-10)


def test_frechet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan, 0]), np.eye(2), np.zeros(2), np.eye(2))


# ----------------------------------------------------------------------------------------- cache

def test_stats_cache_keyed_by_protocol(tmp_path):
    cache = StatsCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return np.random.default_rng(len(calls)).standard_normal((10, 4))

    p = {"name": "ucf101", "num_videos": 10, "interval": 3, "root": "/data/ucf"}
    mu, sigma, n, cached = cache.get_or_compute(p, compute)
    assert (n, cached, len(calls)) == (10, False, 1)
    mu2, sigma2, _, cached = cache.get_or_compute(dict(p), compute)
    assert cached and len(calls) == 1
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    _, _, _, cached = cache.get_or_compute(dict(p, interval=1), compute)
    assert not cached and len(calls) == 2
    assert stats_key(p) == stats_key(dict(reversed(list(p.items()))))
    assert len(list(tmp_path.glob("ucf101-*.npz"))) == 2
