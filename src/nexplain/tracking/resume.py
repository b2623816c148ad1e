"""What a killed run leaves behind, cleared at the next start so that the same command resumes.

A `kill -9` skips every `finally`: Snakemake's locks stay in `.snakemake/locks`, temporaries stay
beside the outputs they were to replace, and MLflow runs stay RUNNING. Each invocation registers
its process in `.snakemake/nexplain/runs`; at the next start, leftovers are cleared only when no
registered process is alive, so a run that is really going on is never touched.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from nexplain.io import TEMPORARY

log = logging.getLogger("nexplain.tracking.resume")

RUNS = Path(".snakemake") / "nexplain" / "runs"
LOCKS = Path(".snakemake") / "locks"


@dataclass(frozen=True)
class Process:
    host: str
    pid: int
    started: str  # the kernel's start time of the pid: a reused pid is another process

    @classmethod
    def this(cls) -> Process:
        return cls(socket.gethostname(), os.getpid(), _start_time(os.getpid()))

    @classmethod
    def parse(cls, text: str) -> Process | None:
        try:
            host, pid, started = text.rsplit(":", 2)
            return cls(host, int(pid), started)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.started}"

    def alive(self) -> bool:
        """False only when surely dead: a process on another host counts as alive."""
        if self.host != socket.gethostname():
            return True
        return _start_time(self.pid) == self.started != ""


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the command name
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)  # no /proc: existence is all we can tell
            return "?"
        except (ProcessLookupError, PermissionError, OverflowError):
            return ""


def live_runs(workdir: str | Path = ".") -> list[Process]:
    """Registered invocations still running, this one aside; dead ones' files are removed."""
    me, alive = Process.this(), []
    for file in sorted((Path(workdir) / RUNS).glob("*.json")):
        try:
            proc = Process(**json.loads(file.read_text()))
        except (OSError, ValueError, TypeError):
            proc = None
        if proc == me:
            continue
        if proc is not None and proc.alive():
            alive.append(proc)
        else:
            file.unlink(missing_ok=True)
    return alive


def register(workdir: str | Path = ".") -> Process:
    """Record this invocation until it exits (a kill leaves the file: the next start sees it dead)."""
    me = Process.this()
    file = Path(workdir) / RUNS / f"{me.host}.{me.pid}.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(asdict(me)))
    atexit.register(file.unlink, missing_ok=True)
    return me


def clear_stale_locks(workdir: str | Path = ".") -> int:
    """Remove Snakemake's locks; call only when no other registered run is alive."""
    locks = sorted((Path(workdir) / LOCKS).glob("*.lock"))
    for lock in locks:
        lock.unlink(missing_ok=True)
    return len(locks)


def sweep_temporaries(root: str | Path) -> list[Path]:
    """Remove the temporaries that killed jobs left under `root` (files and directories)."""
    gone = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            if TEMPORARY.match(name):
                path = Path(dirpath) / name
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
                gone.append(path)
        dirnames[:] = [d for d in dirnames if not TEMPORARY.match(d)]
    return gone


def prepare(workdir: str | Path, results: str | Path) -> None:
    """At the start of an invocation: clear what dead runs left, unless another run is alive; register."""
    others = live_runs(workdir)
    if others:
        log.warning("another run is active in %s (%s): its locks and temporaries are left alone",
                    Path(workdir).resolve(), ", ".join(map(str, others)))
    else:
        if n := clear_stale_locks(workdir):
            log.warning("removed %d Snakemake lock(s) left by a run that was killed", n)
        if gone := sweep_temporaries(Path(workdir) / results):
            log.warning("removed %d temporary file(s) left by killed jobs under %s", len(gone), results)
    register(workdir)
