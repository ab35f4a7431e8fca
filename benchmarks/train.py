"""Training-step throughput: step time, tokens/s, peak memory and model FLOPs utilisation (MFU).

Every case runs the real loop's `Trainer.train_step` (forward, backward, clipping, AdamW, EMA) on an
in-memory batch of latents, in its own subprocess so peak memory (max RSS on the CPU, max allocated on
CUDA) belongs to that case alone. FLOPs per step are counted by `torch.utils.flop_counter` on one
forward+backward; MFU divides the achieved FLOP/s by this machine's measured dense matmul throughput at
the same precision (fp32, or bf16 under autocast), so it says how close the model gets to what the
hardware delivers on a large matmul, not to a datasheet number.

Cases: the `tiny` preset (32x32 digits through pixels:4:gray, ~2M parameters) and a larger CPU-feasible
model (`small`: width 256, depth 6, head 256, ~10M) x fp32 / bf16 autocast x CTF / MTF.

On a GPU (`--device cuda`) add `--models tiny,small,b,850m`: `b` is the magi-b preset (~190M) and `850m`
the paper's model, on the paper's UCF-101 latent shape (5 latent frames of 16x16x16, 64 tokens per
frame) with compiled FlexAttention. FLOPs there count the attention pairs the block-sparse kernel
computes (its tiles; 128-token blocks in bf16), not dense attention, so MFU is not overstated.

    python benchmarks/train.py [--steps 5 --batch 8 --models tiny,small] [--device cuda]

Writes results/train.json (results/train_cuda.json on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's magi, installed or not
from common import print_table, write_results  # noqa: E402

MODELS = {
    "tiny": {"preset": "tiny"},
    "small": {"preset": "tiny", "width": 256, "depth": 6, "num_heads": 4, "head_width": 256},
    "b": {"preset": "magi-b"},  # GPU only: 191M, flex attention (FLOPs as the block-sparse kernel computes)
    "850m": {"preset": "magi-850m"},  # GPU only: the paper's model
}


def flex_attention_flops(mc, batch: int, precision: str) -> tuple[float, float]:
    """(dense, kernel) FLOPs of the temporal layers' attention over one forward + backward: the dense
    (SDPA) count and what compiled FlexAttention computes, the tiles of its block mask (128-token blocks
    in bf16 backward, `FlexKernel.coarse`). Per layer: 4 * width FLOPs per (query, key) pair forward
    (QK^T and PV), twice that backward (dQ, dK, dV, dP), as torch's FLOP counter counts SDPA."""
    from magi.model.attention import TemporalMask, default_block_size

    n = mc.tokens_per_frame
    block = 128 if precision == "bf16" and default_block_size(n) < 128 else 0
    mask = TemporalMask(mc.teacher_forcing, mc.num_frames, n, "cpu", block_size=block)
    per_pair = 3 * 4 * batch * mc.width * mc.depth
    return per_pair * mask.seq_len ** 2, per_pair * mask.computed_pairs()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_flops_per_s(dtype: torch.dtype, device: str = "cpu", repeats: int = 5) -> float:
    """This machine's dense matmul FLOP/s at `dtype`: the best over square sizes of the median time."""
    sizes = (512, 1024, 2048) if device == "cpu" else (2048, 4096, 8192)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)
        times = []
        for _ in range(repeats + 1):
            _sync(device)
            t0 = time.perf_counter()
            a @ b
            _sync(device)
            times.append(time.perf_counter() - t0)
        best = max(best, 2 * n**3 / statistics.median(times[1:]))
    return best


def run_case(case: dict) -> dict:
    """One case in this process: build a Trainer on random latents, time `train_step`."""
    from magi.config import RunConfig
    from magi.trainer import Trainer

    model = dict(MODELS[case["model"]], teacher_forcing=case["tf"])
    run = RunConfig.from_dict({
        "model": model,
        "train": {"max_steps": 10**6, "global_batch_size": case["batch"], "precision": case["precision"],
                  "device": case["device"],
                  "warmup_steps": 0, "progress": False, "sample": {"num_videos": 0}},
    })
    mc = run.model
    h, w = mc.grid
    gen = torch.Generator().manual_seed(0)
    clips = [{"latents": torch.randn(mc.num_frames, mc.latent_channels, h, w, generator=gen), "label": i % 10,
              "interval": 1, "path": f"random/{i}"} for i in range(case["batch"])]
    out = Path(case["out"])
    trainer = Trainer(run, out, dataset=clips)
    from magi.recipe import collate

    batch = [collate(clips)]

    # FLOPs of one forward + backward (the optimizer and EMA are memory-bound and not counted)
    from torch.utils.flop_counter import FlopCounterMode

    dev = trainer.device
    # The counter cannot see inside compiled FlexAttention, so FLOPs are counted on an SDPA twin of the
    # model (dense attention) and, on CUDA where the kernel is block-sparse, the temporal attention's
    # dense count is replaced by the pairs the kernel computes (on the CPU the flex reference op is dense).
    from magi import Magi

    twin = Magi(mc.replace(attention="sdpa")).to(dev) if mc.attention == "flex" else trainer.model
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=case["precision"] == "bf16"):
            loss = twin(batch[0]["latents"].to(dev), labels=batch[0]["label"].to(dev),
                        intervals=batch[0]["interval"].to(dev))["loss"]
        loss.backward()
    flops = dense_flops = counter.get_total_flops()
    if mc.attention == "flex" and dev.type == "cuda":
        dense_attention, kernel_attention = flex_attention_flops(mc, case["batch"], case["precision"])
        flops = dense_flops - dense_attention + kernel_attention
    del twin, loss
    trainer.optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up (and compilation)
        trainer.train_step(batch)
    times = []
    for _ in range(case["steps"]):
        _sync(dev.type)
        t0 = time.perf_counter()
        trainer.train_step(batch)
        _sync(dev.type)
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    tokens = case["batch"] * mc.num_frames * mc.tokens_per_frame
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"params_M": round(trainer.num_params / 1e6, 2), "step_s": step, "tokens_per_s": tokens / step,
            "samples_per_s": case["batch"] / step, "gflop_per_step": flops / 1e9,
            "gflop_per_step_dense_attention": dense_flops / 1e9,
            "achieved_gflop_per_s": flops / step / 1e9, "peak_mem_MiB": peak / 2**20}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps per case (median reported)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--models", default="tiny,small")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--teacher-forcing", default="ctf,mtf")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = p.parse_args(argv)
    if args.case:
        print("RESULT " + json.dumps(run_case(json.loads(args.case))))
        return

    peaks = {"fp32": matmul_flops_per_s(torch.float32, args.device),
             "bf16": matmul_flops_per_s(torch.bfloat16, args.device)}
    print(f"measured matmul throughput on {args.device} ({torch.get_num_threads()} CPU threads): "
          f"fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s")
    rows = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for tf in args.teacher_forcing.split(","):
                for precision in args.precisions.split(","):
                    case = {"model": model, "tf": tf, "precision": precision, "batch": args.batch,
                            "device": args.device,
                            "steps": args.steps, "out": os.path.join(tmp, f"{model}-{tf}-{precision}")}
                    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                                          capture_output=True, text=True)
                    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                    if proc.returncode or not line:  # recorded, so one failing case keeps the others
                        print(f"  {model} {tf} {precision}: FAILED\n{proc.stderr[-2000:]}")
                        rows.append({"model": model, "teacher_forcing": tf, "precision": precision,
                                     "error": proc.stderr.strip().splitlines()[-1:] or ["exit code"]})
                        continue
                    r = {"model": model, "teacher_forcing": tf, "precision": precision, "batch": args.batch,
                         **json.loads(line[0][7:])}
                    r["mfu"] = r["achieved_gflop_per_s"] * 1e9 / peaks[precision]
                    rows.append(r)
                    print(f"  {model} {tf} {precision}: {r['step_s']:.3f} s/step")
    for model in args.models.split(","):  # ratios side by side, from the same run
        base = next((r for r in rows if r["model"] == model and r["teacher_forcing"] == "ctf"
                     and r["precision"] == "fp32" and "step_s" in r), None)
        for r in rows:
            if base and r["model"] == model and "step_s" in r:
                r["time_vs_ctf_fp32"] = r["step_s"] / base["step_s"]
    print()
    print_table(rows, ["model", "params_M", "teacher_forcing", "precision", "step_s", "time_vs_ctf_fp32",
                       "tokens_per_s", "samples_per_s", "gflop_per_step", "achieved_gflop_per_s", "mfu",
                       "peak_mem_MiB"])
    write_results("train", {
        "description": "Trainer.train_step (fwd+bwd+clip+AdamW+EMA) on random latents; median of "
                       f"{args.steps} steps after 2 warm-up; MFU against the measured dense matmul throughput "
                       "(best of 512/1024/2048 squares) at the same precision and thread count",
        "matmul_gflop_per_s": {k: v / 1e9 for k, v in peaks.items()},
        "rows": rows,
    }, args.device)


if __name__ == "__main__":
    main()
