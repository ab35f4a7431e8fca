"""Sampling cost of MAGI: seconds per generated frame and peak memory, and per-frame time over a long video.

Two parts, each setting run in a fresh process (so its peak memory is its own):

1. Seconds per generated frame at the paper's inference (64 mask steps x 100 DDPM steps) and at
   cheaper settings (16 x 25 DDIM, 8 x 25 DDIM), at batch 1 and a larger batch, for one
   training-length video (context-free). Seconds per frame = generation time / (batch x frames);
   the median over the frames of one run is reported too.
2. Per-frame time over a 64-frame generation (far past the training length) with the cheap setting,
   for both long-video modes: "interpolate" (temporal table stretched to 64 rows; the KV cache grows,
   so later frames attend to more keys) and "window" (the last T_train - 1 frames re-enter a fresh
   cache at every frame past the training length: constant attention length, T_train - 1 extra
   clean-frame passes per frame).

Times cover `Magi.stream` (the model); decoding with the `pixels` VAE is negligible. Wall and process
CPU time are both recorded; on a shared machine the CPU time of a 1-thread run is the figure that does
not depend on what else runs, so ratios and the long-video curve use it. Cases are repeated,
interleaved, and medians taken. Peak memory is
the process's peak resident set (CPU; `extra_mb` = growth during generation over the model-loaded
process) or `torch.cuda.max_memory_allocated` (CUDA). Writes results/sample.json and results/sample.png.

    PYTHONPATH=. python benchmarks/sample.py [--preset tiny --threads 1 --batch 8 --long-frames 64]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import time

import torch

from common import RESULTS, print_table, write_results

SETTINGS = [  # (name, mask steps, diffusion steps, sampler)
    ("paper 64x100 ddpm", 64, 100, "ddpm"),
    ("16x25 ddim", 16, 25, "ddim"),
    ("8x25 ddim", 8, 25, "ddim"),
]


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(queue, preset: str, device: str, threads: int, batch: int, frames: int, mask_steps: int,
           diffusion_steps: int, sampler: str, long_video: str) -> None:
    """Build the model, generate once, report per-frame times and memory."""
    from magi import Magi, MagiConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)  # random weights: the cost does not depend on their values
    model = Magi(MagiConfig.preset(preset)).to(device).eval()
    labels = [0] * batch if model.config.num_classes else None
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    before = _peak_mb(device)
    generator = torch.Generator(device=device).manual_seed(0)
    wall, cpu = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in model.stream(frames, labels=labels, batch_size=batch, mask_steps=mask_steps,
                          diffusion_steps=diffusion_steps, sampler=sampler, generator=generator,
                          long_video=long_video):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t1, c1 = time.perf_counter(), time.process_time()
        wall.append(t1 - t0)
        cpu.append(c1 - c0)
        t0, c0 = t1, c1
    queue.put({"frame_seconds": wall, "frame_cpu_seconds": cpu, "peak_mb_before": before,
               "peak_mb": _peak_mb(device)})


def run(**kwargs) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,), kwargs=kwargs)
    proc.start()
    result = queue.get()
    proc.join()
    return result


def repeated(cases: list[dict], repeats: int) -> list[dict]:
    """Run every case `repeats` times, interleaved (ABAB...) so a change in the machine's load hits
    all cases alike; per-frame times are the median over repeats, memory the maximum."""
    runs: list[list[dict]] = [[] for _ in cases]
    for _ in range(repeats):
        for i, case in enumerate(cases):
            runs[i].append(run(**case))
    out = []
    for rs in runs:
        med = lambda key: [statistics.median(col) for col in zip(*(r[key] for r in rs))]  # noqa: E731
        out.append({"frame_seconds": med("frame_seconds"), "frame_cpu_seconds": med("frame_cpu_seconds"),
                    "total_seconds": statistics.median(sum(r["frame_seconds"]) for r in rs),
                    "total_cpu_seconds": statistics.median(sum(r["frame_cpu_seconds"]) for r in rs),
                    "peak_mb": max(r["peak_mb"] for r in rs),
                    "peak_mb_before": max(r["peak_mb_before"] for r in rs)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8, help="the larger batch size (batch 1 is always run)")
    ap.add_argument("--frames", type=int, default=None, help="frames per video in part 1 (default: T_train)")
    ap.add_argument("--long-frames", type=int, default=64)
    ap.add_argument("--long-setting", default="16x25 ddim", choices=[s[0] for s in SETTINGS])
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats per case (medians)")
    args = ap.parse_args()
    from magi import MagiConfig

    config = MagiConfig.preset(args.preset)
    frames = args.frames or config.num_frames
    load_start = list(os.getloadavg())  # the machine is shared: record how busy it was
    common = dict(preset=args.preset, device=args.device, threads=args.threads)

    cases, rows = [], []
    for name, mask_steps, diffusion_steps, sampler in SETTINGS:
        for batch in sorted({1, args.batch}):
            cases.append(dict(**common, batch=batch, frames=frames, mask_steps=mask_steps,
                              diffusion_steps=diffusion_steps, sampler=sampler, long_video="interpolate"))
            rows.append({"setting": name, "batch": batch, "frames": frames})
    for row, r in zip(rows, repeated(cases, args.repeats)):
        n = row["batch"] * frames
        row.update(s_per_frame=r["total_seconds"] / n, cpu_s_per_frame=r["total_cpu_seconds"] / n,
                   median_frame_s=statistics.median(r["frame_seconds"]) / row["batch"],
                   total_s=r["total_seconds"], peak_mb=r["peak_mb"],
                   extra_mb=r["peak_mb"] - r["peak_mb_before"])
    paper = {r["batch"]: r["cpu_s_per_frame"] for r in rows if r["setting"] == SETTINGS[0][0]}
    for r in rows:
        r["speedup_vs_paper"] = paper[r["batch"]] / r["cpu_s_per_frame"]  # CPU time: robust to load
    print(f"\n{args.preset} ({config.tokens_per_frame} tokens/frame, T_train={config.num_frames}), "
          f"{args.device}, {args.threads} thread(s): seconds per generated frame")
    print_table(rows, ["setting", "batch", "frames", "s_per_frame", "cpu_s_per_frame", "median_frame_s",
                       "speedup_vs_paper", "peak_mb", "extra_mb"])

    _, mask_steps, diffusion_steps, sampler = next(s for s in SETTINGS if s[0] == args.long_setting)
    modes = ("interpolate", "window")
    long = dict(zip(modes, repeated([dict(**common, batch=1, frames=args.long_frames, mask_steps=mask_steps,
                                          diffusion_steps=diffusion_steps, sampler=sampler, long_video=mode)
                                     for mode in modes], args.repeats)))
    T = config.num_frames
    long_rows = []
    for mode, r in long.items():
        f = r["frame_cpu_seconds"]
        long_rows.append({"mode": mode, "first_T_median_cpu_s": statistics.median(f[:T]),
                          "last_T_median_cpu_s": statistics.median(f[-T:]),
                          "last_over_first": statistics.median(f[-T:]) / statistics.median(f[:T]),
                          "total_s": r["total_seconds"], "total_cpu_s": r["total_cpu_seconds"],
                          "peak_mb": r["peak_mb"], "extra_mb": r["peak_mb"] - r["peak_mb_before"]})
    print(f"\nper-frame time over a {args.long_frames}-frame video ({args.long_setting}, batch 1; "
          f"training length {T})")
    print_table(long_rows, ["mode", "first_T_median_cpu_s", "last_T_median_cpu_s", "last_over_first",
                            "total_s", "total_cpu_s", "peak_mb", "extra_mb"])

    write_results("sample", {
        "args": vars(args), "load_average_start_end": [load_start, list(os.getloadavg())], "preset_tokens_per_frame": config.tokens_per_frame, "train_frames": T,
        "note": "seconds per generated frame = generation time / (batch x frames); model only "
                "(pixels VAE decoding is negligible); peak_mb = peak RSS of the process (CPU)",
        "per_frame_cost": rows, "long_video": long_rows,
        "long_video_frame_seconds": {m: r["frame_seconds"] for m, r in long.items()},
        "long_video_frame_cpu_seconds": {m: r["frame_cpu_seconds"] for m, r in long.items()},
    })
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=120)
    ax = fig.add_subplot()
    for mode, r in long.items():
        ax.plot(range(len(r["frame_cpu_seconds"])), r["frame_cpu_seconds"], marker="o", markersize=2,
                label=mode)
    ax.axvline(T - 0.5, color="gray", ls="--", lw=1, label="training length")
    ax.set_xlabel("frame index")
    ax.set_ylabel("CPU seconds per frame")
    ax.set_title(f"{args.preset}: per-frame time, {args.long_setting}, batch 1")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "sample.png")
    print(f"wrote {RESULTS / 'sample.png'}")


if __name__ == "__main__":
    main()
