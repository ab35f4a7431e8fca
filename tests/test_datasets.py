"""Folder datasets: layouts and split files, dynamic intervals, bad data, the eval sampler, data check."""

import json
import warnings

import pytest
import torch

from magi.data import MovingDigits, VideoFolder, build_dataset, read_clip
from magi.evaluate.protocol import EvalClips
from magi.data.video import BadVideoWarning, clip_span, read_all_frames, to_uint8_video
from conftest import make_video


def test_folder_layout_items(video_folder):
    ds = VideoFolder(video_folder, num_frames=4, size=32, interval=3)
    assert ds.classes == ["Apple", "Banana", "Cherry"] and len(ds) == 7
    assert ds.skipped == 0 and ds.too_short == 0
    item = ds[0]
    assert set(item) == {"video", "label", "interval", "path"}
    assert item["video"].shape == (4, 3, 32, 32) and item["video"].dtype == torch.float32
    assert -1 <= item["video"].min() and item["video"].max() <= 1
    assert item["label"] == 0 and item["interval"] == 3 and item["path"].endswith(".mp4")
    labels = sorted(ds[i]["label"] for i in range(len(ds)))
    assert labels == [0, 0, 1, 1, 2, 2, 2]
    # the item is exactly the frames at the chosen start and interval
    interval, start = ds.choose(3)
    assert torch.equal(to_uint8_video(ds[3]["video"]), read_clip(ds.path_of(3), start, 4, interval, 32))


def test_items_deterministic_per_epoch(video_folder):
    a = VideoFolder(video_folder, 4, 32, interval="dynamic", seed=1)
    b = VideoFolder(video_folder, 4, 32, interval="dynamic", seed=1)
    draws = [a.choose(i) for i in range(len(a))]
    assert draws == [b.choose(i) for i in range(len(b))]
    a.set_epoch(1)
    assert [a.choose(i) for i in range(len(a))] != draws


def test_dynamic_interval_covers_range_and_caps(tmp_path):
    long = make_video(tmp_path / "c" / "long.mp4", num_frames=80)
    make_video(tmp_path / "c" / "short.mp4", num_frames=13)
    ds = VideoFolder(tmp_path, num_frames=4, size=16, interval="dynamic")
    index = {p: i for i, p in enumerate(ds.path_of(i) for i in range(len(ds)))}
    i_long, i_short = index[str(long)], index[str(tmp_path / "c" / "short.mp4")]
    seen_long, seen_short = set(), set()
    for epoch in range(300):
        ds.set_epoch(epoch)
        k, s = ds.choose(i_long)
        seen_long.add(k)
        assert s + clip_span(4, k) <= 80
        k, s = ds.choose(i_short)
        seen_short.add(k)
        assert s + clip_span(4, k) <= 13
    assert seen_long == set(range(1, 26))  # 80 frames hold 4 frames at interval 25 (span 76)
    assert seen_short == {1, 2, 3, 4}  # capped: (13 - 1) // 3 = 4
    ds.set_epoch(7)
    item = ds[i_long]
    k, s = ds.choose(i_long)
    assert item["interval"] == k
    full = read_all_frames(long, size=16)
    assert torch.equal(to_uint8_video(item["video"]), full[s:s + clip_span(4, k):k])


def test_too_short_excluded_and_counted(video_folder):
    ds = VideoFolder(video_folder, num_frames=10, size=16, interval=5)  # needs 46 frames
    assert ds.too_short == 5 and len(ds) == 2  # lengths 30, 45, 35, 50, 40, 55, 40


def test_ucf_split_files(video_folder, tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Apple\n2 Banana\n3 Cherry\n")
    (lists / "trainlist01.txt").write_text("Banana/v_Banana_g00.mp4 2\nCherry/v_Cherry_g02.avi 3\n")
    (lists / "testlist01.txt").write_text("Cherry/v_Cherry_g01.mp4\nApple/v_Apple_g00.mp4\n")
    train = VideoFolder(video_folder, 4, 16, split_file=lists / "trainlist01.txt")
    test = VideoFolder(video_folder, 4, 16, split_file=lists / "testlist01.txt")
    assert [(r.path, r.label) for r in train.records] == [("Banana/v_Banana_g00.mp4", 1),
                                                         ("Cherry/v_Cherry_g02.avi", 2)]
    assert [(r.path, r.label) for r in test.records] == [("Cherry/v_Cherry_g01.mp4", 2),
                                                        ("Apple/v_Apple_g00.mp4", 0)]
    ucf = build_dataset("ucf101", root=video_folder, split_dir=lists, split="test", fold=1, num_frames=4, size=16)
    assert [r.path for r in ucf.records] == [r.path for r in test.records]


def test_kinetics_csv_and_txt_lists(tmp_path):
    root = tmp_path / "k600"
    make_video(root / "abseiling" / "abc_000010_000020.mp4", num_frames=20)
    make_video(root / "zumba" / "xyz_000000_000010.mp4", num_frames=20, seed=3)
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("label,youtube_id,time_start,time_end,split\n"
                        "abseiling,abc,10,20,train\nzumba,xyz,0,10,train\nzumba,gone,0,10,train\n")
    with pytest.warns(BadVideoWarning, match="1 listed videos are missing"):
        ds = build_dataset("k600", root=root, list_file=csv_file, num_frames=4, size=16, interval=1)
    assert ds.classes == ["abseiling", "zumba"] and ds.missing == 1
    assert [r.label for r in ds.records] == [0, 1]
    paths = tmp_path / "list.csv"
    paths.write_text("path,label\nzumba/xyz_000000_000010.mp4,zumba\n")
    assert VideoFolder(root, 4, 16, split_file=paths, classes=["abseiling", "zumba"]).records[0].label == 1
    flat = tmp_path / "flat"
    make_video(flat / "v1.mp4", num_frames=20)
    (tmp_path / "flat.txt").write_text("v1.mp4 7\n")
    assert VideoFolder(flat, 4, 16, split_file=tmp_path / "flat.txt").records[0].label == 7


def test_index_file_caches_probes(video_folder, tmp_path):
    index = tmp_path / "index.json"
    a = VideoFolder(video_folder, 4, 16, index_file=index)
    cached = json.loads(index.read_text())["videos"]
    assert len(cached) == 7 and all(isinstance(v[2], int) for v in cached.values())
    b = VideoFolder(video_folder, 4, 16, index_file=index)
    assert [(r.path, r.num_frames) for r in a.records] == [(r.path, r.num_frames) for r in b.records]


def test_bad_files_skipped_counted_and_never_raise(bad_folder):
    with pytest.warns(BadVideoWarning) as record:
        ds = VideoFolder(bad_folder, num_frames=4, size=16, interval=2)
    messages = " ".join(str(w.message) for w in record)
    for name in ("empty.mp4", "truncated.mp4", "noise.avi"):
        assert name in messages
    assert ds.skipped == 3 and ds.too_short == 1  # short.mp4 has 3 frames
    assert {r.path for r in ds.records} == {"good/a.mp4", "good/b.mp4", "bad/truncated_faststart.mp4"}
    # iterate (as training would) over several epochs: the faststart-truncated file fails while
    # decoding, gets one warning, and its items are served by the next video
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(4):
            ds.set_epoch(epoch)
            for item in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0):
                assert item["video"].shape == (2, 4, 3, 16, 16) or item["video"].shape[0] == 1
    late = [str(w.message) for w in caught if issubclass(w.category, BadVideoWarning)]
    assert all("truncated_faststart" in m for m in late)
    # the header claims 60 frames, 10 survive: its clips come from the 10 that decode (no warning), or the
    # file was dropped with exactly one warning
    record = next(r for r in ds.records if r.path == "bad/truncated_faststart.mp4")
    dropped = record.path in ds._failed
    assert (dropped and len(late) == 1 and ds.skipped == 4) or (ds._decoded[record.path] == 10 and not late)


def test_a_header_that_over_counts_changes_no_other_items_draw(bad_folder):
    """Finding out a file is shorter than its header says (in one DataLoader worker) moves that item's clip
    inside the real frames, and leaves every other item's (video, interval, start) as before."""
    with pytest.warns(BadVideoWarning):
        ds = VideoFolder(bad_folder, num_frames=4, size=16, interval="dynamic", interval_sampling="interval_first")
    picks = {(e, i): ds.set_epoch(e) or ds.pick(i) for e in range(3) for i in range(len(ds))}
    short = next(i for i, r in enumerate(ds.records) if r.path == "bad/truncated_faststart.mp4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in range(3):
            ds.set_epoch(e)
            for i in range(len(ds)):
                item = ds[i]
                if item["path"].endswith("truncated_faststart.mp4"):
                    assert item["video"].shape[0] == 4  # a whole clip from the frames that decode
    assert {(e, i): ds.set_epoch(e) or ds.pick(i) for e in range(3) for i in range(len(ds))} == picks
    assert ds.records[short].num_frames > 10 and ds._decoded == {"bad/truncated_faststart.mp4": 10}


def test_eval_clips_deterministic(video_folder):
    a = EvalClips(video_folder, num_videos=4, num_frames=4, interval=3, seed=5, size=16)
    b = EvalClips(video_folder, num_videos=4, num_frames=4, interval=3, seed=5, size=16)
    c = EvalClips(video_folder, num_videos=4, num_frames=4, interval=3, seed=6, size=16)
    assert a.manifest() == b.manifest()
    assert len({m["video"] for m in a.manifest()}) == 4  # distinct videos
    assert a.manifest() != c.manifest()
    for i in range(4):
        x, y = a[i], b[i]
        assert torch.equal(x["video"], y["video"]) and x["path"] == y["path"] and x["start"] == y["start"]
        assert x["interval"] == 3 and x["video"].shape == (4, 3, 16, 16)
    with pytest.raises(ValueError, match="only 7 of 7"):
        EvalClips(video_folder, num_videos=8, num_frames=4, interval=3, seed=0)


def test_eval_clips_on_moving_digits():
    digits = MovingDigits(num_videos=20, num_frames=8, seed=0)
    ev = EvalClips(digits, num_videos=5, num_frames=12, interval=2, seed=0)
    item = ev[0]
    video = ev.manifest()[0]["video"]
    assert item["video"].shape == (12, 3, 32, 32) and item["label"] == digits.labels[video]
    assert torch.equal(to_uint8_video(item["video"]), digits.frames(video, num_frames=12, interval=2))


def test_data_check_reports_each_bad_file(bad_folder, tmp_path, capsys):
    from magi.cli import main

    out = tmp_path / "report.json"
    code = main(["data", "check", str(bad_folder), "--json", str(out), "--num-frames", "4"])
    assert code == 1
    report = json.loads(out.read_text())
    bad = {entry["path"]: entry["error"] for entry in report["bad"]}
    assert set(bad) == {"bad/empty.mp4", "bad/truncated.mp4", "bad/truncated_faststart.mp4", "bad/noise.avi",
                        "bad/notes.txt"}
    assert "empty" in bad["bad/empty.mp4"] and "truncated" in bad["bad/truncated_faststart.mp4"]
    assert "not a video" in bad["bad/notes.txt"]
    assert report["good"] == 3 and report["too_short"] == 1 and report["too_short_paths"] == ["good/short.mp4"]
    printed = capsys.readouterr().out
    assert "5 bad" in printed and "BAD bad/noise.avi" in printed
    good = tmp_path / "good_only"
    make_video(good / "x.mp4", num_frames=20)
    assert main(["data", "check", str(good)]) == 0
