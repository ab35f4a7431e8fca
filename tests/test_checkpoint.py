"""Checkpoints: atomic writes survive a kill mid-save, bad checkpoints are skipped, RNG round trip."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import BASE, write_config

from magi.checkpoint import (check_checkpoint, latest_checkpoint, list_checkpoints, rng_state,
                             set_rng_state)
from magi.train import main

ROOT = Path(__file__).resolve().parents[1]


def test_rng_state_round_trip_is_weights_only(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    random.random(), np.random.rand(), torch.rand(())  # move on
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


def test_kill_during_checkpoint_write_leaves_previous_checkpoint_loadable(tmp_path):
    """A run is SIGKILLed while writing its second checkpoint (half of ema.safetensors on disk)."""
    cfg = write_config(tmp_path / "run.yaml")
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import magi.checkpoint as ck
        from magi.train import main
        real_save, calls = ck.save_file, []
        def dying_save(tensors, filename, metadata=None):
            calls.append(filename)
            if len(calls) == 4:  # the EMA file of the second checkpoint (model + EMA per checkpoint)
                with open(filename, "wb") as f:
                    f.write(b"partial")  # a torn write ...
                os.kill(os.getpid(), signal.SIGKILL)  # ... and the machine goes away
            return real_save(tensors, filename, metadata=metadata)
        ck.save_file = dying_save
        sys.exit(main(["--config", {str(cfg)!r}, "--out", {str(out)!r}, "--set", "train.max_steps=4"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    root = out / "checkpoints"
    assert [p.name for p in list_checkpoints(out)] == ["2"]
    assert any(p.name.startswith(".tmp-4-") for p in root.iterdir())  # the torn one, never renamed
    check_checkpoint(root / "2")
    assert latest_checkpoint(out) == root / "2"

    from magi import Magi

    Magi.from_pretrained(root / "2")
    # resuming cleans up the temporary directory and finishes the run from step 2
    assert main(["--config", str(cfg), "--out", str(out), "--set", "train.max_steps=4",
                 "--resume", "auto"]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["2", "4"]


def test_latest_checkpoint_skips_a_corrupt_one(tmp_path):
    cfg = write_config(tmp_path / "run.yaml")
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--out", str(out), "--set", "train.max_steps=4"]) == 0
    (out / "checkpoints" / "4" / "ema.safetensors").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="ema.safetensors"):
        assert latest_checkpoint(out) == out / "checkpoints" / "2"
    with pytest.raises(ValueError, match="ema.safetensors"):
        check_checkpoint(out / "checkpoints" / "4")


def test_resume_auto_refuses_a_directory_of_only_bad_checkpoints(tmp_path, capsys):
    cfg = write_config(tmp_path / "run.yaml")
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--out", str(out), "--set", "train.max_steps=2"]) == 0
    (out / "checkpoints" / "2" / "training_state.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning):  # a user error: one line, exit 2
        assert main(["--config", str(cfg), "--out", str(out), "--set", "train.max_steps=4", "--resume", "auto"]) == 2
    assert "none is loadable" in capsys.readouterr().err


def test_explicit_resume_path_and_keep_last(tmp_path):
    data = {**BASE, "train": {**BASE["train"], "keep_last": 1}}
    cfg = write_config(tmp_path / "run.yaml", data)
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--out", str(out), "--set", "train.max_steps=4"]) == 0
    assert [p.name for p in list_checkpoints(out)] == ["4"]
    other = tmp_path / "other"
    assert main(["--config", str(cfg), "--out", str(other), "--set", "train.max_steps=6",
                 "--resume", str(out / "checkpoints" / "4")]) == 0
    assert [p.name for p in list_checkpoints(other)] == ["6"]
    state = torch.load(other / "checkpoints" / "6" / "training_state.pt", weights_only=True)
    assert state["step"] == 6
