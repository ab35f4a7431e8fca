"""The trainer (docs/design.md §1, §5, §7): `Trainer` owns the model, the EMA, the optimizer, the data and
the loop; `fit()` runs to `train.max_steps` or a signal, writing atomic checkpoints, metrics, samples and
the loss plot. `magi.train` is its command line.

Reproducibility: the data order is a function of (seed, epoch) and each micro-batch reseeds the torch
RNG from (seed, step, global micro-batch index) before the forward, so the model's masking, diffusion
timesteps and label dropout depend on which clips a micro-batch holds, not on the world size or on
whether the run was resumed. Resuming is therefore exact, and N ranks reproduce one process that runs
the same micro-batches with accumulation.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from magi.checkpoint import latest_checkpoint, list_checkpoints, remove_stale_temporaries, restore_checkpoint, save_checkpoint
from magi.config import RunConfig
from magi.data.clips import describe_shares, epoch_interval_histogram, epoch_shares
from magi.distributed import (DistInfo, all_reduce_sum, barrier, broadcast_object, init_distributed, is_fsdp,
                              shard_fsdp, unwrap, wrap_model)
from magi.ema import ema_decay_at, make_ema, update_ema
from magi.latent_stats import LatentStats
from magi.logging_utils import MetricsLogger
from magi.recipe import (GlobalBatchSampler, LRSchedule, build_dataset, build_text_encoder, build_vae, collate,
                         describe_data, num_data_classes, param_groups, preload_caption_embeddings,
                         record_class_names, record_trained_intervals, release_free_memory, step_seed)


LOSS_PLOT = "loss.png"  # OUT/loss.png, redrawn at log steps
LATENT_STATS_BATCHES = 4  # micro-batches whose latents are measured at the start (magi.latent_stats)
LOSS_PLOT_SECONDS = 30.0  # at most this often


class NonFiniteLossError(RuntimeError):
    """Raised after `train.max_nonfinite` consecutive steps with a non-finite loss or gradient."""


@dataclass
class TrainResult:
    """What a finished (or interrupted) run leaves behind."""

    out_dir: Path
    step: int
    checkpoint: Path | None
    final_loss: float | None
    skipped_steps: int
    wall_time_s: float
    interrupted_by: str | None = None
    samples: list[Path] = field(default_factory=list)
    sample_psnr: float | None = None


class Trainer:
    """Owns the model, EMA, optimizer, data and the loop. `fit()` runs to `max_steps` or a signal."""

    def __init__(self, run: RunConfig, out_dir: str | Path, *, model: nn.Module | None = None,
                 dataset: Dataset | None = None, sample_dataset: Dataset | None = None, vae=None,
                 info: DistInfo | None = None):
        self.run, self.cfg = run, run.train
        self.out_dir = Path(out_dir)
        self.info = info or init_distributed(self.cfg.device)
        self._latent_stats, self._stats_batches_left = LatentStats(), LATENT_STATS_BATCHES
        if self.cfg.num_threads is not None:
            torch.set_num_threads(self.cfg.num_threads)
        self.device = self.info.device
        tc = self.cfg

        # batch arithmetic: global batch -> world * accum micro-batches
        world = self.info.world_size
        self.micro = tc.micro_batch_size or tc.global_batch_size // world
        if self.micro == 0 or tc.global_batch_size % (world * self.micro):
            raise ValueError(
                f"train.global_batch_size: {tc.global_batch_size} is not a multiple of world size "
                f"{world} x train.micro_batch_size {self.micro or tc.micro_batch_size}")
        self.accum = tc.global_batch_size // (world * self.micro)

        # data and latent space
        self.dataset = dataset if dataset is not None else build_dataset(run.data.kind, run.data.options)
        n = len(self.dataset)
        self.steps_per_epoch = n // tc.global_batch_size
        if n == 0:
            raise ValueError(f"no training clips (data.kind={run.data.kind!r}): {describe_data(self.dataset)}")
        if self.steps_per_epoch == 0:
            raise ValueError(f"train.global_batch_size: {tc.global_batch_size} is larger than the dataset "
                             f"({n} clips: {describe_data(self.dataset)}); lower train.global_batch_size "
                             f"to at most {n}")
        self.max_steps = tc.max_steps or math.ceil(tc.epochs * self.steps_per_epoch)
        run = replace(run, model=record_trained_intervals(run, self.dataset))
        self.run = run = replace(run, model=record_class_names(run, self.dataset))  # in every checkpoint
        self._sample_dataset = sample_dataset
        self.text_encoder, self.run = build_text_encoder(self.run, self.device)
        preload_caption_embeddings(self.text_encoder, self.dataset)  # a latent cache's, computed once
        run = self.run
        self.vae = vae
        try:
            first = self.dataset[0]
        except RuntimeError as e:  # e.g. no video of a folder decodes
            raise ValueError(f"data.kind={run.data.kind!r}: cannot read a training clip: {e}") from e
        if "latents" not in first and self.vae is None:
            self.vae = build_vae(run.vae.spec, run.vae.options)
        if isinstance(self.vae, nn.Module):
            self.vae.to(self.device).eval().requires_grad_(False)

        # model, EMA (a frozen fp32 copy made before wrapping), optimizer, lr schedule
        if model is None:
            from magi import Magi

            torch.manual_seed(tc.seed)  # the same initial weights on every rank (FSDP2 shards them as is)
            model = Magi(run.model)
        elif isinstance(getattr(model, "config", None), type(run.model)):  # a prebuilt model: record the same
            model.config = model.config.replace(trained_intervals=run.model.trained_intervals,
                                                trained_interval_shares=run.model.trained_interval_shares,
                                                default_interval=run.model.default_interval,
                                                class_names=run.model.class_names)
        self._check_latents(first)
        if tc.init_from:
            init = Path(tc.init_from)
            if not init.is_dir():
                raise ValueError(f"train.init_from: {init} is not a directory (expected a pretrained or "
                                 "checkpoint directory with config.json and ema/model.safetensors)")
            if tc.init_grow:  # a deeper model started from a shallower one (only the depth may differ)
                model.load_grown(init)
            elif tc.init_reconditioned:  # other conditioning (e.g. text from a class model), same video path
                model.load_reconditioned(init)
            else:
                model.load_pretrained(init)  # refuses another model config, naming the fields
        model.to(self.device).train()
        self.num_params = sum(p.numel() for p in model.parameters())
        self.ema = make_ema(model)
        self.model = wrap_model(model, self.info, tc.parallel)
        if is_fsdp(self.model):
            shard_fsdp(self.ema, self.info)
        self.optimizer = torch.optim.AdamW(param_groups(unwrap(self.model), tc.weight_decay), lr=tc.lr,
                                           betas=tc.betas, eps=tc.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, LRSchedule(tc.warmup_steps, self.max_steps, tc.lr_schedule, tc.min_lr_ratio,
                                       tc.decay_steps))
        self.forward_model = torch.compile(self.model) if tc.compile else self.model
        self.autocast_dtype = torch.bfloat16 if tc.precision == "bf16" else None

        # loop state
        self.step = 0
        self.skipped_total = 0
        self.consecutive_nonfinite = 0
        self.wall_time_before = 0.0  # seconds spent in earlier (resumed-from) segments
        self.stop_signal: int | None = None  # agreed by all ranks (all-reduced each step)
        self._signal_local: int | None = None  # set by this process's signal handler
        self._stopped_at_once = False  # a second Ctrl-C came (its KeyboardInterrupt must not be swallowed)
        self.out_of_time = False  # train.max_minutes reached (agreed by all ranks)
        self.t_start = time.time()
        self.logger = MetricsLogger(self.out_dir, enabled=self.info.is_main)
        self.last_checkpoint: Path | None = None
        self.samples: list[Path] = []
        self.last_sample_psnr: float | None = None
        self._plotted_at = 0.0  # when OUT/loss.png was last drawn

    # ---- setup helpers
    def _check_latents(self, item: dict[str, Any]) -> None:
        """Fail before training when the data/VAE latents do not fit the model config."""
        mc = self.run.model
        if "latents" in item:
            shape = tuple(item["latents"].shape)  # (T, C, h, w)
        else:
            video = item["video"][None].to(self.device)  # (1, T, 3, H, W)
            try:
                with torch.no_grad():
                    shape = tuple(self.vae.encode(video).shape[1:])  # (T', C, h, w)
            except ValueError as e:
                raise ValueError(f"vae.spec={self.run.vae.spec!r} cannot encode the data "
                                 f"(data.kind={self.run.data.kind!r}): {e}") from e
        t, c, h, w = shape
        problems = []
        if c != mc.latent_channels:
            problems.append(f"model.latent_channels={mc.latent_channels} but the latents have {c} channels")
        if (h, w) != mc.grid:
            problems.append(f"model.latent_size={mc.latent_size} but the latent grid is {h}x{w}")
        if t > mc.num_frames:
            problems.append(f"model.num_frames={mc.num_frames} but clips have {t} latent frames")
        if mc.num_actions:
            actions = item.get("actions")
            if actions is None:
                problems.append(f"model.num_actions={mc.num_actions} but the data has no actions (for "
                                "recordings: data.options.actions: true)")
            elif int(actions.max()) >= mc.num_actions:
                problems.append(f"model.num_actions={mc.num_actions} but the data has action {int(actions.max())}")
            elif t != item["video" if "video" in item else "latents"].shape[0]:
                problems.append("actions need one latent frame per video frame; the VAE compresses time")
        if mc.text_dim and "caption" not in item:
            problems.append(f"model.text_dim={mc.text_dim} makes a text model but the data has no captions "
                            "(a folder needs metadata.jsonl or metadata.csv with file_name and text)")
        data_classes = num_data_classes(self.dataset)
        if mc.num_classes and data_classes and data_classes > mc.num_classes:
            problems.append(f"model.num_classes={mc.num_classes} but the data has {data_classes} classes"
                            + (f" ({', '.join(self.dataset.classes[:6])}"
                               f"{', ...' if len(self.dataset.classes) > 6 else ''})"
                               if getattr(self.dataset, "classes", None) else ""))
        if problems:
            raise ValueError("the data does not fit the model: " + "; ".join(problems) +
                             f" (data.kind={self.run.data.kind!r}, vae.spec={self.run.vae.spec!r})")
        self.latent_frames = t
        self.tokens_per_clip = t * mc.tokens_per_frame

    def resume(self, resume: str | None) -> Path | None:
        """`auto`: continue from the newest good checkpoint in OUT (if any); a path: from that one."""
        if not resume or resume == "none":
            return None
        if self.info.is_main:
            removed = remove_stale_temporaries(self.out_dir)
            if removed:
                print(f"removed {len(removed)} incomplete checkpoint(s) left by an interrupted save")
        barrier()
        if resume == "auto":
            found, existing = None, []
            if self.info.is_main:
                found, existing = latest_checkpoint(self.out_dir), list_checkpoints(self.out_dir)
            path = broadcast_object(str(found) if found else ("" if existing else None))
            if path == "":
                raise ValueError(f"{self.out_dir}: --resume auto found checkpoints but none is loadable "
                                 f"(see the warnings above); refusing to start over in that directory")
            if path is None:
                return None
        else:
            path = resume
        path = Path(path)
        state = restore_checkpoint(path, model=self.model, ema=self.ema, optimizer=self.optimizer,
                                scheduler=self.scheduler, info=self.info)
        self.step = int(state["step"])
        self.skipped_total = int(state.get("skipped_total", 0))
        self.consecutive_nonfinite = int(state.get("consecutive_nonfinite", 0))
        self.wall_time_before = float(state.get("wall_time_s", 0.0))
        self._apply_config_hyperparameters()
        if state.get("global_batch_size") not in (None, self.cfg.global_batch_size):
            warnings.warn(f"{path}: saved with global batch {state['global_batch_size']}, resuming with "
                          f"{self.cfg.global_batch_size}; the data position is recomputed", stacklevel=2)
        self.last_checkpoint = path
        if self.info.is_main:
            print(f"resumed from {path} at step {self.step}")
        return path

    def _apply_config_hyperparameters(self) -> None:
        """After loading optimizer state: lr (from the schedule at this step), betas, eps and weight
        decay come from the current config, so a resumed run follows its YAML file, not the old one."""
        tc = self.cfg
        factor = self.scheduler.lr_lambdas[0](self.step)
        for group, decay in zip(self.optimizer.param_groups, (tc.weight_decay, 0.0)):
            group.update(lr=tc.lr * factor, initial_lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=decay)
        self.scheduler.base_lrs = [tc.lr] * len(self.optimizer.param_groups)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    # ---- one optimizer step
    def _latents(self, batch: dict[str, Any]) -> torch.Tensor:
        if "latents" in batch:
            latents = batch["latents"].to(self.device, non_blocking=True)  # (B, T, C, h, w)
        else:
            video = batch["video"].to(self.device, non_blocking=True)  # (B, T, 3, H, W)
            with torch.no_grad():
                latents = self.vae.encode(video)  # (B, T', C, h, w)
        if self._stats_batches_left > 0:  # the first micro-batches: are the latents unit scale?
            self._latent_stats.update(latents)
            self._stats_batches_left -= 1
            if self._stats_batches_left == 0:
                self._report_latent_stats()
        return latents

    def _report_latent_stats(self) -> None:
        """Rank 0: per-channel mean/std of the first micro-batches' latents, printed and written to
        OUT/latent_stats.json; a warning when they are far from unit scale (`magi.latent_stats`)."""
        if not self.info.is_main:
            return
        stats = self._latent_stats
        far = stats.far_from_unit()
        record = {"micro_batches": LATENT_STATS_BATCHES, **stats.record(), "far_from_unit": far}
        try:
            record["suggested_vae_options"] = stats.vae_options(self.vae) if far else None
        except ValueError:  # a VAE without a normalization to set (pixels)
            record["suggested_vae_options"] = None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "latent_stats.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"latents of the first {LATENT_STATS_BATCHES} micro-batches: {stats.describe()}")
        if far:
            warnings.warn(f"{far}; the eps-prediction schedule assumes about unit variance. Set vae.options "
                          f"latents_mean / latents_std (OUT/latent_stats.json suggests values; `magi cache-latents "
                          f"--write-vae-options CONFIG` writes them)", stacklevel=2)

    def _labels(self, batch: dict[str, Any]) -> torch.Tensor | None:
        nc = self.run.model.num_classes
        if nc == 0 or "label" not in batch:
            return None
        labels = batch["label"]
        if labels.min() < 0 or labels.max() >= nc:
            raise ValueError(f"labels {labels.tolist()} outside 0..{nc - 1} (model.num_classes={nc}) in "
                             f"{batch['path']}")
        return labels.to(self.device, non_blocking=True)

    def _actions(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """(B, T) actions for a world model (model.num_actions > 0), else None."""
        if self.run.model.num_actions == 0:
            return None
        return batch["actions"].to(self.device, non_blocking=True)

    def _text(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """(B, L, E) caption embeddings for a text model (each caption encoded once), else None."""
        if self.text_encoder is None:
            return None
        return self.text_encoder.encode(batch["caption"]).to(self.device, non_blocking=True)

    def _no_sync(self, last: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if is_fsdp(self.model):
            self.model.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        if hasattr(self.model, "no_sync") and not last:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """Forward/backward over this rank's micro-batches, then clip, step, EMA. Returns step metrics."""
        tc = self.cfg
        loss_sum = torch.zeros((), device=self.device)
        nonfinite = torch.zeros((), device=self.device)
        extras: dict[str, float] = {}
        for i, batch in enumerate(micro_batches):
            latents = self._latents(batch)
            labels = self._labels(batch)
            intervals = batch["interval"].to(self.device) if "interval" in batch else None
            torch.manual_seed(step_seed(tc.seed, self.step, self.info.rank * self.accum + i))
            with self._no_sync(last=i == len(micro_batches) - 1):
                with torch.autocast(self.device.type, dtype=self.autocast_dtype,
                                    enabled=self.autocast_dtype is not None):
                    out = self.forward_model(latents, labels=labels, intervals=intervals,
                                             actions=self._actions(batch), text=self._text(batch))
                loss = out["loss"].float()
                (loss / self.accum).backward()
            finite = torch.isfinite(loss.detach())
            loss_sum += torch.where(finite, loss.detach(), torch.zeros_like(loss))
            nonfinite += (~finite).float()
            for k, v in out.items():
                if k != "loss" and torch.is_tensor(v) and v.numel() == 1:
                    extras[k] = extras.get(k, 0.0) + float(v.detach()) / len(micro_batches)

        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # FSDP2 returns a replicated DTensor
            grad_norm = grad_norm.full_tensor()
        stop = torch.tensor(float(self._signal_local or 0), device=self.device)
        late = torch.tensor(float(tc.max_minutes is not None and
                                  time.time() - self.t_start > 60 * tc.max_minutes), device=self.device)
        stats = all_reduce_sum(torch.stack([loss_sum, nonfinite, stop, late]))  # one collective per step
        self.out_of_time = float(stats[3]) > 0  # agreed by all ranks
        loss_mean = float(stats[0]) / (self.accum * self.info.world_size)
        bad = float(stats[1]) > 0 or not math.isfinite(float(grad_norm))
        if float(stats[2]) > 0:  # some rank was signalled: every rank stops after this step
            self.stop_signal = self._signal_local or signal.SIGTERM
        if bad:
            self.skipped_total += 1
            self.consecutive_nonfinite += 1
        else:
            self.optimizer.step()
            update_ema(self.ema, unwrap(self.model), ema_decay_at(self.step, tc.ema_decay, tc.ema_warmup))
            self.consecutive_nonfinite = 0
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        with warnings.catch_warnings():  # a skipped step advances the schedule without optimizer.step()
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        self.step += 1
        return {"loss": loss_mean if not bad else float("nan"), "grad_norm": float(grad_norm), "lr": lr,
                "skipped": float(bad), **extras}

    # ---- data
    def _micro_batches(self) -> Iterator[list[dict[str, Any]]]:
        """This rank's micro-batches, grouped per optimizer step, from the current step on."""
        while True:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            if hasattr(self.dataset, "set_epoch"):  # e.g. dynamic intervals re-drawn per epoch
                self.dataset.set_epoch(epoch)
            sampler = GlobalBatchSampler(len(self.dataset), self.cfg.global_batch_size, self.micro,
                                         self.accum, self.info.rank, self.cfg.seed, epoch, start)
            loader = DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate,
                                num_workers=self.run.data.num_workers,
                                pin_memory=self.device.type == "cuda",
                                generator=torch.Generator().manual_seed(step_seed(self.cfg.seed, epoch, start)))
            group: list[dict[str, Any]] = []
            for batch in loader:
                group.append(batch)
                if len(group) == self.accum:
                    yield group
                    group = []

    # ---- checkpoints and samples
    def save(self) -> Path:
        state = {
            "epoch": self.step // self.steps_per_epoch,
            "batch_in_epoch": self.step % self.steps_per_epoch,  # the data sampler's position
            "skipped_total": self.skipped_total,
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "global_batch_size": self.cfg.global_batch_size,
            "wall_time_s": self.wall_time_before + (time.time() - self.t_start),
            "torch_version": str(torch.__version__),
        }
        path = save_checkpoint(self.out_dir, self.step, model=self.model, ema=self.ema,
                               optimizer=self.optimizer, scheduler=self.scheduler,
                               model_config=_model_config_json(self.run), run_config_yaml=self.run.to_yaml(),
                               state=state, info=self.info, keep_last=self.cfg.keep_last)
        self.last_checkpoint = path
        return path

    @property
    def sample_dataset(self) -> Dataset:
        if self._sample_dataset is None:
            opts = self.run.data.sample_options
            self._sample_dataset = (self.dataset if not opts else build_dataset(
                self.run.data.kind, {**self.run.data.options, **opts}, where="data.sample_options"))
        return self._sample_dataset

    @torch.no_grad()
    def sample(self) -> dict[str, Any]:
        """Continue held-out clips with the EMA model; write GIF+MP4 (truth | prediction, predicted frames
        in a red border) and log the PSNR of the predicted frames.

        Under DDP only rank 0 samples; under FSDP2 every rank takes part (the EMA is sharded).
        """
        sc = self.cfg.sample
        fsdp = is_fsdp(self.ema)
        if not (self.info.is_main or fsdp):
            barrier()
            return {}
        from magi.video_io import side_by_side, write_gif, write_mp4
        from magi.visualize import comparison_image, mark_frames, psnr, stack_rows, to_uint8, upscale

        n = min(sc.num_videos, len(self.sample_dataset))
        batch = collate([self.sample_dataset[i] for i in range(n)])
        latents = self._latents(batch)  # (B, T, C, h, w)
        labels = self._labels(batch)
        intervals = batch["interval"].to(self.device) if "interval" in batch else None
        gen = torch.Generator(device=self.device).manual_seed(sc.seed)
        if fsdp:
            self.ema.unshard()
        with torch.autocast(self.device.type, dtype=self.autocast_dtype,
                            enabled=self.autocast_dtype is not None):
            pred = self.ema.generate(latents.shape[1], context=latents[:, :sc.context_frames],
                                     labels=labels, intervals=intervals, cfg=sc.cfg,
                                     mask_steps=sc.mask_steps, diffusion_steps=sc.diffusion_steps,
                                     temperature=sc.temperature, sampler=sc.sampler, generator=gen,
                                     actions=self._actions(batch), text=self._text(batch))
        if fsdp:
            self.ema.reshard()
        result: dict[str, Any] = {}
        if self.info.is_main:
            if self.vae is None:  # latents from a cache: the VAE is needed only now, to decode
                self.vae = build_vae(self.run.vae.spec, self.run.vae.options).to(self.device).eval()
            truth = batch["video"] if "video" in batch else self.vae.decode(latents.float()).cpu()
            video = self.vae.decode(pred.float()).cpu()  # (B, T, 3, H, W)
            truth = truth.to(video.dtype)
            k = sc.context_frames  # video frames given as context; the rest are predicted
            t0 = self.vae.video_frames(k) if hasattr(self.vae, "video_frames") else k
            # PSNR of the predicted frames against the truth: meaningful only when continuing a context
            score = float(psnr(video[:, t0:], truth[:, t0:], dims=(-4, -3, -2, -1)).mean()) if k else None
            scale = max(1, 128 // truth.shape[-1])  # small videos are shown at ~128 px
            truth_u8 = [upscale(to_uint8(truth[i]), scale) for i in range(n)]  # (T, H, W, 3) each
            pred_u8 = [mark_frames(upscale(to_uint8(video[i]), scale), t0) for i in range(n)]
            grid = stack_rows([side_by_side(t, p) for t, p in zip(truth_u8, pred_u8)])  # (T, H, W, 3)
            base = self.out_dir / "samples" / f"step_{self.step:07d}"
            paths = [write_gif(base.with_suffix(".gif"), grid, sc.fps),
                     write_mp4(base.with_suffix(".mp4"), grid, sc.fps)]
            self.logger.log_image("samples/truth_vs_ema", comparison_image(truth_u8, pred_u8), self.step)
            if score is not None:
                self.logger.log(self.step, {"sample/psnr_predicted": score})
            self.samples += paths
            self.last_sample_psnr = score
            result = {"psnr": score, "paths": paths}
        if not fsdp:
            barrier()
        return result

    # ---- the loop
    def _install_signal_handlers(self) -> dict[int, Any]:
        def handler(signum, frame):  # noqa: ARG001
            if self._signal_local is not None and signum == signal.SIGINT:
                self._stopped_at_once = True
                raise KeyboardInterrupt  # a second Ctrl-C stops at once
            self._signal_local = signum
            if self.info.is_main:
                print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step, then exiting",
                      file=sys.stderr)

        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return old

    def fit(self) -> TrainResult:
        from tqdm.auto import tqdm

        tc = self.cfg
        self.t_start = time.time()
        old_handlers = self._install_signal_handlers()
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._write_run_config()
            print(f"magi train: {self.num_params / 1e6:.2f}M parameters, world size {self.info.world_size}, "
                  f"global batch {tc.global_batch_size} = {self.info.world_size} ranks x {self.accum} "
                  f"accumulation x {self.micro} clips, {self.max_steps} steps, device {self.device}, "
                  f"{tc.precision}, {tc.parallel}; output {self.out_dir}")
            limit = f"stops at step {self.max_steps}"
            if tc.max_minutes is not None:
                limit += (f" or after {tc.max_minutes:g} minutes of this session (train.max_minutes; a resumed "
                          f"run gets them afresh), whichever comes first")
            print(f"{limit}; loss curve {self.out_dir / LOSS_PLOT}")
            self._report_intervals()
        progress = tqdm(total=self.max_steps, initial=self.step, disable=not (tc.progress and self.info.is_main),
                        desc="train", dynamic_ncols=True)
        window: list[dict[str, float]] = []
        t_window, steps_window = time.time(), 0
        final_loss = None
        first_step = self.step
        try:
            batches = self._micro_batches()
            while self.step < self.max_steps and self.stop_signal is None and not self.out_of_time:
                metrics = self.train_step(next(batches))
                window.append(metrics)
                steps_window += 1
                progress.update(1)
                self._project_end(progress, first_step)
                if self.consecutive_nonfinite >= tc.max_nonfinite:
                    path = self.save()
                    raise NonFiniteLossError(
                        f"{self.consecutive_nonfinite} consecutive steps had a non-finite loss or gradient "
                        f"(train.max_nonfinite={tc.max_nonfinite}) at step {self.step}; the last good "
                        f"weights are saved in {path}. Lower train.lr, raise train.warmup_steps or check "
                        f"the data.")
                if self.step % tc.log_every == 0 or self.step == self.max_steps:
                    final_loss = self._log_window(window, time.time() - t_window, steps_window, progress)
                    window, t_window, steps_window = [], time.time(), 0
                if self.step % tc.checkpoint_every == 0 and self.step < self.max_steps:
                    self.save()
                if (tc.sample_every and tc.sample.num_videos and self.step % tc.sample_every == 0
                        and self.step < self.max_steps):
                    self.sample()
            if window:
                final_loss = self._log_window(window, time.time() - t_window, steps_window, progress)
            if self.step > 0 and (self.last_checkpoint is None or
                                  self.last_checkpoint.name != str(self.step)):
                self.save()
            if self.stop_signal is None and tc.sample.num_videos > 0 and self.step > 0:
                self.sample()
            self._plot_loss(force=True)
        finally:
            progress.close()
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
        wall = self.wall_time_before + (time.time() - self.t_start)
        interrupted = signal.Signals(self.stop_signal).name if self.stop_signal is not None else None
        result = TrainResult(self.out_dir, self.step, self.last_checkpoint, final_loss, self.skipped_total,
                             wall, interrupted, list(self.samples), self.last_sample_psnr)
        if self.info.is_main:
            summary = {"step": self.step, "max_steps": self.max_steps, "final_loss": final_loss,
                       "skipped_steps": self.skipped_total, "wall_time_s": wall,
                       "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                       "sample_psnr_predicted": self.last_sample_psnr, "interrupted_by": interrupted}
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            print(self._closing_line(result, final_loss))
        self.logger.close()
        return result

    def _write_run_config(self) -> None:
        """OUT/train_config.yaml is the run's config, written when it starts. A resume whose config
        differs (other --set flags, a longer --steps) records its own beside it as
        OUT/train_config.resume_<step>.yaml instead of rewriting the original; every checkpoint holds
        the config that produced it."""
        path, text = self.out_dir / "train_config.yaml", self.run.to_yaml()
        if self.step == 0 or not path.is_file():
            path.write_text(text)
            print(f"run config written to {path}")
        elif path.read_text() != text:
            resumed = self.out_dir / f"train_config.resume_{self.step}.yaml"
            resumed.write_text(text)
            print(f"this resume's config (it differs from the run's) written to {resumed}; {path.name} keeps "
                  "the run's original")

    def _closing_line(self, result: TrainResult, final_loss: float | None) -> str:
        """One line: why the run ended, final step and loss, where the checkpoint, samples and curve are."""
        if result.interrupted_by:
            why = f"stopped by {result.interrupted_by}"
        elif self.step >= self.max_steps:
            why = "finished"
        else:
            why = f"stopped by train.max_minutes={self.cfg.max_minutes:g}"
        loss = f"{final_loss:.4f}" if final_loss is not None else "n/a"
        session = result.wall_time_s - self.wall_time_before
        minutes = f"{session / 60:.1f} min" + (f" this session ({result.wall_time_s / 60:.1f} min over all)"
                                                if self.wall_time_before > 0 else "")
        parts = [f"magi train: {why} at step {self.step}/{self.max_steps} after {minutes}, loss {loss}",
                 f"checkpoint {self.last_checkpoint}"]
        gifs = [p for p in self.samples if p.suffix == ".gif"]
        if gifs:
            parts.append(f"samples {gifs[-1]}")
        if (self.out_dir / LOSS_PLOT).is_file():
            parts.append(f"loss curve {self.out_dir / LOSS_PLOT}")
        if self.step < self.max_steps:
            parts.append("continue with --resume auto (same --out)")
        return "; ".join(parts)

    def _project_end(self, progress, first_step: int) -> None:
        """Let the progress bar's total (and so its ETA) follow the binding limit: when
        `train.max_minutes` ends the run before `max_steps`, the total becomes the step it will reach."""
        minutes = self.cfg.max_minutes
        done = self.step - first_step
        if minutes is None or done < 1 or progress.disable:
            return
        elapsed = time.time() - self.t_start
        by_time = self.step + int(max(0.0, 60 * minutes - elapsed) / (elapsed / done))
        # time left: at least one more step runs; time up (train_step set out_of_time): this step is the last
        total = self.step if self.out_of_time else max(self.step + 1, min(self.max_steps, by_time))
        if total != progress.total:
            progress.total = total
            progress.set_description("train (to max_minutes)" if total < self.max_steps else "train", refresh=False)

    def _plot_loss(self, force: bool = False) -> None:
        """Rank 0: redraw OUT/loss.png from metrics.jsonl at log steps, at most every
        `LOSS_PLOT_SECONDS` (matplotlib costs ~0.1 s a plot), and at the end (`force`)."""
        if not self.info.is_main or (not force and time.time() - self._plotted_at < LOSS_PLOT_SECONDS):
            return
        self.logger.flush()
        if not self.logger.jsonl_path.is_file():
            return
        from magi.visualize import plot_loss

        try:
            plot_loss(self.logger.jsonl_path, self.out_dir / LOSS_PLOT, title=str(self.out_dir))
        except Exception as e:  # noqa: BLE001 - a plot must never stop training
            if self._stopped_at_once:  # the second Ctrl-C's interrupt, turned into another error by C code
                raise KeyboardInterrupt from e
            warnings.warn(f"could not draw {self.out_dir / LOSS_PLOT}: {e}", stacklevel=2)
        self._plotted_at = time.time()

    def _report_intervals(self) -> dict | None:
        """Rank 0: the frame intervals the first epoch trains (the clips its global batches hold), printed
        and written to OUT/intervals.json, with the configured rule; warnings of the dataset about the
        interval distribution it cannot represent (e.g. a latent cache) are repeated here."""
        items = GlobalBatchSampler(len(self.dataset), self.cfg.global_batch_size, self.micro, self.accum,
                                   0, self.cfg.seed, 0).epoch_items()
        histogram = epoch_interval_histogram(self.dataset, 0, items)
        if histogram is None:
            return None
        options = self.run.data.options
        record = {"epoch": 0, "clips": len(items), "histogram": histogram,
                  "interval": getattr(self.dataset, "interval", options.get("interval")),
                  "interval_sampling": getattr(self.dataset, "interval_sampling", options.get("interval_sampling")),
                  "max_interval": getattr(self.dataset, "max_interval", options.get("max_interval"))}
        found = epoch_shares(self.dataset, 0, items)
        if found is not None:  # per video and per class beside the per-interval histogram
            record.update(per_video=found["per_video"], per_class=found.get("per_class"))
        for message in getattr(self.dataset, "interval_warnings", lambda: [])():
            warnings.warn(message, stacklevel=2)
        (self.out_dir / "intervals.json").write_text(json.dumps(record, indent=1) + "\n")
        shown = " ".join(f"{k}:{n}" for k, n in histogram.items())
        print(f"frame intervals of epoch 0 ({len(items)} clips, {record['interval']}"
              f"{', ' + record['interval_sampling'] if record['interval_sampling'] else ''}): {shown}")
        if found is not None:
            print("\n".join(describe_shares("epoch 0", found).splitlines()[1:]))
        return record

    def _log_window(self, window: list[dict[str, float]], seconds: float, steps: int, progress) -> float | None:
        good = [m for m in window if not m["skipped"]]
        loss = float(np.mean([m["loss"] for m in good])) if good else None
        seconds = max(seconds, 1e-9)
        scalars = {
            "train/lr": window[-1]["lr"],
            "train/grad_norm": float(np.mean([m["grad_norm"] for m in good])) if good else float("nan"),
            "train/skipped_steps": float(self.skipped_total),
            "perf/samples_per_s": steps * self.cfg.global_batch_size / seconds,
            "perf/tokens_per_s": steps * self.cfg.global_batch_size * self.tokens_per_clip / seconds,
            "perf/step_time_s": seconds / steps,
        }
        if loss is not None:
            scalars["train/loss"] = loss
        for k in window[-1]:
            if k not in ("loss", "grad_norm", "lr", "skipped"):
                scalars[f"train/{k}"] = float(np.mean([m[k] for m in window if k in m]))
        self.logger.log(self.step, scalars)
        self._plot_loss()
        if self.device.type == "cpu":
            release_free_memory()
        progress.set_postfix(loss=f"{loss:.4f}" if loss is not None else "nan",
                             lr=f"{scalars['train/lr']:.2e}", refresh=False)
        return loss


def _model_config_json(run: RunConfig) -> dict:
    """config.json of a checkpoint: the model config, as `Magi.save_pretrained` writes it."""
    return run.model.to_dict()
