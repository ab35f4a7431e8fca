"""One training process per run directory: `OUT/.lock`, held for the life of `magi train`.

Two `magi train` on the same `--out` would both append to `metrics.jsonl`, write two TensorBoard files
and race their checkpoints. So the first takes an exclusive `flock` on `OUT/.lock` and writes who it
is (PID, host, start time, command) into it; a second finds the lock held and stops with one line
naming the holder. The kernel drops a flock when its process dies, however it dies (SIGKILL, a
crash, a lost node), so a lock file left behind is not held: the next process takes it over and
says whose it was. All ranks of a torchrun job count as one: only global rank 0 takes the lock.

Where the filesystem has no flock (some network or FUSE mounts), the lock falls back to the record
alone: held while its PID runs on this host; a record from another host is respected, and the
message says how to remove it once that run is known to be gone.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

LOCK_NAME = ".lock"


class RunLocked(Exception):
    """Another live process holds the run directory; the message names it and what to do."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _describe(holder: dict) -> str:
    since = holder.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}{when}"


class RunLock:
    """`with RunLock(out_dir, command="magi train"):` holds `out_dir/.lock` (creating `out_dir`). Raises
    `RunLocked` when another live process holds it, `OSError` when the directory cannot be written.
    `took_over` is the record of a dead holder whose lock this one replaced (None otherwise). On exit
    the lock file is removed, and `out_dir` too when this lock created it and nothing else was
    written there."""

    def __init__(self, out_dir: str | Path, command: str = "magi train") -> None:
        self.out_dir, self.command = Path(out_dir), command
        self.path = self.out_dir / LOCK_NAME
        self.fd: Optional[int] = None
        self.took_over: Optional[dict] = None
        self.created_dir = False

    # -- taking and giving back

    def acquire(self) -> "RunLock":
        self.created_dir = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    held = self._flock(fd)
                except BaseException:
                    os.close(fd)
                    raise
                if not held:  # the record alone decides (no flock here)
                    self._check_record(fd)
                try:  # a holder that was removing the file as we opened it: take the new file instead
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            self.fd = fd
            previous = self._read(fd)
            if previous and previous.get("pid") != os.getpid():
                self.took_over = previous
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                      "command": " ".join([self.command, *sys.argv[1:]])[:500]}
            data = (json.dumps(record) + "\n").encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except BaseException:
            if self.fd is None:
                self._remove_created_dir()
            else:
                self.release()
            raise
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still held, so no one else holds a file about to vanish
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
        self._remove_created_dir()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -- helpers

    def _flock(self, fd: int) -> bool:
        """True: this process now holds the flock. False: the filesystem has no flock. RunLocked when
        another process holds it."""
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = self._read(fd) or {}
                raise RunLocked(f"--out: {self.out_dir} is in use by another magi train ({_describe(holder)}); "
                                "one run per folder: wait for it to end, or choose another --out") from None
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return False
            raise

    def _check_record(self, fd: int) -> None:
        holder = self._read(fd)
        if not holder or holder.get("pid") == os.getpid():
            return
        here = holder.get("host") == socket.gethostname()
        if here and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
            return  # a dead holder on this host: taken over
        extra = "" if here else (f"; this filesystem has no file locks, so if that run is gone, delete "
                                 f"{self.path} and start again")
        raise RunLocked(f"--out: {self.out_dir} is in use by another magi train ({_describe(holder)}); one run "
                        f"per folder: wait for it to end, or choose another --out{extra}")

    @staticmethod
    def _read(fd: int) -> Optional[dict]:
        try:
            data = os.pread(fd, 4096, 0)
            record = json.loads(data.decode() or "null")
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _remove_created_dir(self) -> None:
        if self.created_dir:
            try:
                self.out_dir.rmdir()  # only when empty: nothing but the lock was written
            except OSError:
                pass


def describe_holder(record: dict) -> str:
    """"PID 123 on host h since ..." for a lock record (messages about a taken-over lock)."""
    return _describe(record)


__all__ = ["LOCK_NAME", "RunLock", "RunLocked", "describe_holder"]
