"""Your own videos with captions (docs/text.md): a `metadata.jsonl` / `metadata.csv` beside the videos (the
Hugging Face folder convention, columns `file_name` and `text`) gives every `VideoFolder` item its
`caption`; bad rows are named (file, line, what) and skipped; `magi train --data` records the captions in
the run config; `magi data check` lists the bad rows in its JSON."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from conftest import make_video

NAMES = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Four small real videos (10 frames, 16x16, H.264), copied into each test's folder."""
    root = tmp_path_factory.mktemp("caption_clips")
    for k, name in enumerate(NAMES):
        make_video(root / f"{name}.mp4", num_frames=10, height=16, width=16, seed=k)
    return root


def folder(clips: Path, where: Path, layout: dict[str, str]) -> Path:
    """A folder at `where` with clip `name` copied to each relative path of `layout` ({path: name})."""
    for rel, name in layout.items():
        (where / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clips / f"{name}.mp4", where / rel)
    return where


def jsonl(*rows) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


def build(root, **options):
    """(dataset, the warnings it raised as strings)."""
    from magi.data import VideoFolder

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = VideoFolder(root, 4, 16, interval=1, progress=False, **options)
    return dataset, [str(w.message) for w in caught]


def test_jsonl_captions_reach_items_in_root_and_sub_folders(clips, tmp_path):
    root = folder(clips, tmp_path / "data", {"a.mp4": "a", "b.mp4": "b", "more/c.mp4": "c", "more/deep/d.mp4": "d"})
    (root / "metadata.jsonl").write_text(jsonl({"file_name": "a.mp4", "text": "a red square, moving right"},
                                               {"file_name": "./b.mp4", "text": "", "fps": 25}))  # "" kept: null caption
    (root / "more" / "metadata.jsonl").write_text(jsonl({"file_name": "c.mp4", "text": "ünïcode ✓"}, "",
                                                        {"file_name": "deep/d.mp4", "text": "d"}))
    dataset, warned = build(root)
    assert warned == [] and dataset.captions and len(dataset) == 4
    assert [Path(p).relative_to(root).as_posix() for p in dataset.caption_files] == \
        ["metadata.jsonl", "more/metadata.jsonl"]
    got = {Path(dataset[i]["path"]).relative_to(root).as_posix(): dataset[i]["caption"] for i in range(len(dataset))}
    assert got == {"a.mp4": "a red square, moving right", "b.mp4": "", "more/c.mp4": "ünïcode ✓", "more/deep/d.mp4": "d"}
    assert [dataset.caption_of(i) for i in range(4)] == [got[r.path] for r in dataset.records]
    assert dataset.uncaptioned == 0 and dataset.caption_errors == []
    item = dataset[0]
    assert item["video"].shape == (4, 3, 16, 16) and isinstance(item["caption"], str)

    # captions=False ignores the metadata; a folder without any has no `caption` key; True requires one
    plain, _ = build(root, captions=False)
    assert not plain.captions and "caption" not in plain[0] and plain.caption_of(0) is None
    (root / "metadata.jsonl").unlink()
    shutil.rmtree(root / "more")
    assert not build(root)[0].captions
    with pytest.raises(FileNotFoundError, match="metadata.jsonl or metadata.csv"):
        build(root, captions=True)
    with pytest.raises(ValueError, match="VideoFolder.captions"):
        build(root, captions="yes")


def test_jsonl_bad_rows_are_named_skipped_and_counted(clips, tmp_path):
    root = folder(clips, tmp_path / "data", {n + ".mp4": n for n in NAMES})
    (root / "notes.txt").write_text("not a video")
    (root / "metadata.jsonl").write_text(jsonl(
        {"file_name": "a.mp4", "text": "first"},          # 1 good
        '{"file_name": "b.mp4", "text": ',                  # 2 bad JSON
        {"text": "no file"},                                # 3 missing file_name
        {"file_name": "b.mp4", "caption": "wrong column"},  # 4 missing text
        {"file_name": "b.mp4", "text": 7},                  # 5 non-string caption
        {"file_name": "b.mp4", "text": None},               # 6 null caption
        {"file_name": "gone.mp4", "text": "x"},             # 7 no such file
        {"file_name": "notes.txt", "text": "x"},            # 8 not a video
        {"file_name": "a.mp4", "text": "second"},           # 9 duplicate
        ["a.mp4", "x"],                                     # 10 not an object
        {"file_name": "../a.mp4", "text": "x"},             # 11 outside the folder
        {"file_name": "c.mp4", "text": "third"},            # 12 good
    ))
    dataset, warned = build(root)
    expect = {2: "bad JSON", 3: "missing 'file_name'", 4: "missing 'text' (other columns: caption)",
              5: "text is not a string: 7", 6: "text is not a string: null", 7: "'gone.mp4': no such file",
              8: "'notes.txt': not a video file", 9: "duplicate file_name 'a.mp4': already captioned at metadata.jsonl:1",
              10: "expected an object", 11: "outside the folder"}
    assert [e["line"] for e in dataset.caption_errors] == list(expect)
    for entry in dataset.caption_errors:
        assert entry["path"] == str(root / "metadata.jsonl") and expect[entry["line"]] in entry["error"]
        assert any(f"metadata.jsonl:{entry['line']}: " in w and expect[entry["line"]] in w for w in warned)
    # b and d have no good row: skipped and counted (never trained with an empty caption), named once
    assert dataset.uncaptioned == 2 and len(dataset) == 2
    assert {r.path: r.caption for r in dataset.records} == {"a.mp4": "first", "c.mp4": "third"}
    assert any("2 videos have no caption row" in w and "b.mp4, d.mp4" in w for w in warned)
    said = dataset.describe_usable()
    assert said.startswith("2 of 4 videos") and "2 without a caption" in said and "10 bad caption rows" in said
    assert "bad_caption_rows=10" in repr(dataset)


def test_csv_captions_with_bad_rows_and_the_header_checked(clips, tmp_path):
    root = folder(clips, tmp_path / "data", {"x/" + n + ".mp4": n for n in NAMES})
    (root / "x" / "metadata.csv").write_text(
        "\ufefffile_name,text\n"                             # 1 header (with Excel's byte-order mark)
        'a.mp4,"a square, then a circle"\n'                 # 2 good, a quoted comma
        "b.mp4,a square, then a circle\n"                   # 3 unquoted comma: 3 fields
        "c.mp4\n"                                           # 4 missing text
        "nope.mp4,x\n"                                      # 5 no such file
        "a.mp4,again\n"                                     # 6 duplicate
        'd.mp4,"two\nlines"\n', encoding="utf-8")           # 7-8 good, a caption over two lines
    dataset, warned = build(root)
    assert {r.path: r.caption for r in dataset.records} == {"x/a.mp4": "a square, then a circle", "x/d.mp4": "two\nlines"}
    rows = {e["line"]: e["error"] for e in dataset.caption_errors}
    assert list(rows) == [3, 4, 5, 6]
    assert "3 fields where the header has 2" in rows[3] and "quotes" in rows[3]
    assert rows[4] == "missing 'text'" and "no such file" in rows[5] and "duplicate" in rows[6]
    assert sum("metadata.csv:" in w for w in warned) == 4 and dataset.uncaptioned == 2
    assert all(dataset[i]["caption"] for i in range(len(dataset)))

    # a header without the columns: one error for the whole file, every video uncaptioned
    (root / "x" / "metadata.csv").write_text("path,caption\na.mp4,hi\n")
    dataset, warned = build(root)
    assert len(dataset.caption_errors) == 1 and dataset.caption_errors[0]["line"] == 1
    assert "no 'file_name' or 'text' column (columns: path, caption" in dataset.caption_errors[0]["error"]
    assert len(dataset) == 0 and dataset.uncaptioned == 4 and "4 without a caption" in dataset.describe_usable()

    # both formats in one folder: which one holds the captions is ambiguous
    (root / "x" / "metadata.jsonl").write_text(jsonl({"file_name": "a.mp4", "text": "hi"}))
    with pytest.raises(ValueError, match="holds both metadata.csv and metadata.jsonl"):
        build(root)


def test_caption_for_a_video_outside_the_split_file(clips, tmp_path):
    root = folder(clips, tmp_path / "data", {n + ".mp4": n for n in NAMES})
    (root / "split.txt").write_text("a.mp4\nb.mp4\n")
    (root / "metadata.jsonl").write_text(jsonl({"file_name": "a.mp4", "text": "A"}, {"file_name": "b.mp4", "text": "B"},
                                               {"file_name": "c.mp4", "text": "C"}))
    dataset, _ = build(root, split_file=root / "split.txt")
    assert [r.caption for r in dataset.records] == ["A", "B"]
    assert [e["line"] for e in dataset.caption_errors] == [3]
    assert "not one of the dataset's videos" in dataset.caption_errors[0]["error"]


def test_train_data_records_captions_and_rebuilds_them(clips, tmp_path):
    from magi.data import build_dataset
    from magi.from_folder import build_folder_config, describe

    root = folder(clips, tmp_path / "data", {n + ".mp4": n for n in NAMES})
    (root / "metadata.jsonl").write_text(jsonl(*({"file_name": f"{n}.mp4", "text": f"clip {n}"} for n in NAMES[:3]),
                                               {"file_name": "d.mp4"}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run, _, dataset = build_folder_config(root, preset="test", vae="pixels:4", size=16, frames=4, device="cpu")
    warned = [str(w.message) for w in caught]  # passed on from the dataset
    assert any("metadata.jsonl:4: missing 'text'" in w for w in warned)
    assert any("1 video has no caption row in metadata.jsonl" in w and "d.mp4" in w for w in warned)
    assert run["data"]["kind"] == "folder" and run["data"]["options"]["captions"] is True
    said = describe(run, dataset)
    assert "3 of 4 videos" in said and "1 without a caption" in said and "captions from metadata.jsonl" in said
    assert "an unconditional model" not in said
    # what the trainer builds from the recorded options: the same captioned items
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = build_dataset("folder", **run["data"]["options"], progress=False)
    assert again.captions and sorted(again[i]["caption"] for i in range(len(again))) == ["clip a", "clip b", "clip c"]
    # captions recorded but gone: the run stops instead of silently training without them
    (root / "metadata.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="VideoFolder.captions"):
        build_dataset("folder", **run["data"]["options"], progress=False)
    # a folder without captions records nothing
    plain, _, _ = build_folder_config(root, preset="test", vae="pixels:4", size=16, frames=4, device="cpu")
    assert "captions" not in plain["data"]["options"]
    # both formats in one folder: an error naming --data
    (root / "metadata.jsonl").write_text("")
    (root / "metadata.csv").write_text("file_name,text\n")
    with pytest.raises(ValueError, match="^--data: .* holds both"):
        build_folder_config(root, preset="test", vae="pixels:4", size=16, frames=4, device="cpu")


def test_data_check_lists_bad_caption_rows_in_its_json(clips, tmp_path, capsys):
    from magi.data.check import main as check_main

    root = folder(clips, tmp_path / "data", {n + ".mp4": n for n in NAMES[:3]})
    (root / "metadata.jsonl").write_text(jsonl({"file_name": "a.mp4", "text": "A"}, "nope",
                                               {"file_name": "b.mp4", "text": ["B"]}))
    report_file = tmp_path / "report.json"
    assert check_main(["check", str(root), "--json", str(report_file), "--num-frames", "4", "--quick"]) == 1
    out = capsys.readouterr().out
    assert "BAD CAPTION metadata.jsonl:2: bad JSON" in out and "BAD CAPTION metadata.jsonl:3: text is not a string" in out
    report = json.loads(report_file.read_text())
    assert report["total"] == 3 and report["good"] == 3 and report["bad"] == []  # metadata: not a bad video
    captions = report["captions"]
    assert captions["files"] == ["metadata.jsonl"] and captions["captioned"] == 1
    assert captions["uncaptioned"] == ["b.mp4", "c.mp4"]
    assert [(e["path"], e["line"]) for e in captions["bad"]] == [("metadata.jsonl", 2), ("metadata.jsonl", 3)]

    # good captions: exit 0; no metadata: "captions" is null
    (root / "metadata.jsonl").write_text(jsonl(*({"file_name": f"{n}.mp4", "text": n} for n in NAMES[:3])))
    assert check_main(["check", str(root), "--json", str(report_file), "--num-frames", "4", "--quick"]) == 0
    assert json.loads(report_file.read_text())["captions"]["uncaptioned"] == []
    (root / "metadata.jsonl").unlink()
    assert check_main(["check", str(root), "--json", str(report_file), "--num-frames", "4", "--quick"]) == 0
    assert json.loads(report_file.read_text())["captions"] is None
