"""Captioned moving digits: the caption grammar, the held-out compositions, and that each digit really
moves as its caption says (the text-to-video data of docs/design.md §9)."""

import numpy as np
import pytest
import torch

from magi.data import (HELD_OUT_PAIRS, MOTIONS, CaptionedDigits, all_captions, build_dataset, caption_for,
                       caption_pairs, is_held_out, parse_caption)
from magi.data.builtin import _digit_bank


def test_grammar_round_trip_and_counts():
    captions = all_captions()
    assert len(captions) == len(set(captions)) == 40 + 40 * 36  # distinct digits in two-digit captions
    assert (len(all_captions(1, held_out=True)), len(all_captions(1, held_out=False))) == (10, 30)
    assert (len(all_captions(2, held_out=True)), len(all_captions(2, held_out=False))) == (630, 810)
    for pairs, text in zip(caption_pairs(), captions):
        assert parse_caption(text) == pairs and caption_for(pairs) == text
        assert is_held_out(text) == is_held_out(pairs) == any(p in HELD_OUT_PAIRS for p in pairs)
    assert caption_for([(3, 0)]) == "the digit 3 is moving up then down"
    assert caption_for([(7, 2), (1, 3)]) == \
        "the digit 7 is moving left then right and the digit 1 is moving right then left"
    assert parse_caption("the digit 0 is moving down then up and the digit 9 is moving up then down") == \
        ((0, 1), (9, 0))
    assert len(HELD_OUT_PAIRS) == 10 and {d for d, _ in HELD_OUT_PAIRS} == set(range(10))
    assert is_held_out("the digit 0 is moving left then right")
    assert is_held_out("the digit 5 is moving up then down and the digit 3 is moving up then down")  # (3, up/down)
    assert not is_held_out("the digit 0 is moving up then down")


@pytest.mark.parametrize("text", [
    "the digit 3 is moving sideways",
    "The digit 3 is moving up then down",
    "the digit 3 is moving up then down ",
    "the digit 12 is moving up then down",
    "the digit 3 is moving up then down and the digit 3 is moving down then up",
    "the digit 3 is moving up then down and the digit 4 is moving up then down and the digit 5 is moving up then down",
    "",
])
def test_bad_captions_are_refused_naming_the_text(text):
    with pytest.raises(ValueError, match="parse_caption") as info:
        parse_caption(text)
    assert repr(text) in str(info.value)
    with pytest.raises(ValueError):
        is_held_out(text)


def test_bad_pairs_and_options():
    for pairs in ([], [(10, 0)], [(1, 4)], [(1, 0), (1, 1)], [(1, 0), (2, 0), (3, 0)]):
        with pytest.raises(ValueError, match="caption_for"):
            caption_for(pairs)
    for options, name in (({"split": "test"}, "split"), ({"num_digits": 3}, "num_digits"),
                          ({"num_digits": 2, "two_digit_share": 0.5}, "not both"),
                          ({"two_digit_share": 1.5}, "two_digit_share"), ({"num_frames": 3}, "num_frames"),
                          ({"speed": 10.0}, "speed"), ({"digit_size": 32}, "digit_size")):
        with pytest.raises(ValueError, match=name):
            CaptionedDigits(num_videos=2, **options)
    with pytest.raises(ValueError, match="unknown option"):
        build_dataset("captioned-digits", num_videos=2, max_interval=3)


def test_item_structure_and_build_dataset():
    ds = build_dataset("captioned-digits", num_videos=6, num_frames=8, size=32, two_digit_share=0.5, seed=0)
    assert isinstance(ds, CaptionedDigits) and len(ds) == 6
    counts = set()
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"video", "caption", "label", "interval", "path", "pairs"}
        video = item["video"]
        assert video.shape == (8, 3, 32, 32) and video.dtype == torch.float32
        assert video.min() == -1 and video.max() > 0.5 and video.max() <= 1
        assert torch.equal(video[:, 0], video[:, 1]) and torch.equal(video[:, 0], video[:, 2])  # gray
        assert parse_caption(item["caption"]) == tuple(item["pairs"]) and item["label"] == item["pairs"][0][0]
        assert item["interval"] == 1 and item["path"] == f"captioned-digits/{i:06d}"
        counts.add(len(item["pairs"]))
    assert counts == {1, 2}
    assert all(len(p) == 2 for p in CaptionedDigits(num_videos=5, num_digits=2).pairs)
    assert all(len(p) == 1 for p in CaptionedDigits(num_videos=5).pairs)


def test_splits_hold_out_the_compositions():
    train = CaptionedDigits(num_videos=4000, two_digit_share=0.5, split="train", seed=7, cache=False)
    assert not any(is_held_out(c) for c in train.captions)
    assert {c for c, p in zip(train.captions, train.pairs) if len(p) == 1} == set(all_captions(1, held_out=False))
    held = CaptionedDigits(num_videos=300, two_digit_share=0.5, split="heldout", seed=7, cache=False)
    assert all(is_held_out(c) for c in held.captions)
    seen = CaptionedDigits(num_videos=300, two_digit_share=0.5, split="seen", seed=7, cache=False)
    assert not any(is_held_out(c) for c in seen.captions)
    scorer = CaptionedDigits(num_videos=300, two_digit_share=0.5, split="scorer", seed=7, cache=False)
    assert 0 < sum(map(is_held_out, scorer.captions)) < 300
    # "seen" and "heldout" draw the test digit images, "train" and "scorer" the training ones
    assert len(seen._bank) == len(held._bank) == 297 and len(train._bank) == len(scorer._bank) == 1500


def _centroids(frames: np.ndarray) -> np.ndarray:
    """(T, S, S) uint8 frames -> (T, 2) ink centre of mass (y, x)."""
    ys, xs = np.indices(frames.shape[1:])
    mass = frames.sum(axis=(1, 2)).astype(float)
    return np.stack([(frames * ys).sum(axis=(1, 2)) / mass, (frames * xs).sum(axis=(1, 2)) / mass], axis=1)


@pytest.mark.parametrize("num_frames,interval", [(8, 1), (16, 1), (6, 3)])
def test_motion_follows_the_caption(num_frames, interval):
    """One-digit clips: the digit moves along the caption's axis only, first in the named direction,
    and reverses exactly once, in the middle half of the clip."""
    ds = CaptionedDigits(num_videos=60, num_frames=num_frames, split="scorer", seed=3, interval=interval)
    assert {p[0][1] for p in ds.pairs} == set(range(len(MOTIONS)))
    for i in range(len(ds)):
        frames = ((ds[i]["video"][:, 0] + 1) * 127.5).round().numpy()  # (T, S, S)
        assert (frames > 0).any(axis=(1, 2)).all()  # always on the canvas
        c = _centroids(frames)  # (T, 2)
        (_, motion), = ds.pairs[i]
        axis = 0 if MOTIONS[motion].split()[0] in ("up", "down") else 1
        first = -1 if MOTIONS[motion].split()[0] in ("up", "left") else 1
        np.testing.assert_allclose(c[:, 1 - axis], c[0, 1 - axis], atol=1e-6)  # the other coordinate fixed
        steps = np.sign(np.round(np.diff(c[:, axis]), 6))
        steps = steps[steps != 0]
        assert steps[0] == first, (ds.captions[i], c[:, axis])
        assert (steps[1:] != steps[:-1]).sum() == 1, (ds.captions[i], c[:, axis])  # one bounce
        turn = np.argmax(first * c[:, axis])  # the frame nearest the edge it first moves to
        assert 0.25 * (num_frames - 1) - 1 <= turn <= 0.75 * (num_frames - 1) + 1
        assert min(turn, num_frames - 1 - turn) >= 1  # both directions are visible
        travel = np.abs(np.diff(c[:, axis])).sum()
        assert travel >= 0.5 * ds.speed * (num_frames - 1) * interval - 2  # clearly moving


def test_two_digit_clips_draw_both_digits_with_their_motions():
    """Two-digit clips render each digit as one-digit clips do (tested above by its centroid): the right
    class of image, an axis-aligned velocity along the caption's axis, first in the named direction."""
    ds = CaptionedDigits(num_videos=30, num_digits=2, split="scorer", seed=5)
    labels = _digit_bank(ds.digit_size, "train")[1]  # the classes of the images "scorer" draws
    for i in range(len(ds)):
        assert (ds.frames(i)[:, 0] > 0).any(dim=(1, 2)).all()
        for k, (digit, motion) in enumerate(ds.pairs[i]):
            first = MOTIONS[motion].split()[0]
            axis = 0 if first in ("up", "down") else 1
            assert labels[ds._ids[i, k]] == digit
            assert ds._v[i, k, 1 - axis] == 0 and np.sign(ds._v[i, k, axis]) == (-1 if first in ("up", "left") else 1)


def test_deterministic_and_seeded():
    a = CaptionedDigits(num_videos=6, two_digit_share=0.5, seed=2)
    b = CaptionedDigits(num_videos=11, two_digit_share=0.5, seed=2, cache=False)  # video i independent of count
    c = CaptionedDigits(num_videos=6, two_digit_share=0.5, seed=3)
    for i in range(6):
        assert torch.equal(a[i]["video"], b[i]["video"]) and a[i]["caption"] == b[i]["caption"]
    assert a.captions != c.captions
