"""The page `magi export web` writes, in headless Chromium (docs/export.md): loaded from a plain static server
with no magi process behind it, it runs the model in the page (onnxruntime-web, WASM); it opens no
WebSocket and fetches nothing outside its folder; its deterministic mode (`?seed=N&script=...`) draws the
frames PyTorch draws from the same noise (latents within 1e-4 of their scale, frames within 1/255); it says
what it runs on (threads when cross-origin isolated by `magi serve-web`, one thread otherwise) and why it
cannot run when a file is missing. Skipped without Chromium or the npm package (`.ci/run` installs both).

The scripted player (`slow`): a model's page played for MAGI_WEB_SECONDS (60) with keys held 10-40 frames,
isolated with the page's threads (2 on a 2-core machine), isolated with ?threads=1, and not isolated (one
thread); frames/s, frame intervals and their flatness (frames/s per 30 s window, last third over first) go to
MAGI_WEB_RESULTS (default: the test's tmp folder; results/ only when asked; `make measure-play` runs it for
5 minutes each):
    MAGI_WEB_SITE=site MAGI_WEB_RESULTS=results/web_play.json pytest -q -s -m slow tests/test_web.py -k scripted
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from magi.export.graphs import ContextPart, DecoderPart, FramePart
from magi.export.web import Mulberry32, export_web, ort_dist, page_noise
from magi.play.session import load_world
from magi.pretrained import SamplingOptions
from test_export import assert_latents_close
from test_play import tiny_world_model
from test_play_browser import Browser, find_chromium

import websockets.sync.client as websockets_sync  # noqa: E402  a hard dependency: fail, never skip

SCRIPT = [3, 4, 0, 11, 2]  # RIGHT, LEFT, NOOP, RIGHTFIRE, UP: the deterministic mode's actions, cycled
WATCH = """(() => {  // before any page script: count WebSockets
  window.__sockets = 0;
  const Real = window.WebSocket;
  window.WebSocket = function (...args) { window.__sockets++; return new Real(...args); };
})();"""


def ort_or_skip() -> Path:
    try:
        return ort_dist()
    except FileNotFoundError as e:
        pytest.skip(str(e))


class Static:
    """A plain static server on a folder (Python's http.server, no headers added), recording each path."""

    def __init__(self, folder: Path) -> None:
        paths = self.paths = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                              ".wasm": "application/wasm"}

            def log_message(self, format, *args) -> None:
                paths.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Handler(*a, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(folder, world, options): the tiny Boxing model (random weights, colour) as a page."""
    ort_or_skip()
    world = load_world(tiny_world_model(tmp_path_factory.mktemp("web_model"), vae="pixels:4"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in world.ckpt.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    options = SamplingOptions(mask_steps=2, diffusion_steps=3, sampler="ddim", long_video="window", temperature=0.9)
    folder = tmp_path_factory.mktemp("site")
    export_web(world, options, folder, openings=2, weights="fp32")  # exact: the page plays PyTorch's frames
    return folder, world, options


@pytest.fixture()
def browser(tmp_path):
    b = Browser(find_chromium(), tmp_path / "profile")
    b.call("Page.enable")
    b.call("Page.addScriptToEvaluateOnNewDocument", source=WATCH)
    yield b
    b.close()


def page_state(browser) -> dict:
    return browser.eval("JSON.parse(JSON.stringify(Object.assign({}, window.magiWeb || {}, "
                        "{status: (document.getElementById('status') || {}).textContent, "
                        "runtime: (document.getElementById('runtime') || {}).textContent, "
                        "recorded: undefined, steps: undefined, intervals: undefined})))")


def wait_page(browser, expression: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = browser.eval(expression)
        except RuntimeError:  # the page is not there yet
            value = None
        if value:
            return value
        error = browser.eval("window.magiWeb && window.magiWeb.error")
        assert not error, error
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {expression}: {page_state(browser)}")


@torch.no_grad()
def torch_frames(world, options, opening: dict, folder: Path, seed: int, count: int) -> list[tuple]:
    """What PyTorch draws from the page's opening, actions and noise: [(latents (C, h, w), uint8 (3, H, W))]."""
    manifest = json.loads((folder / "manifest.json").read_text())
    model, W, k = world.ckpt.model, manifest["setting"]["window"], manifest["opening_frames"]
    shape = __import__("magi.export.onnx", fromlist=["play_shape"]).play_shape(world, options)
    latents = np.fromfile(folder / opening["latents"], "<f4").reshape(opening["latents_shape"])
    history = {f: torch.from_numpy(latents[f].copy()) for f in range(k)}
    taken = {f: manifest["noop"] for f in range(k - 1)}
    led = lambda f: manifest["null_action"] if f == 0 else taken[f - 1]  # noqa: E731
    uniform, out = Mulberry32(seed), []
    for i in range(count):
        t = k + i
        window = list(range(t - W + 1, t))
        kv = ContextPart(model, shape)(torch.stack([history[f] for f in window])[None], torch.tensor([led(f) for f in window]))
        taken[t - 1] = SCRIPT[i % len(SCRIPT)]
        noise, rank = page_noise(uniform, shape.mask_steps, manifest["tokens_per_frame"], manifest["token_dim"],
                                 options.temperature, rank=shape.mask_steps > 1)
        args = [kv, torch.tensor([led(t)]), torch.from_numpy(noise)] + ([torch.from_numpy(rank)] if rank is not None else [])
        latent = FramePart(model, shape)(*args)
        history[t] = latent[0]
        out.append((latent[0].numpy(), DecoderPart(world.ckpt.vae)(latent)[0].numpy()))
    return out


def test_page_plays_pytorch_frames_from_a_plain_static_server(site, browser):
    folder, world, options = site
    server = Static(folder)
    try:
        seed, count = 1234, 4
        browser.call("Page.navigate", url=server.url + f"?seed={seed}&script={','.join(map(str, SCRIPT))}"
                                                       f"&record={count}&fps=0")
        wait_page(browser, f"window.magiWeb && window.magiWeb.recorded.length >= {count}")
        state = page_state(browser)
        recorded = browser.eval(f"window.magiWeb.recorded.slice(0, {count})")
        resources = browser.eval("performance.getEntriesByType('resource').map(e => e.name)")
        sockets = browser.eval("window.__sockets")
    finally:
        server.close()
    assert state["runtime"].startswith("WebAssembly") and state["threads"] == 1 and not state["isolated"]
    assert "not cross-origin isolated" in state["runtime"]
    assert state["opening"] == 1_000_000 and state["seed"] == seed
    expected = torch_frames(world, options, json.loads((folder / "manifest.json").read_text())["openings"][0],
                            folder, seed, count)
    C, h, w = world.ckpt.model.config.latent_channels, *world.ckpt.model.config.grid
    for i, (got, (latent, image)) in enumerate(zip(recorded, expected)):
        assert got["action"] == SCRIPT[i]
        assert_latents_close(np.array(got["latents"], np.float32).reshape(C, h, w), latent)
        assert np.abs(np.array(got["image"]).reshape(image.shape) - image.astype(int)).max() <= 1
    assert sockets == 0  # no WebSocket: nothing behind the page
    assert all(r.startswith(server.url) for r in resources), resources
    requested = {p.split("?")[0] for p in server.paths}
    assert all((folder / p.lstrip("/")).is_file() or p in ("/", "/favicon.ico") for p in requested), requested
    assert {"/frame.onnx", "/ort/ort-wasm-simd-threaded.wasm"} <= requested


def test_page_runs_threads_when_isolated(site, browser):
    from magi.export.serve import server

    folder, _, _ = site
    httpd = server(folder, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        browser.call("Page.navigate", url=f"http://127.0.0.1:{httpd.server_address[1]}/?threads=2")
        wait_page(browser, "window.magiWeb && window.magiWeb.frames >= 3")
        state = page_state(browser)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert state["isolated"] and state["threads"] == min(2, os.cpu_count() or 1)
    assert state["runtime"].startswith("WebAssembly (SIMD), ") and "not cross-origin" not in state["runtime"]


def test_page_says_why_it_cannot_run(site, browser, tmp_path):
    folder, _, _ = site
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "frame.onnx").unlink()
    server = Static(broken)
    try:
        browser.call("Page.navigate", url=server.url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not browser.eval("window.magiWeb && window.magiWeb.error"):
            time.sleep(0.2)
        state = page_state(browser)
    finally:
        server.close()
    assert state["error"] == "frame.onnx: HTTP 404 (is the whole folder served?)"
    assert state["status"].startswith("Cannot run the model: frame.onnx: HTTP 404")


def test_serve_web_refuses_a_folder_without_a_page(tmp_path, capsys):
    from magi.export.serve import main

    assert main([str(tmp_path)]) == 2
    assert "no index.html and manifest.json" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("mode", ["isolated", "isolated_1thread", "not_isolated"])
def test_scripted_player(site, browser, tmp_path, mode):
    """A page played for MAGI_WEB_SECONDS with keys held 10-40 frames: frames/s, intervals and their
    flatness, written out under `mode`."""
    from magi.export.serve import server

    isolated = mode != "not_isolated"
    folder = Path(os.environ["MAGI_WEB_SITE"]) if os.environ.get("MAGI_WEB_SITE") else site[0]
    seconds = float(os.environ.get("MAGI_WEB_SECONDS", "60"))
    httpd = server(folder, port=0, isolate=isolated)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    rng = np.random.default_rng(0)
    keys = [["right"], ["up", "fire"], ["left"], ["down", "right"], [], ["fire"]]
    query = "?threads=1" if mode == "isolated_1thread" else ""
    try:
        browser.call("Page.navigate", url=f"http://127.0.0.1:{httpd.server_address[1]}/{query}")
        wait_page(browser, "window.magiWeb && window.magiWeb.frames >= 3", timeout=300)
        browser.eval("window.magiWeb.intervals = []; window.magiWeb.steps = []; 0")
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            browser.eval(f"window.magiWeb.setKeys({json.dumps(keys[rng.integers(len(keys))])}); 0")
            time.sleep(rng.integers(10, 41) / 15)
        elapsed = time.monotonic() - start
        data = browser.eval("({intervals: window.magiWeb.intervals, steps: window.magiWeb.steps, "
                            "threads: window.magiWeb.threads, isolated: window.magiWeb.isolated, "
                            "runtime: document.getElementById('runtime').textContent})")
    finally:
        httpd.shutdown()
        httpd.server_close()
    intervals = np.array(data["intervals"])
    steps = {part: float(np.median([s[part] for s in data["steps"]])) for part in ("context", "frame", "decode", "latency", "total")}
    thirds = np.array_split(intervals, 3)
    fps_by_third = [len(t) / (t.sum() / 1000) for t in thirds]
    ends = np.cumsum(intervals) / 1000  # s since the first frame
    windows = [float(((ends > a) & (ends <= a + 30)).sum() / 30) for a in np.arange(0, ends[-1] - 30 + 1e-9, 30)]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from common import cpu_model

    report = {"site": str(folder), "mode": mode, "seconds": elapsed, "frames": len(intervals) + 1,
              "fps": len(intervals) / (intervals.sum() / 1000), "interval_p50_ms": float(np.median(intervals)),
              "interval_p95_ms": float(np.percentile(intervals, 95)),
              "fps_by_third": fps_by_third, "flat_last_over_first_third": fps_by_third[-1] / fps_by_third[0],
              "fps_30s_windows": {"min": min(windows), "median": float(np.median(windows)), "max": max(windows),
                                  "count": len(windows)} if windows else None,
              "step_median_ms": steps, "threads": data["threads"], "isolated": data["isolated"],
              "runtime": data["runtime"], "cpu": cpu_model(), "cpus": os.cpu_count(),
              "load_average_1min": os.getloadavg()[0], "note": os.environ.get("MAGI_WEB_NOTE", ""),
              "targets": {"fps": 15.0, "interval_p95_ms": 100.0}}
    target = Path(os.environ.get("MAGI_WEB_RESULTS") or tmp_path / "web_play.json")
    results = json.loads(target.read_text()) if target.is_file() else {}
    results[mode] = report
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n{mode}, {data['threads']} thread(s): {report['fps']:.1f} frames/s, intervals p50 "
          f"{report['interval_p50_ms']:.0f} / p95 {report['interval_p95_ms']:.0f} ms, steps {steps} -> {target}")
    assert report["frames"] > 10
    assert data["isolated"] == isolated and (data["threads"] == 1 if mode != "isolated" else True)
