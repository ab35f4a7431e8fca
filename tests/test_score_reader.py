"""The score reader (docs/world-model.md): BCD scores from the RAM, and a reader fitted on frames whose digits it must
tell apart (drawn here in a 3x5 font where Boxing draws its scores)."""

from __future__ import annotations

import numpy as np

from magi.world.score import REGIONS, SCORE_BYTES, ScoreReader, accuracy, ram_scores

FONT = ["111101101101111", "010010010010010", "111001111100111", "111001111001111", "101101111001001",
        "111100111001111", "111100111101111", "111001001001001", "111101111101111", "111101111001111"]


def frames_with_scores(n: int, seed: int, layout: str = "screen") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 40, size=(n, 3, 64, 64), dtype=np.uint8)
    ram = np.zeros((n, 128), np.uint8)
    for i in range(n):
        for side, byte in SCORE_BYTES.items():
            score = int(rng.integers(100))
            ram[i, byte] = (score // 10) << 4 | score % 10
            col = REGIONS[layout][side][1].start + 2
            for j, digit in enumerate((score // 10, score % 10)):
                glyph = np.array([int(b) for b in FONT[digit]], bool).reshape(5, 3)
                frames[i, :, 0:5, col + 4 * j:col + 4 * j + 3][:, glyph] = 220
    return frames, ram


def test_ram_scores_are_bcd():
    ram = np.zeros((2, 128), np.uint8)
    ram[:, 18], ram[:, 19] = [0x38, 0x09], [0x00, 0x99]
    s = ram_scores(ram)
    assert list(s["player"]) == [38, 9] and list(s["opponent"]) == [0, 99]


def test_the_reader_reads_digits_it_was_fitted_on_and_not_noise():
    frames, ram = frames_with_scores(3000, 0)
    reader = ScoreReader().fit(frames, ram, steps=300)
    held, held_ram = frames_with_scores(300, 1)
    acc = accuracy(reader, held, held_ram)
    assert acc["player"] >= 0.95 and acc["opponent"] >= 0.95, acc
    blank = held.copy()
    blank[:, :, 0:6] = 0  # the digits gone: no better than chance
    acc = accuracy(reader, blank, held_ram)
    assert acc["player"] < 0.1 and acc["opponent"] < 0.1, acc


def test_in_the_hud_layout_the_reader_reads_real_scores_the_screen_layout_blurs():
    """Real emulator frames with scores written into the RAM: the "hud" strip keeps both sides' digits
    legible to a reader fitted on other frames; the resized screen does not keep them all."""
    from magi.world.atari import atari_env, resize_frame

    env = atari_env("Boxing")
    env.reset(seed=0)
    ale, rng = env.unwrapped.ale, np.random.default_rng(0)
    frames = {"screen": [], "hud": []}
    ram = []
    for _ in range(1400):
        for byte in SCORE_BYTES.values():
            score = int(rng.integers(100))
            ale.setRAM(byte, (score // 10) << 4 | score % 10)
        obs, *_ = env.step(int(rng.integers(18)))
        ram.append(ale.getRAM().copy())
        for layout in frames:
            frames[layout].append(resize_frame(obs, 64, layout))
    env.close()
    ram = np.stack(ram)
    acc = {}
    for layout, f in frames.items():
        f = np.stack(f)
        reader = ScoreReader(layout=layout).fit(f[:1200], ram[:1200], steps=400)
        acc[layout] = accuracy(reader, f[1200:], ram[1200:])
    assert min(acc["hud"].values()) >= 0.95, acc
    assert min(acc["screen"].values()) < min(acc["hud"].values()), acc
