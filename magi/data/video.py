"""Folder datasets of real videos: a folder per class (UCF-101) or a list file (Kinetics), with captions
from a `metadata.jsonl` / `metadata.csv` beside the videos (the Hugging Face folder convention).

Decoding lives in `magi.data.decode`, which clip an item is (fixed or dynamic interval, and the
dynamic-interval rules) in `magi.data.clips`; `VideoFolder` is a `ClipSource` over the videos it found.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from magi.data.clips import (MAX_INTERVAL, ClipSource, UniformIntervals, _ranges, choose_clip, clip_span,
                             max_interval_for, sampling_rule)
from magi.data.decode import (VIDEO_EXTENSIONS, BadVideoWarning, VideoError, _warn_bad, not_a_video, other_files,
                               probe, read_all_frames, read_clip)
from magi.video_io import to_float_video
# names this module defined before the split into clips.py and decode.py, which tests import from here
from magi.data.clips import interval_histogram, interval_holders  # noqa: F401
from magi.video_io import to_uint8_video  # noqa: F401


def scan_folder(root, extensions=VIDEO_EXTENSIONS) -> list[tuple[str, str]]:
    """(relative path, class name) of every file under `root`, the class being its top-level folder.

    Files directly in `root` get the class "" (one unnamed class). Non-video files (by extension) are
    left out here; `magi data check` lists them with `extensions=None`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder not found: {root}")
    out = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if extensions is not None and path.suffix.lower() not in extensions:
            continue
        rel = path.relative_to(root)
        out.append((rel.as_posix(), rel.parts[0] if len(rel.parts) > 1 else ""))
    return out


def read_list_file(list_file) -> list[tuple[str, str | None, int | None]]:
    """(relative path, class name or None, integer label or None) for each video of a list file.

    - `.csv` with a header: a `path` column (and optionally `label`), or the official Kinetics columns
      `label, youtube_id, time_start, time_end`, mapped to `<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`
      (the layout of the common Kinetics downloaders).
    - otherwise whitespace-separated lines `relative/path [label]`, as UCF-101's `trainlist0k.txt` /
      `testlist0k.txt` and mmaction-style lists. A non-numeric label is a class name.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"split/list file not found: {list_file}")
    entries: list[tuple[str, str | None, int | None]] = []
    if list_file.suffix.lower() == ".csv":
        with list_file.open(newline="") as f:
            reader = csv.DictReader(f)
            cols = set(reader.fieldnames or [])
            kinetics = {"label", "youtube_id", "time_start", "time_end"} <= cols
            if "path" not in cols and not kinetics:
                raise ValueError(f"{list_file}: a CSV list needs a 'path' column or the Kinetics columns "
                                 f"label,youtube_id,time_start,time_end; found {sorted(cols)}")
            for row in reader:
                if kinetics and "path" not in cols:
                    rel = (f"{row['label']}/{row['youtube_id']}_{int(float(row['time_start'])):06d}_"
                           f"{int(float(row['time_end'])):06d}.mp4")
                else:
                    rel = row["path"]
                entries.append((rel, *_parse_label(row.get("label"))))
        return entries
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.strip().split()
        if not parts:
            continue
        if len(parts) > 2:
            raise ValueError(f"{list_file}:{number}: expected 'path [label]', got {line!r}")
        entries.append((parts[0], *_parse_label(parts[1] if len(parts) == 2 else None)))
    return entries


def _parse_label(text: str | None) -> tuple[str | None, int | None]:
    if text is None or text == "":
        return None, None
    try:
        return None, int(text)
    except ValueError:
        return text, None


def _find_class_index(*folders) -> list[str] | None:
    """Class names from UCF-101's `classInd.txt` ("1 ApplyEyeMakeup" lines) if one is in these folders."""
    for folder in folders:
        if folder is None:
            continue
        path = Path(folder) / "classInd.txt"
        if path.is_file():
            rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
            return [name for _, name in sorted((int(i), name) for i, name in rows)]
    return None


# ---- captions: the Hugging Face folder convention (a metadata.jsonl or metadata.csv beside the videos)

#: The metadata file names read for captions, in any folder of a dataset (one per folder): columns
#: `file_name` (the video's path relative to that folder) and `text` (its caption).
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CAPTION_COLUMNS = ("file_name", "text")
MAX_CAPTION_WARNINGS = 10  # bad rows warned one by one; the rest in one summary (all are in `caption_errors`)


class BadCaptionWarning(UserWarning):
    """Emitted for a caption row a dataset skips (up to `MAX_CAPTION_WARNINGS`, then one summary)."""


@dataclass
class Captions:
    """What the metadata files of a folder say: `by_path` maps a video's path relative to the root to
    its caption; `bad` lists the skipped rows as {"path", "line", "error"} (path: the metadata file,
    relative to the root; line: 1-based, a CSV row over several lines by its last); `files` names the
    metadata files read."""

    files: list[str]
    by_path: dict[str, str]
    bad: list[dict]


def find_metadata(root) -> list[Path]:
    """The caption metadata files under `root` (`METADATA_FILES`, any folder, hidden ones left out),
    shallowest first. Raises ValueError for a folder holding both a .jsonl and a .csv (which one
    holds the captions is ambiguous)."""
    root = Path(root)
    found = [p for p in root.rglob("metadata.*")  # one walk of the tree for both names
             if p.name in METADATA_FILES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    by_folder: dict[Path, list[Path]] = {}
    for path in found:
        by_folder.setdefault(path.parent, []).append(path)
    for folder, files in by_folder.items():
        if len(files) > 1:
            raise ValueError(f"{folder} holds both {' and '.join(sorted(p.name for p in files))}; keep one "
                             f"caption file per folder")
    return sorted(found, key=lambda p: (len(p.relative_to(root).parts), p.relative_to(root).as_posix()))


def _metadata_rows(path: Path):
    """(line, row dict, None) per row of a metadata file, or (line, None, error) for a row that cannot be
    read; a CSV whose header lacks a column gives one (1, None, error) for the whole file."""
    data = path.read_bytes()
    if path.suffix == ".jsonl":
        for number, raw in enumerate(data.splitlines(), 1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                yield number, None, "bad JSON: not UTF-8 text"
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                yield number, None, f"bad JSON ({e.msg} at column {e.colno})"
                continue
            if not isinstance(row, dict):
                yield number, None, f"bad JSON: expected an object with file_name and text, got {type(row).__name__}"
                continue
            yield number, row, None
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        yield data[:e.start].count(b"\n") + 1, None, "not UTF-8 text (the whole file is skipped)"
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    absent = [c for c in CAPTION_COLUMNS if c not in header]
    if absent:
        yield 1, None, (f"the header has no {' or '.join(repr(c) for c in absent)} column (columns: "
                        f"{', '.join(header) or 'none'}; the whole file is skipped)")
        return
    for row in reader:
        if None in row:  # more fields than the header: usually a caption with an unquoted comma
            yield reader.line_num, None, (f"{len(header) + len(row[None])} fields where the header has "
                                          f"{len(header)} (a caption with a comma needs \"quotes\")")
            continue
        yield reader.line_num, {k: v for k, v in row.items() if v is not None}, None


def read_captions(root, videos) -> Captions:
    """The captions of the videos `videos` (paths relative to `root`, as the dataset lists them) from
    every metadata file under `root` (`find_metadata`), each row's `file_name` relative to its file's
    folder. A row is skipped, and listed in `bad`, for bad JSON, a missing `file_name` or `text`, a
    `text` that is not a string, a file that does not exist or is not one of `videos`, or a video
    that an earlier row already captioned (the first row wins; shallower metadata files are read first).
    An empty `text` is kept: it is the null caption (what a text model trains for guidance).
    """
    root = Path(root)
    known = {posixpath.normpath(Path(rel).as_posix()): rel for rel in videos}
    out = Captions([], {}, [])
    first_row: dict[str, str] = {}
    for path in find_metadata(root):
        where = path.relative_to(root).as_posix()
        folder = path.parent.relative_to(root).as_posix()
        out.files.append(where)
        for line, row, error in _metadata_rows(path):
            if error is None:
                error = _row_error(row)
            if error is None:
                name = row["file_name"]
                key = posixpath.normpath(posixpath.join(folder, name))
                if posixpath.isabs(name) or key == ".." or key.startswith("../"):
                    error = f"file_name {name!r} is outside the folder"
                elif key not in known:
                    target = root / key
                    error = (f"file_name {name!r}: " +
                             ("no such file" if not target.exists() else
                              "a folder, not a video" if target.is_dir() else
                              not_a_video(target) if target.suffix.lower() not in VIDEO_EXTENSIONS else
                              "not one of the dataset's videos (not in its split file)"))
                elif known[key] in out.by_path:
                    error = f"duplicate file_name {name!r}: already captioned at {first_row[known[key]]}"
            if error is not None:
                out.bad.append({"path": where, "line": line, "error": error})
                continue
            out.by_path[known[key]] = row["text"]
            first_row[known[key]] = f"{where}:{line}"
    return out


def _row_error(row: dict) -> str | None:
    """What is wrong with a parsed row's file_name / text, or None."""
    for column in CAPTION_COLUMNS:
        if column not in row:
            others = [k for k in row if k not in CAPTION_COLUMNS]
            return f"missing {column!r}" + (f" (other columns: {', '.join(map(str, others))})" if others else "")
    if not isinstance(row["file_name"], str) or not row["file_name"].strip():
        return f"file_name is not a file path: {json.dumps(row['file_name'], default=str)[:60]}"
    if not isinstance(row["text"], str):
        return f"text is not a string: {json.dumps(row['text'], default=str)[:60]}"
    return None


@dataclass
class VideoRecord:
    path: str  # relative to the dataset root
    label: int
    num_frames: int
    caption: str | None = None  # from the folder's metadata; None when the dataset has no captions


class VideoFolder(torch.utils.data.Dataset, ClipSource):
    """Clips from a folder of videos: UCF-101 layout (a folder per class) or a list file (Kinetics).

    Items are dicts: `video` float (T, 3, H, W) in [-1, 1], `label` int, `interval` int, `path` str,
    and `caption` str when the dataset has captions (`captions`).

    Args:
        root: the videos' root folder.
        num_frames: frames per clip.
        size: output frame size, int (square) or (H, W): resize to cover, centre crop. None keeps the size.
        interval: a fixed frame interval, or "dynamic": drawn per item and epoch by `interval_sampling`.
        interval_sampling: the dynamic-interval rule (`magi.data.clips`): "video_first" (the paper's
            order: every video once per epoch, its interval uniform on 1..max_interval, clamped to the
            longest it holds), "interval_first" (every interval equally often; an item whose video is
            too short for its interval takes its clip from a video that holds it; "uniform" is its
            earlier name) or "capped" (uniform on 1..the largest interval the item's own video holds;
            the default, what earlier versions did).
        split_file: optional list of the videos to use (see `read_list_file`): UCF-101's
            `trainlist01.txt`, a Kinetics CSV, or "path label" lines. Without one, every video under root.
        classes: class names in label order; default: UCF's `classInd.txt` when next to the split file
            or in root, else the sorted class names found. Labels come from class names (the label
            column, else the top-level folder); a bare integer label is used only for files that are
            not in a class folder.
        seed: with the epoch (`set_epoch`) and the item index, determines each item's interval and start.
        random_start: draw the clip start uniformly (else take the clip from the video's middle).
        index_file: JSON file caching the probed frame counts (keyed by path, size and mtime), so a
            large dataset is probed once.
        probe_threads: threads probing headers while building the index.
        actions: also return `actions` (int64 (T,)), read from `<video>.actions.npy` beside each video
            (Atari recordings, `record_atari`): clip action j is the action taken at the clip's frame j,
            the one leading toward frame j+1 (-1 where none was recorded). At an interval k > 1 it is
            the first of the k actions taken between the two clip frames. A video without its actions
            file is skipped like an unreadable one.
        captions: read captions from the folder's metadata files, the Hugging Face folder convention: a
            `metadata.jsonl` (one JSON object a line) or `metadata.csv` (with a header) in root or in any
            sub-folder (one per folder), columns `file_name` (the video's path relative to the metadata
            file's folder) and `text` (its caption). None (default): when the folder has such a file;
            True: require one (FileNotFoundError without); False: ignore them. `self.captions` says
            which. Bad rows (bad JSON, a missing `file_name` or `text`, a `text` that is not a string,
            a file that does not exist or is not one of the dataset's videos, a duplicate `file_name`)
            are skipped with one `BadCaptionWarning` each (the first `MAX_CAPTION_WARNINGS`) and
            listed in `caption_errors` ({"path": metadata file, "line", "error"}). Decision: with
            captions, a video that no good row names is skipped and counted in `uncaptioned` (one
            warning names a few), never trained with an empty caption: a mistyped `file_name` would
            otherwise silently become unconditional training. For the null caption on purpose, give the
            video a row with `"text": ""`: an empty caption is kept.

    Videos that cannot be opened are skipped with one `BadVideoWarning` each and listed in `bad`
    (`skipped` counts them); videos shorter than one clip (at interval 1 when dynamic) are counted in
    `too_short`; files named by the split file but absent are counted in `missing`. A video that fails
    later while decoding (e.g. truncated) is skipped at that point in favour of the next one.
    """

    def __init__(
        self,
        root,
        num_frames: int,
        size=None,
        interval: int | str = 3,
        split_file=None,
        classes: list[str] | None = None,
        extensions=VIDEO_EXTENSIONS,
        max_interval: int = MAX_INTERVAL,
        seed: int = 0,
        random_start: bool = True,
        index_file=None,
        probe_threads: int = 4,
        progress: bool = True,
        actions: bool = False,
        interval_sampling: str = "capped",
        captions: bool | None = None,
    ) -> None:
        interval_sampling = sampling_rule(interval_sampling, "VideoFolder.interval_sampling")
        if interval != "dynamic" and (isinstance(interval, bool) or not isinstance(interval, int)
                                      or interval < 1):
            raise ValueError(f"VideoFolder.interval: expected an integer >= 1 or 'dynamic', got {interval!r}")
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"VideoFolder.num_frames: expected a positive integer, got {num_frames!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"VideoFolder: root folder not found: {self.root}")
        self.num_frames, self.size, self.interval = num_frames, size, interval
        self.max_interval, self.seed, self.random_start = max_interval, seed, random_start
        self.actions, self.interval_sampling = actions, interval_sampling
        self.epoch = 0
        self._uniform: UniformIntervals | None = None

        # 1. which files, with which class
        if split_file is not None:
            listed = read_list_file(split_file)
        else:
            listed = [(rel, name, None) for rel, name in scan_folder(self.root, extensions)]
        names = [name if name is not None else (Path(rel).parts[0] if len(Path(rel).parts) > 1 else None)
                 for rel, name, _ in listed]
        if classes is None:
            classes = _find_class_index(Path(split_file).parent if split_file else None, self.root)
        if classes is None:
            classes = sorted({n for n in names if n})
        self.classes = list(classes)
        class_index = {n: i for i, n in enumerate(self.classes)}
        self.missing = 0
        candidates: list[tuple[str, int]] = []
        missing_examples = []
        for (rel, _, number), name in zip(listed, names):
            if not (self.root / rel).is_file():
                self.missing += 1
                missing_examples.append(rel)
                continue
            if name:
                if name not in class_index:
                    raise ValueError(f"VideoFolder: {rel} has class {name!r}, which is not in the class list")
                label = class_index[name]
            else:
                label = number if number is not None else 0
            candidates.append((rel, label))
        if self.missing:
            warnings.warn(f"VideoFolder({self.root}): {self.missing} listed videos are missing, e.g. "
                          f"{', '.join(missing_examples[:3])}", BadVideoWarning, stacklevel=2)
        self.found = len(candidates)  # video files found (before captions and probing)

        # 2. captions, when the folder has metadata files (or `captions` asks for them)
        if captions is not None and not isinstance(captions, bool):
            raise ValueError(f"VideoFolder.captions: expected true, false or null (auto), got {captions!r}")
        table = read_captions(self.root, [rel for rel, _ in candidates]) if captions is not False else None
        if captions and not table.files:
            raise FileNotFoundError(f"VideoFolder.captions: no {' or '.join(METADATA_FILES)} under {self.root} "
                                    f"(columns file_name, text)")
        self.captions = bool(table and table.files)
        self.caption_files = [str(self.root / name) for name in table.files] if self.captions else []
        self.caption_errors = ([{**e, "path": str(self.root / e["path"])} for e in table.bad]
                               if self.captions else [])
        self.uncaptioned = 0
        for e in self.caption_errors[:MAX_CAPTION_WARNINGS]:
            warnings.warn(f"skipping caption row {e['path']}:{e['line']}: {e['error']}", BadCaptionWarning,
                          stacklevel=2)
        if len(self.caption_errors) > MAX_CAPTION_WARNINGS:
            warnings.warn(f"VideoFolder({self.root}): {len(self.caption_errors) - MAX_CAPTION_WARNINGS} more bad "
                          f"caption rows skipped (all in .caption_errors; `magi data check` lists them)",
                          BadCaptionWarning, stacklevel=2)
        if self.captions:
            uncaptioned = [rel for rel, _ in candidates if rel not in table.by_path]
            candidates = [(rel, label) for rel, label in candidates if rel in table.by_path]
            self.uncaptioned = len(uncaptioned)
            if uncaptioned:
                many = self.uncaptioned > 1
                warnings.warn(f"VideoFolder({self.root}): {self.uncaptioned} video{'s have' if many else ' has'} no "
                              f"caption row in {', '.join(table.files)} and {'are' if many else 'is'} skipped, e.g. "
                              f"{', '.join(uncaptioned[:3])} "
                              f"(a row with \"text\": \"\" gives one the null caption)", BadCaptionWarning,
                              stacklevel=2)
        caption_of = table.by_path if self.captions else {}

        # 3. probe headers (frame counts), skipping what cannot be opened
        counts, self.bad = self._probe_all(candidates, index_file, probe_threads, progress)
        if actions:
            for rel in [r for r in counts if not (self.root / r).with_suffix(".actions.npy").is_file()]:
                del counts[rel]
                self.bad.append({"path": str(self.root / rel),
                                 "error": f"no actions file {Path(rel).with_suffix('.actions.npy').name}"})
        for entry in self.bad:
            _warn_bad(VideoError(entry["path"], entry["error"]))
        self.skipped = len(self.bad)
        need = num_frames if interval == "dynamic" else clip_span(num_frames, interval)
        self.records: list[VideoRecord] = []
        self.too_short = 0
        for rel, label in candidates:
            if rel not in counts:
                continue
            if counts[rel] < need:
                self.too_short += 1
                continue
            self.records.append(VideoRecord(rel, label, counts[rel], caption_of.get(rel)))
        self._failed: set[str] = set()
        self._decoded: dict[str, int] = {}  # frames that really decode, for headers that over-count
        self.need = need  # frames a video must have to hold one clip
        if not self.records:
            warnings.warn(f"VideoFolder({self.root}): no usable videos ({self.found} found, "
                          + (f"{self.uncaptioned} without a caption, " if self.uncaptioned else "")
                          + f"{self.skipped} bad, {self.too_short} shorter than {need} frames)", stacklevel=2)
        elif self.uniform is not None and self.uniform.missing():
            missing = self.uniform.missing()
            warnings.warn(f"VideoFolder({self.root}): no video holds a clip of {num_frames} frames at "
                          f"interval{'s' if len(missing) > 1 else ''} {_ranges(missing)} (the longest has "
                          f"{max(r.num_frames for r in self.records)} frames); interval-first sampling deals "
                          f"{_ranges(self.uniform.intervals)} instead of 1..{max_interval}", stacklevel=2)

    def describe_usable(self) -> str:
        """Why the dataset holds the clips it does, e.g. "0 of 32 videos hold a clip of 59 frames (30
        frames at interval 2): 30 shorter, 2 unreadable"; names the folder when it has no video files."""
        if self.found == 0 and not self.missing:
            instead = other_files(self.root)
            return (f"no video files under {self.root}" + (f", only {instead}" if instead else "") +
                    f" (looked for {', '.join(VIDEO_EXTENSIONS)}; expected ROOT/<class>/<video> or videos "
                    f"directly in ROOT)")
        total = self.found + self.missing
        what = (f"{self.num_frames} frames at any interval" if self.interval == "dynamic"
                else f"{self.num_frames} frames at interval {self.interval}")
        reasons = [f"{self.too_short} shorter", f"{len(self.bad)} unreadable"]
        if self.bad:  # the first reason, e.g. "no video stream" for audio in an .mp4
            first = self.bad[0]
            reasons[-1] += f" (e.g. {Path(first['path']).name}: {first['error']})"
        if self.missing:
            reasons.append(f"{self.missing} listed but missing")
        if self.uncaptioned:
            reasons.append(f"{self.uncaptioned} without a caption")
        if self.caption_errors:  # rows, not videos: why a video may lack its caption
            first = self.caption_errors[0]
            reasons.append(f"{len(self.caption_errors)} bad caption row{'s' if len(self.caption_errors) > 1 else ''} "
                           f"(e.g. {Path(first['path']).name}:{first['line']}: {first['error']})")
        return (f"{len(self.records)} of {total} videos in {self.root} hold a clip of {self.need} frames "
                f"({what}): {', '.join(reasons)}")

    def smaller_than(self, size) -> list[tuple[str, int, int]]:
        """(path, H, W) of the usable videos whose frames are smaller than `size` (int: the short side;
        (h, w)) and so get upscaled, smallest first; from the probed headers."""
        h, w = (size, size) if isinstance(size, int) else size
        usable = {r.path for r in self.records}
        small = [(rel, H, W) for rel, (H, W) in self.frame_sizes.items() if rel in usable
                 and (min(H, W) < min(h, w) if isinstance(size, int) else (H < h or W < w))]
        return sorted(small, key=lambda x: (min(x[1], x[2]), x[0]))

    # ---- index building
    def _probe_all(self, candidates, index_file, threads, progress):
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        cache = {}
        if index_file is not None and Path(index_file).is_file():
            cache = json.loads(Path(index_file).read_text()).get("videos", {})
        counts: dict[str, int] = {}
        bad: list[dict] = []
        stamps: dict[str, list] = {}
        self.frame_sizes: dict[str, tuple[int, int]] = {}  # (H, W) of the videos probed (not the cached)
        todo = []
        for rel, _ in candidates:
            st = (self.root / rel).stat()
            stamps[rel] = [st.st_size, st.st_mtime_ns]
            hit = cache.get(rel)
            if hit is not None and hit[:2] == stamps[rel]:
                if isinstance(hit[2], int):
                    counts[rel] = hit[2]
                else:
                    bad.append({"path": str(self.root / rel), "error": hit[2]})
            else:
                todo.append(rel)

        def one(rel):
            try:
                info = probe(self.root / rel)
            except VideoError as e:
                return rel, e.reason
            self.frame_sizes[rel] = (info.height, info.width)
            return rel, info.num_frames

        with ThreadPoolExecutor(max(1, threads)) as pool:
            results = pool.map(one, todo)
            for rel, result in tqdm(results, total=len(todo), desc=f"indexing {self.root.name}",
                                    disable=not progress or len(todo) < 100, unit="video"):
                if isinstance(result, int):
                    counts[rel] = result
                else:
                    bad.append({"path": str(self.root / rel), "error": result})
                cache[rel] = stamps[rel] + [result]
        if index_file is not None and todo:
            Path(index_file).parent.mkdir(parents=True, exist_ok=True)
            Path(index_file).write_text(json.dumps({"version": 1, "videos": cache}))
        return counts, bad

    # ---- the ClipSource interface (magi.data.clips), shared with MovingDigits
    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw intervals and starts for a new epoch (deterministically from seed, epoch and index)."""
        self.epoch = int(epoch)

    @property
    def uniform(self) -> UniformIntervals | None:
        """The interval-first rule over the current records (None unless dynamic with that rule)."""
        if self.interval != "dynamic" or self.interval_sampling != "interval_first":
            return None
        if self._uniform is None:
            self._uniform = UniformIntervals([r.num_frames for r in self.records], self.num_frames,
                                             self.max_interval)
        return self._uniform

    def interval_range(self) -> tuple[int, int] | None:
        """(lowest, highest) interval this dataset's items can have (what a model trained on it knows)."""
        if not self.records:
            return None
        if self.interval != "dynamic":
            return int(self.interval), int(self.interval)
        if self.uniform is not None:
            return min(self.uniform.intervals), self.uniform.top
        return 1, max(max_interval_for(self.num_frames, r.num_frames, self.max_interval) for r in self.records)

    def video_frames(self, index: int) -> int:
        return self.records[index].num_frames

    def label_of(self, index: int) -> int:
        return self.records[index].label

    def caption_of(self, index: int) -> str | None:
        """The caption of video `index` (None when the dataset has no captions); nothing is decoded."""
        return self.records[index].caption

    def path_of(self, index: int) -> str:
        return str(self.root / self.records[index].path)

    def frames(self, index: int, num_frames: int | None = None, interval: int = 1, start: int = 0) -> torch.Tensor:
        """uint8 (T, 3, H, W) frames start, start + interval, ... of video `index` at this dataset's size."""
        num_frames = self.num_frames if num_frames is None else num_frames
        return read_clip(self.path_of(index), start, num_frames, interval, self.size)

    # ---- items
    def pick(self, index: int) -> tuple[int, int, int]:
        """(video, interval, start) of item `index` in the current epoch. The video is `index` itself
        except under interval-first sampling when that video is too short for the item's interval."""
        if self.uniform is not None:
            return self.uniform.choose(self.seed, self.epoch, index, random_start=self.random_start)
        interval, start = choose_clip(self.seed, self.epoch, index, self.num_frames,
                                      self.records[index].num_frames, self.interval, self.max_interval,
                                      self.random_start, rule=self.interval_sampling)
        return index, interval, start

    def choose(self, index: int) -> tuple[int, int]:
        """(interval, start) of item `index` in the current epoch, in video `pick(index)[0]` (the
        item's own video, except under interval-first sampling; see `pick`)."""
        return self.pick(index)[1:]

    def interval_for(self, index: int) -> int:
        """The frame interval item `index` trains in the current epoch (nothing is decoded)."""
        return self.pick(index)[1]

    def full_video(self, index: int) -> torch.Tensor:
        """Every frame of video `index` as uint8 (N, 3, H, W) at this dataset's size (for latent caches)."""
        return read_all_frames(self.path_of(index), self.size)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.records):
            raise IndexError(f"VideoFolder: index {index} out of range 0..{len(self.records) - 1}")
        for attempt in range(len(self.records)):
            j = (index + attempt) % len(self.records)
            video = self.pick(j)[0]
            record = self.records[video]
            if record.path in self._failed:
                continue
            try:
                return self._load(j)
            except VideoError as e:
                if e.available is not None and e.available >= self.num_frames and \
                        e.available < record.num_frames:
                    # The header over-counted: this item's clip is kept within the frames that exist. The
                    # record and the sampling tables keep the probed length, so every other item's draw
                    # stays a pure function of (seed, epoch, index) in whichever worker finds out.
                    self._decoded[record.path] = e.available
                    try:
                        return self._load(j)
                    except VideoError as e2:
                        e = e2
                self._failed.add(record.path)
                self.skipped += 1
                self.bad.append({"path": self.path_of(video), "error": e.reason})
                _warn_bad(e)
        raise RuntimeError(f"VideoFolder({self.root}): none of the {len(self.records)} videos could be decoded")

    def _load(self, index: int) -> dict:
        video, interval, start = self.pick(index)
        available = self._decoded.get(self.records[video].path)
        if available is not None:  # a header that over-counts: the same draw, moved inside the real frames
            if self.interval == "dynamic":
                interval = min(interval, max_interval_for(self.num_frames, available, self.max_interval))
            start = min(start, available - clip_span(self.num_frames, interval))
            if start < 0:
                raise VideoError(self.path_of(video), f"a clip of {self.num_frames} frames at interval {interval} "
                                 f"needs {clip_span(self.num_frames, interval)} frames; {available} decode",
                                 available=None)
        clip = self.frames(video, interval=interval, start=start)
        item = {"video": to_float_video(clip), "label": self.records[video].label, "interval": interval,
                "path": self.path_of(video)}
        if self.actions:
            item["actions"] = self.actions_of(video, start, interval)
        if self.captions:
            item["caption"] = self.records[video].caption
        return item

    def actions_of(self, index: int, start: int, interval: int = 1, num_frames: int | None = None
                   ) -> torch.Tensor:
        """int64 (T,): the recorded action taken at each clip frame (see `actions` in the class doc)."""
        num_frames = self.num_frames if num_frames is None else num_frames
        path = Path(self.path_of(index)).with_suffix(".actions.npy")
        try:
            recorded = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise VideoError(self.path_of(index), f"actions file {path.name} unreadable ({e})") from e
        picked = np.full(num_frames, -1, np.int64)
        at = start + interval * np.arange(num_frames)
        inside = at < len(recorded)
        picked[inside] = recorded[at[inside]]
        return torch.from_numpy(picked)

    def __repr__(self) -> str:
        return (f"VideoFolder({str(self.root)!r}, videos={len(self)}, classes={len(self.classes)}, "
                f"num_frames={self.num_frames}, size={self.size}, interval={self.interval!r}"
                f"{f', interval_sampling={self.interval_sampling!r}' if self.interval == 'dynamic' else ''}, "
                f"bad={self.skipped}, too_short={self.too_short}, missing={self.missing}"
                + (f", captions={len(self.caption_files)} files, uncaptioned={self.uncaptioned}, "
                   f"bad_caption_rows={len(self.caption_errors)}" if self.captions else "") + ")")
