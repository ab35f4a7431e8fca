"""The caption scorer (magi.evaluate.text): it reads real captioned-digit clips, so a generator's caption
accuracy means something; its inputs, files and summaries."""

import numpy as np
import pytest
import torch

from magi.data import parse_caption
from magi.evaluate.text import CaptionScorer, real_clips, summarize, train_scorer

CONFIG = {"num_frames": 8, "size": 32, "digit_size": 16, "speed": None, "interval": 1,
          "work_size": 16, "width": 16, "hidden": 32}


@pytest.fixture(scope="module")
def trained():
    """A scorer trained briefly (~15 s) on real one-digit clips."""
    return train_scorer(steps=120, batch_size=32, two_digit_share=0.0, width=16, eval_videos=64,
                        progress=False)


def test_scorer_reads_real_clips_far_above_shuffled_captions(trained):
    """Even briefly trained (too briefly to pass its 0.5 presence threshold), the scorer reads real
    clips' motions and leans to their digits: true captions score far above shuffled ones."""
    videos, captions = real_clips("seen", 96, seed=11, num_digits=1)
    true = trained.score(videos, captions)
    shuffled = trained.score(videos, captions[1:] + captions[:1])  # each clip against another's caption
    assert true["motion"].mean() > 0.9 and true["motion"].mean() > shuffled["motion"].mean() + 0.4
    presence, _ = trained.predict(videos)
    digits = np.array([p[0][0] for p in map(parse_caption, captions)])
    assert (presence.argmax(1) == digits).mean() > 0.25  # chance: 0.1
    report = trained.report["real_clips"]
    assert set(report) >= {"all", "seen/one", "heldout/one"} and report["all"]["n"] == 128
    assert report["heldout/one"]["motion"] > 0.9  # held-out pairs are read too (the scorer saw them)


def test_a_clip_turned_half_round_moves_along_its_axis_the_other_way(trained):
    """`motion_axis`: turned by 180 degrees, every clip moves along the same axis, each way reversed, so
    its caption's motion is read wrong and its axis right (the failure of a model deaf to word order)."""
    videos, captions = real_clips("seen", 96, seed=12, num_digits=1)
    turned = trained.score(videos.flip(-1, -2), captions)
    assert turned["motion_axis"].mean() > 0.8 and turned["motion"].mean() < 0.2, \
        (turned["motion_axis"].mean(), turned["motion"].mean())


def test_input_formats_agree_and_save_load_round_trip(trained, tmp_path):
    videos, captions = real_clips("heldout", 6, seed=3, num_digits=1)  # float (B, T, 3, S, S) in [-1, 1]
    uint8 = ((videos + 1) * 127.5).round().byte().permute(0, 1, 3, 4, 2).numpy()  # (B, T, S, S, 3)
    p_float, m_float = trained.predict(videos)
    p_uint8, m_uint8 = trained.predict(uint8)
    np.testing.assert_allclose(p_float, p_uint8, atol=1e-5)
    trained.save(tmp_path / "scorer")
    loaded = CaptionScorer.load(tmp_path / "scorer")
    assert loaded.config == trained.config and loaded.report == trained.report
    p_loaded, m_loaded = loaded.predict(uint8)
    np.testing.assert_allclose(p_loaded, p_uint8, atol=1e-6)
    np.testing.assert_allclose(m_loaded, m_uint8, atol=1e-6)
    assert not list((tmp_path / "scorer").glob("*.pt")) and not list((tmp_path / "scorer").glob("*.pkl"))
    read = trained.read(videos)
    assert len(read) == 6 and all(r is None or r.startswith("the digit ") for r in read)


def test_scorer_refuses_bad_inputs(tmp_path):
    scorer = CaptionScorer(CONFIG)
    videos = torch.zeros(2, 8, 3, 32, 32)
    with pytest.raises(ValueError, match="8-frame"):
        scorer.score(torch.zeros(2, 5, 3, 32, 32), ["the digit 1 is moving up then down"] * 2)
    with pytest.raises(ValueError, match="parse_caption"):
        scorer.score(videos, ["the digit 1 is moving up then down", "a cat"])
    with pytest.raises(ValueError, match="2 videos but 1 captions"):
        scorer.score(videos, ["the digit 1 is moving up then down"])
    with pytest.raises(ValueError, match="uint8 videos"):
        scorer.predict(np.zeros((2, 8, 3, 32, 32), np.uint8))
    with pytest.raises(FileNotFoundError):
        CaptionScorer.load(tmp_path)
    other = scorer.score(torch.zeros(1, 8, 3, 64, 64) - 1, ["the digit 1 is moving up then down"])  # resized
    assert set(other) == {"digit", "digit_likeliest", "motion", "motion_axis", "both", "held_out", "num_digits"}


def test_summarize_groups():
    results = {"digit": np.array([1, 0, 1, 1], bool), "motion": np.array([1, 1, 0, 1], bool),
               "both": np.array([1, 0, 0, 1], bool), "held_out": np.array([0, 0, 1, 1], bool),
               "num_digits": np.array([1, 2, 1, 1])}
    s = summarize(results)
    assert s["all"] == {"n": 4, "digit": 0.75, "motion": 0.75, "both": 0.5}
    assert s["seen/two"] == {"n": 1, "digit": 0.0, "motion": 1.0, "both": 0.0}
    assert s["heldout/one"]["n"] == 2 and s["heldout/one"]["both"] == 0.5
    assert "heldout/two" not in s and s["one"]["n"] == 3


@pytest.mark.slow
def test_default_scorer_is_accurate_on_real_clips():
    """The scorer of `magi eval text` for the shipped text model (16-px, 6-frame clips, 3,000 steps x 64
    clips; ~15 min on one thread of a busy 2-core machine): measured on real one-digit clips 100% motion,
    97.5-97.9% likeliest digit and 90-94% strict digit."""
    report = train_scorer(size=16, num_frames=6, steps=3000, progress=False, eval_videos=300).report["real_clips"]
    for group in ("seen/one", "heldout/one"):
        assert report[group]["motion"] >= 0.97 and report[group]["digit_likeliest"] >= 0.95, report
        assert report[group]["digit"] >= 0.85, report
