"""`magi play` in a real browser (docs/world-model.md#play): headless Chromium loads the page, the test presses keys
through the Chrome DevTools Protocol and reads the counters `play.js` keeps on `window.magiPlay`:
frames arrive at a measured rate, the frames/s readout waits for a full second, the held keys come
back as the action the server applied to the frames that followed (tracked by physical key), the
page says what the model sees, and the reality pane says when its episode ended. Skipped where no Chromium is installed (`.ci/run` installs Debian's).

With the tiny untrained model this checks the browser, protocol and action path, not the picture.
For pictures of a real model:
    MAGI_PLAY_MODEL=pretrained/atari MAGI_PLAY_THREADS=2 MAGI_PLAY_SCREENSHOT=play.png \\
        MAGI_PLAY_GIF=play.gif pytest -q -s tests/test_play_browser.py
(the model is played at the sampler setting `magi play` picks for it (its play.json) with MAGI_PLAY_THREADS torch threads,
default 1 as in every test; the GIF is ~6 s of scripted keys).

Speed where the player is (docs/world-model.md#real-time, `slow`): `test_browser_holds_real_time` plays a real model with the
reality pane on and a scripted player for 10,000 received frames (and at least 5 minutes), and writes
what the browser received to MAGI_PLAY_RESULTS and a .png beside it (without it, to the test's temporary
folder: tests never write into the source tree):
    MAGI_PLAY_MODEL=pretrained/atari MAGI_PLAY_RESULTS=results/play_browser/NAME.json \\
        pytest -q -s -m slow tests/test_play_browser.py -k real_time
(MAGI_PLAY_FRAMES and MAGI_PLAY_MIN_S change the length;
MAGI_PLAY_NOTE says what else ran on the machine, recorded beside the numbers).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from magi.play.server import BackgroundServer, create_app, play_setting
from magi.play.session import load_world
from test_play import FAST, ShortEpisodes, tiny_world_model

import websockets.sync.client as websockets_sync  # noqa: E402  a hard dependency: fail, never skip

KEY_EVENTS = {  # DOM code -> (key, Windows virtual key code), as a real keyboard sends them
    "ArrowUp": ("ArrowUp", 38), "ArrowDown": ("ArrowDown", 40), "ArrowLeft": ("ArrowLeft", 37),
    "ArrowRight": ("ArrowRight", 39), "Space": (" ", 32), "KeyA": ("a", 65), "KeyW": ("w", 87),
}


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on PATH: apt-get install chromium")


class Browser:
    """Headless Chromium with one page, driven over the DevTools Protocol (JSON over a WebSocket)."""

    def __init__(self, executable: str, profile: Path) -> None:
        args = [executable, "--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", "--window-size=1100,760", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox (CI)
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile.parent / "chromium.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        port_file = profile / "DevToolsActivePort"  # Chromium writes its debugging port here
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"chromium did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = websockets_sync.connect(page["webSocketDebuggerUrl"], max_size=2**26).__enter__()
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        """Send a DevTools command and wait for its answer (events in between are dropped)."""
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == n:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expression}; page state: {self.state()}")

    def state(self) -> dict:
        return self.eval("JSON.parse(JSON.stringify(window.magiPlay || null))")

    def key(self, code: str, down: bool) -> None:
        key, vk = KEY_EVENTS[code]
        self.call("Input.dispatchKeyEvent", type="keyDown" if down else "keyUp", code=code, key=key,
                  windowsVirtualKeyCode=vk, nativeVirtualKeyCode=vk)

    def hold(self, held, combo) -> tuple:
        """Go from holding the keys `held` to holding `combo`: release what leaves, press what comes."""
        for code in held:
            if code not in combo:
                self.key(code, down=False)
        for code in combo:
            if code not in held:
                self.key(code, down=True)
        return combo

    def screenshot(self, clip: dict | None = None) -> bytes:
        params = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    """(server URL, sampler setting, game actions) for the tiny model, or MAGI_PLAY_MODEL's model."""
    import torch

    threads = torch.get_num_threads()
    if os.environ.get("MAGI_PLAY_MODEL"):
        torch.set_num_threads(int(os.environ.get("MAGI_PLAY_THREADS", "1")))
        model = Path(os.environ["MAGI_PLAY_MODEL"])
        setting, _ = play_setting(model)  # as `magi play` picks it
        world = load_world(model)
    else:
        world, setting = load_world(tiny_world_model(tmp_path_factory.mktemp("play_model"))), FAST
    try:
        with BackgroundServer(create_app(world, setting)) as url:
            yield url, world
    finally:
        torch.set_num_threads(threads)


def test_browser_plays_frames_and_keys(played, tmp_path):
    chromium = find_chromium()
    url, world = played
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.call("Emulation.setFocusEmulationEnabled", enabled=True)  # the page keeps key focus
        browser.call("Emulation.setDeviceMetricsOverride", width=1100, height=640, deviceScaleFactor=1,
                     mobile=False)  # a fixed viewport: the screenshot shows both panes and the readout
        browser.call("Page.navigate", url=url + "/")
        readout = "[window.magiPlay.fpsSpanMs, window.magiPlay.fps, document.getElementById('fps').textContent]"
        browser.wait_for("window.magiPlay && window.magiPlay.frames >= 2", timeout=60)
        early = [browser.eval(readout) for _ in range(10)]  # the first second: no rate yet
        assert any(span < 1000 for span, _, _ in early), early
        for span, fps, shown in early:
            assert (fps is None and shown == "–") if span < 1000 else shown == f"{fps:.1f}", early
        browser.wait_for("window.magiPlay.frames >= 3", timeout=60)
        hello = browser.eval("window.magiPlay.hello")
        assert hello["game"] == world.game and hello["actions"] == world.meanings
        assert browser.eval("document.getElementById('sees').textContent") == world.sees["text"]
        assert world.sees["colour"] in browser.eval("document.getElementById('model-caption').textContent")

        f0, t0 = browser.eval("window.magiPlay.frames"), time.perf_counter()
        time.sleep(3.0)
        f1, t1 = browser.eval("window.magiPlay.frames"), time.perf_counter()
        rate, shown = (f1 - f0) / (t1 - t0), browser.eval("window.magiPlay.fps")
        print(f"\nbrowser: {rate:.1f} frames/s received over {t1 - t0:.1f} s (cap {hello['fps_cap']}), "
              f"page fps readout {shown:.1f}")
        assert 2 < rate < hello["fps_cap"] + 2, f"{rate:.1f} frames/s in the browser"
        assert abs(shown - rate) < 0.25 * rate + 1, (shown, rate)  # a rate over >= 1 s, not over two frames

        for code in ("ArrowUp", "ArrowRight", "Space"):
            browser.key(code, down=True)
        state = browser.wait_for("window.magiPlay.lastActionName === 'UPRIGHTFIRE' && window.magiPlay")
        assert state["keys"] == ["fire", "right", "up"] and state["keyMessages"] == 3
        held_at = state["lastFrame"]
        browser.wait_for(f"window.magiPlay.lastFrame >= {held_at + 3}")
        assert browser.eval("window.magiPlay.lastActionName") == "UPRIGHTFIRE"  # held keys keep acting
        for code in ("ArrowUp", "ArrowRight", "Space"):
            browser.key(code, down=False)
        browser.wait_for("window.magiPlay.lastActionName === 'NOOP'")
        browser.key("KeyA", down=True)  # WASD too
        browser.wait_for("window.magiPlay.lastActionName === 'LEFT'")
        browser.key("KeyA", down=False)
        assert browser.eval("window.magiPlay.keyMessages") == 8
        browser.wait_for("window.magiPlay.lastActionName === 'NOOP'")
        browser.key("ArrowUp", down=True)  # two physical keys for one game key: releasing W keeps "up"
        browser.key("KeyW", down=True)
        browser.key("KeyW", down=False)
        state = browser.wait_for("window.magiPlay.lastActionName === 'UP' && window.magiPlay")
        browser.wait_for(f"window.magiPlay.lastFrame >= {state['lastFrame'] + 4}")
        state = browser.state()
        assert state["lastActionName"] == "UP" and state["keys"] == ["up"] and state["codes"] == ["ArrowUp"]
        browser.key("ArrowUp", down=False)
        browser.wait_for("window.magiPlay.lastActionName === 'NOOP'")
        assert browser.eval("window.magiPlay.keyMessages") == 10  # "up" held, "up" released: W sent nothing
        assert browser.eval("document.querySelector('.status').textContent").startswith("playing")

        browser.eval("document.getElementById('reality').click()")
        browser.wait_for("window.magiPlay.realityFrames >= 3")
        assert browser.eval("document.getElementById('reality-pane').hidden") is False
        browser.eval("document.getElementById('reset').click()")
        browser.wait_for("window.magiPlay.resets === 1")
        state = browser.state()
        assert state["errors"] == [] and state["connected"] and not state["busy"]
        assert browser.eval("document.getElementById('setting').textContent").startswith("DDIM")
        assert "ms/frame" in browser.eval("document.getElementById('latency').textContent")

        if os.environ.get("MAGI_PLAY_SCREENSHOT"):
            _screenshot(browser, Path(os.environ["MAGI_PLAY_SCREENSHOT"]))
        if os.environ.get("MAGI_PLAY_GIF"):
            _gif(browser, Path(os.environ["MAGI_PLAY_GIF"]))
    finally:
        browser.close()


def test_the_reality_pane_says_its_episode_ended(tmp_path):
    chromium = find_chromium()
    world = load_world(tiny_world_model(tmp_path / "model"))
    app = create_app(world, FAST, emulators=ShortEpisodes(world.game, world.frameskip, frames=20))
    with BackgroundServer(app) as url:
        browser = Browser(chromium, tmp_path / "profile")
        try:
            browser.call("Page.navigate", url=url + "/")
            browser.wait_for("window.magiPlay && window.magiPlay.frames >= 1", timeout=60)
            browser.eval("document.getElementById('reality').click()")
            browser.wait_for("window.magiPlay.realityOverAt !== null")
            caption = browser.eval("document.getElementById('reality-caption').textContent")
            assert caption == ("reality: the episode ended at frame 20; the model plays on. "
                               "Reset starts a new episode.")
            frames = browser.eval("window.magiPlay.frames")
            browser.wait_for(f"window.magiPlay.frames >= {frames + 5}")  # the model plays on
            browser.eval("document.getElementById('reset').click()")
            browser.wait_for("window.magiPlay.realityOverAt === null")
            assert browser.eval("document.getElementById('reality-caption').textContent").startswith(
                "reality (the emulator")
        finally:
            browser.close()


# Recorded in the page before play.js runs: the wall-clock receive time of every binary frame message,
# read by the test (the server's clock is the same machine's, so server start -> browser receive is exact).
TRACE_FRAMES = """(() => {
  const Native = window.WebSocket;
  const trace = window.magiTrace = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        if (!(event.data instanceof ArrayBuffer)) return;
        const view = new DataView(event.data);
        trace.push([view.getUint8(0), view.getUint32(8, true), performance.timeOrigin + performance.now()]);
      });
    }
  };
})();"""


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_browser_holds_real_time(played, tmp_path, monkeypatch):
    """10,000 frames (>= 5 min) of a scripted player in Chromium with the reality pane on: every model
    frame arrives, in order, and reality frames come with >= 90% of the generated ones (the pane misses
    the frames between a round's end and the Reset); the rates and latencies are written to the file
    MAGI_PLAY_RESULTS names (by default into the test's temporary folder, printed)."""
    import numpy as np

    from magi.play.session import PlaySession

    chromium = find_chromium()
    url, world = played
    want_frames = int(os.environ.get("MAGI_PLAY_FRAMES", "10000"))
    min_seconds = float(os.environ.get("MAGI_PLAY_MIN_S", "300"))
    started: list[tuple[int, float, float]] = []  # per frame, in order: (index, server wall time at start, produce ms)
    produce = PlaySession.next_frame

    def traced(self):
        t0 = time.time()
        frame = produce(self)
        started.append((frame.index, t0, frame.latency_ms))
        return frame

    monkeypatch.setattr(PlaySession, "next_frame", traced)
    browser = Browser(chromium, tmp_path / "profile")
    rng = np.random.default_rng(0)
    keys = [(), ("ArrowRight",), ("ArrowLeft",), ("ArrowUp",), ("ArrowDown",), ("Space",), ("ArrowUp", "Space"),
            ("ArrowRight", "ArrowDown"), ("ArrowLeft", "Space")]
    received: list[tuple[int, int, float]] = []
    polls = counted = 0  # once a second: how many times, and the frames the page counted
    load = [os.getloadavg()]
    resets = 0  # the emulator's round ends after ~1,786 frames: Reset starts the next, as a player would
    try:
        browser.call("Page.enable")
        browser.call("Page.addScriptToEvaluateOnNewDocument", source=TRACE_FRAMES)
        browser.call("Emulation.setFocusEmulationEnabled", enabled=True)
        browser.call("Page.navigate", url=url + "/")
        browser.wait_for("window.magiPlay && window.magiPlay.frames >= 1", timeout=60)
        browser.eval("document.getElementById('reality').click()")
        held: tuple = ()
        t_start = time.perf_counter()
        next_key = next_poll = 0.0
        while True:
            now = time.perf_counter() - t_start
            if now >= next_key:  # a sticky-random player: a new key combination every 0.3-1.5 s
                held = browser.hold(held, keys[rng.integers(len(keys))])
                next_key = now + rng.uniform(0.3, 1.5)
            if now >= next_poll:
                received += browser.eval("window.magiTrace.splice(0)")
                polls, counted = polls + 1, browser.eval("window.magiPlay.frames")
                next_poll = now + 1.0
                if browser.eval("window.magiPlay.realityOverAt") is not None:  # a round ended: play the next
                    browser.eval("document.getElementById('reset').click()")
                    resets += 1
                    browser.wait_for("window.magiPlay.realityOverAt === null")
                if polls % 60 == 0:
                    load.append(os.getloadavg())
                    print(f"{now:.0f} s: {counted} frames")
                if counted >= want_frames and now >= min_seconds:
                    break
            time.sleep(0.05)
        for code in held:
            browser.key(code, down=False)
        state = browser.state()
        assert state["errors"] == [] and state["connected"], state
    finally:
        browser.close()
    setting = state["hello"]["setting"]

    model = [(i, t) for kind, i, t in received if kind == 0]
    reality = sum(kind == 1 for kind, _, _ in received)
    indices = [i for i, _ in model]
    # the socket is ordered: the page received the frames the server made, in order (indices restart at a reset)
    assert indices == [i for i, _, _ in started[:len(indices)]], "model frames lost or out of order"
    generated = [j for j, i in enumerate(indices) if i >= world.context_frames]  # the opening frames are real
    t = np.array([tm for _, tm in model]) / 1000.0  # receive times (s, wall clock)
    per_frame = np.full(len(model), np.nan)  # server starts the frame -> the page has it (ms); NaN: opening
    per_frame[generated] = [(model[j][1] / 1000.0 - started[j][1]) * 1000 for j in generated]
    latency = per_frame[generated]
    produce_ms = np.array([started[j][2] for j in generated])
    gaps = np.diff(t) * 1000
    n = len(t)
    chunk = 1000
    per_chunk = [{"frames": f"{a}-{min(a + chunk, n) - 1}",
                  "fps": round((min(a + chunk, n) - 1 - a) / (t[min(a + chunk, n) - 1] - t[a]), 2),
                  "latency_p95_ms": round(float(np.nanpercentile(per_frame[a:a + chunk], 95)), 1)}
                 for a in range(0, n - chunk // 2, chunk)]
    window = 30.0  # frames/s over consecutive 30 s windows
    edges = np.arange(t[0], t[-1], window)
    window_fps = [float(((t >= a) & (t < a + window)).sum() / window) for a in edges[:-1]]
    result = {
        "what": "frames a headless Chromium received from `magi play` (reality pane on, a sticky-random "
                "player), timed in the page; latency = server starts the frame -> the page receives it",
        "model": os.environ.get("MAGI_PLAY_MODEL", "tiny untrained (no MAGI_PLAY_MODEL)"),
        "setting": setting,
        "other_work": os.environ.get("MAGI_PLAY_NOTE", "not stated"),
        "cpus": os.cpu_count(), "cpu": _cpu_model(), "loadavg_1m_start_end": [load[0][0], load[-1][0]],
        "loadavg_1m_median": float(np.median([x[0] for x in load])),
        "frames": n, "seconds": round(float(t[-1] - t[0]), 1),
        "fps": round((n - 1) / float(t[-1] - t[0]), 2),
        "fps_30s_windows": {"min": round(min(window_fps), 2), "median": round(float(np.median(window_fps)), 2),
                            "max": round(max(window_fps), 2)} if window_fps else None,
        "latency_ms": {q: round(float(np.percentile(latency, p)), 1)
                       for q, p in (("p50", 50), ("p95", 95), ("p99", 99))} | {"max": round(float(latency.max()), 1)},
        "produce_ms": {"p50": round(float(np.median(produce_ms)), 1),
                       "p95": round(float(np.percentile(produce_ms, 95)), 1)},
        "gap_ms": {"p50": round(float(np.median(gaps)), 1), "p95": round(float(np.percentile(gaps, 95)), 1),
                   "max": round(float(gaps.max()), 1)},
        "per_1000_frames": per_chunk,
        "flat": {"fps_last_over_first_1000": round(per_chunk[-1]["fps"] / per_chunk[0]["fps"], 3)
                 if len(per_chunk) > 1 else None},
        "reality_frames": reality, "resets": resets,
        "targets": {"fps": 15.0, "latency_p95_ms": 67.0},
    }
    # the test's own folder unless MAGI_PLAY_RESULTS names where to keep it (results/play_browser/NAME.json):
    # a test run never writes into the source tree
    out = Path(os.environ.get("MAGI_PLAY_RESULTS") or tmp_path / "play_browser.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    _plot_real_time(t - t[0], per_frame, out.with_suffix(".png"), result)
    print(json.dumps({k: result[k] for k in ("frames", "seconds", "fps", "fps_30s_windows", "latency_ms",
                                             "produce_ms", "gap_ms", "flat", "reality_frames", "resets")}))
    assert reality >= 0.9 * len(generated), f"{reality} reality frames for {len(generated)} generated frames"


def _cpu_model() -> str:
    """The CPU's name and clock ("AMD EPYC, 1996 MHz"): the figures depend on the machine, which varies."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from common import cpu_model

    return cpu_model()


def _plot_real_time(t, latency, path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    edges = np.arange(0, t[-1] + 10, 10.0)
    counts, _ = np.histogram(t, edges)
    a.plot(edges[:-1] / 60, counts / 10.0, lw=1)
    a.axhline(15, color="k", ls="--", lw=0.8)
    a.set_ylabel("frames/s received (10 s bins)")
    a.set_title(f"magi play in headless Chromium: {result['frames']} frames, {result['fps']} frames/s, "
                f"p95 latency {result['latency_ms']['p95']} ms", fontsize=9)
    b.plot(t / 60, latency, ",", alpha=0.5)  # NaN (opening frames) leaves gaps
    b.axhline(67, color="k", ls="--", lw=0.8)
    b.set_ylabel("latency (ms)")
    b.set_xlabel("minutes")
    b.set_ylim(0, max(150, float(np.nanpercentile(latency, 99.5))))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _screenshot(browser: Browser, path: Path) -> None:
    """The whole page after a second of holding RIGHT, so the player has moved."""
    browser.key("ArrowRight", down=True)
    time.sleep(1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(browser.screenshot())
    browser.key("ArrowRight", down=False)
    print(f"screenshot: {path}")


def _gif(browser: Browser, path: Path, seconds: float = 6.0) -> None:
    """The two panes while scripted keys play: right, up, left, down, fire, ~1.2 s each."""
    from PIL import Image

    browser.eval("document.getElementById('reset').click()")
    box = browser.eval("(() => { const r = document.querySelector('.screens').getBoundingClientRect();"
                       " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
    script = ["ArrowRight", "ArrowUp", "ArrowLeft", "ArrowDown", "Space"]
    shots, times, held = [], [], None
    start = time.perf_counter()
    while (now := time.perf_counter() - start) < seconds:
        code = script[min(int(now / seconds * len(script)), len(script) - 1)]
        if code != held:
            if held:
                browser.key(held, down=False)
            browser.key(code, down=True)
            held = code
        shots.append(Image.open(io.BytesIO(browser.screenshot(box))).convert("RGB"))
        times.append(time.perf_counter())
    browser.key(held, down=False)
    gaps = [max(int((b - a) * 1000), 20) for a, b in zip(times, times[1:])] + [100]
    path.parent.mkdir(parents=True, exist_ok=True)
    shots[0].save(path, save_all=True, append_images=shots[1:], duration=gaps, loop=0, optimize=True)
    print(f"gif: {path} ({len(shots)} frames)")
