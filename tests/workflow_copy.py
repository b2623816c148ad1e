"""A private copy of the workflow (with its package source) in a temp dir, and ways to run it.

Tests edit code and config in the copy and ask Snakemake (or DVC) what it would rerun.
"""

import copy
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # snakemake and dvc of this environment


GIT = ["git", "-c", "user.name=nexplain-test", "-c", "user.email=test@nexplain.invalid"]


def merged(base: dict, over: dict) -> dict:
    """`over` merged into `base` exactly as Snakemake merges a --configfile over the Snakefile's configfile,
    key order included (params are compared as ordered dicts): `over`'s keys first, then base's, `over` wins."""
    from snakemake.utils import update_config

    config = copy.deepcopy(over)
    update_config(config, copy.deepcopy(base))
    update_config(config, copy.deepcopy(over))
    return config


def copy_workflow(wf: Path, dvc: bool = False) -> Path:
    """Snakefile, rules, scripts, envs, concept_sets, report (captions), profiles, src/nexplain and tiny.yaml; with `dvc`,
    also DVC's files, and config.yaml is tiny.yaml merged over it (dvc.yaml reads its params from config.yaml
    alone), so `snakemake` and `snakemake --configfile tiny.yaml` plan the same jobs."""
    wf.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config.yaml") + ((".dvcignore", "dvc.yaml") if dvc else ()):
        shutil.copy(REPO / name, wf / name)
    for name in ("rules", "scripts", "envs", "concept_sets", "report", "profiles") + ((".dvc",) if dvc else ()):
        shutil.copytree(REPO / name, wf / name, ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    shutil.copytree(REPO / "src" / "nexplain", wf / "src" / "nexplain",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "tests" / "data" / "tiny.yaml", wf / "tiny.yaml")
    if dvc:
        config = merged(yaml.safe_load((wf / "config.yaml").read_text()), yaml.safe_load((wf / "tiny.yaml").read_text()))
        (wf / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return wf


def commit(wf: Path, message: str) -> None:
    run(wf, *GIT, "add", "-A")
    run(wf, *GIT, "commit", "-q", "-m", message)


def dvc(wf: Path, *args, **kw) -> subprocess.CompletedProcess:
    return run(wf, BIN / "dvc", *args, **kw)


def dvc_run(wf: Path) -> str:
    """A DVC copy of the workflow in a fresh git repo at `wf`, and `dvc repro` (Snakemake inside) once; its log."""
    copy_workflow(wf, dvc=True)
    run(wf, "git", "init", "-q")
    commit(wf, "workflow")
    proc = dvc(wf, "repro")
    return proc.stdout + proc.stderr


def env(wf: Path, **extra) -> dict:
    # jobs import the copy, as the code hash does
    return {**os.environ, "PYTHONPATH": str(wf / "src"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}


def run(wf: Path, *cmd, check=True, **extra_env) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(map(str, cmd)), cwd=wf, env=env(wf, **extra_env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def snakemake(wf: Path, *args, configfile="tiny.yaml", check=True, **extra_env) -> subprocess.CompletedProcess:
    conf = ["--configfile", configfile] if configfile else []
    return run(wf, sys.executable, "-m", "snakemake", "--cores", "2", *conf, *args, check=check, **extra_env)


def digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root, Snakemake's timestamp markers aside."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".snakemake_timestamp"}
