"""Text to video end to end, offline: a tiny T5 encoder (T5Config + the file-less ByT5Tokenizer), a text
model trained a few steps on captioned digits through `magi train`, and `MagiPipeline` on the result."""

import warnings

import numpy as np
import pytest
import torch
import yaml

from magi import MagiPipeline
from magi.config import RunConfig
from magi.text import TextEncoder, byte_t5
from magi.train import train


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("byte_t5")
    model, tokenizer = byte_t5(width=32, layers=1, heads=2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _run_config(encoder_dir, mode="prefix"):
    return RunConfig.from_dict({
        "model": {"preset": "test", "latent_channels": 16, "latent_size": 4, "num_frames": 4, "num_classes": 0,
                  "text_mode": mode},
        "text_encoder": {"name": str(encoder_dir), "max_length": 40},
        "data": {"kind": "captioned-digits",
                 "options": {"num_videos": 32, "num_frames": 4, "size": 16, "num_digits": 1, "seed": 0}},
        "vae": {"spec": "pixels:4:gray"},
        "train": {"max_steps": 2, "global_batch_size": 4, "warmup_steps": 1, "lr": 1e-3, "precision": "fp32",
                  "checkpoint_every": 2, "progress": False, "sample": {"num_videos": 0}},
    })


@pytest.fixture(scope="module")
def trained(encoder_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("text_run")
    result = train(_run_config(encoder_dir), out)
    return out, result


def test_text_encoder_encodes_each_caption_once_and_warns_on_truncation(encoder_dir):
    enc = TextEncoder.from_pretrained(encoder_dir, max_length=12)
    calls = []
    enc.model.register_forward_hook(lambda m, i, o: calls.append(1))
    a = enc.encode(["the digit 1", "the digit 2", "the digit 1"])
    assert a.shape == (3, 12, 32) and a.dtype == torch.float32
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    enc.encode(["the digit 2"])
    assert len(calls) == 1, "memoised: the second call must not run the encoder"
    with pytest.warns(UserWarning, match="longer than the text encoder's 12 tokens are truncated"):
        enc.encode(["the digit 3 is moving up then down"])
    with pytest.raises(ValueError, match="captions: expected a list"):
        enc.encode("one string")


def test_a_missing_encoder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="text_encoder.name"):
        TextEncoder.from_pretrained(tmp_path / "nowhere", max_length=8)


def test_training_a_text_model_records_the_encoder(trained, encoder_dir):
    out, result = trained
    assert result.step == 2
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["model"]["text_dim"] == 32 and saved["model"]["text_len"] == 40
    assert saved["text_encoder"]["name"] == str(encoder_dir)


def test_a_text_run_starts_from_a_class_model(encoder_dir, tmp_path):
    """`train.init_reconditioned`: a class-conditional run's checkpoint starts a text run (the video path
    loads, the caption path is new), which trains; without init_from the option is refused."""
    run = _run_config(encoder_dir)
    run.model.num_classes, run.model.text_mode = 10, "prefix"
    run.data.kind = "moving-digits"
    run.data.options = {"num_videos": 32, "num_frames": 4, "size": 16, "num_digits": 1}
    run.text_encoder.name = None
    run.model.text_dim = run.model.text_len = 0
    train(run, tmp_path / "class")
    source = tmp_path / "class" / "checkpoints" / "2"
    text_run = _run_config(encoder_dir)
    text_run.train.init_from, text_run.train.init_reconditioned = str(source), True
    result = train(text_run, tmp_path / "text")
    assert result.step == 2
    with pytest.raises(ValueError, match="only the conditioning"):
        other = _run_config(encoder_dir)
        other.model.depth += 1
        other.train.init_from, other.train.init_reconditioned = str(source), True
        train(other, tmp_path / "deeper")
    text_run.train.init_from = None
    with pytest.raises(ValueError, match="train.init_reconditioned"):
        text_run.validate()


def test_a_text_model_refuses_data_without_captions(encoder_dir, tmp_path):
    run = _run_config(encoder_dir)
    run.data.kind = "moving-digits"
    run.data.options = {"num_videos": 32, "num_frames": 4, "size": 16, "num_digits": 1}
    with pytest.raises(ValueError, match="makes a text model but the data has no captions"):
        train(run, tmp_path)


def test_the_pipeline_answers_prompts(trained):
    out, _ = trained
    pipe = MagiPipeline.from_pretrained(out)
    kw = dict(mask_steps=2, diffusion_steps=2, sampler="ddim", generator=torch.Generator().manual_seed(0))
    video = pipe(prompt=["the digit 3 is moving up then down", ""], guidance_scale=3.0, **kw)
    assert video.dtype == np.uint8 and video.shape == (2, 4, 16, 16, 3)
    again = pipe(prompt=["the digit 3 is moving up then down", ""], guidance_scale=3.0,
                 **{**kw, "generator": torch.Generator().manual_seed(0)})
    assert np.array_equal(video, again)
    # the empty prompt is the null caption
    emb = pipe.encode_prompt(["", "the digit 1 is moving up then down"])
    assert torch.equal(emb[0], pipe.model.null_text) and not torch.equal(emb[1], pipe.model.null_text)


def test_the_pipeline_names_bad_arguments(trained):
    out, _ = trained
    pipe = MagiPipeline.from_pretrained(out)
    with pytest.raises(ValueError, match="class_labels: this model has no classes"):
        pipe(prompt="the digit 1 is moving up then down", class_labels=[1])
    with pytest.raises(ValueError, match="num_videos: 3 given, but prompt gives a batch of 2"):
        pipe(prompt=["a", "b"], num_videos=3)
    with pytest.raises(ValueError, match="actions: this model is not action-conditioned"):
        pipe(prompt="a", actions=[[0, 1]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe(prompt="the digit 3 is moving up then down " * 3, mask_steps=1, diffusion_steps=1, sampler="ddim")
    assert any("truncated" in str(w.message) for w in caught)


def test_a_prompt_for_a_model_without_text_is_refused():
    pipe = MagiPipeline.from_pretrained("pretrained")
    with pytest.raises(ValueError, match="prompt: this model has no text conditioning"):
        pipe(prompt="a digit")
    video = pipe(class_labels=[3], num_frames=4, mask_steps=1, diffusion_steps=1, sampler="ddim")
    assert video.shape[:2] == (1, 4) and video.shape[-1] == 3


def _t2v_run(encoder_dir, tmp_path, shrink: bool):
    """configs/t2v_850m_t5xxl.yaml on a captioned folder of 17-frame 128-px clips, a Cosmos stand-in with
    the CV4x8x8 geometry and the tiny encoder; `shrink` keeps the config's data, VAE and text wiring with a
    small backbone (the default suite), else the full magi-850m."""
    import json

    from conftest import make_video
    from cosmos_standin import make_cosmos_dir

    root = tmp_path / "videos"
    rows = []
    for k in range(2):
        make_video(root / f"v{k}.mp4", num_frames=24, height=128, width=128, seed=k)
        rows.append(json.dumps({"file_name": f"v{k}.mp4", "text": f"a test clip number {k}"}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    sets = [f"text_encoder.name={encoder_dir}", f"vae.spec={make_cosmos_dir(tmp_path / 'cv4x8x8')}",
            f"data.options.root={root}", "data.num_workers=0", "train.epochs=null", "train.max_steps=1",
            "train.global_batch_size=1", "train.parallel=ddp", "train.precision=fp32", "train.device=cpu",
            "train.progress=false", "train.sample.num_videos=0", "data.options.interval=1"]
    if shrink:
        sets += ["model.width=64", "model.depth=1", "model.num_heads=2", "model.head_width=64"]
    return RunConfig.load("configs/t2v_850m_t5xxl.yaml", sets)


def test_the_paper_scale_text_config_runs_a_step_on_stand_ins(encoder_dir, tmp_path):
    full = RunConfig.load("configs/t2v_850m_t5xxl.yaml")
    assert full.text_encoder.name == "google/t5-v1_1-xxl" and full.model.width == 1280 and full.model.depth == 20
    assert full.model.num_classes == 0 and full.data.options["captions"] is True
    result = train(_t2v_run(encoder_dir, tmp_path, shrink=True), tmp_path / "run")
    assert result.step == 1


@pytest.mark.slow
def test_the_paper_scale_text_model_takes_a_step(encoder_dir, tmp_path):
    """The full magi-850m with text (~17 GB of CPU memory for weights, gradients, AdamW and EMA)."""
    result = train(_t2v_run(encoder_dir, tmp_path, shrink=False), tmp_path / "run")
    assert result.step == 1


def test_magi_eval_text_writes_its_report(trained, tmp_path):
    """The evaluation's wiring on the tiny model (accuracies of a 2-step model mean nothing): the scorer,
    the tables, the controls, the sweep, two-digit captions, the plot and the GIF grid."""
    import json

    from magi.evaluate.cli import main

    out, _ = trained
    rc = main(["text", str(out), "--out", str(tmp_path / "eval"), "--scorer-steps", "5", "--samples", "1",
               "--sweep", "1,2", "--sweep-samples", "1", "--two-digit", "4", "--mask-steps", "1",
               "--diffusion-steps", "1", "--no-progress"])
    assert rc == 0
    r = json.loads((tmp_path / "eval" / "text_eval.json").read_text())
    assert r["one_digit"]["seen"]["n"] == 30 and r["one_digit"]["heldout"]["n"] == 10
    assert set(r["sweep"]) == {"1", "2"} and r["two_digit"]["all"]["n"] == 4
    assert set(r["controls"]) == {"shuffled", "other_caption", "null_prompt"}
    for name in ("text_eval.png", "prompts.gif", "scorer/scorer.json"):
        assert (tmp_path / "eval" / name).is_file()


def test_an_exported_text_model_carries_its_encoder(trained, tmp_path, encoder_dir):
    import shutil

    from magi.demo import export_pretrained

    out, _ = trained
    export_pretrained(out, tmp_path / "export", command="test")
    shutil.copytree(tmp_path / "export", tmp_path / "moved")  # the folder works wherever it is copied
    saved = yaml.safe_load((tmp_path / "moved" / "train_config.yaml").read_text())
    assert saved["text_encoder"]["name"] == "text_encoder"
    pipe = MagiPipeline.from_pretrained(tmp_path / "moved")
    assert pipe.text_encoder.name == str(tmp_path / "moved" / "text_encoder")
    video = pipe(prompt="the digit 1 is moving up then down", mask_steps=1, diffusion_steps=1, sampler="ddim")
    assert video.shape == (1, 4, 16, 16, 3)
    from magi.demo import text_to_video  # the demo's part 2 on it

    r = text_to_video(tmp_path / "moved", tmp_path / "demo", prompts=["the digit 0 is moving left then right"],
                      per_prompt=2)
    assert (tmp_path / "demo" / "prompts.gif").is_file() and r["videos_per_prompt"] == 2


def test_magi_sample_takes_prompts(trained, tmp_path):
    import json

    from magi.sample import main

    out, _ = trained
    rc = main([str(out), "--out", str(tmp_path / "s"), "--prompt", "the digit 3 is moving up then down",
               "--prompt", "", "--num-samples", "2", "--cfg", "2", "--mask-steps", "1", "--diffusion-steps", "1",
               "--sampler", "ddim", "--no-progress", "--yes"])
    assert rc == 0
    record = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert record["task"] == "text" and record["num_videos"] == 4
    assert record["prompts"] == ["the digit 3 is moving up then down"] * 2 + [""] * 2
    assert main(["pretrained", "--out", str(tmp_path / "t"), "--prompt", "a digit", "--yes"]) != 0


def test_the_controls_shuffle_captions_at_random_and_name_another_caption():
    """`shuffled` pairs each video with a caption drawn without regard to it (a faithful model scores near
    chance); `other_caption` always names another digit moving another way (a faithful model scores near 0)."""
    from magi.data.builtin import all_captions, parse_caption
    from magi.evaluate.text_eval import _other_caption, _shuffled

    captions = [c for c in all_captions(num_digits=1) for _ in range(8)]
    shuffled = _shuffled(captions, seed=0)
    assert sorted(shuffled) == sorted(captions) and shuffled == _shuffled(captions, seed=0) != _shuffled(captions, 1)
    same_digit = np.mean([parse_caption(a)[0][0] == parse_caption(b)[0][0] for a, b in zip(captions, shuffled)])
    assert 0.04 < same_digit < 0.2  # about 1 in 10, as chance
    for a, b in zip(captions, _other_caption(captions)):
        (da, ma), = parse_caption(a)
        (db, mb), = parse_caption(b)
        assert da != db and ma != mb


def test_the_shipped_text_model_is_the_configs_model_and_follows_its_captions():
    """pretrained/text_digits loads offline with the encoder it carries, is the model configs/text_digits.yaml
    builds (so `make text-digits` rebuilds this architecture), and at a cheap setting draws what two captions say,
    as read by the shipped caption scorer (results/text_digits/scorer)."""
    from pathlib import Path

    from magi.evaluate.text import CaptionScorer

    root = Path(__file__).resolve().parents[1]
    pipe = MagiPipeline.from_pretrained(root / "pretrained" / "text_digits")
    recipe = yaml.safe_load((root / "configs" / "text_digits.yaml").read_text())["model"]
    recipe.pop("preset")  # a name for a set of fields, not a field of the built config
    assert {k: getattr(pipe.config, k) for k in recipe} == recipe
    prompts = ["the digit 1 is moving left then right"] * 4 + ["the digit 0 is moving up then down"] * 4
    video = pipe(prompt=prompts, guidance_scale=7.0, mask_steps=2, diffusion_steps=10, sampler="ddim",
                 temperature=0.1, generator=torch.Generator().manual_seed(0))
    assert video.shape == (8, 6, 16, 16, 3) and video.dtype == np.uint8
    read = CaptionScorer.load(root / "results" / "text_digits" / "scorer").score(video, prompts)
    assert read["motion"].mean() >= 0.75 and read["digit_likeliest"].mean() >= 0.5
