"""The checks that need a GPU, in one command (`make gpu-check`), sized for <= 8 minutes on one GPU:

1. the CUDA tests (compiled FlexAttention against SDPA, ...): `results/test_cuda.log`;
2. bf16 and fp32 training steps of magi-b and magi-850m under CTF (`benchmarks/train.py`, MFU from the
   FLOPs the block-sparse kernel computes): `results/train_cuda.json`;
3. FlexAttention at the paper's shapes in bf16, compilation asserted (`benchmarks/attention.py
   --require-compiled`: a timing that fell back to the eager kernel fails the check):
   `results/attention_cuda.json`;
4. 200 steps of magi-850m on a fixed set of random latents (bf16, the paper's optimizer): the loss must
   fall and no step may be non-finite: `results/overfit_850m_cuda.json`;
5. which block layouts compiled bf16 FlexAttention backward accepts at the paper's UCF shape (5 frames x
   64 tokens): frame-aligned 64, 128 x 64 and 64 x 128 (query x key) blocks, which compute 1.00x, 1.32x
   and 1.32x naive MTF's pairs against 1.48x for the 128-token blocks used now
   (`benchmarks/attention_pairs.py`): `results/flex_layouts_cuda.json` (informational, never fails).

Each step runs in its own process with a time limit; the summary says which passed. Nothing here is
part of the test suite or CI. `--cpu-smoke` runs the same steps on the CPU at tiny shapes (the `tiny`
preset, a few steps, results in a temporary folder) to show the script itself works where no GPU is.

    python benchmarks/gpu_check.py [--cpu-smoke] [--out results]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYOUTS_AFTER_S = 390.0  # step 5 (informational) runs only when steps 1-4 left it time within 8 minutes
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def overfit(preset: str, steps: int, batch: int, device: str, precision: str, out: Path) -> dict:
    """Train `preset` for `steps` optimizer steps on `2 * batch` fixed random latent clips; the losses."""
    import torch

    sys.path.insert(0, str(ROOT))
    from magi.config import RunConfig
    from magi.trainer import Trainer

    run = RunConfig.from_dict({
        "model": {"preset": preset},
        "train": {"max_steps": steps, "global_batch_size": batch, "precision": precision, "device": device,
                  "lr": 2e-4, "weight_decay": 0.02, "warmup_steps": max(1, steps // 10), "progress": False,
                  "log_every": 1, "checkpoint_every": 10 ** 9, "sample": {"num_videos": 0}},
    })
    mc = run.model
    h, w = mc.grid
    gen = torch.Generator().manual_seed(0)
    clips = [{"latents": torch.randn(mc.num_frames, mc.latent_channels, h, w, generator=gen),
              "label": i % max(mc.num_classes, 1), "interval": 1, "path": f"random/{i}"} for i in range(2 * batch)]
    t0 = time.perf_counter()
    Trainer(run, out / "run", dataset=clips).fit()
    seconds = time.perf_counter() - t0
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "train/lr" in r]  # the per-step training lines
    losses = [float(r.get("train/loss", "nan")) for r in records]
    skipped = max((float(r.get("train/skipped_steps", 0)) for r in records), default=0.0)
    k = max(1, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    finite = all(math.isfinite(x) for x in losses) and skipped == 0
    return {"preset": preset, "steps": steps, "batch": batch, "precision": precision, "device": device,
            "seconds": seconds, "logged_losses": len(losses), "loss_first_tenth": first, "loss_last_tenth": last,
            "all_finite": finite, "skipped_steps": skipped, "passed": finite and len(losses) > 1 and last < first,
            "losses": losses}


def flex_layouts(device: str) -> dict:
    """Compiled bf16 FlexAttention forward + backward of the CTF mask at 5 frames x 64 tokens under
    several (query, key) block sizes: whether it compiles, and the median time."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    sys.path.insert(0, str(ROOT))
    from magi.model.attention import TemporalMask
    from common import median_time

    mask = TemporalMask("ctf", 5, 64, device)
    compiled = torch.compile(flex_attention, dynamic=False)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows = []
    for q_block, kv_block in ((64, 64), (128, 64), (64, 128), (128, 128)):
        block = create_block_mask(mask.mask_mod(), None, None, mask.seq_len, mask.seq_len, device=device,
                                  BLOCK_SIZE=(q_block, kv_block))
        q, k, v = (torch.randn(4, 16, mask.seq_len, 80, device=device, dtype=dtype, requires_grad=True)
                   for _ in range(3))

        def step():
            compiled(q, k, v, block_mask=block).sum().backward()

        row = {"q_block": q_block, "kv_block": kv_block}
        try:
            row["fwd_bwd_ms"] = 1e3 * median_time(step, repeats=5)
            row["compiles"] = True
        except Exception as e:  # noqa: BLE001 - the question is exactly whether it compiles
            row.update(compiles=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
        rows.append(row)
    return {"shape": "5x64", "dtype": str(dtype), "device": device, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="run every step on the CPU at tiny shapes")
    p.add_argument("--out", type=Path, help="results folder (default: results/, or a temporary one for --cpu-smoke)")
    p.add_argument("--step-timeout", type=float, default=300.0, help="seconds each step may take")
    p.add_argument("--overfit", help=argparse.SUPPRESS)  # internal: run step 4 in this process, print JSON
    p.add_argument("--flex-layouts", help=argparse.SUPPRESS)  # internal: run step 5 on this device
    args = p.parse_args(argv)
    if args.overfit:
        print("RESULT " + json.dumps(overfit(**json.loads(args.overfit), out=Path(args.out))))
        return 0
    if args.flex_layouts:
        print("RESULT " + json.dumps(flex_layouts(args.flex_layouts)))
        return 0

    import torch

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it where a GPU is lent, or --cpu-smoke to test the script",
              file=sys.stderr)
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpu_check_")) if smoke else ROOT / "results")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MAGI_RESULTS_DIR": str(out), "PYTHONPATH": str(ROOT)}
    py = sys.executable
    device = "cpu" if smoke else "cuda"
    overfit_case = ({"preset": "tiny", "steps": 20, "batch": 2, "device": "cpu", "precision": "fp32"} if smoke else
                    {"preset": "magi-850m", "steps": 200, "batch": 8, "device": "cuda", "precision": "bf16"})
    steps = [
        ("CUDA tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                        str(ROOT / "tests" / "test_attention.py"), "-k", "cuda"], "test_cuda.log"),
        ("training steps", [py, str(HERE / "train.py"), "--device", device, "--teacher-forcing", "ctf",
                            *(["--models", "tiny", "--precisions", "fp32", "--steps", "1", "--batch", "2"] if smoke
                              else ["--models", "b,850m", "--precisions", "bf16,fp32", "--steps", "3", "--batch", "8"])],
         None),
        ("FlexAttention, compiled", [py, str(HERE / "attention.py"), "--device", device, "--require-compiled",
                                     *(["--shapes", "2x16", "--heads", "1", "--head-dim", "16", "--batch", "1",
                                        "--repeats", "1"] if smoke else
                                       ["--shapes", "5x64,5x256", "--dtype", "bfloat16", "--heads", "16",
                                        "--head-dim", "80", "--batch", "4"])], None),
        ("overfit 200 steps", [py, str(HERE / "gpu_check.py"), "--overfit", json.dumps(overfit_case), "--out",
                               str(out / "overfit")], None),
        *([] if smoke else [("bf16 backward block layouts", [py, str(HERE / "gpu_check.py"), "--flex-layouts",
                                                            "cuda"], None)]),
    ]
    summary, t_all = [], time.perf_counter()
    for name, command, log in steps:
        if name.startswith("bf16 backward") and time.perf_counter() - t_all > LAYOUTS_AFTER_S:
            summary.append({"step": name, "passed": True, "skipped": f"past {LAYOUTS_AFTER_S:.0f} s: kept in budget"})
            print(f"SKIP  {name} (the required checks took over {LAYOUTS_AFTER_S:.0f} s)")
            continue
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=args.step_timeout)
            code, text = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            code, text = "timeout", f"{e.stdout or ''}{e.stderr or ''}"
            text = text.decode() if isinstance(text, bytes) else text
        seconds = time.perf_counter() - t0
        if log:
            (out / log).write_text(text)
        entry = {"step": name, "exit": code, "seconds": round(seconds, 1), "passed": code == 0}
        if name.startswith("CUDA tests") and smoke and code == 5:  # all deselected on the CPU: nothing to run
            entry.update(passed=True, note="no CUDA tests run on the CPU (all skipped or deselected)")
        if name.startswith("overfit") and code == 0:
            line = [ln for ln in text.splitlines() if ln.startswith("RESULT ")][-1]
            result = json.loads(line[7:])
            entry.update(passed=result["passed"], loss_first_tenth=result["loss_first_tenth"],
                         loss_last_tenth=result["loss_last_tenth"], all_finite=result["all_finite"])
            name_json = "overfit_850m_cuda.json" if not smoke else "overfit_tiny_cpu.json"
            (out / name_json).write_text(json.dumps(result, indent=1) + "\n")
        if name.startswith("bf16 backward") and code == 0:
            line = [ln for ln in text.splitlines() if ln.startswith("RESULT ")][-1]
            layouts = json.loads(line[7:])
            (out / "flex_layouts_cuda.json").write_text(json.dumps(layouts, indent=1) + "\n")
            entry["compiles"] = {f"{r['q_block']}x{r['kv_block']}": r["compiles"] for r in layouts["rows"]}
        if not entry["passed"]:
            entry["tail"] = text[-1500:]
        summary.append(entry)
        print(f"{'PASS' if entry['passed'] else 'FAIL'}  {name} ({seconds:.0f} s, exit {code})", flush=True)
        if not entry["passed"]:
            print(entry["tail"], file=sys.stderr)
    record = {"cpu_smoke": smoke, "device": torch.cuda.get_device_name() if not smoke else "cpu",
              "seconds": round(time.perf_counter() - t_all, 1), "steps": summary}
    (out / ("gpu_check_cpu_smoke.json" if smoke else "gpu_check_cuda.json")).write_text(json.dumps(record, indent=1) + "\n")
    print(f"{sum(s['passed'] for s in summary)}/{len(summary)} passed in {record['seconds']:.0f} s; results in {out}")
    return 0 if all(s["passed"] for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
