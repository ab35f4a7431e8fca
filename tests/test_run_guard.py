"""`magi train` as real processes (docs/own-videos.md): one run per folder (a second process on the same --out
stops at once naming the holder; a lock left by a killed process is taken over, saying so), Ctrl+C
at start-up or twice within a step (one line, and a folder the same command can start again or
continue), and output folders that cannot be written (read-only, full): one line, exit 2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from magi.checkpoint import latest_checkpoint
from test_own_data import FAST_TRAIN, make_own_folder

ROOT = Path(__file__).resolve().parents[1]


def magi(*args: str) -> list[str]:
    return [sys.executable, "-m", "magi.cli", *args]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _default_sigint() -> None:
    """In the child: Ctrl+C as in a terminal, even when this test runs in a background job (where the
    shell starts it with SIGINT ignored, and Python keeps ignoring what it inherits)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(magi(*args), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def train_args(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--steps", str(steps), *FAST_TRAIN,
            "--set", "train.sample.num_videos=0", *extra]


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first (rc {proc.returncode}): "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


# Limits for waiting on a real `magi train` process. They are generous on purpose: on a loaded machine
# (a CPU-bound job beside the suite on 2 cores) start-up alone can take minutes. The tests wait for an
# event (a file, a line) up to these limits, never for a fixed time; the test-level timeout covers them.
START_S = 300  # until the first checkpoint / logged step
STOP_S = 240  # from a Ctrl+C to the process's exit
GUARD_TIMEOUT_S = 900  # pytest-timeout for the tests that run training processes


class Lines:
    """Drains a text pipe of a running process in a thread, so the test can wait for a line as it
    arrives (an event, not a sleep) and still read everything once the process has ended."""

    def __init__(self, pipe):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        for line in pipe:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append(None)  # end of the stream
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        """True once a line containing `text` has arrived; False if the stream ended or time ran out."""
        with self._changed:
            return self._changed.wait_for(
                lambda: any(line is not None and text in line for line in self.lines) or None in self.lines,
                timeout) and any(line is not None and text in line for line in self.lines)

    def text(self, timeout: float) -> str:
        """Everything, once the stream has ended."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the process's output did not end"
        return "".join(line for line in self.lines if line is not None)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_own_folder(tmp_path_factory.mktemp("guard") / "videos")


# --------------------------------------------------------------------------------------------------
# One run per folder


def test_the_lock_in_one_process(tmp_path):
    from magi.run_lock import RunLock, RunLocked

    out = tmp_path / "run"
    with RunLock(out) as lock:
        record = json.loads((out / ".lock").read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(RunLocked, match=f"PID {os.getpid()} on host {socket.gethostname()}"):
            RunLock(out).acquire()  # another open file description: refused like another process
        assert lock.took_over is None
    assert not out.exists()  # created by the lock, nothing else written: removed with it

    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    with RunLock(out) as lock:  # a record nobody holds (its process died): taken over
        assert lock.took_over["pid"] == dead.pid
    assert out.is_dir() and not (out / ".lock").exists()


@pytest.mark.timeout(GUARD_TIMEOUT_S)
def test_two_real_processes_one_folder_and_a_killed_holder_taken_over(data, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(magi(*train_args(data, out, 100_000, "--set", "train.checkpoint_every=3")),
                              cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / "checkpoints" / "3").is_dir(), START_S, "the first run's checkpoint", holder)
        host = socket.gethostname()
        for extra in ([], ["--resume", "auto"]):  # fresh, or both --resume auto: the second stops at once
            second = run(*train_args(data, out, 10, *extra))
            assert second.returncode == 2, second.stderr
            assert second.stderr == (f"magi train: --out: {out} is in use by another magi train (PID {holder.pid} "
                                     f"on host {host}{second.stderr.split(host, 1)[1].split(')')[0]}); one run "
                                     f"per folder: wait for it to end, or choose another --out\n")
            assert second.stdout == ""  # nothing printed, nothing built
        assert holder.poll() is None  # the first run goes on
    finally:
        holder.kill()  # SIGKILL: no clean-up, its lock file stays
        holder.wait()
    assert json.loads((out / ".lock").read_text())["pid"] == holder.pid
    original = (out / "train_config.yaml").read_text()
    last = int(latest_checkpoint(out).name)
    third = run(*train_args(data, out, last + 2, "--resume", "auto"))
    assert third.returncode == 0, third.stderr
    assert f"took over {out / '.lock'}, left by PID {holder.pid} on host {host}" in third.stderr
    assert "which is no longer running" in third.stderr and f"resumed from {out / 'checkpoints'}" in third.stdout
    assert not (out / ".lock").exists()
    # this resume's flags (another --steps) are recorded beside the run's config, which stays as it was
    assert (out / "train_config.yaml").read_text() == original
    resumed = out / f"train_config.resume_{last}.yaml"
    assert resumed.is_file() and f"max_steps: {last + 2}" in resumed.read_text()
    assert "max_steps: 100000" in original
    assert "min this session (" in third.stdout.strip().splitlines()[-1]  # this session's minutes, then all


# --------------------------------------------------------------------------------------------------
# Ctrl+C


@pytest.mark.timeout(GUARD_TIMEOUT_S)
def test_ctrl_c_at_start_up_leaves_nothing_to_refuse(data, tmp_path):
    out = tmp_path / "run"
    # A run too long to finish, so the Ctrl+C always lands in it: during start-up on a loaded machine, or,
    # where start-up is quick, in the first steps (then the orderly stop of the first Ctrl+C applies).
    proc = subprocess.Popen(magi(*train_args(data, out, 100_000)), cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    first = proc.stdout.readline()  # the folder's summary: the process is building the run
    assert first, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    out_text, err = proc.communicate(timeout=STOP_S)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    line = last_line(err)
    if line.startswith("magi train: interrupted (Ctrl+C)"):  # in start-up: the same command starts again
        again = run(*train_args(data, out, 2))
        assert again.returncode == 0, again.stderr
        assert "finished at step 2/2" in again.stdout
    else:  # training had begun: it stopped after a step with a checkpoint that --resume auto continues
        assert line.startswith("SIGINT: saving a checkpoint") and "stopped by SIGINT at step" in out_text, err
        last = int(latest_checkpoint(out).name)
        again = run(*train_args(data, out, last + 1, "--resume", "auto"))
        assert again.returncode == 0 and f"resumed from {out / 'checkpoints' / str(last)}" in again.stdout


@pytest.mark.timeout(GUARD_TIMEOUT_S)
def test_a_second_ctrl_c_stops_at_once_and_says_what_to_do(data, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(magi(*train_args(data, out, 100_000, "--set", "train.checkpoint_every=100000")),
                            cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    stdout, stderr = Lines(proc.stdout), Lines(proc.stderr)
    try:
        wait_for(lambda: (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size > 0,
                 START_S, "the first logged step", proc)
        proc.send_signal(signal.SIGINT)
        # The second Ctrl+C only once the first has been handled (its line printed): sent a few ms apart
        # instead, the two could merge into one pending signal on a loaded machine, and which outcome the
        # test saw depended on the scheduler.
        assert stderr.wait_for("saving a checkpoint after this step", STOP_S), \
            f"the first Ctrl+C was not acknowledged: {stderr.text(STOP_S)}"
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # within the step the first asked to finish, or its save
        proc.wait(timeout=STOP_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out_text, err = stdout.text(STOP_S), stderr.text(STOP_S)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    line = last_line(err)
    if "the same command starts again" in line:  # stopped before the checkpoint the first Ctrl+C asked for
        assert line.startswith("magi train: interrupted (Ctrl+C) before the first checkpoint"), line
        assert not (out / "metrics.jsonl").exists()
        again = run(*train_args(data, out, 2))
    else:
        if line.startswith("SIGINT: saving a checkpoint"):  # the run ended in order before the second came
            assert "stopped by SIGINT at step" in out_text, err
        else:
            assert line.startswith("magi train: stopped at once (Ctrl+C); the last checkpoint is"), line
        last = int(latest_checkpoint(out).name)
        again = run(*train_args(data, out, last + 1, "--resume", "auto"))  # continues from that checkpoint
        assert f"resumed from {out / 'checkpoints' / str(last)}" in again.stdout
    assert again.returncode == 0, again.stderr


# --------------------------------------------------------------------------------------------------
# Output folders that cannot be written


def _read_only(folder: Path):
    """Make `folder` unwritable even for root (chattr +i), or by mode for other users; None if neither."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return lambda: folder.chmod(0o700)
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    return None


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody can write into, for the test's length."""
    parent = tmp_path / "locked"
    parent.mkdir()
    undo = _read_only(parent)
    if undo is None:
        pytest.skip("cannot make a folder read-only here")
    yield parent
    undo()


def test_an_unwritable_out_is_one_line_and_nothing_claimed(data, read_only):
    for out in (read_only / "run", read_only):  # a new folder inside it, and the folder itself
        result = run(*train_args(data, out, 2))
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert result.stderr.count("\n") == 1 and f"cannot write {out}" in result.stderr
        assert ("Operation not permitted" in result.stderr or "Permission denied" in result.stderr)
        assert "nothing was written" in result.stderr


def test_a_full_disk_is_one_line(data, tmp_path):
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        result = run(*train_args(data, mount / "run", 4, "--set", "train.checkpoint_every=2"))
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        line = last_line(result.stderr)
        assert line.startswith(f"magi train: cannot write {mount / 'run'}") and "No space left on device" in line
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_other_commands_on_an_unwritable_out_are_one_line(read_only):
    result = run("sample", str(ROOT / "pretrained"), "--out", str(read_only / "samples"), "--num-samples", "1",
                 "--mask-steps", "1", "--diffusion-steps", "1", "--no-progress")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"magi sample: cannot write {read_only / 'samples'}")
    assert "wrote" not in result.stdout


def test_a_second_ctrl_c_inside_the_loss_plot_is_not_swallowed(tmp_path, monkeypatch):
    """C code (matplotlib's) can turn the second Ctrl-C's KeyboardInterrupt into another error; the
    plot's catch-all must not swallow it, or the run ends as if in order, without its last line."""
    from types import SimpleNamespace

    import magi.visualize
    from magi.trainer import Trainer

    (tmp_path / "metrics.jsonl").write_text("{}\n")

    def broken(*args, **kwargs):
        raise RuntimeError("initialization failed")

    monkeypatch.setattr(magi.visualize, "plot_loss", broken)
    fake = SimpleNamespace(info=SimpleNamespace(is_main=True), _plotted_at=0.0, out_dir=tmp_path,
                           logger=SimpleNamespace(flush=lambda: None, jsonl_path=tmp_path / "metrics.jsonl"),
                           _stopped_at_once=False)
    with pytest.warns(UserWarning, match="could not draw"):
        Trainer._plot_loss(fake, force=True)  # a plain failure: a warning, training goes on
    fake._stopped_at_once = True
    with pytest.raises(KeyboardInterrupt):
        Trainer._plot_loss(fake, force=True)
