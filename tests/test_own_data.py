"""A newcomer's path (docs/own-videos.md): a folder of own videos -> `magi train --data` -> resume -> sample by class
name after the folder moved; and the table of user mistakes, each one line on stderr with exit 2 and no
traceback, across `train`, `sample`, `eval`, `cache-latents`, `data check` and `demo`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import make_video

CLASSES = ("apple", "banana", "cherry")
# the smallest run that exercises everything: 16 px frames through pixels:4 (4x4 grid of 48 channels),
# 4-frame clips, the `test` preset, 1 thread, tiny sampling
FAST_TRAIN = ["--preset", "test", "--vae", "pixels:4", "--size", "16", "--frames", "4", "--set", "train.num_threads=1",
              "--set", "train.progress=false", "--set", "train.log_every=1", "--set", "train.checkpoint_every=2",
              "--set", "train.sample.num_videos=2", "--set", "train.sample.mask_steps=2",
              "--set", "train.sample.diffusion_steps=2"]
FAST_SAMPLE = ["--mask-steps", "2", "--diffusion-steps", "2", "--no-progress", "--no-gif"]


def make_own_folder(root: Path) -> Path:
    """3 class sub-folders of 3 short videos (18-22 frames, 24x32) and one unreadable file."""
    for c, name in enumerate(CLASSES):
        for k in range(3):
            make_video(root / name / f"{name}_{k}.mp4", num_frames=18 + 2 * k, height=24, width=32,
                       seed=10 * c + k)
    (root / "cherry" / "broken.mp4").write_bytes(b"\x00not a video" * 20)
    return root


def frames_of(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_train_on_a_folder_resume_and_sample_by_class_name_after_moving_it(tmp_path, capsys):
    from magi.config import RunConfig
    from magi.sample import main as sample_main
    from magi.train import main as train_main

    data, run = make_own_folder(tmp_path / "my_videos"), tmp_path / "run"
    assert train_main(["--data", str(data), "--out", str(run), "--steps", "3", *FAST_TRAIN]) == 0
    out = capsys.readouterr().out
    assert "9 of 10 videos" in out and "0 shorter, 1 unreadable" in out  # what the folder holds, and why
    assert "3 classes (apple, banana, cherry)" in out and "kind: folder" in out  # the config, printed
    assert "class_names:\n    - apple\n    - banana\n    - cherry" in out  # as written, not "null"
    assert f"run config written to {run / 'train_config.yaml'}" in out
    closing = out.strip().splitlines()[-1]
    assert closing.startswith("magi train: finished at step 3/3") and "loss " in closing
    assert f"checkpoint {run / 'checkpoints' / '3'}" in closing and "samples " in closing
    assert "loss.png" in closing and (run / "loss.png").stat().st_size > 0

    # the written config reproduces the run with --config; the checkpoint records the class names
    config = RunConfig.load(run / "train_config.yaml")
    assert config.data.kind == "folder" and config.model.num_classes == 3
    assert config.data.options["root"] == str(data.resolve())
    assert config.model.latent_channels == 48 and config.model.latent_size == 4 and config.model.num_frames == 4
    assert json.loads((run / "checkpoints" / "3" / "config.json").read_text())["class_names"] == list(CLASSES)

    # the same --out again is refused (not silently overwritten); --resume auto continues
    assert train_main(["--data", str(data), "--out", str(run), "--steps", "3", *FAST_TRAIN]) == 2
    assert "--resume auto" in capsys.readouterr().err
    assert train_main(["--data", str(data), "--out", str(run), "--steps", "5", "--resume", "auto",
                       *FAST_TRAIN]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {run / 'checkpoints' / '3'} at step 3" in out
    assert "finished at step 5/5" in out.strip().splitlines()[-1]
    assert (run / "checkpoints" / "5" / "ema.safetensors").is_file()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == [1, 2, 3, 4, 5]  # one record per step (samples add their own)

    # the data folder moves away: sampling by class name still works (names come from the checkpoint)
    shutil.move(str(data), str(tmp_path / "elsewhere"))
    samples = tmp_path / "samples"
    assert sample_main([str(run), "--out", str(samples), "--classes", "cherry,apple", "--num-samples", "1",
                        *FAST_SAMPLE]) == 0
    record = json.loads((samples / "samples.json").read_text())
    assert record["step"] == 5 and record["labels"] == [2, 0] and record["class_names"] == ["cherry", "apple"]
    assert record["files"]["mp4"] == ["cherry_000.mp4", "apple_001.mp4"]
    assert all(frames_of(samples / name) == 4 for name in record["files"]["mp4"])
    # a second sample into the same folder needs --overwrite
    args = [str(run), "--out", str(samples), "--classes", "banana", "--num-samples", "1", *FAST_SAMPLE]
    assert sample_main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert sample_main([*args, "--overwrite"]) == 0


def test_folder_run_resumes_bit_exact(tmp_path):
    """`--data` hands the trainer the dataset and VAE it built for its checks; resuming stays exact."""
    import torch
    from safetensors.torch import load_file

    from magi.train import main as train_main

    data = make_own_folder(tmp_path / "videos")
    fast = [*FAST_TRAIN, "--set", "train.sample.num_videos=0", "--set", "train.checkpoint_every=100"]
    assert train_main(["--data", str(data), "--out", str(tmp_path / "a"), "--steps", "4", *fast]) == 0
    assert train_main(["--data", str(data), "--out", str(tmp_path / "b"), "--steps", "2", *fast]) == 0
    assert train_main(["--data", str(data), "--out", str(tmp_path / "b"), "--steps", "4", "--resume", "auto",
                       *fast]) == 0
    a = load_file(str(tmp_path / "a" / "checkpoints" / "4" / "ema.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "4" / "ema.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_progress_follows_max_minutes(tmp_path):
    """The progress bar's total (hence its ETA) becomes the step the time limit will reach."""
    from magi.trainer import Trainer

    class Bar:
        disable, total = False, 1000

        def set_description(self, text, refresh=True):
            self.desc = text

    trainer = Trainer.__new__(Trainer)
    trainer.cfg = type("C", (), {"max_minutes": 1.0})()
    trainer.max_steps, trainer.step, trainer.out_of_time = 1000, 10, False
    import time

    trainer.t_start = time.time() - 6.0  # 10 steps in 6 s: 0.6 s a step, 54 s left -> 90 more steps
    bar = Bar()
    trainer._project_end(bar, first_step=0)
    assert 95 <= bar.total <= 101 and "max_minutes" in bar.desc
    trainer.cfg.max_minutes = 100.0  # the step limit binds: the total stays max_steps
    trainer._project_end(bar, first_step=0)
    assert bar.total == 1000


# --------------------------------------------------------------------------------------------------
# The error table: every user mistake is one line naming the argument or file, exit 2, no traceback


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """Paths the cases refer to as {name}: an own-video folder and a trained run of it, an empty
    folder, a config whose num_classes is too small for the folder, bad files, a checkpoint dir with
    nothing in it."""
    from magi.train import main as train_main

    root = tmp_path_factory.mktemp("world")
    own = make_own_folder(root / "own")
    run = root / "run"
    assert train_main(["--data", str(own), "--out", str(run), "--steps", "1", *FAST_TRAIN,
                       "--set", "train.sample.num_videos=0"]) == 0
    (root / "empty").mkdir()
    (root / "runs").mkdir()
    config = yaml.safe_load((run / "train_config.yaml").read_text())
    config["model"].update(num_classes=2, class_names=None)
    (root / "two_classes.yaml").write_text(yaml.safe_dump(config))
    (root / "empty.mp4").write_bytes(b"")
    whole = (own / "apple" / "apple_0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    (root / "a_file").write_text("not a folder\n")
    (root / "incomplete" / "checkpoints" / "7").mkdir(parents=True)
    (root / "samples_done").mkdir()
    (root / "samples_done" / "samples.json").write_text("{}")
    (root / "predict_done").mkdir()
    (root / "predict_done" / "predict.json").write_text("{}")
    (root / "cache_done").mkdir()
    (root / "cache_done" / "index.json").write_text("{}")
    _not_videos(root)
    return {"own": str(own), "run": str(run), "root": str(root), "empty": str(root / "empty"),
            "video": str(own / "apple" / "apple_0.mp4")}


def _not_videos(root: Path) -> None:
    """root/pictures/<class>/ holds an image and a GIF; root/sounds/<class>/ an .mp4 with audio only."""
    import av
    import numpy as np
    from PIL import Image

    pictures, sounds = root / "pictures" / "cats", root / "sounds" / "birds"
    pictures.mkdir(parents=True)
    sounds.mkdir(parents=True)
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(pictures / "still.png")
    frames = [Image.fromarray(np.full((24, 32, 3), 20 * i, np.uint8)) for i in range(12)]
    frames[0].save(pictures / "moving.gif", save_all=True, append_images=frames[1:])
    with av.open(str(sounds / "song.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=22050)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 22050
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


# quick checks: the smallest model and clips
T = ["--preset", "test", "--vae", "pixels:4", "--size", "16", "--frames", "4", "--set", "train.progress=false"]
S = ["--mask-steps", "2", "--diffusion-steps", "2", "--no-progress"]

CASES = [
    # (command, arguments ({name} from the world fixture, {new} a fresh path), expected in the one line)
    # magi train --data: the folder
    ("train", ["--data", "{root}/missing", "--out", "{new}", *T], "--data: folder not found"),
    ("train", ["--data", "{video}", "--out", "{new}", *T], "is a file; expected a folder of videos"),
    ("train", ["--data", "{empty}", "--out", "{new}", *T], "no video files under"),
    ("train", ["--data", "{own}", "--out", "{new}", "--preset", "test", "--size", "16", "--frames", "30"],
     "0 of 10 videos in {own} hold a clip of 30 frames (30 frames at interval 1): 9 shorter, 1 unreadable"),
    ("train", ["--data", "{own}", "--out", "{new}", "--preset", "test", "--vae", "pixels:4", "--frames", "4",
               "--size", "18"],
     "--size: PixelVAE: frame size 18x18 is not divisible"),
    ("train", ["--data", "{own}", "--out", "{new}", "--preset", "test", "--vae", "pixels:4", "--frames", "4",
               "--size", "20"],
     "--size: 20 px gives a 5x5 latent grid"),
    ("train", ["--data", "{own}", "--out", "{new}", "--preset", "test", "--frames", "1"], "--frames"),
    ("train", ["--data", "{own}", "--out", "{new}", "--frames", "abc"], "--frames: invalid int value"),
    ("train", ["--data", "{own}", "--out", "{new}", "--preset", "huge"], "--preset: unknown preset 'huge'"),
    ("train", ["--data", "{own}", "--out", "{new}", *T, "--vae", "{root}/no_vae"], "--vae: "),
    ("train", ["--data", "{own}", "--out", "{new}", *T, "--vae", "pixels:x"], "--vae pixels:x"),
    ("train", ["--data", "{own}", "--out", "{new}", *T, "--minutes", "-1"], "--minutes"),
    ("train", ["--data", "{own}", "--out", "{new}", *T, "--minutes", "nan"], "argument --minutes: expected a finite"),
    ("train", ["--data", "{own}", "--out", "{new}", *T, "--minutes", "inf"], "argument --minutes: expected a finite"),
    # folders that hold no video: say what they hold, not "lower --frames"
    ("train", ["--data", "{root}/pictures", "--out", "{new}", *T],
     "no video files under {root}/pictures, only 1 image and 1 GIF (GIFs are not read: convert one"),
    ("train", ["--data", "{root}/sounds", "--out", "{new}", *T], "1 unreadable (e.g. song.mp4: no video stream)"),
    ("train", ["--data", "{own}", "--out", "{new}", *T, "--interval", "0"], "--interval"),
    ("train", ["--data", "{own}", "--out", "{new}", *T, "--set", "train.global_batch_size=64"],
     "train.global_batch_size: 64 is larger than the dataset (9 clips"),
    ("train", ["--data", "{own}", "--out", "{new}", *T, "--set", "train.lrr=1"], "train.lrr"),
    ("train", ["--data", "{own}", "--out", "{new}", *T, "--set", "model.class_names=[a,b,c]"],
     "model.class_names"),
    ("train", ["--out", "{new}"], "--config or --data"),
    ("train", ["--data", "{own}", "--config", "{root}/two_classes.yaml", "--out", "{new}"], "--config and --data"),
    ("train", ["--config", "{root}/two_classes.yaml", "--out", "{new}", "--steps", "3"], "--steps: only with --data"),
    ("train", ["--config", "{root}/nothing.yaml", "--out", "{new}"], "config file not found"),
    # the first case: num_classes below the folder's classes stops before anything is written
    ("train", ["--config", "{root}/two_classes.yaml", "--out", "{new}"],
     "model.num_classes=2 but the data has 3 classes (apple, banana, cherry)"),
    ("train", ["--config", "{run}/train_config.yaml", "--out", "{new}", "--resume", "{root}/no_such_ckpt"],
     "--resume: {root}/no_such_ckpt does not exist"),
    ("train", ["--config", "{run}/train_config.yaml", "--out", "{new}", "--resume", "{root}/incomplete/checkpoints/7"],
     "incomplete checkpoint"),
    ("train", ["--config", "{run}/train_config.yaml", "--out", "{run}"], "already holds a run"),
    ("train", ["--config", "{run}/train_config.yaml", "--out", "{root}/a_file"], "--out: {root}/a_file is a file"),
    ("train", ["--config", "{run}/train_config.yaml", "--out", "{new}", "--epochs", "3"], "unrecognized arguments"),
    ("train", ["--config", "{run}/train_config.yaml", "--out", "{new}", "--set", "vae.spec=runs/my_vae"],
     "vae.spec: runs/my_vae does not exist"),
    # magi sample
    ("sample", ["{root}/runs/myrun", "--out", "{new}"], "checkpoint not found: {root}/runs/myrun"),
    ("sample", ["runs/myrun", "--out", "{new}"], "checkpoint not found: runs/myrun (no such directory"),
    ("sample", ["{run}", "--out", "{new}", "--step", "99"], "no checkpoint for step 99"),
    ("sample", ["{run}", "--out", "{new}", "--context-video", "{root}/missing.mp4", *S],
     "--context-video {root}/missing.mp4: no such file"),
    ("sample", ["{run}", "--out", "{new}", "--context-video", "{root}/empty.mp4", *S], "empty file"),
    ("sample", ["{run}", "--out", "{new}", "--context-video", "{root}/truncated.mp4", *S],
     "--context-video {root}/truncated.mp4"),
    ("sample", ["{run}", "--out", "{new}", "--frames", "1000000"], "pass --yes to start it"),
    ("sample", ["{run}", "--out", "{new}", "--interval", "99", *S], "--interval: frame interval 99"),
    ("sample", ["{run}", "--out", "{new}", "--classes", "pear", *S],
     "--classes: unknown class 'pear'; the model knows apple, banana, cherry"),
    ("sample", ["{run}", "--out", "{new}", "--classes", "7", *S], "index 7 out of range 0..2"),
    ("sample", ["{run}", "--out", "{new}", "--num-samples", "0", *S], "--num-samples"),
    ("sample", ["{run}", "--out", "{new}", "--frames", "abc", *S], "--frames"),
    ("sample", ["{run}", "--out", "{new}", "--vae", "pixels:2", *S], "latent channels"),
    ("sample", ["{run}", "--out", "{root}/samples_done", *S], "already holds samples"),
    ("sample", ["{run}", "--out", "{new}", "--sampler", "euler"], "--sampler: invalid choice"),
    ("sample", ["{run}", "--out", "{new}", "--vae", "runs/my_vae", *S], "--vae: runs/my_vae does not exist"),
    # non-finite and out-of-range numbers (--cfg nan sampled black frames and wrote "cfg": NaN)
    ("sample", ["{run}", "--out", "{new}", "--cfg", "nan", *S], "argument --cfg: expected a finite number >= 0"),
    ("sample", ["{run}", "--out", "{new}", "--cfg", "inf", *S], "argument --cfg: expected a finite number >= 0"),
    ("sample", ["{run}", "--out", "{new}", "--cfg", "-1", *S], "argument --cfg"),
    ("sample", ["{run}", "--out", "{new}", "--temperature", "nan", *S], "argument --temperature: expected a finite"),
    ("sample", ["{run}", "--out", "{new}", "--temperature", "0", *S], "argument --temperature"),
    ("sample", ["{run}", "--out", "{new}", "--fps", "inf", *S], "argument --fps"),
    ("sample", ["{run}", "--out", "{new}", "--batch-size", "0", *S], "argument --batch-size"),
    # magi eval
    ("eval", ["predict", "{root}/runs/myrun", "--num-videos", "2", "--out", "{new}"], "checkpoint not found"),
    ("eval", ["predict", "{run}", "--out", "{new}"], "--num-videos is required"),
    ("eval", ["fvd", "{run}", "--out", "{new}"], "--detector"),
    ("eval", ["fvd", "{run}", "--num-videos", "2", "--detector", "x.pt", "--out", "{root}/a_file"],
     "--out: {root}/a_file exists"),
    ("eval", ["predict", "{run}", "--num-videos", "2", "--out", "{root}/predict_done"], "already holds a predict.json"),
    ("eval", ["predict", "{run}", "--num-videos", "2", "--data", "{root}/missing", "--out", "{new}"],
     "--data '{root}/missing': neither a folder of videos (as magi train --data DIR takes it) nor a dataset kind"),
    ("eval", ["predict", "{run}", "--num-videos", "2", "--data", "{own}", "--data-root", "{own}", "--out", "{new}"],
     "is a folder and --data-root"),
    ("eval", ["predict", "{run}", "--num-videos", "2", "--cfg", "nan", "--out", "{new}"], "argument --cfg"),
    # magi cache-latents
    ("cache-latents", ["--vae", "pixels:4", "--out", "{new}"], "--data: no data kind"),
    ("cache-latents", ["--data", "kind=folder", "--data", "root={root}/missing", "--data", "num_frames=4",
                       "--vae", "pixels:4", "--out", "{new}"], "root folder not found"),
    ("cache-latents", ["--data", "kind=folder", "--data", "root={own}", "--data", "num_frames=4",
                       "--vae", "{root}/runs/vae", "--out", "{new}"], "--vae: {root}/runs/vae does not exist"),
    ("cache-latents", ["--data", "kind=folder", "--data", "root={own}", "--data", "num_frames=4",
                       "--vae", "pixels:4", "--out", "{root}/cache_done"], "already holds a latent cache"),
    ("cache-latents", ["--data", "kind=folder", "--data", "root={own}", "--data", "num_frames=99",
                       "--vae", "pixels:4", "--out", "{new}"], "0 of 10 videos"),
    # magi data check
    ("data", ["check", "{root}/missing"], "ROOT: folder not found"),
    ("data", ["check", "{root}/a_file"], "is a file"),
    ("data", ["check", "{own}", "--num-frames", "0"], "--num-frames"),
    ("data", ["check", "{own}", "--size", "0"], "--size"),
    # magi demo
    ("demo", ["--out", "{new}", "--pretrained", "{root}/missing", "--skip-train"], "--pretrained"),
    ("demo", ["--out", "{new}", "--train-minutes", "0"], "--train-minutes"),
    ("demo", ["--out", "{new}", "--train-minutes", "nan"], "argument --train-minutes: expected a finite"),
    # magi play: ports and numbers checked before anything is loaded or served
    ("play", ["--port", "70000"], "argument --port: expected an integer >= 1 and <= 65535, got '70000'"),
    ("play", ["--port", "-1"], "argument --port"),
    ("play", ["--temperature", "nan"], "argument --temperature"),
    ("play", ["--idle-limit", "inf"], "argument --idle-limit"),
    ("demo", ["--out", "{new}", "--skip-predict", "--config", "{root}/nothing.yaml"], "--config"),
    ("demo", ["--out", "{new}", "--skip-predict", "--set", "train.lrr=1"], "train.lrr"),
]


@pytest.mark.parametrize("command, argv, expected", CASES,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_user_errors_are_one_line_exit_2(world, tmp_path, capsys, monkeypatch, command, argv, expected):
    from magi.cli import main

    monkeypatch.chdir(world["root"])  # "runs/myrun": a typo under an existing runs/, not a Hub id
    names = {**world, "new": str(tmp_path / "new")}
    argv = [a.format(**names) for a in argv]
    try:
        code = main([command, *argv])
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("magi ") and expected.format(**names) in lines[0], lines[0]
    assert not (tmp_path / "new" / "metrics.jsonl").exists()  # nothing started


def test_a_latent_cache_of_a_folder_keeps_its_class_names(tmp_path):
    from magi.data import LatentDataset, VideoFolder, cache_latents
    from magi.vae import load_vae

    source = VideoFolder(make_own_folder(tmp_path / "videos"), 4, 16, interval=1, progress=False)
    cache_latents(source, load_vae("pixels:4"), tmp_path / "cache", progress=False)
    assert LatentDataset(tmp_path / "cache", num_frames=4, progress=False).classes == list(CLASSES)


def test_version_from_the_command_line():
    import subprocess
    import sys

    import magi

    for argv in (["magi.cli", "--version"], ["magi.cli", "train", "--version"],
                 ["magi.cli", "play", "--port", "1", "--version"], ["magi.train", "--version"]):
        run = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=120)
        assert (run.returncode, run.stdout, run.stderr) == (0, f"magi {magi.__version__}\n", ""), argv


def test_evaluating_a_folder_as_train_takes_it(world, tmp_path):
    """`magi eval predict RUN --data DIR`, as `magi train --data DIR` took the folder."""
    from magi.evaluate.cli import main

    out = tmp_path / "predict"
    assert main(["predict", world["run"], "--data", world["own"], "--num-videos", "2", "--frames", "4",
                 "--context-frames", "2", "--mask-steps", "2", "--diffusion-steps", "2", "--no-progress",
                 "--out", str(out)]) == 0
    record = json.loads((out / "predict.json").read_text())
    assert record["protocol"]["data"] == "folder" and record["protocol"]["data_root"] == world["own"]
