"""How well a frame tokenizer keeps what matters on held-out frames (docs/world-model.md#the-frame-tokenizer).

For every VAE given (a tokenizer export, `pixels:4:gray`, ...) on the validation episodes of the
recordings: colour PSNR of the round trip (pooled over frames) and SSIM, the player detector's position
on the reconstructions against the same detector on the real frames and against the emulator's RAM, and
the decoder's time per frame (batch 1, median) on 1 and 2 threads. Writes JSON, a PNG of originals,
reconstructions and their differences, and prints a table.

    python experiments/tokenizer_quality.py tokens=runs/atari_tokenizer/export gray=pixels:4:gray \\
        --out results/tokenizer
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from magi.data import build_dataset
from magi.world.atari import load_ram
from magi.video_io import to_float_video, to_uint8_video
from magi.evaluate.metrics import ssim
from magi.world.detect import calibrate, player_detector
from magi.vae import load_vae
from magi.visualize import psnr
from magi.video_io import save_grid_png

DATA = {"root": "data_cache/atari/boxing64", "num_frames": 5, "size": 64, "game": "Boxing", "episodes": 40,
        "val_episodes": 8, "max_frames": 1000, "policy": "mix", "interval": 1, "split": "val"}


def held_out(num_frames: int, episodes: int) -> tuple[torch.Tensor, np.ndarray]:
    """Frames evenly spread over the first validation episodes: uint8 (F, 3, H, W) and RAM (F, 128)."""
    ds = build_dataset("atari", **DATA)
    frames, rams = [], []
    per = max(1, num_frames // min(episodes, len(ds)))
    for i in range(min(episodes, len(ds))):
        n = ds.video_frames(i)
        idx = np.linspace(0, n - 1, per).round().astype(int)
        video = ds.frames(i, num_frames=n, interval=1, start=0)  # (n, 3, H, W)
        frames.append(video[idx])
        rams.append(load_ram(ds.path_of(i))[idx])
    return torch.cat(frames), np.concatenate(rams)


@torch.no_grad()
def round_trip(vae, frames: torch.Tensor, batch: int = 64) -> torch.Tensor:
    out = [to_uint8_video(vae.decode(vae.encode(to_float_video(f)[None]))[0]) for f in frames.split(batch)]
    return torch.cat(out)  # (F, 3, H, W) uint8


@torch.no_grad()
def decode_ms(vae, frames: torch.Tensor, threads: int, repeats: int = 40) -> float:
    torch.set_num_threads(threads)
    z = vae.encode(to_float_video(frames[:1])[None])  # (1, 1, C, h, w)
    for _ in range(5):
        vae.decode(z)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        vae.decode(z)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vaes", nargs="+", help="NAME=SPEC (a tokenizer export folder, pixels:4:gray, ...)")
    p.add_argument("--out", default="results/tokenizer")
    p.add_argument("--frames", type=int, default=1024)
    p.add_argument("--episodes", type=int, default=8)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, ram = held_out(args.frames, args.episodes)
    detector = player_detector("Boxing")
    truth_xy = detector.detect(frames)  # (F, 2)
    result = {"frames": int(len(frames)), "episodes": args.episodes, "data": DATA,
              "detector_on_real_frames": calibrate(detector, frames, ram), "vaes": {}}
    rows, shown = [], [frames[:8]]
    for item in args.vaes:
        name, spec = item.split("=", 1)
        vae = load_vae(spec).eval()
        torch.set_num_threads(2)
        recon = round_trip(vae, frames)
        found = detector.detect(recon)
        both = ~np.isnan(found).any(-1) & ~np.isnan(truth_xy).any(-1)
        vs_real = np.sqrt(((found[both] - truth_xy[both]) ** 2).sum(-1))
        entry = {
            "spec": spec, "latent_channels": vae.latent_channels, "spatial_stride": vae.spatial_stride,
            "psnr_colour_db": float(psnr(to_float_video(recon), to_float_video(frames), dims=(0, 1, 2, 3))),
            "ssim_colour": float(ssim(recon[None], frames[None]).mean()),
            "player_vs_real_detection_px": float(vs_real.mean()),
            "player_vs_real_detection_p95_px": float(np.percentile(vs_real, 95)),
            "player_found_rate": float(both.mean()),
            "player_vs_ram": calibrate(detector, recon, ram),
            "decode_ms_1_thread": decode_ms(vae, frames, 1), "decode_ms_2_threads": decode_ms(vae, frames, 2),
        }
        result["vaes"][name] = entry
        shown += [recon[:8], ((recon.float() - frames.float()).abs() * 4).clamp(0, 255).to(torch.uint8)[:8]]
        rows.append(f"{name:<10} {entry['psnr_colour_db']:7.2f} {entry['ssim_colour']:6.3f} "
                    f"{entry['player_vs_real_detection_px']:8.2f} {entry['player_vs_ram']['mean_error_px']:7.2f} "
                    f"{entry['decode_ms_1_thread']:8.1f} {entry['decode_ms_2_threads']:8.1f}")
    save_grid_png(out / "reconstructions.png", [v.numpy() for v in shown], scale=3)  # rows: real, then per VAE
                                                                                    # its frames and 4x |diff|
    (out / "quality.json").write_text(json.dumps(result, indent=1))
    header = ("VAE          PSNR   SSIM  player vs real  vs RAM  decode ms (1 thr / 2 thr)\n"
              f"(real frames: detector vs RAM {result['detector_on_real_frames']['mean_error_px']:.2f} px)")
    table = "\n".join([header] + rows)
    (out / "table.txt").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
