"""A real MLflow tracking server for tests: `mlflow server` on 127.0.0.1 and a free port, its SQLite store and
artifacts in a temp folder, stopped with its whole process group (the server spawns uvicorn/gunicorn workers).

Usage: `with mlflow_server(tmp_path) as server: env["MLFLOW_TRACKING_URI"] = server.uri`; with `wait=False` it
yields at once, to start something else meanwhile, and `server.wait()` blocks until it answers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from services.slurm import free_port

MLFLOW = Path(sys.executable).parent / "mlflow"  # this environment's


@dataclass
class Server:
    uri: str
    root: Path
    proc: subprocess.Popen
    timeout: float
    start_s: float | None = None  # seconds from start until it answered
    _t0: float = field(default_factory=time.perf_counter)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")[-5000:]

    def wait(self) -> "Server":
        """Block until /health answers (8-17 s on two cores from the start)."""
        deadline = self._t0 + self.timeout
        while self.start_s is None:
            if _answers(self.uri):
                self.start_s = time.perf_counter() - self._t0
            elif self.proc.poll() is not None or time.perf_counter() > deadline:
                why = (f"exited with {self.proc.returncode}" if self.proc.poll() is not None
                       else f"no answer in {self.timeout:.0f} s")
                raise RuntimeError(f"mlflow server {why}:\n{self.log()}")
            else:
                time.sleep(0.25)
        return self


def _answers(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def mlflow_server(root: Path, timeout: float = 90, wait: bool = True) -> Iterator[Server]:
    """Start the server, wait until /health answers (unless not `wait`), yield it, stop its process group."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    cmd = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts")]
    # no job runner with its seven huey consumers (GenAI jobs): two cores are scarce
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "server.log").open("ab")
    t0 = time.perf_counter()
    # its own session: the server, its workers and nothing else share the process group we kill
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    try:
        server = Server(uri=uri, root=root, proc=proc, timeout=timeout, _t0=t0)
        yield server.wait() if wait else server
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):  # workers that outlived the server
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        log.close()
