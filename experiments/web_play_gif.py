"""A GIF recorded from the page `magi export web` writes (docs/export.md): headless Chromium plays the exported site,
served by `magi serve-web`'s server, for --seconds with a scripted player holding real keys (DevTools key
events, as a person's keyboard sends them); every frame the page draws on its canvas is captured in the page
(a wrapper around putImageData: the canvas as PNG, the wall time, the action the page applied) and the GIF
plays them at the intervals the page drew them, each frame scaled up with the held keys and the applied
action written under it. The model runs in the page (onnxruntime-web, WASM); nothing is served but the folder.

    make web   # or: magi export web pretrained/atari --out site
    OMP_NUM_THREADS=1 python experiments/web_play_gif.py --site site --seconds 10 --out results/web_play.gif \\
        --note "what else ran on the machine"

Writes the GIF (kept under --max-mb by scaling down) and NAME_gif.json beside it (the command, the CPU, the load
average, the page's runtime, frames/s while recording). Needs Chromium on PATH (`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the DevTools driver the browser tests use
sys.path.insert(0, str(ROOT / "benchmarks"))

# Before any page script: keep every frame the page draws (its canvas as PNG), when, and the action applied.
CAPTURE = """(() => {
  const frames = window.__frames = [];
  const put = CanvasRenderingContext2D.prototype.putImageData;
  CanvasRenderingContext2D.prototype.putImageData = function (...args) {
    put.apply(this, args);
    const entry = { at: Date.now(), png: this.canvas.toDataURL("image/png"), action: null, frame: null };
    frames.push(entry);
    // draw() runs inside the page's step(); what it sets after drawing is there by the next microtask
    queueMicrotask(() => { const s = window.magiWeb || {}; entry.action = s.lastActionName; entry.frame = s.frames; });
  };
})();"""

# The scripted player: (keys held, seconds), cycled. DOM codes as tests/test_play_browser.KEY_EVENTS names them.
SCRIPT = [(("ArrowRight",), 1.6), (("ArrowRight", "Space"), 0.8), (("ArrowUp",), 1.2), ((), 0.6),
          (("ArrowLeft", "Space"), 1.2), (("ArrowDown",), 1.2), (("Space",), 1.0), (("ArrowRight", "ArrowDown"), 1.4)]
SHOWN = {"ArrowRight": "→", "ArrowLeft": "←", "ArrowUp": "↑", "ArrowDown": "↓", "Space": "fire"}


def record(site: Path, seconds: float, isolate: bool, threads: int | None) -> dict:
    from magi.export.serve import server
    from test_play_browser import Browser

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("web_play_gif: no chromium on PATH (apt-get install chromium)")
    httpd = server(site, port=0, isolate=isolate)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/" + (f"?threads={threads}" if threads else "")
    profile = Path(__import__("tempfile").mkdtemp(prefix="web-play-gif-"))
    browser = Browser(chromium, profile / "profile")
    held: tuple = ()
    keys_at: list[tuple[float, tuple]] = []  # (wall time, keys held from then)
    try:
        browser.call("Page.enable")
        browser.call("Page.addScriptToEvaluateOnNewDocument", source=CAPTURE)
        browser.call("Emulation.setFocusEmulationEnabled", enabled=True)
        browser.call("Page.navigate", url=url)
        deadline = time.monotonic() + 300
        while not browser.eval("!!(window.magiWeb && window.magiWeb.frames >= 2)"):
            error = browser.eval("window.magiWeb && window.magiWeb.error")
            if error or time.monotonic() > deadline:
                raise SystemExit(f"web_play_gif: the page did not play: {error or 'timed out after 300 s'}")
            time.sleep(0.2)
        # from a fresh opening: keep what is drawn from its last real frame on (a frame of the old game still in
        # flight is dropped by the page, and by this)
        browser.eval("window.magiWeb.reset().then(() => { const f = window.__frames; f.splice(0, f.length - 1); "
                     "f[0].action = 'opening'; window.__resetDone = true; }); 0")
        while not browser.eval("window.__resetDone === true"):
            time.sleep(0.05)
        start = time.time()
        i = 0
        while time.time() - start < seconds:
            combo, hold = SCRIPT[i % len(SCRIPT)]
            held = browser.hold(held, combo)
            keys_at.append((time.time(), combo))
            time.sleep(min(hold, max(0.0, seconds - (time.time() - start))))
            i += 1
        for code in held:
            browser.key(code, down=False)
        frames = browser.eval("window.__frames.map((f) => [f.at, f.png, f.action, f.frame])")
        page = browser.eval("({runtime: document.getElementById('runtime').textContent, threads: window.magiWeb.threads,"
                            " isolated: window.magiWeb.isolated, setting: document.getElementById('setting').textContent,"
                            " opening: window.magiWeb.opening})")
    finally:
        browser.close()
        httpd.shutdown()
        httpd.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    return {"frames": frames, "keys_at": keys_at, "page": page, "start": start, "url": url}


def keys_held(keys_at: list, at_ms: float) -> tuple:
    held: tuple = ()
    for t, combo in keys_at:
        if t * 1000 <= at_ms:
            held = combo
    return held


def gif(recorded: dict, out: Path, scale: int, max_bytes: int) -> tuple[int, int]:
    """Write the GIF; -> (scale used, bytes). Scaled down until it fits max_bytes."""
    from PIL import Image, ImageDraw, ImageFont

    frames = recorded["frames"]
    times = [f[0] for f in frames]
    durations = [max(int(b - a), 20) for a, b in zip(times, times[1:])] + [200]
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 13)
    except OSError:
        font = ImageFont.load_default()
    for s in range(scale, 0, -1):
        images = []
        for (at, png, action, _), _d in zip(frames, durations):
            frame = Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1]))).convert("RGB")
            w, h = frame.size
            canvas = Image.new("RGB", (w * s, h * s + 34), (20, 20, 20))
            canvas.paste(frame.resize((w * s, h * s), Image.NEAREST), (0, 0))
            draw = ImageDraw.Draw(canvas)
            keys = " + ".join(SHOWN[k] for k in keys_held(recorded["keys_at"], at)) or "none"
            draw.text((4, h * s + 2), f"keys: {keys}", fill=(230, 230, 230), font=font)
            draw.text((4, h * s + 18), f"action: {action or 'opening'}", fill=(170, 200, 255), font=font)
            images.append(canvas.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
        buffer = io.BytesIO()
        images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=durations, loop=0,
                       optimize=True, disposal=1)
        if buffer.tell() <= max_bytes or s == 1:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(buffer.getvalue())
            return s, buffer.tell()
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--site", type=Path, default=Path("site"), help="a folder `magi export web` wrote (default site/)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long the scripted player plays (default 10)")
    p.add_argument("--no-isolation", action="store_true",
                   help="serve without the COOP/COEP headers (one WASM thread), as a host that cannot send them")
    p.add_argument("--threads", type=int, default=None, help="the page's threads=N (default: its own choice)")
    p.add_argument("--scale", type=int, default=4, help="pixels per model pixel in the GIF (default 4)")
    p.add_argument("--max-mb", type=float, default=2.0, help="scale down until the GIF is under this (default 2)")
    p.add_argument("--out", type=Path, default=Path("results/web_play.gif"))
    p.add_argument("--note", default="", help="what else ran on the machine, written beside the GIF")
    args = p.parse_args(argv)
    if not ((args.site / "index.html").is_file() and (args.site / "manifest.json").is_file()):
        print(f"web_play_gif: {args.site}: no index.html and manifest.json; write it with `make web` or "
              f"`magi export web pretrained/atari --out {args.site}`", file=sys.stderr)
        return 2

    from common import cpu_model

    load = [os.getloadavg()[0]]
    recorded = record(args.site, args.seconds, not args.no_isolation, args.threads)
    load.append(os.getloadavg()[0])
    frames = recorded["frames"]
    if len(frames) < 2:
        print(f"web_play_gif: the page drew {len(frames)} frame(s) in {args.seconds:g} s", file=sys.stderr)
        return 1
    scale, size = gif(recorded, args.out, args.scale, int(args.max_mb * 1e6))
    span = (frames[-1][0] - frames[1][0]) / 1000  # the first is the opening's last real frame
    report = {
        "what": "a GIF recorded from the exported page in headless Chromium: the canvas as the page drew it "
                "(the model running in the page, onnxruntime-web), a scripted player holding keys",
        "command": "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *sys.argv[1:]]),
        "gif": str(args.out), "bytes": size, "scale": scale, "site": str(args.site), "url": recorded["url"],
        "seconds": args.seconds, "frames_drawn": len(frames),
        "fps_while_recording": (len(frames) - 2) / span if span > 0 else None,
        "page": recorded["page"], "script": [[list(k), s] for k, s in SCRIPT],
        "cpu": cpu_model(), "cpus": os.cpu_count(), "load_average_1min": load, "note": args.note,
    }
    args.out.with_name(args.out.stem + "_gif.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"{args.out}: {len(frames)} frames, {size / 1e6:.2f} MB, scale {scale}; page at "
          f"{report['fps_while_recording']:.1f} frames/s on {report['page']['runtime']}; {report['cpu']}, "
          f"load {load[0]:.1f} -> {load[1]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
