"""`magi export`: a world model for other runtimes (docs/export.md).

    magi export onnx MODEL --out DIR   the play setting's graphs + manifest.json (magi.export.onnx)
    magi export web MODEL --out DIR    a static page that plays the model in the browser (magi.export.web)

The sampler setting is the one `magi play` uses for MODEL (its play.json), unless given.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

from magi.errors import ArgumentParser, number


def _setting_arguments(p) -> None:
    p.add_argument("model", help="run or checkpoint directory of an action-conditioned model (e.g. pretrained/atari)")
    p.add_argument("--out", required=True, help="folder to write (created; files in it are replaced)")
    p.add_argument("--mask-steps", type=number(int, low=1), help="default: the model's play.json")
    p.add_argument("--diffusion-steps", type=number(int, low=1), help="default: the model's play.json")
    p.add_argument("--window", type=number(int, low=2), metavar="FRAMES",
                   help="frames the sliding window holds, the new one included (default: the model's play.json, "
                   "else its training length)")
    p.add_argument("--temperature", type=number(float, above=0), default=1.0,
                   help="scales the noise (recorded in the manifest; the page and the engine apply it)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = ArgumentParser(prog="magi export", description="Export a world model for other runtimes.")
    sub = parser.add_subparsers(dest="what", required=True)
    p_onnx = sub.add_parser("onnx", help="the play setting's per-frame graphs and a manifest, for onnxruntime")
    _setting_arguments(p_onnx)
    p_onnx.add_argument("--openings", type=number(int, low=0), default=0,
                        help="held-out real openings (emulator seeds from play's first) to include (default 0)")
    p_web = sub.add_parser("web", help="a static page that runs the model in the browser (onnxruntime-web)")
    _setting_arguments(p_web)
    p_web.add_argument("--openings", type=number(int, low=1), default=4,
                       help="held-out real openings the page starts from (default 4)")
    p_web.add_argument("--weights", choices=["fp16", "fp32"], default="fp16",
                       help="how the graphs store their weights: fp16 halves the download (default), fp32 is exact")
    p_web.add_argument("--ort-dir", default=None,
                       help="folder holding onnxruntime-web's dist files (default: the project's web/node_modules, "
                       "installed by `npm ci --prefix web`)")
    args = parser.parse_args(argv)

    import torch

    from magi.play.server import play_setting
    from magi.play.session import ModelLoadError, load_world

    torch.set_num_threads(1)
    prog = f"magi export {args.what}"
    try:
        options, _ = play_setting(Path(args.model), args.mask_steps, args.diffusion_steps, "ddim",
                                  args.temperature, None, args.window, False, 1.0)
        options.validate()
        world = load_world(args.model)
    except (ValueError, ModelLoadError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        if args.what == "onnx":
            from magi.export.onnx import export_onnx

            record = export_onnx(world, options, Path(args.out), openings=args.openings)
        else:
            from magi.export.web import export_web

            record = export_web(world, options, Path(args.out), openings=args.openings,
                                ort_dir=Path(args.ort_dir) if args.ort_dir else None, weights=args.weights)
    except (ValueError, FileNotFoundError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    s = record["setting"]
    sizes = ", ".join(f"{g['file']} {g['bytes'] / 1e6:.1f} MB" for g in record["graphs"].values())
    print(f"{prog}: {world.game} world model {world.ckpt.path} at {s['mask_steps']} mask x {s['diffusion_steps']} "
          f"DDIM steps, a window of {s['window']} -> {args.out} ({sizes}; {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
