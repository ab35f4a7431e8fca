"""`magi play`: a local web page where the keyboard drives an action-conditioned MAGI and the model
draws the game (docs/design.md §8, docs/world-model.md).

Starlette app, served by uvicorn: `/` (the page), `/static/play.js`, `/static/play.css` and the
WebSocket `/ws`; any other path is 404. One WebSocket per player session:

server -> client
  text   {"type": "hello", "game", "actions", "setting", "fps_cap", "context_frames", "seed",
          "keys", "frame_header"}                          once, first
  binary a frame: a 12-byte header (`FRAME_HEADER`: kind 0 = model / 1 = reality, channels 1 | 3,
         height, width, action index (-1 none), frame index; little-endian) then height x width x
         channels bytes, row-major, channels last. Gray frames (R = G = B) go as one channel.
  text   {"type": "stats", "fps", "latency_ms", "frame", "action", "seed", "reality", "reality_over",
          "reality_over_at"}                               about twice a second; fps is null until
                                                           frames span a second
  text   {"type": "reset", "seed"}        after a reset request
  text   {"type": "error", "error": "..."} a bad message (the session goes on) or a failure
  text   {"type": "busy", "max_sessions"} when the server is full; then the socket closes (1013)
  text   {"type": "idle", "seconds"}      no message from the client, and no key held, for
                                          `idle_limit` s; then the socket closes (1000), the slot is free

client -> server (JSON text, at most `MAX_MESSAGE_BYTES`)
  {"type": "keys", "keys": ["up", "right", "fire"]}   the keys now held (any subset of KEYS)
  {"type": "reset"}                                   start again from a new held-out episode
  {"type": "reality", "on": true}                     send the emulator's frames too

No client holds a slot it does not use (docs/world-model.md#play): uvicorn pings every `PING_INTERVAL_S` (5 s) and
drops a client whose pong is not back within `PING_TIMEOUT_S` (5 s), so a client that stops reading
is gone within ~10 s; a message the client has not taken within `SEND_TIMEOUT_S` (5 s) ends its session
too (a client that stops reading fills the socket's `SEND_BUFFER_BYTES`, then the send stalls, and a
stalled send would hold the slot past the keepalive); and `idle_limit` seconds (`IDLE_LIMIT_S`, 120 s)
without a client message while no key is held end a session. Requests must name this server in their
Host header (`host_check`: DNS rebinding), and a WebSocket's Origin, when sent, must match it. Bad
messages are answered with an error and logged (the first `MAX_LOGGED_BAD` of a session).

Frames are produced on a worker thread (`asyncio.to_thread`; torch releases the GIL), one at a time,
on a schedule of `fps_cap` a second (the game's own 60 / frameskip = 15 frames/s; a late frame is made
up by the next, by at most one period): the keys are read when a frame starts, so waiting happens
before a frame, never between a frame and the screen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import socket
import struct
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Optional

import numpy as np

from magi.errors import ArgumentParser, number
from magi.play.host_check import HostCheck
from magi.play.session import (KEYS, Emulators, Frame, ModelLoadError, PlaySession, SeedSource, World,
                               compile_world, load_world)
from magi.pretrained import SamplingOptions

DEFAULT_MODEL = "pretrained/atari"
DEFAULT_SETTING = SamplingOptions(mask_steps=4, diffusion_steps=10, sampler="ddim", long_video="window")
# The engine `magi play` draws frames with when neither --engine nor the model's play.json names one: the
# fastest in `benchmarks/play.py --engines` on the 2-core CPU (results/play_engines.json): onnxruntime.
# A setting the ONNX graphs cannot run (DDPM, cfg != 1) or a missing onnxruntime falls back to PyTorch.
DEFAULT_ENGINE = "onnx"
MAX_MESSAGE_BYTES = 4096  # a client message larger than this gets an error reply
WS_MAX_SIZE = 65536  # client messages past this are refused by the WebSocket layer (close 1009)
STATS_EVERY_S = 0.5
SEND_TIMEOUT_S = 5.0  # a message the client has not taken in this long ends its session
PING_INTERVAL_S, PING_TIMEOUT_S = 5.0, 5.0  # uvicorn's keepalive: a ping every 5 s, its pong within 5 s
# the kernel's send buffer per connection: bounds what a client that stopped reading holds, so its
# sends stall (and time out) within seconds; 256 KB still carries 2.5 MB/s at a 100 ms round trip
SEND_BUFFER_BYTES = 256 * 1024
IDLE_LIMIT_S = 120.0  # default: a session with no client message (key, reset, pane) for this long ends
MAX_LOGGED_BAD = 5  # bad messages logged per session; the rest are answered without a log line
FRAME_HEADER = struct.Struct("<BBHHhI")  # kind, channels, height, width, action, frame index
MODEL_FRAME, REALITY_FRAME = 0, 1
STATIC = Path(__file__).parent / "static"
ASSETS = {  # URL path -> (file in static/, media type); nothing else is served
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/play.js": ("play.js", "text/javascript; charset=utf-8"),
    "/static/play.css": ("play.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; connect-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
KEY_HELP = {"up": "↑ / W", "down": "↓ / S", "left": "← / A", "right": "→ / D", "fire": "Space"}

log = logging.getLogger("magi.play")


def encode_frame(kind: int, image: np.ndarray, action: int, index: int) -> bytes:
    """uint8 (3, H, W) -> header + raw pixels (H, W, c), c = 1 when the frame is gray (R = G = B)."""
    _, H, W = image.shape
    if (image[0] == image[1]).all() and (image[0] == image[2]).all():
        pixels = image[0]  # (H, W)
    else:
        pixels = image.transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    channels = 1 if pixels.ndim == 2 else 3
    return FRAME_HEADER.pack(kind, channels, H, W, action, index) + np.ascontiguousarray(pixels).tobytes()


def decode_frame(data: bytes) -> dict:
    """The inverse of `encode_frame` (tests, tools): header fields and pixels uint8 (H, W, c)."""
    kind, channels, H, W, action, index = FRAME_HEADER.unpack_from(data)
    pixels = np.frombuffer(data, np.uint8, offset=FRAME_HEADER.size)
    if pixels.size != H * W * channels:
        raise ValueError(f"frame: header says {H}x{W}x{channels}, got {pixels.size} bytes")
    return {"kind": kind, "channels": channels, "height": H, "width": W, "action": action,
            "index": index, "pixels": pixels.reshape(H, W, channels)}


class BadMessage(ValueError):
    """A client message the protocol does not accept; its text is the error reply."""


def parse_message(message: dict) -> dict:
    """An ASGI `websocket.receive` message -> a checked client message, or BadMessage."""
    text = message.get("text")
    if text is None:
        raise BadMessage("binary messages are not accepted; send JSON text")
    size = len(text.encode("utf-8"))
    if size > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message too large: {size} bytes (limit {MAX_MESSAGE_BYTES})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadMessage(f"not JSON: {e}") from None
    except RecursionError:  # e.g. 1,000 nested "[" in 2 KB: Python's parser gives up
        raise BadMessage("not accepted: JSON nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise BadMessage('expected a JSON object with a "type"')
    expected = {"keys": {"type", "keys"}, "reset": {"type"}, "reality": {"type", "on"}}
    kind = data["type"]
    if kind not in expected:
        raise BadMessage(f"unknown message type {kind[:40]!r}; expected one of {sorted(expected)}")
    if set(data) != expected[kind]:
        raise BadMessage(f"{kind!r} message: expected the fields {sorted(expected[kind])}, got {sorted(data)[:8]}")
    if kind == "keys":
        keys = data["keys"]
        if (not isinstance(keys, list) or len(keys) > len(KEYS)
                or not all(isinstance(k, str) and k in KEYS for k in keys)):
            raise BadMessage(f'"keys": expected a list drawn from {list(KEYS)}')
    if kind == "reality" and not isinstance(data["on"], bool):
        raise BadMessage('"on": expected true or false')
    return data


class Rate:
    """Frames per second over at least the last second, and the mean latency of those frames.

    The window keeps the newest frame that is at least `window_s` old, so a rate always spans a full
    second: two frames that arrive together at the start do not read as 40 frames/s."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self.events: deque[tuple[float, float]] = deque()

    def add(self, latency_ms: float, now: Optional[float] = None) -> None:
        now = time.perf_counter() if now is None else now
        self.events.append((now, latency_ms))
        while len(self.events) > 2 and now - self.events[1][0] >= self.window_s:
            self.events.popleft()

    def fps(self) -> Optional[float]:
        """None until the frames seen span `window_s`."""
        if len(self.events) < 2:
            return None
        span = self.events[-1][0] - self.events[0][0]
        return (len(self.events) - 1) / span if span >= self.window_s else None

    def latency_ms(self) -> float:
        generated = [lat for _, lat in self.events if lat > 0]
        return sum(generated) / len(generated) if generated else 0.0


# --------------------------------------------------------------------------------------------------
# The app


def create_app(world: World, setting: SamplingOptions = DEFAULT_SETTING, max_sessions: int = 2,
               fps_cap: Optional[float] = None, host: str = "127.0.0.1", idle_limit: float = IDLE_LIMIT_S,
               send_timeout: float = SEND_TIMEOUT_S, emulators: Optional[Emulators] = None):
    """The Starlette app for one loaded model; sessions share its weights. `fps_cap` defaults to the
    game's own rate (60 / frameskip). `host` is the address the server is bound to: requests must name
    it (or localhost) in their Host header. `emulators` (a pool) defaults to the game's own."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    setting.validate()
    check_window(world, setting)
    trained = world.ckpt.model.config.num_frames
    if max_sessions < 1:
        raise ValueError(f"max_sessions: expected >= 1, got {max_sessions}")
    for name, value in (("idle_limit", idle_limit), ("send_timeout", send_timeout)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a number of seconds > 0, got {value}")
    fps_cap = world.fps if fps_cap is None else fps_cap
    if setting.compile and world.engine.name == "torch":
        compile_world(world, setting, log)
    assets = {url: ((STATIC / name).read_bytes(), media) for url, (name, media) in ASSETS.items()}
    seeds = SeedSource()
    emulators = emulators or Emulators(world.game, world.frameskip, keep=max_sessions)
    state = {"active": 0}

    def asset(request):
        body, media = assets[request.url.path]
        return Response(body, media_type=media, headers=SECURITY_HEADERS)

    def hello(session: PlaySession) -> dict:
        return {"type": "hello", "game": world.game, "actions": world.meanings, "model": world.name,
                "setting": {"mask_steps": setting.mask_steps, "diffusion_steps": setting.diffusion_steps,
                            "sampler": setting.sampler, "temperature": setting.temperature, "cfg": setting.cfg,
                            "window": setting.window or trained,
                            **world.engine.describe()},
                "fps_cap": fps_cap, "context_frames": world.context_frames, "seed": session.seed,
                "keys": KEY_HELP, "frame_header": "<BBHHhI kind,channels,height,width,action,index",
                "sees": world.sees, "idle_limit": idle_limit}

    async def play(websocket) -> None:
        origin = websocket.headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1] != websocket.headers.get("host"):
            await websocket.close(code=1008)  # another site's page may not drive the local game (403)
            return
        await websocket.accept()
        if state["active"] >= max_sessions:
            await websocket.send_json({"type": "busy", "max_sessions": max_sessions})
            await websocket.close(code=1013)  # try again later
            return
        state["active"] += 1
        session = None
        try:
            try:
                session = await asyncio.to_thread(PlaySession, world, setting, seeds, emulators)
            except Exception as e:  # noqa: BLE001 - the emulator would not start: tell the page
                log.exception("could not start a session")
                await websocket.send_json({"type": "error", "error": f"could not start: {type(e).__name__}: {e}"})
                await websocket.close(code=1011)
                return
            player = Player(websocket, session, fps_cap, idle_limit, send_timeout)
            await player.send(text=hello(session))
            await player.run()
        except SlowClient as e:  # the hello did not go out: the client is not reading
            log.warning("%s: %s; session closed, its slot is free", client_name(websocket), e)
        except (OSError, WebSocketDisconnect) as e:  # it left before the hello
            log.debug("%s: left before the hello: %r", client_name(websocket), e)
        finally:
            if session is not None:
                await asyncio.to_thread(session.close)  # waits for a frame in progress
            state["active"] -= 1

    routes = [Route(url, asset) for url in ASSETS] + [WebSocketRoute("/ws", play)]
    app = Starlette(routes=routes, middleware=[Middleware(HostCheck, bound=host)])
    app.state.sessions = state
    return app


def check_window(world: World, setting: SamplingOptions) -> None:
    trained = world.ckpt.model.config.num_frames
    if setting.window is not None and setting.window > trained:
        raise ValueError(f"window: {setting.window} frames, more than the {trained} the model was trained on")


class SlowClient(Exception):
    """The client did not take a message within the send timeout: it has stopped reading."""


def client_name(websocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "a client"


class Player:
    """One WebSocket's two loops: frames out (paced, on a worker thread) and messages in. Whichever
    ends first (the client left or stopped reading, it went idle, or generation failed) ends the
    other."""

    def __init__(self, websocket, session: PlaySession, fps_cap: float, idle_limit: float = IDLE_LIMIT_S,
                 send_timeout: float = SEND_TIMEOUT_S) -> None:
        self.ws, self.session, self.period = websocket, session, 1.0 / fps_cap
        self.idle_limit, self.send_timeout = idle_limit, send_timeout
        self.send_lock = asyncio.Lock()
        self.rate = Rate()
        self.name = client_name(websocket)
        self.bad_messages = 0
        self.held: list[str] = []  # the keys the client holds

    async def run(self) -> None:
        tasks = {asyncio.create_task(self.frames()), asyncio.create_task(self.messages())}
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:  # a send to a client that has gone; generation failures are reported in frames()
            error = task.exception()
            if isinstance(error, SlowClient):
                log.warning("%s: %s; session closed, its slot is free", self.name, error)
            elif error is not None:
                log.info("%s: connection lost (%s); session closed", self.name, type(error).__name__)

    async def send(self, *, text: Optional[dict] = None, data: Optional[bytes] = None) -> None:
        """Send one message; SlowClient when the client has not taken it within the send timeout."""
        async with self.send_lock:
            message = self.ws.send_text(json.dumps(text)) if text is not None else self.ws.send_bytes(data)
            try:
                await asyncio.wait_for(message, self.send_timeout)
            except asyncio.TimeoutError:
                raise SlowClient(f"a message waited {self.send_timeout:g} s to be sent (the client stopped "
                                 "reading)") from None

    async def frames(self) -> None:
        """Produce and send frames on a schedule of `fps_cap` a second; stats about twice a second.

        A frame starts at its slot or, when the previous one ran late, at once: a frame slower than the
        period is made up by faster ones after it, so the rate holds the cap whenever frames take less
        than the period on average. At most one period is made up, so frames never come in a burst, and
        none for the start of an episode (the opening frames and the first generated one: the emulator's
        reset and the first window), so a game never starts faster than the cap."""
        loop = asyncio.get_running_loop()
        last_stats = float("-inf")
        slot = loop.time()  # when the next frame is due
        start_up = self.session.world.context_frames  # frames 0..k of an episode: owe nothing
        while True:
            started = loop.time()
            try:
                frame = await asyncio.to_thread(self.session.next_frame)
            except Exception as e:  # noqa: BLE001 - report, then end the session
                log.exception("generation failed")
                await self.send(text={"type": "error", "error": f"generation failed: {type(e).__name__}: {e}"})
                await self.ws.close(code=1011)
                return
            await self.send_frame(frame)
            if started - last_stats >= STATS_EVERY_S:
                last_stats = started
                await self.send(text=self.stats(frame))
            owed = 0.0 if frame.index <= start_up else self.period  # owe at most one period
            slot = max(slot + self.period, loop.time() - owed)
            wait = slot - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)

    async def send_frame(self, frame: Frame) -> None:
        self.rate.add(frame.latency_ms)
        await self.send(data=encode_frame(MODEL_FRAME, frame.image, frame.action, frame.index))
        if frame.reality is not None:
            await self.send(data=encode_frame(REALITY_FRAME, frame.reality, frame.action, frame.index))

    def stats(self, frame: Frame) -> dict:
        s = self.session
        action = s.world.meanings[frame.action] if frame.action >= 0 else None
        fps = self.rate.fps()
        return {"type": "stats", "fps": None if fps is None else round(fps, 2),
                "latency_ms": round(self.rate.latency_ms(), 1), "frame": frame.index, "action": action,
                "seed": frame.seed, "reality": s.reality, "reality_over": s.reality_over,
                "reality_over_at": s.reality_over_at}

    async def messages(self) -> None:
        """Read client messages until the client goes, or stays silent with no key held for
        `idle_limit` seconds; a bad one gets an error reply (and a log line), play goes on."""
        loop = asyncio.get_running_loop()
        last = loop.time()  # of the last good message (or the start)
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), max(last + self.idle_limit - loop.time(), 0))
            except asyncio.TimeoutError:
                if self.held:  # a key held down all along is play, not idleness
                    last = loop.time()
                    continue
                log.info("%s: no message for %g s; session closed", self.name, self.idle_limit)
                await self.send(text={"type": "idle", "seconds": self.idle_limit})
                await self.ws.close(code=1000)
                return
            if message["type"] == "websocket.disconnect":
                return
            try:
                data = parse_message(message)
            except BadMessage as e:
                self.bad_messages += 1
                if self.bad_messages <= MAX_LOGGED_BAD:
                    more = " (further bad messages are not logged)" if self.bad_messages == MAX_LOGGED_BAD else ""
                    log.warning("%s: bad message: %s%s", self.name, e, more)
                await self.send(text={"type": "error", "error": str(e)})
                continue
            last = loop.time()
            if data["type"] == "keys":
                self.held = data["keys"]
                self.session.set_keys(data["keys"])
            elif data["type"] == "reality":
                self.session.reality = data["on"]
            elif data["type"] == "reset":
                seed = self.session.request_reset()
                await self.send(text={"type": "reset", "seed": seed})


# --------------------------------------------------------------------------------------------------
# Serving


def uvicorn_config(app, host: str = "127.0.0.1", port: int = 8000, **kwargs):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", ws_max_size=WS_MAX_SIZE,
                          ws_ping_interval=PING_INTERVAL_S, ws_ping_timeout=PING_TIMEOUT_S, lifespan="off",
                          **kwargs)


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), for uvicorn to serve on: binding here, before anything is
    printed, makes a taken port or an unknown host an error the command can report. OSError (a
    `socket.gaierror` for a name that does not resolve) when it cannot."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)  # accepted sockets inherit it
        sock.bind(address)
        sock.listen(2048)  # connections wait in the backlog from here: the page works as soon as its address is printed
    except OSError:
        sock.close()
        raise
    return sock


class BackgroundServer:
    """Serve an app from a thread on a free 127.0.0.1 port (tests, benchmarks):
    `with BackgroundServer(app) as url: ...` gives "http://127.0.0.1:PORT"."""

    def __init__(self, app, host: str = "127.0.0.1") -> None:
        import uvicorn

        self.sock = listen(host, 0)
        self.server = uvicorn.Server(uvicorn_config(app, host, self.sock.getsockname()[1]))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the play server did not start")
            time.sleep(0.02)
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def benchmarked_setting(model: Path) -> dict:
    """The sampler setting `benchmarks/play.py --write-model-setting` chose for this model (the fastest
    at >= 15 frames/s that keeps the rollout quality), from `<model>/play.json`; {} when absent."""
    path = model / "play.json"
    if not path.is_file():
        return {}
    try:
        chosen = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(chosen, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(chosen).__name__}")
    kinds = {"mask_steps": (int, "an integer"), "diffusion_steps": (int, "an integer"), "sampler": (str, "a string"),
             "threads": (int, "an integer"), "window": ((int, type(None)), "an integer or null"),
             "compile": (bool, "true or false"), "cfg": ((int, float), "a number"), "engine": (str, "a string")}
    for key in chosen.keys() & kinds.keys():
        kind, expected = kinds[key]
        value = chosen[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ValueError(f"{path}: {key}: expected {expected}, got {value!r}")
    return {k: chosen[k] for k in kinds if k in chosen}


def play_setting(model: Path, mask_steps: Optional[int] = None, diffusion_steps: Optional[int] = None,
                 sampler: Optional[str] = None, temperature: float = DEFAULT_SETTING.temperature,
                 threads: Optional[int] = None, window: Optional[int] = None,
                 compile: Optional[bool] = None,
                 cfg: Optional[float] = None) -> tuple[SamplingOptions, Optional[int]]:
    """(sampler setting, torch threads or None) that `magi play` runs `model` at: each value as given,
    else the model's play.json (`benchmarked_setting`), else `DEFAULT_SETTING`. ValueError for a bad
    play.json."""
    chosen = benchmarked_setting(model)
    setting = SamplingOptions(mask_steps=mask_steps or chosen.get("mask_steps", DEFAULT_SETTING.mask_steps),
                              diffusion_steps=diffusion_steps or chosen.get("diffusion_steps",
                                                                            DEFAULT_SETTING.diffusion_steps),
                              sampler=sampler or chosen.get("sampler", DEFAULT_SETTING.sampler),
                              temperature=temperature, long_video="window",
                              window=window or chosen.get("window"),
                              compile=chosen.get("compile", False) if compile is None else compile,
                              cfg=float(chosen.get("cfg", DEFAULT_SETTING.cfg)) if cfg is None else cfg)
    return setting, threads or chosen.get("threads")


def play_engine(model: Path, setting: SamplingOptions, engine: Optional[str] = None) -> str:
    """The engine `magi play` runs `model` on: as given, else the model's play.json, else `DEFAULT_ENGINE`
    where the setting can run on it (DDIM, cfg 1, onnxruntime installed), else "torch". ValueError for an
    engine that cannot run the setting when asked for, or an unknown one."""
    from magi.play.engine import ENGINES

    asked = engine or benchmarked_setting(model).get("engine")
    if asked is not None and asked not in ENGINES:
        raise ValueError(f"engine: expected one of {', '.join(ENGINES)}, got {asked!r}")
    name = asked or DEFAULT_ENGINE
    if name == "onnx":
        import importlib.util

        why = ("onnxruntime is not installed" if importlib.util.find_spec("onnxruntime") is None
               else f"the ONNX graphs unroll DDIM; sampler {setting.sampler!r}" if setting.sampler != "ddim"
               else f"the ONNX graphs run without guidance; cfg {setting.cfg:g}" if setting.cfg != 1.0 else None)
        if why is not None:
            if engine == "onnx":
                raise ValueError(f"--engine onnx: {why} (use --engine torch)")
            return "torch"
    return name


def main(argv: Optional[list[str]] = None) -> int:
    parser = ArgumentParser(
        prog="magi play", description="Play an action-conditioned world model in the browser: the keys "
        "drive the model, the model draws the game.")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"run or checkpoint directory of an action-conditioned model "
                        f"(default {DEFAULT_MODEL})")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1: this machine only); requests must name "
                        "it (or localhost) in their Host header")
    parser.add_argument("--port", type=number(int, low=1, high=65535), default=8000, help="TCP port, 1..65535 (default 8000)")
    parser.add_argument("--max-sessions", type=number(int, low=1), default=2, help="concurrent players (default 2)")
    parser.add_argument("--idle-limit", type=number(float, above=0), default=IDLE_LIMIT_S, metavar="SECONDS",
                        help=f"end a session after this long without a key or button (default {IDLE_LIMIT_S:g})")
    parser.add_argument("--mask-steps", type=number(int, low=1), help="default: the model's play.json (the setting "
                        f"benchmarks/play.py chose), else {DEFAULT_SETTING.mask_steps}")
    parser.add_argument("--diffusion-steps", type=number(int, low=1),
                        help=f"default: the model's play.json, else {DEFAULT_SETTING.diffusion_steps}")
    parser.add_argument("--sampler", choices=["ddim", "ddpm"],
                        help=f"default: the model's play.json, else {DEFAULT_SETTING.sampler}")
    parser.add_argument("--temperature", type=number(float, above=0), default=DEFAULT_SETTING.temperature)
    parser.add_argument("--cfg", type=number(float, low=0), default=None,
                        help="action guidance: > 1 weighs what the held key changes more, at twice the model's "
                        f"work per frame (default: the model's play.json, else {DEFAULT_SETTING.cfg:g})")
    parser.add_argument("--window", type=number(int, low=2), default=None, metavar="FRAMES",
                        help="frames the model's sliding window holds, the new one included (fewer: faster, "
                        "less context; default: the model's play.json, else its training length)")
    parser.add_argument("--threads", type=number(int, low=1), default=None,
                        help="torch intra-op threads (default: the model's play.json, else torch's)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the diffusion head and the VAE decoder before serving (faster "
                        "frames on the CPU after ~1 min of compiling; default: the model's play.json, else off)")
    parser.add_argument("--engine", choices=["onnx", "torch"], default=None,
                        help="what draws the frames: onnxruntime (the play setting exported by `magi export onnx` at "
                        "start, a few seconds) or PyTorch (default: the model's play.json, else "
                        f"{DEFAULT_ENGINE}, the faster on a 2-core CPU; torch where the setting needs it)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present for --engine torch, else the "
                        "CPU; the default), cpu, cuda, cuda:1, ... (--engine onnx runs on the CPU)")
    args = parser.parse_args(argv)

    try:
        setting, args.threads = play_setting(Path(args.model), args.mask_steps, args.diffusion_steps,
                                             args.sampler, args.temperature, args.threads, args.window,
                                             args.compile, args.cfg)
        setting.validate()
        args.engine = play_engine(Path(args.model), setting, args.engine)
        args.device = play_device(args.engine, args.device)
    except ValueError as e:
        print(f"magi play: {e}", file=sys.stderr)
        return 2
    model = Path(args.model)
    if args.model == DEFAULT_MODEL and not model.exists():
        print(f"magi play: {model / 'config.json'} not found: the shipped Atari world model is missing. "
              "Rebuild it with `make atari` (its frame tokenizer, then the world model), or play round 1's gray model "
              "with `magi play --model pretrained/atari_gray`, or train one: `magi train --config "
              "configs/atari_world_model.yaml --out runs/atari --resume auto`, then `magi play --model runs/atari`.",
              file=sys.stderr)
        return 2
    try:
        sock = listen(args.host, args.port)
    except OSError as e:  # the port is taken or privileged, the host does not resolve or is not this machine's
        reason = e.strerror or str(e)
        print(f"magi play: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 2
    with sock:
        return _serve(args, model, setting, sock)


def play_device(engine: str, device: str) -> str:
    """The device `magi play` serves on: `--device` by the one convention (`magi.pretrained.pick_device`:
    "auto" is CUDA when present), except that the onnx engine runs on the CPU, so "auto" means the CPU
    there and anything else is refused."""
    from magi.pretrained import pick_device

    if engine == "onnx":
        if device not in ("auto", "cpu"):
            raise ValueError(f"--engine onnx runs on the CPU; got --device {device} (use --engine torch)")
        return "cpu"
    return str(pick_device(device))


def _serve(args, model: Path, setting: SamplingOptions, sock: socket.socket) -> int:
    """Load the model, then serve it on the bound socket until Ctrl+C."""
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        world = load_world(model, device=args.device)
    except ModelLoadError as e:
        print(f"magi play: {e}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("magi play: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        check_window(world, setting)
    except ValueError as e:
        log.removeHandler(handler)
        print(f"magi play: {e}", file=sys.stderr)
        return 2
    if args.engine == "onnx":
        import shutil
        import tempfile

        from magi.play.engine import OnnxEngine

        folder = Path(tempfile.mkdtemp(prefix="magi-play-onnx-"))
        try:
            world.engine = OnnxEngine.for_world(world, setting, folder, threads=torch.get_num_threads())
        except Exception as e:  # noqa: BLE001 - an export that fails: say so, name the way out
            shutil.rmtree(folder, ignore_errors=True)
            log.removeHandler(handler)
            print(f"magi play: exporting to ONNX failed ({type(e).__name__}: {e}); try --engine torch", file=sys.stderr)
            return 2
        try:
            return _run(args, world, setting, sock, handler)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return _run(args, world, setting, sock, handler)


def _run(args, world: World, setting: SamplingOptions, sock: socket.socket, handler) -> int:
    import torch

    if setting.compile and world.engine.name == "torch":
        print("magi play: compiling the diffusion head and the VAE decoder (about a minute)...", flush=True)
    try:
        app = create_app(world, setting, max_sessions=args.max_sessions, host=args.host, idle_limit=args.idle_limit)
    except ValueError as e:  # e.g. a --window longer than the model's training length
        log.removeHandler(handler)
        print(f"magi play: {e}", file=sys.stderr)
        return 2

    local = args.host in ("127.0.0.1", "localhost", "::1")
    if not local:
        print(f"magi play: WARNING: bound to {args.host}: the game is reachable from the network; anyone "
              f"who can reach port {args.port} can play (up to {args.max_sessions} at once).", file=sys.stderr)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    shown = f"[{shown}]" if ":" in shown else shown
    threads = torch.get_num_threads()
    window = setting.window or world.ckpt.model.config.num_frames
    engine = "onnxruntime" if world.engine.name == "onnx" else "PyTorch" + (", compiled" if world.ckpt.compiled else "")
    print(f"magi play: {world.game} world model {world.ckpt.path} ({setting.sampler.upper()}, "
          f"{setting.mask_steps} mask x {setting.diffusion_steps} diffusion steps, a window of {window} "
          f"frames, {threads} thread{'s' if threads > 1 else ''}, {engine}); "
          f"{world.sees['text']}\n"
          f"magi play: open http://{shown}:{args.port}/  (Ctrl+C stops)", flush=True)
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, args.host, args.port))
    try:
        server.run(sockets=[sock])
    finally:
        log.removeHandler(handler)
    if server.should_exit:  # stopped by Ctrl+C: uvicorn re-raises the signal it caught, unless it came
        raise KeyboardInterrupt  # while uvicorn was already shutting down; either way, exit as interrupted
    return 0


if __name__ == "__main__":
    sys.exit(main())
