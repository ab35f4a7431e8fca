"""Print the tables of results/reproduction.md from the experiments' JSON files (no computation).

    python experiments/report.py > /tmp/tables.md
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402


def _ms(xs: list[float], digits: int = 2) -> str:
    """mean ± spread (half the max-min range over sampling seeds)."""
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {(max(xs) - min(xs)) / 2:.{digits}f}"


def ctf_vs_mtf() -> None:
    print("| dataset | arm | val. loss, inference condition | on moving tokens | on training clips | "
          "PSNR over 12 predicted frames (dB) | PSNR at predicted frame 12 (dB) | SSIM | digit kept, "
          "predicted frame 1 / 12 |")
    print("|---|---|---|---|---|---|---|---|---|")
    rel = []
    for dataset in ("digits", "atari"):
        path = RESULTS / f"ctf_vs_mtf_{dataset}.json"
        if not path.is_file():
            continue
        d = json.loads(path.read_text())
        for arm in ("ctf", "mtf"):
            a = d["arms"][arm]
            ssim = _ms(a["ssim"], 3) if all(s is not None for s in a["ssim"]) else "n/a"
            kept = f"{a['digit_kept'][0]:.2f} / {a['digit_kept'][-1]:.2f}" if "digit_kept" in a else "n/a"
            print(f"| {dataset} ({d['steps']} steps) | {arm.upper()} | {a['inference_loss']:.4f} | "
                  f"{a['inference_loss_moving_tokens']:.4f} ({100 * a['moving_token_fraction']:.0f}% of tokens) | "
                  f"{a['train_clips']['inference_loss']:.4f} | {_ms(a['psnr'])} | {_ms(a['psnr_last'])} | {ssim} | "
                  f"{kept} |")
        rel.append((dataset, d))
    print()
    print("| dataset | training seed | MTF / CTF inference-condition loss | on moving tokens | "
          "CTF − MTF PSNR, all 12 frames | CTF − MTF PSNR, frame 12 | digit kept at predicted frame 1, CTF / MTF |")
    print("|---|---|---|---|---|---|---|")
    for dataset, d in rel:
        rows = dict(d.get("relative_by_train_seed", {}))
        if len(rows) != 1:
            rows["mean"] = d["relative"]
        for seed, r in rows.items():
            c, m = (d["arms"][arm].get("by_train_seed", {}).get(seed, {}) for arm in ("ctf", "mtf"))
            kept = (f"{c['digit_kept_first']:.2f} / {m['digit_kept_first']:.2f}" if "digit_kept_first" in c
                    else "n/a")  # digit kept at predicted frame 1
            print(f"| {dataset} | {seed} | {r['inference_loss_mtf_over_ctf']:.3f} "
                  f"({100 * (r['inference_loss_mtf_over_ctf'] - 1):+.1f}%) | "
                  f"{r['moving_token_loss_mtf_over_ctf']:.3f} ({100 * (r['moving_token_loss_mtf_over_ctf'] - 1):+.1f}%) "
                  f"| {r['psnr_ctf_minus_mtf_db']:+.2f} dB | {r['psnr_last_ctf_minus_mtf_db']:+.2f} dB | "
                  f"{kept} |")
    print()


def dynamic_interval() -> None:
    path = RESULTS / "dynamic_interval.json"
    if not path.is_file():
        return
    d = json.loads(path.read_text())
    print("| sampled at interval | arm | mean abs. gap to truth's L2 curve | generated / truth L2, last quarter | PSNR (dB) |")
    print("|---|---|---|---|---|")
    for i in d["intervals"]:
        for arm in ("fixed", "dynamic"):
            r = d["arms"][arm][str(i)]
            print(f"| {i} | {arm} | {r['l2_abs_gap']:.4f} | {r['l2_ratio_last_quarter']:.2f} | {r['psnr']:.2f} |")
    print()


def long_video() -> None:
    path = RESULTS / "long_video.json"
    if not path.is_file():
        return
    d = json.loads(path.read_text())
    print(f"| dataset | mode | PSNR frames 3-6 (within training length) | PSNR frames 7-{d['length']} | "
          f"PSNR at frame {d['length']} |")
    print("|---|---|---|---|---|")
    for dataset, per in d["datasets"].items():
        for mode, r in per.items():
            p = r["psnr_predicted_frames"]
            inside = p[: d["train_frames"] - d["context_frames"]]
            beyond = p[d["train_frames"] - d["context_frames"]:]
            print(f"| {dataset} | {mode} | {statistics.mean(inside):.2f} | {statistics.mean(beyond):.2f} | "
                  f"{r['psnr_last']:.2f} |")
    print()


if __name__ == "__main__":
    ctf_vs_mtf()
    dynamic_interval()
    long_video()
