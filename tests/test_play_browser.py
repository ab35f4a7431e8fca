"""`magi play` in a real browser (issue 15): headless Chromium loads the page, the test presses keys
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
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from magi.play.server import BackgroundServer, create_app, play_setting
from magi.play.session import load_world
from test_play import FAST, ShortEpisodes, tiny_world_model

websockets_sync = pytest.importorskip("websockets.sync.client")

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
