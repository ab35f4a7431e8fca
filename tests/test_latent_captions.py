"""Captions through the latent cache: records and items carry them, a text encoder's embeddings of every
distinct caption are stored once beside the shards, and a trainer given such a cache uses them instead of
running its encoder on the training captions (docs/design.md §9)."""

import json

import pytest
import torch

from magi.config import RunConfig
from magi.data import LatentDataset, MovingDigits, cache_latents
from magi.data.builtin import CaptionedDigits
from magi.data.latents import main as cache_main
from magi.text import TextEncoder, byte_t5
from magi.train import train
from magi.trainer import Trainer
from magi.vae import load_vae

MAX_LENGTH = 40
# the pixels VAE's digit latents are not unit scale; cache_latents says so, which is not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore:latent cache .*far from unit scale:UserWarning")
DIGITS = {"num_videos": 12, "num_frames": 4, "size": 16, "num_digits": 1, "seed": 0}


def _encoder_dir(path, seed=0):
    model, tokenizer = byte_t5(width=32, layers=1, heads=2, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return _encoder_dir(tmp_path_factory.mktemp("byte_t5"))


@pytest.fixture(scope="module")
def source():
    return CaptionedDigits(**DIGITS)


@pytest.fixture(scope="module")
def plain_cache(source, tmp_path_factory):
    """Cached without a text encoder: captions only."""
    return cache_latents(source, load_vae("pixels:4:gray"), tmp_path_factory.mktemp("plain") / "c", shard_size=5,
                         progress=False)


@pytest.fixture(scope="module")
def text_cache(encoder_dir, tmp_path_factory):
    """Cached by `magi cache-latents ... --text-encoder DIR --text-max-length L`."""
    out = tmp_path_factory.mktemp("text") / "c"
    data = [f"--data={k}={v}" for k, v in {"kind": "captioned-digits", **DIGITS}.items()]
    rc = cache_main([*data, "--vae", "pixels:4:gray", "--out", str(out), "--workers", "0", "--shard-size", "5",
                     "--text-encoder", str(encoder_dir), "--text-max-length", str(MAX_LENGTH)])
    assert rc == 0
    return out


def _run(encoder_dir, cache, max_length=MAX_LENGTH, steps=2):
    return RunConfig.from_dict({
        "model": {"preset": "test", "latent_channels": 16, "latent_size": 4, "num_frames": 4, "num_classes": 0,
                  "text_mode": "prefix"},
        "text_encoder": {"name": str(encoder_dir), "max_length": max_length},
        "data": {"kind": "latents", "options": {"root": str(cache)}, "num_workers": 0},
        "vae": {"spec": "pixels:4:gray"},
        "train": {"max_steps": steps, "global_batch_size": 4, "warmup_steps": 1, "lr": 1e-3, "precision": "fp32",
                  "checkpoint_every": steps, "progress": False, "sample": {"num_videos": 0}},
    })


def test_items_of_a_cache_carry_their_videos_captions(plain_cache, source):
    meta = json.loads((plain_cache / "index.json").read_text())
    assert meta["captions"] is True and meta["text_embeddings"] is None
    assert [r["caption"] for r in meta["videos"]] == source.captions
    cache = LatentDataset(plain_cache)
    assert cache.captions and cache.caption_embeddings() is None
    for i in range(len(source)):
        assert cache[i]["caption"] == source[i]["caption"] == cache.caption_of(i)
    assert not (plain_cache / "captions.safetensors").exists()
    assert not list(plain_cache.glob(".tmp-*")), "every file is renamed into place"


def test_a_cache_without_captions_has_none(tmp_path):
    source = MovingDigits(num_videos=3, num_frames=4, size=16, seed=0)
    out = cache_latents(source, load_vae("pixels:4:gray"), tmp_path / "c", progress=False)
    cache = LatentDataset(out)
    assert not cache.captions and "caption" not in cache[0] and cache.caption_embeddings() is None
    with pytest.raises(ValueError, match="text_encoder: given, but the source MovingDigits has no captions"):
        cache_latents(source, load_vae("pixels:4:gray"), tmp_path / "d", progress=False,
                      text_encoder=TextEncoder(*byte_t5(width=32, layers=1, heads=2), max_length=8))


def test_stored_embeddings_are_the_encoders_one_per_distinct_caption(text_cache, encoder_dir, source):
    meta = json.loads((text_cache / "index.json").read_text())
    text = meta["text_embeddings"]
    distinct = list(dict.fromkeys(source.captions))
    assert text["captions"] == distinct and len(distinct) < len(source)  # a caption repeats: embedded once
    assert text["encoder"] == str(encoder_dir) and text["max_length"] == MAX_LENGTH and text["width"] == 32
    name, max_length, stored = LatentDataset(text_cache).caption_embeddings()
    assert (name, max_length, list(stored)) == (str(encoder_dir), MAX_LENGTH, distinct)
    fresh = TextEncoder.from_pretrained(encoder_dir, max_length=MAX_LENGTH).encode(distinct)  # (K, L, E)
    assert torch.equal(torch.stack(list(stored.values())), fresh)


def test_remember_fills_the_memo_and_checks_shapes(encoder_dir):
    enc = TextEncoder.from_pretrained(encoder_dir, max_length=8)
    calls = []
    enc.model.register_forward_hook(lambda m, i, o: calls.append(1))
    emb = torch.randn(2, 8, 32)
    enc.remember(["a", "b"], emb)
    assert torch.equal(enc.encode(["b", "a"]), emb.flip(0)) and not calls
    with pytest.raises(ValueError, match=r"embeddings \(2, 9, 32\) for 2 captions; this encoder gives \(2, 8, 32\)"):
        enc.remember(["a", "b"], torch.zeros(2, 9, 32))


def test_a_trainer_on_the_cache_never_runs_the_encoder_on_training_captions(text_cache, encoder_dir, tmp_path):
    trainer = Trainer(_run(encoder_dir, text_cache), tmp_path / "run")
    calls = []
    trainer.text_encoder.model.register_forward_hook(lambda m, i, o: calls.append(1))
    assert len(trainer.text_encoder._memo) == len({LatentDataset(text_cache).caption_of(i) for i in range(12)})
    result = trainer.fit()
    assert result.step == 2 and not calls


def test_embeddings_of_another_encoder_are_ignored_with_a_warning(text_cache, encoder_dir, tmp_path):
    other = _encoder_dir(tmp_path / "other_t5", seed=1)
    for name, max_length in ((other, MAX_LENGTH), (encoder_dir, 24)):
        with pytest.warns(UserWarning, match=rf"from text encoder '{encoder_dir}' \(max_length 40\), not this "
                                             rf"run's '{name}' \(max_length {max_length}\); ignoring them"):
            trainer = Trainer(_run(name, text_cache, max_length=max_length), tmp_path / f"run{max_length}")
        assert not trainer.text_encoder._memo
    # the same folder spelt another way is the same encoder
    trainer = Trainer(_run(encoder_dir / ".." / encoder_dir.name, text_cache), tmp_path / "same")
    assert len(trainer.text_encoder._memo) == len(LatentDataset(text_cache).caption_embeddings()[2])


def test_a_text_model_trains_from_a_cache_without_stored_embeddings(plain_cache, encoder_dir, tmp_path):
    result = train(_run(encoder_dir, plain_cache), tmp_path / "run")
    assert result.step == 2


def test_cache_latents_names_text_options_it_cannot_use(tmp_path, capsys):
    base = ["--vae", "pixels:4:gray", "--workers", "0", "--data", "num_videos=2", "--data", "num_frames=4",
            "--data", "size=16"]
    assert cache_main(["--data", "kind=moving-digits", *base, "--out", str(tmp_path / "a"),
                       "--text-encoder", "some/encoder"]) != 0
    assert "--text-encoder: the data (moving-digits) has no captions to embed" in capsys.readouterr().err
    assert cache_main(["--data", "kind=captioned-digits", *base, "--out", str(tmp_path / "b"),
                       "--text-max-length", "8"]) != 0
    assert "--text-max-length: given without a text encoder" in capsys.readouterr().err
