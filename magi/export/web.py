"""`magi export web MODEL --out DIR`: a folder any static host serves, where the world model runs in the
page itself (onnxruntime-web; docs/export.md). `make web` writes site/ for the shipped model.

DIR/index.html, play.js, play.css   the page (magi/export/page/)
DIR/manifest.json, *.onnx           `magi export onnx`'s graphs and manifest
DIR/openings/                       a few held-out real openings (emulator seeds from play's first)
DIR/ort/                            onnxruntime-web's files, from the npm package pinned in web/package-lock.json
DIR/_headers                        COOP/COEP for hosts that read it (Netlify, Cloudflare Pages): threads

Threads in the page need cross-origin isolation (COOP same-origin + COEP require-corp); `magi serve-web DIR`
sends both. Without them the page runs one WASM thread and says so.

`page_noise` mirrors the page's PRNG (mulberry32 + Box-Muller), so a test can feed PyTorch the noise the
page drew in its deterministic mode (`?seed=N`).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from magi.export.onnx import MANIFEST, export_onnx

PAGE = Path(__file__).parent / "page"
PAGE_FILES = ("index.html", "play.js", "play.css")
REPO_WEB = Path(__file__).resolve().parent.parent.parent / "web"  # package.json + package-lock.json
ORT_FILES = {  # what the page loads: WASM (SIMD, threaded when isolated), and WebGPU where there is an adapter
    "wasm": ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"),
    "webgpu": ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm"),
}
HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


def ort_dist(ort_dir: Optional[Path] = None) -> Path:
    """onnxruntime-web's dist folder: `ort_dir`, else web/node_modules/onnxruntime-web/dist (`npm ci --prefix web`)."""
    folder = Path(ort_dir) if ort_dir else REPO_WEB / "node_modules" / "onnxruntime-web" / "dist"
    missing = [f for files in ORT_FILES.values() for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: onnxruntime-web's {', '.join(missing)} not found; install the pinned "
                                f"package with `npm ci --prefix {REPO_WEB}` (or pass --ort-dir)")
    return folder


def ort_version(folder: Path) -> Optional[str]:
    package = folder.parent / "package.json"
    return json.loads(package.read_text()).get("version") if package.is_file() else None


def store_half(path: Path) -> None:
    """Store a graph's float32 weights (initializers of >= 1,024 values) as float16, each followed by a Cast
    back to float32 under its old name: half the download; onnxruntime folds the casts when it loads the
    graph, so it computes in float32 with weights rounded to float16."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    kept, casts = [], []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= 1024:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "__fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(path))


def export_web(world, options, out: Path, openings: int = 4, ort_dir: Optional[Path] = None,
               weights: str = "fp16") -> dict:
    """Write the page folder for `world`'s model at `options`; -> its manifest. `weights`: "fp16" stores
    the graphs' weights in half precision (the download halves; frames move by rounding, see docs/export.md),
    "fp32" keeps them exact (the page then plays PyTorch's frames to float rounding)."""
    import hashlib

    if weights not in ("fp16", "fp32"):
        raise ValueError(f"weights: expected 'fp16' or 'fp32', got {weights!r}")
    dist = ort_dist(ort_dir)  # before anything is written: a missing package fails first
    out = Path(out)
    record = export_onnx(world, options, out, openings=openings)
    if weights == "fp16":
        for entry in record["graphs"].values():
            path = out / entry["file"]
            store_half(path)
            entry.update(bytes=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    record["weights"] = weights
    for name in PAGE_FILES:
        shutil.copyfile(PAGE / name, out / name)
    (out / "ort").mkdir(exist_ok=True)
    for files in ORT_FILES.values():
        for name in files:
            shutil.copyfile(dist / name, out / "ort" / name)
    (out / "_headers").write_text("/*\n" + "".join(f"  {k}: {v}\n" for k, v in HEADERS.items()))
    record["web"] = {"onnxruntime_web": ort_version(dist), "files": sorted(str(p.relative_to(out)) for p in out.rglob("*")
                                                                            if p.is_file()),
                     "download": download_sizes(out)}
    (out / MANIFEST).write_text(json.dumps(record, indent=1) + "\n")
    return record


def download_sizes(out: Path) -> dict:
    """Bytes a visitor downloads, raw and gzip-compressed (level 6, what static hosts send), for WASM and
    for WebGPU (each loads only its own onnxruntime files; every opening counted, the page fetches one
    per start)."""
    import gzip

    def size(paths) -> tuple[int, int]:
        raw = comp = 0
        for p in paths:
            data = p.read_bytes()
            raw, comp = raw + len(data), comp + len(gzip.compress(data, 6))
        return raw, comp

    base = [p for p in out.rglob("*") if p.is_file() and p.parent.name != "ort" and p.name != "_headers"]
    result = {}
    for runtime, files in ORT_FILES.items():
        raw, comp = size(base + [out / "ort" / f for f in files])
        result[runtime] = {"bytes": raw, "gzip_bytes": comp}
    return result


class Mulberry32:
    """The page's uniform PRNG (play.js `mulberry32`), bit for bit: floats in [0, 1)."""

    def __init__(self, seed: int) -> None:
        self.a = seed & 0xFFFFFFFF

    def __call__(self) -> float:
        M = 0xFFFFFFFF
        self.a = (self.a + 0x6D2B79F5) & M
        a = self.a
        t = _imul(a ^ (a >> 15), 1 | a)
        t = ((t + _imul(t ^ (t >> 7), 61 | t)) & M) ^ t
        return ((t ^ (t >> 14)) & M) / 4294967296


def _imul(a: int, b: int) -> int:
    return (a * b) & 0xFFFFFFFF


def page_noise(uniform: Mulberry32, mask_steps: int, tokens: int, token_dim: int, temperature: float = 1.0,
               rank: bool = False) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """One frame's (noise (S, N, P) float32, rank (N,) int64 or None) exactly as play.js `noise()` draws it."""
    ranks = None
    if rank:
        keys = [uniform() for _ in range(tokens)]
        order = sorted(range(tokens), key=lambda i: keys[i])
        ranks = np.empty(tokens, np.int64)
        ranks[order] = np.arange(tokens)
    values = np.empty(mask_steps * tokens * token_dim, np.float32)
    for i in range(values.size):
        u1, u2 = 1 - uniform(), uniform()
        values[i] = math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2) * temperature
    return values.reshape(mask_steps, tokens, token_dim), ranks
