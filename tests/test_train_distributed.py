"""Two gloo processes under torchrun on the CPU reproduce one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import write_config

from magi.train import main

ROOT = Path(__file__).resolve().parents[1]


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "magi.train", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def compare(a: Path, b: Path, atol: float) -> None:
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert wa.keys() == wb.keys()
        worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
        assert worst <= atol, f"{name}: max abs difference {worst}"


@pytest.mark.parametrize("parallel", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_gloo_processes_match_one_process(tmp_path, parallel):
    cfg = write_config(tmp_path / "run.yaml")
    sets = ["--set", "train.max_steps=3", "--set", "train.precision=fp32", "--set", f"train.parallel={parallel}"]
    # one process: micro-batches of 2 with 2 accumulation steps; two processes: one micro-batch each
    assert main(["--config", str(cfg), "--out", str(tmp_path / "one"), *sets]) == 0
    proc = torchrun(2, "--config", str(cfg), "--out", str(tmp_path / "two"), *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in proc.stdout
    compare(tmp_path / "one" / "checkpoints" / "3", tmp_path / "two" / "checkpoints" / "3", atol=1e-6)

    # the 2-process checkpoint loads in one process: as a model, and to resume training
    from magi import Magi

    Magi.from_pretrained(tmp_path / "two" / "checkpoints" / "3")
    assert main(["--config", str(cfg), "--out", str(tmp_path / "two"), *sets[:-2],
                 "--set", "train.max_steps=4", "--resume", "auto"]) == 0
    state = torch.load(tmp_path / "two" / "checkpoints" / "4" / "training_state.pt", weights_only=True)
    assert state["step"] == 4 and state["world_size"] == 1


@pytest.mark.slow
def test_fsdp_resume_across_processes_is_exact(tmp_path):
    cfg = write_config(tmp_path / "run.yaml")
    sets = ["--set", "train.parallel=fsdp", "--set", "train.precision=fp32"]
    runs = [("a", ["--set", "train.max_steps=4"]), ("b", ["--set", "train.max_steps=2"]),
            ("b", ["--set", "train.max_steps=4", "--resume", "auto"])]
    for name, extra in runs:
        proc = torchrun(2, "--config", str(cfg), "--out", str(tmp_path / name), *sets, *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
    compare(tmp_path / "a" / "checkpoints" / "4", tmp_path / "b" / "checkpoints" / "4", atol=0.0)
