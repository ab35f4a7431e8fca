"""`magi play --engine onnx` end to end (docs/export.md): the command itself, in its own process, on a tiny model: at
start it exports the play setting to ONNX into a temporary folder, says it runs onnxruntime, serves the page,
plays frames over the WebSocket with the held key applied, and removes the folder when it stops. (The other
play tests build the app in-process with `create_app`.)"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from test_play import BOXING, open_session, tiny_world_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_magi_play_engine_onnx_starts_and_plays(tmp_path):
    model = tiny_world_model(tmp_path / "model")
    (model / "play.json").write_text('{"mask_steps": 1, "diffusion_steps": 2, "sampler": "ddim", "window": 3}')
    temp = tmp_path / "tmp"  # where magi play exports its graphs (TMPDIR), to see them made and removed
    temp.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(temp), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "magi.cli", "play", "--model", str(model), "--engine", "onnx",
               "--threads", "1", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        while not any("open http://" in line for line in lines):
            assert proc.poll() is None, f"magi play exited {proc.returncode}: {''.join(lines)}"
            assert time.monotonic() - started < 180, f"magi play did not start in 180 s: {''.join(lines)}"
            time.sleep(0.1)
        startup_s = time.monotonic() - started
        out = "".join(lines)
        assert "onnxruntime" in out and "1 mask x 2 diffusion steps, a window of 3 frames, 1 thread" in out, out
        exported = list(temp.glob("magi-play-onnx-*"))
        assert len(exported) == 1 and {p.name for p in exported[0].iterdir()} >= {
            "context.onnx", "frame.onnx", "decoder.onnx", "manifest.json"}

        client = open_session(f"http://127.0.0.1:{port}")
        try:
            hello = client.texts[0]
            assert hello["setting"]["engine"] == "onnx" and hello["setting"]["threads"] == 1
            assert hello["setting"]["mask_steps"] == 1 and hello["setting"]["diffusion_steps"] == 2
            frames = client.frames(6)
            assert [f["index"] for f in frames] == list(range(6))
            assert all(f["pixels"].shape == (64, 64, 1) and f["pixels"].dtype == np.uint8 for f in frames)
            client.send({"type": "keys", "keys": ["right"]})
            assert any(f["action"] == BOXING.index("RIGHT") for f in client.frames(12)), "the key never applied"
        finally:
            client.close()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl+C, as the page says
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    assert proc.returncode == 130 and "interrupted (Ctrl+C)" in "".join(lines), "".join(lines)
    assert not list(temp.glob("magi-play-onnx-*")), "the exported graphs were left behind"
    print(f"\nmagi play --engine onnx: serving after {startup_s:.1f} s (export included)")
    shutil.rmtree(temp, ignore_errors=True)
