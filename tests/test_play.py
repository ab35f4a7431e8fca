"""`magi play` driven from Python over its WebSocket protocol (docs/world-model.md#play): hello, paced frames, keys ->
actions, reset, the reality pane, bad messages answered and survived, the session limit, disconnects
that free their session (and its memory), only the page served, and models that fail to load.
Hostile clients, each against the real server on 127.0.0.1: foreign Host headers (DNS
rebinding), clients that never read or never play holding the slots, deeply nested JSON, bad ports.

A tiny untrained action-conditioned model stands in for the real one: these tests check the
protocol and the action path, not what the frames show (benchmarks/play.py does that)."""

from __future__ import annotations

import base64
import dataclasses
import gc
import http.client
import json
import logging
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from magi import Magi, MagiConfig
from magi.play.server import (MAX_MESSAGE_BYTES, PING_INTERVAL_S, PING_TIMEOUT_S, WS_MAX_SIZE,
                              BackgroundServer, Rate, create_app, decode_frame, main)
from magi.play.session import (FIRST_SEED, Emulators, PlaySession, SeedSource, action_name, action_table,
                               load_world)
from magi.sample import SamplingOptions

import websockets.sync.client as websockets_sync  # noqa: E402  a hard dependency: fail, never skip

FAST = SamplingOptions(mask_steps=1, diffusion_steps=2, sampler="ddim", long_video="window")
BOXING = ['NOOP', 'FIRE', 'UP', 'RIGHT', 'LEFT', 'DOWN', 'UPRIGHT', 'UPLEFT', 'DOWNRIGHT', 'DOWNLEFT',
          'UPFIRE', 'RIGHTFIRE', 'LEFTFIRE', 'DOWNFIRE', 'UPRIGHTFIRE', 'UPLEFTFIRE', 'DOWNRIGHTFIRE',
          'DOWNLEFTFIRE']


def tiny_world_model(directory: Path, num_actions: int = 18, game: str = "Boxing",
                     vae: str = "pixels:4:gray", **options) -> Path:
    """An untrained 64x64 Boxing world model (pixels:4:gray -> 16x16x16 latents, 3 frames; pixels:4
    for colour -> 16x16x48); `options` go to its data options (e.g. layout)."""
    channels = 16 if vae.endswith(":gray") else 48
    config = MagiConfig.preset("test", latent_channels=channels, latent_size=16, num_frames=3, patch_size=2,
                               num_classes=0, num_actions=num_actions, attention="sdpa")
    Magi(config).save_pretrained(directory)
    (directory / "train_config.yaml").write_text(yaml.safe_dump({
        "vae": {"spec": vae},
        "data": {"kind": "atari", "options": {"game": game, "size": 64, "frameskip": 4, **options}}}))
    return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return load_world(tiny_world_model(tmp_path_factory.mktemp("play_model")))


@pytest.fixture(scope="module")
def server(world):
    with BackgroundServer(create_app(world, FAST, max_sessions=2)) as url:
        yield url


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/ws"


class Client:
    """A blocking test client: collects frames and text messages as they arrive."""

    def __init__(self, url: str, **kwargs) -> None:
        # entered at once (websockets >= 17.1 wants a context manager; the tests close explicitly)
        self.ws = websockets_sync.connect(ws_url(url), max_size=2**20, **kwargs).__enter__()
        self.texts: list[dict] = []

    def send(self, message) -> None:
        self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    def next(self, timeout: float = 20.0):
        """The next message: a decoded frame dict, or a text message dict (also kept in `texts`)."""
        data = self.ws.recv(timeout=timeout)
        if isinstance(data, bytes):
            return decode_frame(data)
        message = json.loads(data)
        self.texts.append(message)
        return message

    def text(self, kind: str, timeout: float = 20.0) -> dict:
        """Read until a text message of `kind` arrives (frames in between are dropped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.next(timeout=deadline - time.monotonic())
            if m.get("type") == kind:
                return m
        raise TimeoutError(kind)

    def frames(self, n: int, kind: int = 0, timeout: float = 30.0) -> list[dict]:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n:
            m = self.next(timeout=max(deadline - time.monotonic(), 0.01))
            if "kind" in m and m["kind"] == kind:
                out.append(m)
        return out

    def close(self) -> None:
        self.ws.close()


def open_session(url: str, tries: int = 100) -> Client:
    """A client whose session has started (its hello read), retried while every slot is still held: a
    slot is freed once the server has seen its client disconnect, which may lag the close (an earlier
    test's sessions, or one closed just before)."""
    for _ in range(tries):
        client = Client(url)
        if client.next()["type"] == "hello":
            return client
        client.close()
        time.sleep(0.05)
    raise AssertionError(f"no session slot freed itself after {tries} tries")


# --------------------------------------------------------------------------------------------------
# Keys -> actions


def test_keys_map_to_the_games_actions():
    boxing = action_table(BOXING)
    assert BOXING[boxing[frozenset({"up", "right", "fire"})]] == "UPRIGHTFIRE"
    assert BOXING[boxing[frozenset({"down", "left"})]] == "DOWNLEFT"
    assert BOXING[boxing[frozenset({"up", "down", "fire"})]] == "FIRE"  # opposite directions cancel
    assert BOXING[boxing[frozenset()]] == "NOOP"
    assert len(boxing) == 32 and set(boxing.values()) == set(range(18))  # every action is reachable
    breakout = ["NOOP", "FIRE", "RIGHT", "LEFT"]
    table = action_table(breakout)
    assert breakout[table[frozenset({"right", "fire"})]] == "RIGHT"  # FIRE dropped first
    assert breakout[table[frozenset({"up", "left"})]] == "LEFT"
    assert breakout[table[frozenset({"up"})]] == "NOOP"
    assert breakout[table[frozenset({"fire", "down"})]] == "FIRE"
    assert action_name({"left", "right"}) == "NOOP"


def test_reality_is_the_emulator_under_the_same_actions(world):
    """Frame t's reality frame is the emulator after the opening NOOPs and the actions the headers
    report; the opening the model sees is those real frames (gray, as its VAE sees them)."""
    from magi.world.atari import resize_frame
    from magi.play.session import PlaySession, SeedSource, make_env

    session = PlaySession(world, FAST, SeedSource(), reality=True)
    frames = []
    for t, keys in enumerate([[], [], ["right"], ["right", "fire"], ["down"], ["down"], ["left", "up"]]):
        session.set_keys(keys)
        frames.append(session.next_frame())
    session.close()
    k = world.context_frames
    env = make_env(world.game, world.frameskip)
    obs, _ = env.reset(seed=frames[0].seed)
    real = [resize_frame(obs, 64)]
    for f in frames[1:]:
        obs, *_ = env.step(f.action)
        real.append(resize_frame(obs, 64))
    env.close()
    for f, r in zip(frames, real):
        np.testing.assert_array_equal(f.reality, r)
    for f, r in zip(frames[:k], real):
        assert f.latency_ms == 0 and (f.image[0] == f.image[1]).all()
        assert np.abs(f.image[0] - r.astype(float).mean(0)).max() <= 1  # gray of the real frame
    assert [f.action for f in frames[:k]] == [-1] + [0] * (k - 1)  # the opening: null, then NOOPs
    # frame t >= k answers the keys held when it started
    assert [BOXING[f.action] for f in frames[k:]] == ["RIGHT", "RIGHTFIRE", "DOWN", "DOWN", "UPLEFT"]


# --------------------------------------------------------------------------------------------------
# The protocol


def test_hello_frames_keys_reality_reset(server, world):
    # timed from before the connection: frame 0 is sent after it, so 8 paced frames take >= 7/15 s
    # (timing from after the hello would miss frames already waiting in the socket, reading as > 15/s)
    start = time.perf_counter()
    c = open_session(server)
    try:
        hello = c.texts[0]
        assert hello["type"] == "hello" and hello["game"] == "Boxing" and hello["actions"] == BOXING
        assert hello["setting"]["mask_steps"] == 1 and hello["setting"]["sampler"] == "ddim"
        assert hello["setting"]["cfg"] == 1.0
        assert hello["fps_cap"] == 15 and hello["context_frames"] == 2 and hello["seed"] >= FIRST_SEED
        frames = c.frames(8)
        rate = (len(frames) - 1) / (time.perf_counter() - start)
        assert [f["index"] for f in frames] == list(range(8))
        for f in frames:  # gray 64x64: one channel, 12 + 4096 bytes on the wire
            assert (f["height"], f["width"], f["channels"]) == (64, 64, 1)
            assert f["pixels"].shape == (64, 64, 1) and f["pixels"].dtype == np.uint8
        assert frames[0]["action"] == -1 and frames[1]["action"] == 0  # opening: null, then NOOP
        assert rate < 17, f"frames came at {rate:.1f}/s, above the game's 15/s"

        c.send({"type": "keys", "keys": ["up", "right", "fire"]})
        wanted = BOXING.index("UPRIGHTFIRE")
        acting = [f["action"] == wanted for f in c.frames(8)]  # frames in flight keep the old action
        assert True in acting[:4] and all(acting[acting.index(True):]), acting
        stats = c.text("stats")
        while stats["fps"] is None:  # the readout needs a full second of frames; a quick server is there sooner
            stats = c.text("stats")
        assert stats["frame"] >= 8 and stats["fps"] > 0 and stats["latency_ms"] > 0

        c.send({"type": "reality", "on": True})
        reality = c.frames(2, kind=1)
        assert all((f["height"], f["width"], f["channels"]) == (64, 64, 3) for f in reality)  # colour
        assert reality[1]["index"] == reality[0]["index"] + 1 and reality[1]["action"] == wanted

        c.send({"type": "reset"})
        reset = c.text("reset")
        assert reset["seed"] > hello["seed"]
        first = c.frames(1)[0]
        while first["index"] != 0:  # frames produced before the reset was seen
            first = c.frames(1)[0]
        assert first["action"] == -1
        c.send({"type": "reality", "on": False})
        c.send({"type": "keys", "keys": []})
    finally:
        c.close()


def test_a_huge_message_closes_only_its_connection(server):
    c = open_session(server)
    try:
        c.send("x" * (WS_MAX_SIZE + 1))  # refused by the WebSocket layer before it is read
        with pytest.raises(Exception, match="1009"):
            c.text("never")
    finally:
        c.close()
    d = open_session(server)
    assert d.frames(1)
    d.close()


@pytest.mark.parametrize("message, error", [
    ("not json {", "not JSON"),
    ("x" * (MAX_MESSAGE_BYTES + 1), "too large"),
    (json.dumps({"type": "keys", "keys": ["up"], "pad": "x" * MAX_MESSAGE_BYTES}), "too large"),
    ({"type": "teleport"}, "unknown message type"),
    ({"type": "keys", "keys": ["jump"]}, "keys"),
    ({"type": "keys"}, "fields"),
    ({"type": "reality", "on": "yes"}, "true or false"),
    ([1, 2, 3], "JSON object"),
    (b"\x00\x01", "binary"),
    ("[" * 1000 + "]" * 1000, "nested too deeply"),  # 2 KB, under the size limit
    ('{"type": "keys", "keys": ' + "[" * 1500 + "]" * 1500 + "}", "nested too deeply"),
])
def test_bad_messages_get_an_error_and_play_goes_on(server, message, error, caplog):
    c = open_session(server)
    try:
        c.frames(1)
        with caplog.at_level(logging.WARNING, logger="magi.play"):
            c.send(message)
            reply = c.text("error")
        assert error in reply["error"]
        assert any("bad message" in r.getMessage() and error in r.getMessage() for r in caplog.records)
        before = c.frames(1)[0]["index"]
        assert c.frames(2)[-1]["index"] == before + 2  # frames keep coming
    finally:
        c.close()


def test_session_limit_and_disconnect_frees_the_slot(server):
    a, b = open_session(server), open_session(server)
    try:
        c = Client(server)
        assert c.next() == {"type": "busy", "max_sessions": 2}
        with pytest.raises(Exception):  # the server closes the busy connection
            c.next(timeout=10)
        b.close()
        d = open_session(server)
        assert d.frames(1)
        d.close()
        assert a.frames(1)  # the other session was not disturbed
    finally:
        a.close()


def test_other_origins_are_refused(server):
    with pytest.raises(Exception, match="403"):
        Client(server, origin="http://evil.example")


def _raw_handshake(url: str, host: str | None = None, origin: str | None = None,
                   receive_buffer: int | None = None) -> socket.socket:
    """A WebSocket handshake sent by hand on a plain socket, with any Host and Origin; nothing read."""
    address, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((address, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET /ws HTTP/1.1", f"Host: {host or f'{address}:{port}'}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"Origin: {origin}"] if origin else []
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _status_line(sock: socket.socket) -> str:
    sock.settimeout(10)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_a_foreign_host_header_is_refused(server, caplog):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends Host evil.example
    and a matching Origin. The page and the WebSocket are refused with 403; this server's names work."""
    port = server.rsplit(":", 1)[1]
    with caplog.at_level(logging.WARNING, logger="magi.play"):
        assert _get(server, "/", host=f"evil.example:{port}")[0] == 403
        sock = _raw_handshake(server, host=f"evil.example:{port}", origin=f"http://evil.example:{port}")
        assert _status_line(sock).split()[1] == "403"
        sock.close()
        assert _get(server, "/static/play.js", host="127.0.0.1.evil.example")[0] == 403
    assert any("evil.example" in r.getMessage() for r in caplog.records)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", "localhost."):
        assert _get(server, "/", host=host)[0] == 200, host
    sock = _raw_handshake(server, host=f"localhost:{port}", origin=f"http://localhost:{port}")
    assert _status_line(sock).split()[1] == "101"
    sock.close()


def test_which_host_names_a_server_answers():
    from magi.play.host_check import host_allowed, host_name

    assert host_name("[::1]:8000") == "::1" and host_name("Example.COM.:80") == "example.com"
    assert host_allowed("127.0.0.1:8000", "127.0.0.1") and host_allowed("localhost", "127.0.0.1")
    assert not host_allowed("192.168.1.5:8000", "127.0.0.1") and not host_allowed(None, "127.0.0.1")
    assert not host_allowed("", "127.0.0.1") and not host_allowed("[::1", "::1")
    assert host_allowed("[::1]:8000", "::1") and not host_allowed("evil.example", "::1")
    # bound to every interface: any IP literal (rebinding needs a name) and this machine's names
    assert host_allowed("192.168.1.5:8000", "0.0.0.0") and host_allowed("[fe80::1]:80", "::")
    assert host_allowed(socket.gethostname(), "0.0.0.0") and not host_allowed("evil.example", "0.0.0.0")
    assert host_allowed("box.lan:8000", "box.lan") and not host_allowed("evil.example", "box.lan")


def _wait_for_a_slot(url: str, timeout: float) -> tuple[Client, float]:
    """(a client that got a hello rather than "busy", the seconds that took)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        c = Client(url)
        first = c.next()
        if first["type"] == "hello":
            return c, time.monotonic() - start
        c.close()
        assert first["type"] == "busy"
        time.sleep(0.25)
    raise AssertionError(f"no slot freed within {timeout} s")


def test_clients_that_never_read_lose_their_slots(world):
    """Two clients that shake hands and then never read hold both slots; uvicorn's keepalive (a ping
    every PING_INTERVAL_S, its pong due within PING_TIMEOUT_S) drops them, and the next player gets in."""
    app = create_app(world, FAST, max_sessions=2)
    with BackgroundServer(app) as url:
        hogs = [_raw_handshake(url) for _ in range(2)]
        assert all(_status_line(h).split()[1] == "101" for h in hogs)
        for _ in range(100):
            if app.state.sessions["active"] == 2:
                break
            time.sleep(0.05)
        player, waited = _wait_for_a_slot(url, timeout=PING_INTERVAL_S + PING_TIMEOUT_S + 10)
        assert player.frames(2)
        player.close()
        print(f"\nclients that never read held the slots for {waited:.1f} s")
        assert waited <= PING_INTERVAL_S + PING_TIMEOUT_S + 3
        for h in hogs:
            h.close()


def test_a_stalled_send_ends_the_session(world, caplog):
    """A client that stopped reading fills the socket's buffers (here fast: frames as fast as the model
    makes them, a 1 KB receive buffer) and the next send stalls: after the send timeout the session
    ends and its slot is free, long before the keepalive would notice."""
    app = create_app(world, FAST, max_sessions=1, fps_cap=1000, send_timeout=1.0)
    with BackgroundServer(app) as url, caplog.at_level(logging.WARNING, logger="magi.play"):
        hog = _raw_handshake(url, receive_buffer=1024)
        player, waited = _wait_for_a_slot(url, timeout=PING_INTERVAL_S + PING_TIMEOUT_S - 1)
        player.close()
        hog.close()
    assert any("waited 1 s to be sent" in r.getMessage() for r in caplog.records), caplog.text
    print(f"\nslot freed {waited:.1f} s after a client stopped reading (send timeout 1 s)")


def test_an_idle_session_ends_and_frees_its_slot(world):
    app = create_app(world, FAST, max_sessions=1, idle_limit=2.0)
    with BackgroundServer(app) as url:
        start = time.monotonic()
        c = Client(url)
        assert c.text("hello")["idle_limit"] == 2.0
        assert c.text("idle", timeout=20) == {"type": "idle", "seconds": 2.0}
        assert 2.0 <= time.monotonic() - start < 10
        with pytest.raises(Exception, match="1000"):
            while True:
                c.next(timeout=10)
        c.close()
        d, waited = _wait_for_a_slot(url, timeout=20)
        assert waited < 10
        d.send({"type": "keys", "keys": ["up"]})  # a key held down is play, however long it is held
        held = time.monotonic()
        while time.monotonic() - held < 4:  # twice the limit
            d.next()
        assert not any(m.get("type") == "idle" for m in d.texts), d.texts
        d.send({"type": "keys", "keys": []})
        assert d.text("idle", timeout=20)["seconds"] == 2.0
        d.close()


class ShortEpisodes(Emulators):
    """Emulators whose episodes end (truncate) after `frames` steps, as Boxing's do after ~1,786."""

    def __init__(self, game: str, frameskip: int, frames: int) -> None:
        super().__init__(game, frameskip, keep=0)
        self.frames = frames

    def take(self):
        from gymnasium.wrappers import TimeLimit

        return TimeLimit(super().take(), max_episode_steps=self.frames)


def test_the_reality_pane_says_when_its_episode_ended(world):
    app = create_app(world, FAST, emulators=ShortEpisodes(world.game, world.frameskip, frames=20))
    with BackgroundServer(app) as url:
        c = Client(url)
        try:
            c.text("hello")
            c.send({"type": "reality", "on": True})
            deadline = time.monotonic() + 30
            while True:  # reality frames while the episode lasts, then stats saying where it ended
                m = c.next()
                if m.get("type") == "stats" and m["reality_over"]:
                    break
                assert time.monotonic() < deadline
            end = m["reality_over_at"]
            assert end == 20, m  # the opening's NOOP and 19 steps under the keys: the 20th ended it
            later = [c.next() for _ in range(30)]
            model = [f["index"] for f in later if f.get("kind") == 0]
            assert model and all(i > end for i in model)  # the model plays on
            assert not any(f.get("kind") == 1 for f in later)  # the pane is not fed a frozen frame
            c.send({"type": "reset"})
            reset = c.text("reset")
            while (m := c.text("stats"))["seed"] != reset["seed"]:
                pass
            assert m["frame"] < 20 and m["reality_over"] is False and m["reality_over_at"] is None
            assert c.frames(1, kind=1)[0]["index"] < 20  # reality again, from the new episode
        finally:
            c.close()


def test_the_page_is_told_what_the_model_sees(world, tmp_path):
    assert world.sees["colour"] == "gray" and world.sees["latent"] == [16, 16, 16]
    assert "64x64 gray" in world.sees["text"] and "pixels:4:gray" in world.sees["text"]
    colour = load_world(tiny_world_model(tmp_path / "colour", vae="pixels:4"))
    assert colour.sees["colour"] == "colour" and colour.sees["latent"] == [48, 16, 16]
    assert "64x64 colour" in colour.sees["text"]
    with BackgroundServer(create_app(colour, FAST)) as url:
        c = Client(url)
        assert c.text("hello")["sees"] == colour.sees
        assert c.frames(3)[-1]["channels"] == 3  # the model pane is colour too
        c.close()


def test_the_frame_rate_spans_at_least_a_second():
    rate = Rate()
    rate.add(30.0, now=0.0)
    rate.add(30.0, now=0.001)  # two frames arriving together at the start
    assert rate.fps() is None
    rate.add(30.0, now=0.9)
    assert rate.fps() is None  # 0.9 s is not yet a second
    for k in range(15, 31):  # then 15 frames/s for a second
        rate.add(30.0, now=k / 15)
    assert rate.fps() == pytest.approx(15.0)
    assert rate.events[-1][0] - rate.events[0][0] >= 1.0


def _get(url: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    address, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(address, int(port), timeout=10)
    conn.putrequest("GET", path, skip_host=host is not None, skip_accept_encoding=True)  # sent as is
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def test_only_the_page_and_its_assets_are_served(server):
    status, body = _get(server, "/")
    assert status == 200 and b"/static/play.js" in body
    assert _get(server, "/static/play.js")[0] == 200 and _get(server, "/static/play.css")[0] == 200
    for path in ["/../pyproject.toml", "/magi/cli.py", "/static/", "/static/../server.py",
                 "/static/session.py", "/static/%2e%2e/server.py", "/index.html", "/etc/passwd", "/ws/x"]:
        assert _get(server, path)[0] == 404, path


def test_a_failing_model_ends_its_session_with_an_error(tmp_path):
    world = load_world(tiny_world_model(tmp_path / "model"))

    def broken(*args, **kwargs):
        raise RuntimeError("boom")
        yield  # a generator, like Magi.stream

    world.ckpt.model.stream = broken  # this instance only
    app = create_app(world, FAST)
    with BackgroundServer(app) as url:
        c = Client(url)
        c.text("hello")
        assert [f["index"] for f in c.frames(world.context_frames)] == [0, 1]  # the real opening
        assert c.text("error")["error"] == "generation failed: RuntimeError: boom"
        with pytest.raises(Exception, match="1011"):
            c.next()
        c.close()
        for _ in range(100):
            if app.state.sessions["active"] == 0:
                break
            time.sleep(0.02)
        assert app.state.sessions["active"] == 0


# --------------------------------------------------------------------------------------------------
# Memory over many sessions


def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no way to read resident memory here")


def test_a_late_frame_is_made_up_by_the_next_so_the_rate_holds_the_cap(world, monkeypatch):
    """Frames alternately slower (70 ms) and faster (10 ms) than the 50 ms period of a 20 frames/s cap:
    on a fixed schedule the fast ones make up for the slow, so 20 frames/s arrive, never more
    (waiting a full period after each frame's start would give ~17). Generated frames of the session,
    replayed (past the episode's start, which owes nothing), so only the sleeps take time."""
    from magi.play.session import PlaySession

    produce, made = PlaySession.next_frame, []

    def uneven(self):
        if len(made) < 5:  # the opening (0, 1), the first generated frame (2) and two more
            made.append(produce(self))
            return made[-1]
        made.append(made[len(made) % 2 + 3])  # frames 3 and 4 in turn
        time.sleep(0.070 if len(made) % 2 else 0.010)
        return made[-1]

    monkeypatch.setattr(PlaySession, "next_frame", uneven)
    with BackgroundServer(create_app(world, FAST, max_sessions=1, fps_cap=20)) as url:
        c = Client(url)
        assert c.next()["type"] == "hello"
        c.frames(5)
        times = []
        for _ in range(41):
            c.frames(1)
            times.append(time.perf_counter())
        c.close()
    rate = 40 / (times[-1] - times[0])
    assert 18.8 < rate < 20.8, f"{rate:.1f} frames/s for a cap of 20"


def test_memory_stays_flat_over_50_sessions(world):
    k = world.context_frames
    app = create_app(world, FAST, max_sessions=1, fps_cap=1000)
    with BackgroundServer(app) as url:

        def cycle():
            c = None
            for _ in range(200):  # the previous session may still be closing: retry on busy
                c = Client(url)
                if c.next()["type"] == "hello":
                    break
                c.close()
                time.sleep(0.01)
            assert c.frames(k + 1)[-1]["index"] == k  # the model generated a frame
            c.close()

        for _ in range(5):  # warm-up: allocator pools, the emulator pool, torch's caches
            cycle()
        gc.collect()
        before = _rss_mb()
        start = time.perf_counter()
        for _ in range(50):
            cycle()
        elapsed = time.perf_counter() - start
        for _ in range(200):  # every session was freed
            if app.state.sessions["active"] == 0:
                break
            time.sleep(0.02)
        assert app.state.sessions["active"] == 0
        gc.collect()
        after = _rss_mb()
    assert after - before < 30, (f"resident memory grew {after - before:.1f} MB over 50 sessions "
                                 f"({before:.1f} -> {after:.1f} MB)")
    print(f"\nRSS over 50 sessions: {before:.1f} -> {after:.1f} MB ({after - before:+.1f} MB), "
          f"{elapsed / 50 * 1000:.0f} ms per connect/play/disconnect")


# --------------------------------------------------------------------------------------------------
# The command line


def _run_main(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def test_missing_default_model_says_how_to_build_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = _run_main(capsys)
    assert code == 2 and "pretrained/atari/config.json" in err and "magi train" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_models_that_cannot_be_played_stop_the_server(tmp_path, capsys):
    code, err = _run_main(capsys, "--model", str(tmp_path / "nowhere"))
    assert code == 2 and str(tmp_path / "nowhere" / "config.json") in err and err.count("\n") == 1

    still = tiny_world_model(tmp_path / "no_actions", num_actions=0)
    code, err = _run_main(capsys, "--model", str(still))
    assert code == 2 and str(still / "config.json") in err and "not action-conditioned" in err

    corrupt = tiny_world_model(tmp_path / "corrupt")
    weights = next(p for p in corrupt.glob("*.safetensors"))
    weights.write_bytes(b"\x00" * 100)
    code, err = _run_main(capsys, "--model", str(corrupt))
    assert code == 2 and str(weights) in err and err.count("\n") == 1

    no_game = tiny_world_model(tmp_path / "no_game")
    (no_game / "train_config.yaml").write_text(yaml.safe_dump({"vae": {"spec": "pixels:4:gray"}}))
    code, err = _run_main(capsys, "--model", str(no_game))
    assert code == 2 and str(no_game / "train_config.yaml") in err

    bad_json = tiny_world_model(tmp_path / "bad_json")
    (bad_json / "config.json").write_text("{")
    code, err = _run_main(capsys, "--model", str(bad_json))
    assert code == 2 and str(bad_json / "config.json") in err


def test_the_benchmarked_setting_travels_with_the_model(tmp_path, capsys):
    from magi.play.server import DEFAULT_SETTING, benchmarked_setting, play_setting

    model = tiny_world_model(tmp_path / "m")
    assert benchmarked_setting(model) == {}
    assert play_setting(model) == (DEFAULT_SETTING, None)
    (model / "play.json").write_text(json.dumps({"setting": "m2-d5", "mask_steps": 2, "diffusion_steps": 5,
                                                 "sampler": "ddim", "threads": 2, "fps": 21.0}))
    assert benchmarked_setting(model) == {"mask_steps": 2, "diffusion_steps": 5, "sampler": "ddim", "threads": 2}
    setting, threads = play_setting(model)
    assert (setting.mask_steps, setting.diffusion_steps, setting.sampler, threads) == (2, 5, "ddim", 2)
    setting, threads = play_setting(model, mask_steps=4, threads=1)  # flags win over play.json
    assert (setting.mask_steps, setting.diffusion_steps, threads) == (4, 5, 1)
    assert setting.window is None  # the model's training length
    (model / "play.json").write_text(json.dumps({"mask_steps": 1, "diffusion_steps": 5, "window": 2}))
    assert play_setting(model)[0].window == 2 and play_setting(model, window=3)[0].window == 3
    code, err = _run_main(capsys, "--model", str(model), "--window", "9")  # longer than it was trained on
    assert code == 2 and err.startswith("magi play: window: 9 frames, more than the") and err.count("\n") == 1
    assert play_setting(model)[0].compile is False
    (model / "play.json").write_text(json.dumps({"mask_steps": 1, "diffusion_steps": 5, "compile": True}))
    assert play_setting(model)[0].compile is True and play_setting(model, compile=False)[0].compile is False
    assert play_setting(model)[0].cfg == 1.0  # no action guidance unless play.json or --cfg asks
    (model / "play.json").write_text(json.dumps({"mask_steps": 1, "diffusion_steps": 5, "cfg": 2.0}))
    assert play_setting(model)[0].cfg == 2.0 and play_setting(model, cfg=1.5)[0].cfg == 1.5
    for bad in ({"cfg": "strong"}, {"mask_steps": 1.5}, {"compile": 1}, [1]):  # named, with what was expected
        (model / "play.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="play.json"):
            play_setting(model)
    (model / "play.json").write_text("{")
    code, err = _run_main(capsys, "--model", str(model))
    assert code == 2 and str(model / "play.json") in err and err.count("\n") == 1


def test_a_model_whose_compilation_fails_plays_eager_and_says_so(world, monkeypatch, caplog):
    """`compile` where torch.compile cannot work (here: it raises, as without a C++ compiler): the
    model goes back to eager, the warning names the failure, and the game still draws its frames."""
    from magi.play.session import compile_world

    def broken(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("InductorError: no working C++ compiler found")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    options = dataclasses.replace(FAST, compile=True)
    with caplog.at_level("WARNING", logger="magi.play"):
        assert compile_world(world, options, logging.getLogger("magi.play")) is False
    assert "torch.compile failed (RuntimeError: InductorError: no working C++ compiler" in caplog.text
    assert world.ckpt.model.head._compiled_ddim is None  # eager again
    session = PlaySession(world, options, SeedSource())
    try:
        frames = [session.next_frame() for _ in range(world.context_frames + 2)]
    finally:
        session.close()
    assert frames[-1].image.shape == (3, 64, 64) and frames[-1].latency_ms > 0


@pytest.mark.parametrize("flags, named", [
    (["--port", "70000"], "--port"), (["--port", "-1"], "--port"), (["--port", "0"], "--port"),
    (["--port", "http"], "--port"), (["--temperature", "nan"], "--temperature"),
    (["--temperature", "inf"], "--temperature"), (["--idle-limit", "nan"], "--idle-limit"),
    (["--idle-limit", "0"], "--idle-limit"), (["--max-sessions", "0"], "--max-sessions"),
    (["--mask-steps", "-3"], "--mask-steps"), (["--threads", "0"], "--threads"), (["--window", "1"], "--window"),
])
def test_bad_flags_stop_in_one_line(tmp_path, capsys, flags, named):
    model = tiny_world_model(tmp_path / "m")
    with pytest.raises(SystemExit) as stop:
        main(["--model", str(model), *flags])
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and err.startswith(f"magi play: argument {named}") and err.count("\n") == 1
    assert "Traceback" not in err and "open http" not in out


def test_a_port_that_cannot_be_bound_stops_before_open_is_printed(tmp_path, capsys):
    model = tiny_world_model(tmp_path / "m")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        code = main(["--model", str(model), "--port", str(port)])
    finally:
        taken.close()
    out, err = capsys.readouterr()
    assert code == 2 and err == f"magi play: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert "open http" not in out
    code = main(["--model", str(model), "--host", "no-such-host.invalid"])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("magi play: cannot listen on no-such-host.invalid:8000: ")
    assert err.count("\n") == 1 and "open http" not in out


def test_the_benchmark_picks_the_fastest_good_setting_and_one_even_on_a_slow_cpu():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "play.py"
    spec = importlib.util.spec_from_file_location("benchmark_play", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [{"setting": "slow-good", "fps": 16.0, "player_error_first8_px": 1.5},
            {"setting": "fast-good", "fps": 20.0, "player_error_first8_px": 1.9},
            {"setting": "fastest-bad", "fps": 30.0, "player_error_first8_px": 2.1}]
    assert bench.choose(rows)["setting"] == "fast-good"  # within 0.5 px of the best, and the fastest
    slow = [{**r, "fps": r["fps"] / 3} for r in rows]  # a CPU three times slower: none reaches 15
    assert bench.choose(slow)["setting"] == "fast-good" and bench.choose([]) is None


def test_a_model_trained_in_the_hud_layout_is_played_in_it(tmp_path):
    """The frame layout travels in the run config: the session's real frames (the opening the model
    reads, the reality pane) are drawn in it, and a layout that cannot be is refused naming the file."""
    from magi.play.session import ModelLoadError, PlaySession, SeedSource, make_env
    from magi.world.atari import resize_frame

    world = load_world(tiny_world_model(tmp_path / "hud", vae="pixels:4", layout="hud"))
    assert world.layout == "hud"
    session = PlaySession(world, FAST, SeedSource(), reality=True)
    frames = [session.next_frame() for _ in range(world.context_frames)]
    session.close()
    env = make_env(world.game, world.frameskip)
    obs, _ = env.reset(seed=frames[0].seed)
    env.close()
    np.testing.assert_array_equal(frames[0].reality, resize_frame(obs, 64, "hud"))
    assert not np.array_equal(frames[0].reality, resize_frame(obs, 64))  # the strip differs from the screen
    with pytest.raises(ModelLoadError, match="train_config.yaml.*layout"):
        load_world(tiny_world_model(tmp_path / "pong", game="Pong", layout="hud"))


def test_the_lagged_hud_layout_draws_each_real_frame_with_the_strip_of_the_one_before(tmp_path):
    """hud_lag in play: the opening and the reality pane draw frame t's score strip from screen t - 1, as the
    recordings did, over the opening's NOOPs and the played keys alike."""
    from magi.play.session import PlaySession, SeedSource, make_env
    from magi.world.atari import HUD_ROWS, resize_frame

    world = load_world(tiny_world_model(tmp_path / "lag", vae="pixels:4", layout="hud_lag"))
    session = PlaySession(world, FAST, SeedSource(), reality=True)
    session.action = 1  # FIRE held
    frames = [session.next_frame() for _ in range(world.context_frames + 3)]
    session.close()
    env = make_env(world.game, world.frameskip)
    obs, _ = env.reset(seed=frames[0].seed)
    screens = [obs]
    for f in frames[1:]:
        obs, *_ = env.step(f.action)
        screens.append(obs)
    env.close()
    assert [f.action for f in frames[world.context_frames:]] == [1, 1, 1]
    np.testing.assert_array_equal(frames[0].reality, resize_frame(screens[0], 64, "hud"))
    for t in range(1, len(frames)):
        np.testing.assert_array_equal(frames[t].reality, resize_frame(screens[t], 64, "hud_lag", screens[t - 1]))
        np.testing.assert_array_equal(frames[t].reality[:, :HUD_ROWS], resize_frame(screens[t - 1], 64, "hud")[:, :HUD_ROWS])
