"""`magi bench [NAME ...]`: run the benchmark scripts of a source checkout (benchmarks/*.py).

Each script prints a table and writes results/<name>.json; extra arguments after `--` go to every
script, e.g. `magi bench attention -- --device cuda`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def available() -> list[str]:
    return sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "common")


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="magi bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
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
    failed = []
    for name in names:
        print(f"== {name}", flush=True)
        rc = subprocess.call([sys.executable, str(BENCHMARKS / f"{name}.py"), *extra], cwd=BENCHMARKS.parent)
        if rc:
            failed.append(name)
    if failed:
        print(f"magi bench: failed: {failed}", file=sys.stderr)
    return 1 if failed else 0
