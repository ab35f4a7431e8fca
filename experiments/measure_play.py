"""The browser and engine measurements of docs/export.md in one command (`make measure-play`): run it on a machine with nothing
else running, and it writes every figure the issue's closing note needs into results/:

1. engines: the play loop's step per engine (onnxruntime, PyTorch eager, PyTorch compiled) x 1 and 2 threads,
   alternating rounds in one process: `benchmarks/play.py --engines --threads 1,2` -> play_engines.json.
2. page: the exported site (--site, `make web`) in headless Chromium with a scripted player for --page-seconds
   (300) each: cross-origin isolated with the page's threads (2), isolated with ?threads=1, and not isolated
   (one thread): frames/s, p95 interval, frames/s per 30 s window and last third over first
   (`tests/test_web.py::test_scripted_player`, `-m slow`) -> web_play.json.
3. fresh: `magi play` as shipped (its own process, the model's play.json, the default engine; --fresh-engines
   adds others) from a fresh start: an empty compile cache (TORCHINDUCTOR_CACHE_DIR), a new temporary folder,
   OMP_NUM_THREADS unset as in a user's shell, a CPU-bound job (one core's worth of `while True: pass`)
   beside it from before the command starts; headless Chromium receives its frames with a sticky-random
   player at the keys until --fresh-frames (10,000) frames and at least 60 s: the time to the first frame,
   frames/s over the first 60 s and over all, gaps, 30 s windows -> play_browser/fresh_start_<engine>.json.
4. diamond: DIAMOND's denoiser beside the ONNX and PyTorch engines, per frame CPU ms
   (`benchmarks/diamond_compare.py $DIAMOND_DIR --engine onnx,torch`) -> diamond_compare.json; skipped, with
   the reason written down, without a DIAMOND checkout in DIAMOND_DIR.

Each piece runs alone (one heavy job at a time); the load average before and after each and what ran go to
measure_play.json. --smoke runs every piece for a few seconds into a temporary folder (not results/), to
check they start. About 45 minutes in all on a 2-core machine.

    make measure-play                                          # = python experiments/measure_play.py
    DIAMOND_DIR=/path/to/diamond python experiments/measure_play.py --only engines,diamond --note "..."
    python experiments/measure_play.py --smoke                 # each piece for a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from magi.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
PIECES = ("engines", "page", "fresh", "diamond")
KEYS = [(), ("ArrowRight",), ("ArrowLeft",), ("ArrowUp",), ("ArrowDown",), ("Space",), ("ArrowUp", "Space"),
        ("ArrowRight", "ArrowDown"), ("ArrowLeft", "Space")]


def run(command: list[str], env: dict | None = None) -> int:
    print("$ " + " ".join(command), flush=True)
    return subprocess.call(command, cwd=ROOT, env={**os.environ, **(env or {})})


def engines(args, results: Path) -> dict:
    command = [sys.executable, "benchmarks/play.py", "--model", args.model, "--engines", "--threads",
               "1" if args.smoke else "1,2", "--note", args.note]
    if args.smoke:
        command += ["--rounds", "1", "--round-frames", "3"]
    rc = run(command, {"MAGI_RESULTS_DIR": str(results), "OMP_NUM_THREADS": "1"})
    return {"command": command, "rc": rc, "wrote": str(results / "play_engines.json")}


def page(args, results: Path) -> dict:
    if not ((Path(args.site) / "index.html").is_file() and (Path(args.site) / "manifest.json").is_file()):
        return {"skipped": f"{args.site}: no exported page; run `make web` first"}
    seconds = 3 if args.smoke else args.page_seconds
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-m", "slow",
               "tests/test_web.py", "-k", "scripted"]
    env = {"MAGI_WEB_SITE": str(args.site), "MAGI_WEB_RESULTS": str(results / "web_play.json"),
           "MAGI_WEB_SECONDS": str(seconds), "MAGI_WEB_NOTE": args.note, "OMP_NUM_THREADS": "1"}
    rc = run(command, env)
    return {"command": command, "env": env, "rc": rc, "wrote": env["MAGI_WEB_RESULTS"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh(args, results: Path, engine: str) -> dict:
    """`magi play` from a fresh start with a CPU-bound job beside it, received in headless Chromium."""
    import numpy as np

    from common import cpu_model
    from test_play_browser import TRACE_FRAMES, Browser

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        return {"skipped": "no chromium on PATH (apt-get install chromium)"}
    want, min_s = (40, 5.0) if args.smoke else (args.fresh_frames, 60.0)
    scratch = Path(tempfile.mkdtemp(prefix="measure-play-fresh-"))
    (scratch / "inductor").mkdir()
    (scratch / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # as a user's shell: unset
    env.update(TORCHINDUCTOR_CACHE_DIR=str(scratch / "inductor"), TMPDIR=str(scratch / "tmp"), PYTHONUNBUFFERED="1")
    port = free_port()
    command = [str(Path(sys.executable).parent / "magi"), "play", "--model", args.model, "--port", str(port)]
    if engine != "shipped":
        command += ["--engine", engine]
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # the CPU-bound job on the other core
    load = [os.getloadavg()[0]]
    lines: list[str] = []
    proc = browser = None
    received: list[tuple[int, int, float]] = []  # (kind, index, epoch ms)
    try:
        time.sleep(1.0)
        started = time.time()
        print("$ " + " ".join(command), flush=True)
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
        while not any("open http://" in line for line in lines):
            if proc.poll() is not None or time.time() - started > 600:
                raise RuntimeError(f"magi play did not start: {''.join(lines)[-2000:]}")
            time.sleep(0.05)
        serving_s = time.time() - started
        browser = Browser(chromium, scratch / "profile")
        browser.call("Page.enable")
        browser.call("Page.addScriptToEvaluateOnNewDocument", source=TRACE_FRAMES)
        browser.call("Emulation.setFocusEmulationEnabled", enabled=True)
        browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        rng = np.random.default_rng(0)
        held: tuple = ()
        next_key = next_poll = 0.0
        first = None
        while True:
            now = time.time() - started
            if now >= next_key and first is not None:  # a sticky-random player: new keys every 0.3-1.5 s
                held = browser.hold(held, KEYS[rng.integers(len(KEYS))])
                next_key = now + rng.uniform(0.3, 1.5)
            if now >= next_poll:
                received += browser.eval("(window.magiTrace || []).splice(0)") or []
                model = [r for r in received if r[0] == 0]
                if model and first is None:
                    first = model[0][2] / 1000
                if first is not None and len(model) >= want and time.time() - first >= min_s:
                    break
                if now > 3600:
                    raise RuntimeError(f"only {len(model)} frames in an hour")
                next_poll = now + 1.0
                if int(now) % 60 == 0:
                    print(f"{now:.0f} s: {len(model)} frames", flush=True)
            time.sleep(0.05)
        state = browser.eval("JSON.parse(JSON.stringify(window.magiPlay || null))")
    finally:
        load.append(os.getloadavg()[0])
        if browser is not None:
            browser.close()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        busy.kill()
        busy.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    t = np.array([r[2] for r in received if r[0] == 0]) / 1000  # receive times of the model's frames (epoch s)
    gaps = np.diff(t) * 1000
    first60 = int(((t - t[0]) <= 60).sum())
    windows = [float(((t - t[0] > a) & (t - t[0] <= a + 30)).sum() / 30) for a in np.arange(0, t[-1] - t[0] - 30 + 1e-9, 30)]
    n, chunk = len(t), 1000
    per_chunk = [(min(a + chunk, n) - 1 - a) / (t[min(a + chunk, n) - 1] - t[a]) for a in range(0, n - chunk // 2, chunk)]
    hello = (state or {}).get("hello") or {}
    report = {
        "what": "`magi play` as shipped from a fresh start (empty compile cache, new TMPDIR, OMP_NUM_THREADS unset) with "
                "a CPU-bound job (one core) beside it; frames received by headless Chromium (sticky-random keys)",
        "command": " ".join(command), "engine_asked": engine, "setting": hello.get("setting"),
        "serving_s": round(serving_s, 2), "first_frame_s": round(float(t[0] - started), 2),
        "frames": n, "seconds": round(float(t[-1] - t[0]), 1), "fps": round((n - 1) / float(t[-1] - t[0]), 2),
        "fps_first_60s": round((first60 - 1) / min(60.0, float(t[first60 - 1] - t[0])), 2) if first60 > 1 else None,
        "gap_ms": {"p50": round(float(np.median(gaps)), 1), "p95": round(float(np.percentile(gaps, 95)), 1),
                   "max": round(float(gaps.max()), 1)},
        "fps_30s_windows": {"min": min(windows), "median": float(np.median(windows)), "max": max(windows)} if windows else None,
        "fps_per_1000_frames": [round(x, 2) for x in per_chunk],
        "cpu": cpu_model(), "cpus": os.cpu_count(), "load_average_1min": load, "note": args.note,
        "server_log": "".join(lines)[-3000:], "targets": {"fps": 14.5},
    }
    out = results / "play_browser" / f"fresh_start_{engine}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    if engine == "shipped" and not args.smoke:
        record_in_play_json(Path(args.model) / "play.json", report, out)
    print(f"wrote {out}: first frame after {report['first_frame_s']} s, {report['fps_first_60s']} frames/s over the "
          f"first 60 s, {report['fps']} over {n} frames, gaps p95 {report['gap_ms']['p95']} ms", flush=True)
    return {"command": command, "rc": 0, "wrote": str(out)}


def record_in_play_json(path: Path, report: dict, source: Path) -> None:
    """The model's play.json names the engine `magi play` ran on and the frames/s this measurement received
    (so the figure it carries is the shipped command's, measured as a new user meets it), beside the setting
    and the engine-less figures `benchmarks/play.py --write-model-setting` wrote. Written atomically."""
    setting = json.loads(path.read_text()) if path.is_file() else {}
    engine = (report.get("setting") or {}).get("engine")
    setting.update({"engine": engine, "received_fps_first_60s": report["fps_first_60s"],
                    "received_fps": report["fps"], "received_frames": report["frames"],
                    "received_by": f"make measure-play (experiments/measure_play.py): {source.relative_to(ROOT)}"
                    if source.is_relative_to(ROOT) else str(source)})
    atomic_write_text(path, json.dumps(setting, indent=1) + "\n")


def diamond(args, results: Path) -> dict:
    from magi.bench import skip_reason

    why = skip_reason("diamond_compare", [])
    if why:
        return {"skipped": why}
    command = [sys.executable, "benchmarks/diamond_compare.py", os.environ["DIAMOND_DIR"], "--model", args.model,
               "--engine", "onnx,torch", "--note", args.note]
    if args.smoke:
        command += ["--rounds", "1", "--diamond-frames", "2", "--magi-frames", "3", "--warmup", "1", "--threads", "1"]
    rc = run(command, {"MAGI_RESULTS_DIR": str(results), "OMP_NUM_THREADS": "1"})
    return {"command": command, "rc": rc, "wrote": str(results / "diamond_compare.json")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--only", default=",".join(PIECES), help=f"comma-separated pieces (default all: {','.join(PIECES)})")
    p.add_argument("--model", default="pretrained/atari")
    p.add_argument("--site", default="site", help="the exported page (`make web`)")
    p.add_argument("--page-seconds", type=float, default=300.0, help="seconds per page configuration (default 300)")
    p.add_argument("--fresh-frames", type=int, default=10_000, help="frames magi play's fresh start is held for")
    p.add_argument("--fresh-engines", default="shipped",
                   help="comma-separated: shipped (magi play's own choice), onnx, torch (default shipped)")
    p.add_argument("--results", type=Path, default=None, help="where the JSON goes (default results/; --smoke: a temp folder)")
    p.add_argument("--smoke", action="store_true", help="each piece for a few seconds, to check it starts")
    p.add_argument("--note", default="", help="what else ran on the machine (say 'nothing' on a quiet one)")
    args = p.parse_args(argv)
    pieces = [x.strip() for x in args.only.split(",") if x.strip()]
    if not pieces or set(pieces) - set(PIECES):
        p.error(f"--only: expected some of {','.join(PIECES)}, got {args.only!r}")
    fresh_engines = [x.strip() for x in args.fresh_engines.split(",") if x.strip()]
    if not fresh_engines or set(fresh_engines) - {"shipped", "onnx", "torch"}:
        p.error(f"--fresh-engines: expected some of shipped,onnx,torch, got {args.fresh_engines!r}")
    results = args.results or (Path(tempfile.mkdtemp(prefix="measure-play-smoke-")) if args.smoke else ROOT / "results")
    results.mkdir(parents=True, exist_ok=True)
    if os.getloadavg()[0] > 0.5 and not args.smoke:
        print(f"measure_play: the load average is {os.getloadavg()[0]:.1f}: this is not a quiet machine; the figures "
              "will say so (--note)", file=sys.stderr)

    from common import cpu_model

    summary = {"cpu": cpu_model(), "cpus": os.cpu_count(), "smoke": args.smoke, "note": args.note,
               "model": args.model, "pieces": {}}
    failed = []
    for piece in pieces:
        todo = [(f"fresh_{e}", lambda e=e: fresh(args, results, e)) for e in fresh_engines] if piece == "fresh" else \
            [(piece, lambda piece=piece: globals()[piece](args, results))]
        for name, fn in todo:
            print(f"== {name}", flush=True)
            before, start = os.getloadavg()[0], time.time()
            try:
                record = fn()
            except Exception as e:  # noqa: BLE001 - one piece failing is written down; the others still run
                record = {"error": f"{type(e).__name__}: {e}"}
            record.update(load_average_1min=[before, os.getloadavg()[0]], minutes=round((time.time() - start) / 60, 2))
            summary["pieces"][name] = record
            if record.get("error") or record.get("rc"):
                failed.append(name)
            print(f"== {name}: {record.get('skipped') or record.get('error') or 'done'} "
                  f"({record['minutes']} min)", flush=True)
    (results / "measure_play.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {results / 'measure_play.json'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
