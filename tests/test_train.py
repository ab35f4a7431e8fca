"""The training loop on the `test` preset: exact resume, recipe pieces, non-finite steps, signals,
config errors. Everything runs on 8x8 moving digits through the `pixels:2:gray` VAE (4 x 4x4 latents)."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from magi.config import RunConfig
from magi.recipe import GlobalBatchSampler, LRSchedule, param_groups, step_seed
from magi.train import main
from magi.trainer import NonFiniteLossError, Trainer

BASE = {
    "model": {"preset": "test", "attention": "sdpa", "num_classes": 10},
    "data": {"kind": "moving-digits",
             "options": {"num_videos": 24, "num_frames": 3, "size": 8, "digit_size": 4, "num_digits": 1,
                         "interval": "dynamic", "max_interval": 4}},
    "vae": {"spec": "pixels:2:gray"},
    "train": {"max_steps": 4, "global_batch_size": 4, "micro_batch_size": 2, "lr": 1e-3, "warmup_steps": 2,
              "ema_decay": 0.9, "checkpoint_every": 2, "keep_last": 3, "log_every": 1, "progress": False,
              "num_threads": 1, "sample": {"num_videos": 0}},
}


def write_config(path: Path, data: dict | None = None) -> Path:
    path.write_text(yaml.safe_dump(data or BASE))
    return path


def weights(ckpt: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / name))


# --------------------------------------------------------------------------------------------------
# recipe pieces


def test_lr_schedule_warmup_constant_and_cosine():
    s = LRSchedule(warmup=4, total=12, kind="constant")
    assert [s(i) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    c = LRSchedule(warmup=2, total=12, kind="cosine", min_ratio=0.1)
    assert c(0) == 0.5 and c(2) == pytest.approx(1.0)
    assert c(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert c(12) == pytest.approx(0.1) and c(50) == pytest.approx(0.1)
    assert all(c(i) >= c(i + 1) for i in range(2, 20))
    w = LRSchedule(warmup=2, total=10, kind="constant", min_ratio=0.1, decay=4)  # warmup-stable-decay
    assert [round(w(i), 3) for i in range(11)] == [0.5, 1, 1, 1, 1, 1, 0.775, 0.55, 0.325, 0.1, 0.1]


def test_ema_warmup_forgets_the_initial_weights():
    """EMA from 0 toward constant weights 1: after 100 updates at decay 0.999 the plain EMA still holds
    0.999**100 = 90% of the start, the warmed-up one none of it; the warm-up caps at the decay."""
    from magi.ema import ema_decay_at, make_ema, update_ema

    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(10**6, 0.999) == 0.999 and ema_decay_at(0, 0.999, warmup=False) == 0.999
    finals = {}
    for warmup in (True, False):
        model = torch.nn.Linear(3, 2)
        ema = make_ema(model)
        with torch.no_grad():
            model.weight.fill_(1.0)
            ema.weight.zero_()
        for step in range(100):
            update_ema(ema, model, ema_decay_at(step, 0.999, warmup))
        finals[warmup] = ema.weight
    torch.testing.assert_close(finals[True], torch.ones(2, 3))
    torch.testing.assert_close(finals[False], torch.full((2, 3), 1 - 0.999**100))


def test_param_groups_follow_no_weight_decay():
    from magi import Magi, MagiConfig

    model = Magi(MagiConfig.preset("test"))
    groups = param_groups(model, 0.02)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    decay = {names[id(p)] for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.02 and groups[1]["weight_decay"] == 0.0
    assert no_decay == model.no_weight_decay()
    assert decay and all(model.get_parameter(n).ndim >= 2 for n in decay)
    assert len(decay) + len(no_decay) == len(list(model.parameters()))


def test_global_batch_sampler_splits_the_same_global_batches_for_any_world_size():
    def global_batches(world, micro):
        accum = 8 // (world * micro)
        per_rank = [list(GlobalBatchSampler(37, 8, micro, accum, r, seed=3, epoch=1)) for r in range(world)]
        steps = len(per_rank[0]) // accum
        return [[i for r in range(world) for mb in per_rank[r][s * accum:(s + 1) * accum] for i in mb]
                for s in range(steps)]

    one = global_batches(1, 8)
    assert len(one) == 37 // 8 and all(len(b) == 8 for b in one)
    assert len({i for b in one for i in b}) == 32  # no repeats inside an epoch
    assert global_batches(2, 2) == one and global_batches(4, 1) == one and global_batches(1, 2) == one
    # resuming mid-epoch continues the same order
    full = list(GlobalBatchSampler(37, 8, 4, 1, 1, seed=3, epoch=1))
    assert list(GlobalBatchSampler(37, 8, 4, 1, 1, seed=3, epoch=1, start=2)) == full[2:]
    assert step_seed(0, 5, 1) != step_seed(0, 5, 2) != step_seed(0, 6, 1)


# --------------------------------------------------------------------------------------------------
# exact resume


def test_resume_is_bit_exact(tmp_path):
    cfg = write_config(tmp_path / "run.yaml")
    assert main(["--config", str(cfg), "--out", str(tmp_path / "a"), "--set", "train.max_steps=6"]) == 0
    assert main(["--config", str(cfg), "--out", str(tmp_path / "b"), "--set", "train.max_steps=3",
                 "--set", "train.checkpoint_every=100"]) == 0
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["3"]
    assert main(["--config", str(cfg), "--out", str(tmp_path / "b"), "--set", "train.max_steps=6",
                 "--resume", "auto"]) == 0
    a, b = tmp_path / "a" / "checkpoints" / "6", tmp_path / "b" / "checkpoints" / "6"
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = weights(a, name), weights(b, name)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    # and the EMA differs from the weights (it is really averaged), the run really moved
    ma, ea = weights(a, "model.safetensors"), weights(a, "ema.safetensors")
    assert any(not torch.equal(ma[k], ea[k]) for k in ma)
    # the checkpoint is a from_pretrained directory and loads without pickled code
    from magi import Magi

    model = Magi.from_pretrained(a)
    assert all(torch.equal(model.state_dict()[k], ea[k]) for k in ea)
    state = torch.load(a / "training_state.pt", weights_only=True)
    assert state["step"] == 6 and state["epoch"] == 1 and state["batch_in_epoch"] == 0
    assert RunConfig.load(a / "train_config.yaml").train.max_steps == 6
    # keep_last=3 of checkpoints at 2, 4, 6
    assert sorted(int(p.name) for p in (tmp_path / "a" / "checkpoints").iterdir()) == [2, 4, 6]
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and "train/loss" in lines[-1] and "perf/tokens_per_s" in lines[-1]
    assert list((tmp_path / "a" / "tensorboard").iterdir())


# --------------------------------------------------------------------------------------------------
# non-finite steps, signals, time limit


def _trainer(tmp_path, **train):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["train"].update(train)
    return Trainer(RunConfig.from_dict(data), tmp_path / "run")


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    trainer = _trainer(tmp_path, max_steps=5, checkpoint_every=100)
    model = trainer.model
    forward = model.forward
    poisoned = {1, 2}
    snapshots = {}

    def maybe_nan(*args, **kwargs):
        out = forward(*args, **kwargs)
        if trainer.step in poisoned:
            snapshots.setdefault(trainer.step, [p.detach().clone() for p in model.parameters()])
            out["loss"] = out["loss"] * float("nan")
        return out

    model.forward = maybe_nan
    result = trainer.fit()
    assert result.step == 5 and result.skipped_steps == 2 and math.isfinite(result.final_loss)
    after_skip = load_file(str(result.checkpoint / "model.safetensors"))
    assert after_skip  # the run finished and saved
    # a skipped step leaves the weights untouched: parameters before step 2 == before step 1
    assert all(torch.equal(a, b) for a, b in zip(snapshots[1], snapshots[2]))


def test_many_nonfinite_steps_save_then_stop(tmp_path):
    trainer = _trainer(tmp_path, max_steps=50, max_nonfinite=3, checkpoint_every=100)
    forward = trainer.model.forward

    def inf_loss(*args, **kwargs):
        out = forward(*args, **kwargs)
        return {**out, "loss": out["loss"] * float("inf")}

    trainer.model.forward = inf_loss
    with pytest.raises(NonFiniteLossError, match="max_nonfinite=3"):
        trainer.fit()
    assert (tmp_path / "run" / "checkpoints" / "3" / "ema.safetensors").is_file()


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    trainer = _trainer(tmp_path, max_steps=100, checkpoint_every=1000)
    step = trainer.train_step

    def step_then_signal(batches):
        out = step(batches)
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to the handler fit() installed
        return out

    trainer.train_step = step_then_signal
    result = trainer.fit()
    # the ranks agree on stopping inside the next step's all-reduce, so that step completes too
    assert result.interrupted_by == "SIGTERM" and result.step == 4
    assert result.checkpoint == tmp_path / "run" / "checkpoints" / "4"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_max_minutes_stops_with_a_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, max_steps=10_000, max_minutes=1e-9, checkpoint_every=1000)
    result = trainer.fit()
    assert result.step == 1 and result.checkpoint.name == "1" and result.interrupted_by is None


# --------------------------------------------------------------------------------------------------
# config errors fail before training, naming the key


@pytest.mark.parametrize("override, expected", [
    ("train.lrr=1", "train.lrr"),
    ("train.max_steps=ten", "train.max_steps"),
    ("train.lr=-1", "train.lr"),
    ("train.ema_decay=1.5", "train.ema_decay"),
    ("train.precision=fp8", "train.precision"),
    ("model.num_heads=3", "MagiConfig.num_heads"),
    ("model.widht=64", "model.widht"),
    ("data.options.colour=1", "colour"),
    ("model.latent_channels=8", "model.latent_channels"),
    ("model.num_classes=5", "model.num_classes"),
    ("train.global_batch_size=5", "train.global_batch_size"),
    ("train.global_batch_size=100", "train.global_batch_size"),
    ("vae.spec=pixels:3", "pixels:3"),
    ("optimizer.lr=1", "optimizer"),
])
def test_bad_config_fails_before_training_naming_the_key(tmp_path, capsys, override, expected):
    cfg = write_config(tmp_path / "run.yaml")
    out = tmp_path / "out"
    assert main(["--config", str(cfg), "--out", str(out), "--set", override]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()


def test_yaml_floats_in_exponent_form(tmp_path):
    run = RunConfig.load(write_config(tmp_path / "run.yaml"), ["train.lr=3e-4"])
    assert run.train.lr == 3e-4


def test_training_from_a_latent_cache(tmp_path):
    """`data.kind: latents` skips the VAE in the loop; samples build it to decode."""
    from magi.data import MovingDigits, cache_latents
    from magi.vae import load_vae

    source = MovingDigits(num_videos=8, num_frames=3, size=8, digit_size=4, num_digits=1)
    cache_latents(source, load_vae("pixels:2:gray"), tmp_path / "cache", progress=False)
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["data"] = {"kind": "latents", "options": {"root": str(tmp_path / "cache"), "num_frames": 3,
                                                   "progress": False}}
    data["train"].update(max_steps=2, sample={"num_videos": 2, "context_frames": 1})
    trainer = Trainer(RunConfig.from_dict(data), tmp_path / "run")
    assert trainer.vae is None
    result = trainer.fit()
    assert result.step == 2 and math.isfinite(result.final_loss)
    assert result.sample_psnr is not None and all(p.stat().st_size > 0 for p in result.samples)


def test_resume_follows_the_current_config_schedule(tmp_path):
    """A resumed run takes lr, schedule length and decay from its (possibly edited) config."""
    cfg = write_config(tmp_path / "run.yaml")
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--out", str(out), "--set", "train.max_steps=2"]) == 0
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["train"].update(max_steps=8, decay_steps=4, min_lr_ratio=0.5, lr=2e-3)
    trainer = Trainer(RunConfig.from_dict(data), out)
    trainer.resume("auto")
    assert trainer.step == 2
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)
    trainer.fit()
    lrs = {r["step"]: r["train/lr"] for r in map(eval, (out / "metrics.jsonl").read_text().splitlines())}
    # a record at step s logs the lr of the step that produced it (index s - 1); decay spans indices 4..7
    assert lrs[4] == pytest.approx(2e-3) and lrs[6] == pytest.approx(2e-3 * 0.75)
    assert lrs[8] == pytest.approx(2e-3 * 0.5)


def test_init_from_starts_a_fresh_run_from_another_runs_ema(tmp_path):
    """`train.init_from` loads a checkpoint's EMA weights into model and EMA, then trains from step 0
    with a fresh optimizer; a directory that is missing or of another model config is refused by name."""
    cfg = write_config(tmp_path / "run.yaml")
    assert main(["--config", str(cfg), "--out", str(tmp_path / "a"), "--set", "train.max_steps=2"]) == 0
    source = tmp_path / "a" / "checkpoints" / "2"
    trainer = _trainer(tmp_path, init_from=str(source), max_steps=1)
    ema = weights(source, "ema.safetensors")
    for module in (trainer.model, trainer.ema):
        assert all(torch.equal(module.state_dict()[k], ema[k]) for k in ema)
    assert trainer.step == 0 and not trainer.optimizer.state
    trainer.fit()
    assert any(not torch.equal(trainer.model.state_dict()[k], ema[k]) for k in ema)
    # its export records the training it started from (a run's checkpoint), which the evaluation adds up
    from magi.demo import export_pretrained
    from magi.checkpoint import training_behind

    info = export_pretrained(tmp_path / "run", tmp_path / "export", command="test")
    assert info["init_from"]["training"]["steps"] == 2
    assert training_behind(tmp_path / "export")["steps"] == 3

    with pytest.raises(ValueError, match="train.init_from"):
        _trainer(tmp_path, init_from=str(tmp_path / "missing"))
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["model"]["width"] = 16
    data["train"]["init_from"] = str(source)
    with pytest.raises(ValueError, match="width"):
        Trainer(RunConfig.from_dict(data), tmp_path / "other")


def test_init_grow_starts_a_deeper_run_from_a_shallower_one(tmp_path):
    """`train.init_grow` with `train.init_from` and a larger `model.depth`: the saved blocks land in the
    deeper model and its EMA (`Magi.load_grown`), and it trains; without init_from it is refused."""
    cfg = write_config(tmp_path / "run.yaml")
    assert main(["--config", str(cfg), "--out", str(tmp_path / "a"), "--set", "train.max_steps=2"]) == 0
    source = tmp_path / "a" / "checkpoints" / "2"
    ema = weights(source, "ema.safetensors")
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["model"]["depth"] = 2
    data["train"].update(init_from=str(source), init_grow=True, max_steps=1)
    trainer = Trainer(RunConfig.from_dict(data), tmp_path / "deeper")
    assert len(trainer.model.backbone.blocks) == 2
    for module in (trainer.model, trainer.ema):
        assert all(torch.equal(module.state_dict()[k], ema[k]) for k in ema if "blocks.0." in k or "head." in k)
    trainer.fit()
    data["train"]["init_from"] = None
    with pytest.raises(ValueError, match="train.init_grow"):
        RunConfig.from_dict(data).validate()
