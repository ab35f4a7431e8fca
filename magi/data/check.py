"""`magi data check ROOT [--json FILE]`: find every file of a dataset that training would skip.

Each file under ROOT is opened and (unless --quick) fully decoded; a file is bad when it is empty, is
not a video, cannot be opened, fails while decoding, or decodes to far fewer frames than its header
claims (truncated); an image, a GIF or an audio file is named as such. Good videos shorter than one
clip (--num-frames at --interval) are counted as too short, and those whose frames are smaller than
--size listed (training upscales them). The defaults are what `magi train --data` uses on this
machine (8 frames at 16 px on a CPU). For dynamic intervals it also reports, for each interval 1..--max-interval, how many good
videos hold a clip of --num-frames frames at it, and what one epoch (seed 0, epoch 0) trains under each
dynamic-interval rule (`interval_sampling` video_first, interval_first, capped), the three shares side
by side: per interval, per video (draws per epoch, never drawn) and per class (the top-level folder).
Caption metadata files (`metadata.jsonl` / `metadata.csv`, `magi.data.video.read_captions`) are read,
not checked as videos: their bad rows and the good videos no row captions are reported under `captions`.
Prints a summary; the JSON report is `{"root", "total", "good", "too_short", "bad": [{"path", "error"}],
"too_short_paths", "size", "smaller": [{"path", "height", "width"}], "frames", "intervals": {"num_frames", "holders", "rules": {rule: {"per_interval",
"per_video", "per_class"}}}, "captions"}` (`magi.data.clips.rule_shares`); `captions` is null for a folder
without metadata, else `{"files", "captioned", "uncaptioned": [path], "bad": [{"path", "line", "error"}]}`
(paths relative to ROOT, lines 1-based; training skips the bad rows and the uncaptioned videos).
Exit status 1 when any file is bad or any caption row is bad.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from magi.data.clips import MAX_INTERVAL, clip_span, describe_shares, rule_shares
from magi.data.decode import VIDEO_EXTENSIONS, VideoError, not_a_video, open_video, probe
from magi.data.video import find_metadata, read_captions

TRUNCATION_TOLERANCE = 0.9  # decoding fewer than 90% of the header's frames means the file is cut short


def check_file(path: Path, quick: bool = False) -> tuple[int | None, str | None, tuple[int, int] | None]:
    """(frames, None, (H, W)) for a good video, (None, error, None) for a bad file."""
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        return None, not_a_video(path), None
    try:
        info = probe(path)
    except VideoError as e:
        return None, e.reason, None
    shape = (info.height, info.width)
    if quick:
        return info.num_frames, None, shape
    container = open_video(path)
    decoded = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            decoded += 1
    except Exception as e:  # noqa: BLE001 - any decoder failure makes the file bad
        return None, f"decoding failed after {decoded} frames ({type(e).__name__}: {e})", None
    finally:
        container.close()
    if decoded == 0:
        return None, "no decodable frames", None
    if decoded < TRUNCATION_TOLERANCE * info.num_frames:
        return None, f"truncated: decoded {decoded} of the {info.num_frames} frames its header lists", None
    return decoded, None, shape


def check_folder(root, num_frames: int = 16, interval: int = 1, quick: bool = False, workers: int = 2,
                 progress: bool = True, max_interval: int = MAX_INTERVAL, size: int | None = None) -> dict:
    """Scan every file under `root`; the report described in the module docstring."""
    from tqdm.auto import tqdm

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ROOT: folder not found: {root}" if not root.exists()
                                else f"ROOT: {root} is a file; expected the dataset's folder")
    metadata = find_metadata(root)  # read as captions below, not checked as videos
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and p not in metadata)
    need = clip_span(num_frames, interval)
    report: dict = {"root": str(root), "total": len(files), "good": 0, "too_short": 0, "bad": [],
                    "too_short_paths": [], "clip": {"num_frames": num_frames, "interval": interval},
                    "quick": quick, "size": size, "smaller": []}
    lengths, classes, good = [], [], []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(lambda p: (p, *check_file(p, quick)), files)
        for path, frames, error, shape in tqdm(results, total=len(files), desc=f"checking {root.name}",
                                               unit="file", disable=not progress):
            rel = str(path.relative_to(root))
            if error is not None:
                report["bad"].append({"path": rel, "error": error})
                continue
            report["good"] += 1
            good.append(rel)
            if size is not None and min(shape) < size:  # upscaled to the model's input: no detail there
                report["smaller"].append({"path": rel, "height": shape[0], "width": shape[1]})
            lengths.append(frames)
            classes.append(Path(rel).parts[0] if len(Path(rel).parts) > 1 else "")
            if frames < need:
                report["too_short"] += 1
                report["too_short_paths"].append(rel)
    if lengths:
        ordered = sorted(lengths)
        report["frames"] = {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]}
    report["smaller"].sort(key=lambda e: (min(e["height"], e["width"]), e["path"]))
    names = sorted(set(classes))
    report["classes"] = names
    report["intervals"] = rule_shares(lengths, num_frames, max_interval, labels=[names.index(c) for c in classes])
    report["captions"] = None
    if metadata:
        videos = [str(p.relative_to(root)) for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
        table = read_captions(root, videos)
        report["captions"] = {"files": table.files, "captioned": sum(rel in table.by_path for rel in good),
                              "uncaptioned": [rel for rel in good if rel not in table.by_path], "bad": table.bad}
    return report


def main(argv: list[str] | None = None) -> int:
    from magi.errors import USER_ERRORS, ArgumentParser, fail

    parser = ArgumentParser(prog="magi data", description="dataset tools")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="scan a dataset folder for bad and too-short videos")
    check.add_argument("root", help="dataset root folder")
    check.add_argument("--json", metavar="FILE", help="write the report as JSON")
    check.add_argument("--num-frames", type=int, default=None,
                       help="clip length for the too-short count (default: what magi train --data uses on "
                       "this machine: 8 frames on a CPU, 16 on a GPU)")
    check.add_argument("--size", type=int, default=None,
                       help="the model's frame size: videos with a smaller side are listed (default: magi train "
                       "--data's, 16 px on a CPU, 32 on a GPU)")
    check.add_argument("--interval", type=int, default=1, help="clip interval for the too-short count")
    check.add_argument("--max-interval", type=int, default=MAX_INTERVAL,
                       help="dynamic intervals 1..this: how many videos hold each (default 25)")
    check.add_argument("--quick", action="store_true", help="read headers only, do not decode every frame")
    check.add_argument("--workers", type=int, default=2, help="files checked in parallel")
    args = parser.parse_args(argv)

    from magi.from_folder import DEVICE_DEFAULTS, default_device

    defaults = DEVICE_DEFAULTS["cuda" if default_device().startswith("cuda") else "cpu"]
    args.num_frames = defaults["frames"] if args.num_frames is None else args.num_frames
    args.size = defaults["size"] if args.size is None else args.size
    try:
        for flag, value in (("--num-frames", args.num_frames), ("--interval", args.interval), ("--size", args.size),
                            ("--max-interval", args.max_interval), ("--workers", args.workers)):
            if value < 1:
                raise ValueError(f"{flag}: expected a positive integer, got {value}")
        if args.json and Path(args.json).is_dir():
            raise IsADirectoryError(f"--json: {args.json} is a directory; expected a file name for the report")
        report = check_folder(args.root, args.num_frames, args.interval, args.quick, args.workers,
                              max_interval=args.max_interval, size=args.size)
    except USER_ERRORS as e:
        return fail("magi data check", e)
    print(f"{report['root']}: {report['total']} files, {report['good']} good, {len(report['bad'])} bad, "
          f"{report['too_short']} shorter than {clip_span(args.num_frames, args.interval)} frames")
    for entry in report["bad"]:
        print(f"  BAD {entry['path']}: {entry['error']}")
    if report["smaller"]:
        first = report["smaller"][0]
        print(f"  {len(report['smaller'])} good videos have frames smaller than {args.size}x{args.size} (--size), "
              f"so training upscales them; the smallest: {first['path']} at {first['width']}x{first['height']}")
    captions = report["captions"]
    if captions is not None:
        print(f"captions ({', '.join(captions['files'])}): {captions['captioned']} of {report['good']} good videos "
              f"captioned, {len(captions['uncaptioned'])} without a caption row (skipped in training), "
              f"{len(captions['bad'])} bad rows")
        for entry in captions["bad"]:
            print(f"  BAD CAPTION {entry['path']}:{entry['line']}: {entry['error']}")
        if captions["uncaptioned"]:
            print(f"  no caption: {', '.join(captions['uncaptioned'][:5])}"
                  + (f" and {len(captions['uncaptioned']) - 5} more" if len(captions["uncaptioned"]) > 5 else ""))
    iv = report["intervals"]

    def row(counts: dict) -> str:
        return " ".join(f"{k}:{v}" for k, v in counts.items())

    print(f"videos holding a {args.num_frames}-frame clip at interval k: {row(iv['holders'])}")
    for rule, found in iv["rules"].items():
        print(describe_shares(f"epoch 0, interval_sampling={rule}", found))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"report written to {args.json}")
    return 1 if report["bad"] or (captions is not None and captions["bad"]) else 0


if __name__ == "__main__":
    sys.exit(main())
