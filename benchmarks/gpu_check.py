"""Torch stages on another device against the CPU: every output table within a stated tolerance, and time.

Usage:
    python benchmarks/gpu_check.py [--devices cuda] [--configfile tests/data/tiny.yaml]
                                   [--stages activations ...] [--reference DIR] [--out DIR]

1. Reference. The workflow (Snakefile, rules, scripts, src) is copied to OUT/reference and run
   end to end on the CPU with the config (default: the tiny test config) and `compute.device: cpu`.
   `--reference DIR` reuses a finished CPU run instead (a workdir with results/ and logs/).
2. Per device and torch stage, on a copy of the reference: the stage's jobs alone are rerun
   (`--forcerun S --until S --rerun-triggers mtime`, `compute.device` set to the device; a sharded
   stage runs on to its merge, which is what gets compared), so each
   stage reads the CPU's inputs and differences do not compound across stages. Its outputs are then
   compared with the reference's: Parquet tables column by column, JSON numbers leaf by leaf; text
   and other columns must be equal; figures and checkpoints are not compared (training stages are
   judged by their metrics and loss files). A float column passes when
   max |x - ref| <= tol * max(1, max |ref|), with tol per stage (TOLERANCE below).
3. Time: each stage's seconds from Snakemake's benchmark files, summed over its jobs, per device.

Writes OUT/gpu_check.json and OUT/gpu_check.md (the table); exits 1 if any stage fails.
On a machine without CUDA, `--devices cpu` runs the CPU half (the tests do): each stage rerun
on the CPU must give the reference's bytes, i.e. a difference of exactly 0. Across CPU types
(AVX2, AVX-512, AMX: other float kernels), copy a finished run to the other machine and add
`--other-cpu`: each stage, fed the reference's inputs, must then agree within its tolerance.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = ("Snakefile", "config.yaml", "rules", "scripts", "envs", "concept_sets", "report", "profiles")
# Relative tolerance per stage on another device (float kernels differ; bf16 autocast is off by default).
# Training runs different kernels for hundreds of steps: its metrics agree only loosely.
TOLERANCE = {"activations": 1e-3, "vlm_embeddings": 1e-3, "relevance": 1e-2, "simulate": 2e-2,
             "top_impact": 2e-2, "label_masking": 2e-2, "train_model": 0.25, "train_vlm": 0.25}
STAGES = tuple(TOLERANCE)
MERGES = {"simulate": "merge_simulation", "top_impact": "merge_top_impact", "relevance": "merge_relevance"}
SKIP_SUFFIXES = (".png", ".pt", ".safetensors", ".html", ".log", ".tsv")


def copy_workflow(dest: Path, configfile: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    shutil.copytree(REPO / "src" / "nexplain", dest / "src" / "nexplain",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(configfile, dest / "run.yaml")
    return dest


def snakemake(wf: Path, device: str, config: str | None, *args: str) -> None:
    """Run the workflow in `wf` with its `config` file (None: config.yaml alone) and the device set."""
    (wf / "device.yaml").write_text(yaml.safe_dump({"compute": {"device": device}, "mlflow": {"enabled": False}}))
    configs = [c for c in (config, "device.yaml") if c]
    env = {**os.environ, "PYTHONPATH": str(wf / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(os.cpu_count() or 1), "--configfile", *configs, *args]
    proc = subprocess.run(cmd, cwd=wf, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"snakemake failed in {wf}:\n{proc.stderr[-4000:]}")


def stage_outputs(wf: Path, stage: str) -> list[Path]:
    """The files a stage's jobs wrote in `wf`, found from its benchmark files' wildcards."""
    logs = sorted((wf / "logs" / stage).rglob("*.log"))
    if not logs:
        return []
    since = min(p.stat().st_mtime for p in logs) - 1
    return sorted(p for p in (wf / "results").rglob("*") if p.is_file() and p.stat().st_mtime >= since
                  and not p.name.startswith(".") and not p.name.endswith(SKIP_SUFFIXES))


def stage_seconds(wf: Path, stage: str) -> float:
    total = 0.0
    for tsv in (wf / "logs" / "benchmarks" / stage).rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        total += float(lines[1].split("\t")[0])
    return total


def compare_file(a: Path, b: Path) -> tuple[float, list[str]]:
    """(largest relative float difference, exact mismatches) between two output files."""
    if a.suffix == ".parquet":
        ta, tb = pq.read_table(a), pq.read_table(b)
        if ta.column_names != tb.column_names or ta.num_rows != tb.num_rows:
            return math.inf, [f"{a.name}: columns or rows differ"]
        worst, bad = 0.0, []
        for name in ta.column_names:
            worst, bad = _merge(_compare_values(ta[name].to_pylist(), tb[name].to_pylist(), f"{a.name}:{name}"),
                                worst, bad)
        return worst, bad
    if a.suffix == ".json":
        return _compare_values(json.loads(a.read_text()), json.loads(b.read_text()), a.name)
    return (0.0, []) if a.read_bytes() == b.read_bytes() else (0.0, [f"{a.name}: bytes differ"])


def _merge(result, worst, bad):
    return max(worst, result[0]), bad + result[1]


def _compare_values(x, ref, where: str) -> tuple[float, list[str]]:
    floats = _floats(x), _floats(ref)
    if floats[0] is not None and floats[1] is not None:
        a, r = floats
        if a.shape != r.shape:
            return math.inf, [f"{where}: shapes differ"]
        nan_a, nan_r = np.isnan(a), np.isnan(r)
        if (nan_a != nan_r).any():
            return math.inf, [f"{where}: NaN in different places"]
        if not a.size or nan_a.all():
            return 0.0, []
        scale = max(1.0, float(np.nanmax(np.abs(r))))
        return float(np.nanmax(np.abs(a - r))) / scale, []
    if isinstance(x, dict) and isinstance(ref, dict):
        if x.keys() != ref.keys():
            return math.inf, [f"{where}: keys differ"]
        worst, bad = 0.0, []
        for k in x:
            worst, bad = _merge(_compare_values(x[k], ref[k], f"{where}.{k}"), worst, bad)
        return worst, bad
    return (0.0, []) if x == ref else (0.0, [f"{where}: values differ"])


def _floats(v):
    """A float array of a number, or of a (nested) list of numbers and None; else None."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return np.array([float(v)])
    if isinstance(v, list):
        try:
            arr = np.array([np.nan if e is None else e for e in _flatten(v)], dtype=np.float64)
        except (TypeError, ValueError):
            return None
        return arr if arr.size and all(not isinstance(e, bool) for e in _flatten(v)) else None
    return None


def _flatten(v):
    for e in v:
        if isinstance(e, (list, tuple)):
            yield from _flatten(e)
        else:
            yield e


def check_stage(reference: Path, config: str | None, work: Path, device: str, stage: str,
                other_cpu: bool = False) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    top = lambda d, names: {".git", ".dvc", "mlruns", "mlartifacts"} & set(names) if Path(d) == reference else set()
    shutil.copytree(reference, work, symlinks=True, ignore=top)  # copy2 keeps mtimes: nothing upstream reruns
    shutil.rmtree(work / "logs" / stage, ignore_errors=True)
    shutil.rmtree(work / "logs" / "benchmarks" / stage, ignore_errors=True)
    start = time.perf_counter()
    # a sharded stage's parts are temporary: run on to its merge, and compare the merged table
    snakemake(work, device, config, "--forcerun", stage, "--until", MERGES.get(stage, stage),
              "--rerun-triggers", "mtime")
    wall = time.perf_counter() - start
    outputs = stage_outputs(work, stage)
    worst, bad = 0.0, []
    for path in outputs:
        ref = reference / path.relative_to(work)
        if not ref.exists():
            bad.append(f"{path.relative_to(work)}: not in the reference run")
            continue
        worst, bad = _merge(compare_file(path, ref), worst, bad)
    # one CPU type must give the same bytes; another device or CPU type, the stage's tolerance
    tol = TOLERANCE[stage] if device != "cpu" or other_cpu else 0.0
    return {"stage": stage, "device": device, "seconds": round(stage_seconds(work, stage), 2),
            "wall_s": round(wall, 1), "files": len(outputs), "max_rel_diff": worst, "tolerance": tol,
            "mismatches": bad[:10], "ok": bool(outputs) and not bad and worst <= tol}


def table(rows: list[dict], ref_seconds: dict[str, float]) -> str:
    lines = ["| stage | device | seconds | cpu seconds | speed-up | files | max rel diff | tolerance | ok |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = ref_seconds.get(r["stage"], float("nan"))
        speed = cpu / r["seconds"] if r["seconds"] else float("nan")
        lines.append(f"| {r['stage']} | {r['device']} | {r['seconds']:.1f} | {cpu:.1f} | {speed:.2f}x | {r['files']} "
                     f"| {r['max_rel_diff']:.2e} | {r['tolerance']:g} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", nargs="+", default=["cuda"])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--configfile", type=Path, default=REPO / "tests" / "data" / "tiny.yaml")
    ap.add_argument("--reference", type=Path, help="a finished CPU run to compare against (default: run one)")
    ap.add_argument("--reference-config", help="the config file in --reference that run used (default: config.yaml alone)")
    ap.add_argument("--other-cpu", action="store_true",
                    help="--reference came from another CPU type: hold the CPU to the stage tolerances, not to equal bytes")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "gpu_check")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reference, config = args.reference, args.reference_config
    if reference is None:
        config = "run.yaml"
        reference = args.out / "reference"
        shutil.rmtree(reference, ignore_errors=True)
        copy_workflow(reference, args.configfile.resolve())
        start = time.perf_counter()
        snakemake(reference, "cpu", config)
        print(f"reference run on the CPU: {time.perf_counter() - start:.0f} s", flush=True)
    ref_seconds = {s: stage_seconds(reference, s) for s in args.stages}
    rows = []
    for device in args.devices:
        for stage in args.stages:
            if not (reference / "logs" / "benchmarks" / stage).exists():
                continue  # the config has no job of this stage (label masking is off by default)
            rows.append(check_stage(reference, config, args.out / f"{device}-{stage}", device, stage, args.other_cpu))
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(args.out / f"{device}-{stage}", ignore_errors=True)
    (args.out / "gpu_check.json").write_text(json.dumps({"reference_seconds": ref_seconds, "rows": rows}, indent=1))
    (args.out / "gpu_check.md").write_text(table(rows, ref_seconds))
    print(table(rows, ref_seconds))
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
