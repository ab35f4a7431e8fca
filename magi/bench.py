"""`magi bench [NAME ...]`: run the benchmark scripts of a source checkout (benchmarks/*.py).

Each script prints a table and writes results/<name>.json; extra arguments after `--` go to every
script, e.g. `magi bench attention -- --device cuda`. With no names, every benchmark this machine can
run is run, and each one it cannot is named with the reason and skipped:
  gpu_check        needs a CUDA device (`make gpu-check` on a GPU machine);
  diamond_compare  needs a checkout of github.com/eloialonso/diamond, named by DIAMOND_DIR, and
                   DIAMOND's imports (omegaconf, wandb).
`magi bench --list` says which would run here and why the others would not.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def available() -> list[str]:
    return sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "common")


def skip_reason(name: str, extra: list[str]) -> str | None:
    """Why `name` cannot run on this machine (None: it can)."""
    if name == "gpu_check" and "--cpu-smoke" not in extra:
        import torch

        if not torch.cuda.is_available():
            return ("needs a CUDA device and this machine has none: run `make gpu-check` where a GPU is "
                    "(`python benchmarks/gpu_check.py --cpu-smoke` tests the script on a CPU)")
    if name == "diamond_compare":
        checkout = os.environ.get("DIAMOND_DIR")
        if not checkout or not Path(checkout).is_dir():
            return ("needs a checkout of github.com/eloialonso/diamond: "
                    "DIAMOND_DIR=/path/to/diamond magi bench diamond_compare")
        missing = [m for m in ("omegaconf", "wandb") if importlib.util.find_spec(m) is None]
        if missing:
            return f"needs DIAMOND's imports, missing here: {', '.join(missing)} (pip install {' '.join(missing)})"
    return None


def script_args(name: str, extra: list[str]) -> list[str]:
    if name == "diamond_compare":
        return [os.environ["DIAMOND_DIR"], *extra]
    return list(extra)


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="magi bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all this machine can run)")
    ap.add_argument("--list", action="store_true", help="say which benchmarks would run here, and why not the others")
    args = ap.parse_args(argv)
    if not BENCHMARKS.is_dir():
        print(f"magi bench: no benchmarks/ folder at {BENCHMARKS}; run from a source checkout",
              file=sys.stderr)
        return 2
    names = args.names or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"magi bench: unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    reasons = {n: skip_reason(n, extra) for n in names}
    if args.list:
        for n in names:
            print(f"{n:<16} {'skipped: ' + reasons[n] if reasons[n] else 'runs'}")
        return 0
    if args.names and any(reasons.values()):  # asked for by name: say why it cannot run, and run nothing
        for n in names:
            if reasons[n]:
                print(f"magi bench: {n} {reasons[n]}", file=sys.stderr)
        return 2
    failed, ran = [], []
    for name in names:
        if reasons[name]:
            print(f"== {name}: skipped, {reasons[name]}", flush=True)
            continue
        print(f"== {name}", flush=True)
        rc = subprocess.call([sys.executable, str(BENCHMARKS / f"{name}.py"), *script_args(name, extra)],
                             cwd=BENCHMARKS.parent)
        ran.append(name)
        if rc:
            failed.append(name)
    skipped = [n for n in names if reasons[n]]
    print(f"magi bench: ran {len(ran)} ({', '.join(ran) or 'none'}); skipped {len(skipped)} "
          f"({', '.join(skipped) or 'none'}, reasons above)")
    if failed:
        print(f"magi bench: failed: {failed}", file=sys.stderr)
    return 1 if failed else 0
