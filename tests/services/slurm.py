"""A real single-node SLURM cluster from Debian's packages, started and stopped by the tests themselves.

munged, slurmctld and slurmd run as children of the test process (in the foreground, so their PIDs are the ones
we started), each in its own session, with everything under one temp folder: a private munge key and socket
(a system munged, if any, is left alone), slurm.conf, state, spool and logs. Everything listens on 127.0.0.1
only, on free ports. Clients find slurm.conf through SLURM_CONF (`Cluster.env`), except the `srun` inside each
job: snakemake-executor-plugin-slurm-jobstep 0.6 strips every SLURM_* variable but the job's ids from srun's
environment, so /etc/slurm/slurm.conf (the compiled-in path, where a real cluster keeps it) is a symlink to ours
while the cluster runs. It refuses to replace a real one there.

No cgroups and no systemd: proctrack/linuxproc, task/none. No accounting database either, so `sacct` does not
work: callers pass `--slurm-status-command squeue` to the Snakemake plugin, and MinJobAge (1200 s) keeps finished
jobs visible to squeue for longer than 3x the plugin's first status check. Every job that ends is written to the
job-completion log (jobcomp/filetxt), which proves what went through sbatch.

Usage: `with slurm_cluster() as cluster: subprocess.run([...], env={**os.environ, **cluster.env})`.
It needs root and, unless SLURM is already installed, apt-get: it skips (pytest.skip) without them, nowhere else.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "munged", "mungekey")
MIN_JOB_AGE = 1200  # seconds a finished job stays in squeue: >= 3x the plugin's first status check, and > the
# tests' kill timeout (900 s), so every job of a slow run is still there when the tests read squeue
PARTITION = "nexplain"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
PREFIX = "nexplain-slurm-"
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED")


@dataclass
class Cluster:
    root: Path
    conf: Path
    jobcomp: Path
    pids: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, snakemake --executor slurm) needs in its environment."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env={**os.environ, **self.env}, capture_output=True, text=True, check=check,
                              timeout=60)

    def completed_jobs(self) -> list[dict[str, str]]:
        """The job-completion log, one dict a job (JobId, Name, JobState, NodeList, ...)."""
        if not self.jobcomp.is_file():
            return []
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in self.jobcomp.read_text().splitlines() if line]

    def queue(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (running, pending and finished within MinJobAge): id, name, state,
        comment (the plugin writes `rule_<rule>[_wildcards_...]` there)."""
        out = self.run("squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%k").stdout
        keys = ("id", "name", "state", "comment")
        return [dict(zip(keys, line.split("|", 3))) for line in out.splitlines() if line.strip()]

    def logs(self) -> str:
        """The daemons' logs, for a failing test's message."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.root / "log").glob("*")) if p.is_file())


def _skip(reason: str):
    import pytest

    pytest.skip(reason)


def _bin(name: str) -> str | None:
    """A SLURM or munge program, found in /usr/sbin too (a non-login root shell may lack it on PATH)."""
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin{os.pathsep}/sbin")


def ensure_installed() -> float:
    """Install Debian's SLURM and munge where they are missing; seconds spent. Skips only without root or
    apt-get; a failing apt-get is an error."""
    if os.geteuid() != 0:
        _skip("a SLURM cluster needs root (slurmd runs the jobs as their users)")
    if all(map(_bin, BINARIES)):
        return 0.0
    if shutil.which("apt-get") is None:
        _skip("SLURM is not installed and there is no apt-get to install it")
    t0 = time.perf_counter()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    proc = subprocess.run(install, env=env, capture_output=True, text=True)
    if proc.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, check=True)
        proc = subprocess.run(install, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node() -> tuple[str, str]:
    """(NodeName, the hardware part of its line) as slurmd sees this machine, so it never drains the node."""
    out = subprocess.run([_bin("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("NodeName="))
    name = line.split()[0].split("=", 1)[1]
    hardware = " ".join(w for w in line.split()[1:]
                        if w.split("=")[0] in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket",
                                               "ThreadsPerCore", "RealMemory"))
    return name, hardware


def write_conf(root: Path, munge_socket: Path) -> Path:
    host = socket.gethostname().split(".")[0]  # slurmctld refuses to run unless SlurmctldHost names this host
    node, hardware = _node()
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=nexplain-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
# bind to 127.0.0.1 (SlurmctldHost's and NodeAddr's address), not to every interface
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
MailProg=/bin/true
# no cgroups, no systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
# jobs share the node by CPU and memory; a job that asks for no memory gets 1 GB a CPU, not the whole node
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
# schedule at once on submit (FIFO), and keep finished jobs visible to squeue
SchedulerType=sched/builtin
MinJobAge={MIN_JOB_AGE}
ReturnToService=2
# a cancelled job gets SIGKILL 5 s after SIGTERM (Snakemake may linger on SIGTERM)
KillWait=5
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.log
NodeName={node} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _link_system_conf(conf: Path) -> None:
    """/etc/slurm/slurm.conf -> conf, for the srun that the jobstep plugin runs without SLURM_CONF."""
    if SYSTEM_CONF.is_symlink() and not SYSTEM_CONF.exists() and PREFIX in os.readlink(SYSTEM_CONF):
        SYSTEM_CONF.unlink()  # left by a test run that was killed
    if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
        where = f" -> {os.readlink(SYSTEM_CONF)}" if SYSTEM_CONF.is_symlink() else ""
        raise RuntimeError(f"{SYSTEM_CONF}{where} exists: this machine has a SLURM configuration (or another test "
                           "cluster runs); the test cluster will not replace it")
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SYSTEM_CONF.symlink_to(conf)


def _start(cmd: list[str], log: Path, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True, **kw)


def _wait(what: str, ready, procs: dict[str, subprocess.Popen], timeout: float, logs) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [f"{name} (exit {p.returncode})" for name, p in procs.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {', '.join(dead) or f'not ready in {timeout:.0f} s'}\n{logs()}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _job_processes(conf: Path, exclude: set[int]) -> list[int]:
    """PIDs of this cluster's slurmstepd and job processes: they inherit SLURM_CONF=<our temp conf> (slurmstepd
    from slurmd, a batch job from sbatch's --export=ALL), a path no other cluster uses."""
    mark = f"SLURM_CONF={conf}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) not in exclude | {os.getpid()}:
            with contextlib.suppress(OSError):
                env = (proc / "environ").read_bytes().split(b"\0")
                job = (proc / "comm").read_text().strip() == "slurmstepd" or any(
                    v.startswith(b"SLURM_JOB_ID=") for v in env)
                if job and mark in env:  # not slurmctld's own slurmscriptd
                    pids.append(int(proc.name))
    return pids


def _end_job_processes(conf: Path, daemons: set[int], timeout: float = 15) -> None:
    """Wait for slurmstepd to end the cancelled jobs (SIGKILL after KillWait); SIGKILL what still runs, before
    slurmd goes and the spool folder with it."""
    deadline = time.monotonic() + timeout
    while (left := _job_processes(conf, daemons)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def slurm_cluster() -> Iterator[Cluster]:
    """Install (if needed) and start munged, slurmctld and slurmd; yield the Cluster; cancel its jobs and stop
    exactly those three processes."""
    t0 = time.perf_counter()
    install_s = ensure_installed()
    # munged wants every folder above its socket open to all (x), so not under pytest's private tmp
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    root.chmod(0o755)
    procs: dict[str, subprocess.Popen] = {}
    linked = False
    try:
        for sub in ("state", "spool", "log"):
            (root / sub).mkdir()
        munge = root / "munge"
        munge.mkdir()
        subprocess.run([_bin("mungekey"), "--create", "--keyfile", str(munge / "munge.key")], check=True,
                       capture_output=True)
        shutil.chown(munge, "munge", "munge")
        shutil.chown(munge / "munge.key", "munge", "munge")
        socket_path = munge / "munge.socket"
        conf = write_conf(root, socket_path)
        _link_system_conf(conf)
        linked = True
        cluster = Cluster(root=root, conf=conf, jobcomp=root / "log" / "jobcomp.log")
        env = {**os.environ, **cluster.env}
        log = root / "log"

        procs["munged"] = _start(
            [_bin("munged"), "--foreground", f"--key-file={munge / 'munge.key'}", f"--socket={socket_path}",
             f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
             f"--seed-file={munge / 'munged.seed'}"],
            log / "munged.out", env, user="munge", group="munge", extra_groups=[])
        _wait("munged", socket_path.exists, procs, 20, cluster.logs)
        procs["slurmctld"] = _start([_bin("slurmctld"), "-D"], log / "slurmctld.out", env)
        _wait("slurmctld", lambda: cluster.run("scontrol", "ping", check=False).returncode == 0, procs, 30,
              cluster.logs)
        procs["slurmd"] = _start([_bin("slurmd"), "-D"], log / "slurmd.out", env)

        def idle():
            out = cluster.run("sinfo", "--noheader", "--format=%t", check=False).stdout.split()
            return out and all(s.rstrip("*~#") == "idle" for s in out)

        _wait("slurmd", idle, procs, 60, cluster.logs)
        cluster.pids = {name: p.pid for name, p in procs.items()}
        cluster.timings = {"install_s": install_s, "start_s": time.perf_counter() - t0 - install_s}
        yield cluster
    finally:
        if "slurmctld" in procs and procs["slurmctld"].poll() is None:
            # a test that failed mid-run may leave jobs: cancel them, and let slurmd reap their steps
            client = Cluster(root=root, conf=root / "slurm.conf", jobcomp=root / "log" / "jobcomp.log")
            client.run("scancel", "--full", f"--partition={PARTITION}", check=False)
            deadline = time.monotonic() + 30
            while any(j["state"] in ACTIVE for j in client.queue()) and time.monotonic() < deadline:
                time.sleep(0.5)
        _end_job_processes(root / "slurm.conf", {p.pid for p in procs.values()})
        for name in ("slurmd", "slurmctld", "munged"):
            if name in procs:
                _stop(procs[name])
        if linked and SYSTEM_CONF.is_symlink() and os.readlink(SYSTEM_CONF) == str(root / "slurm.conf"):
            SYSTEM_CONF.unlink()
        shutil.rmtree(root, ignore_errors=True)
