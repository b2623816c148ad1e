"""Wall time and peak memory of the default pipeline, end to end, from an empty results dir.

Usage: python benchmarks/bench_pipeline.py [--configfile FILE] [--workdir DIR]
Runs `snakemake --cores 2` in a fresh work dir, samples the RSS of the whole process
tree every 0.2 s (sum over processes, and the largest single process), and prints the
per-rule times Snakemake's `benchmark:` files recorded.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    total = biggest = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        total += rss
        biggest = max(biggest, rss)
    return total, biggest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configfile", default=str(REPO / "config.yaml"))
    ap.add_argument("--workdir", default=None, help="default: a fresh temp dir")
    ap.add_argument("--cores", default="2")
    args = ap.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="nexplain-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "--cores", args.cores, "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(Path(args.configfile).resolve())]
    t0 = time.perf_counter()
    log = open(workdir / "bench_pipeline.log", "w")  # a file, not a pipe: a full pipe would stall the run
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    peak_total = peak_single = 0
    while proc.poll() is None:
        total, single = tree_rss(ps)
        peak_total, peak_single = max(peak_total, total), max(peak_single, single)
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"pipeline failed; see {log.name}")
    rules = {}
    for tsv in sorted((workdir / "logs" / "benchmarks").rglob("*.tsv")):
        with open(tsv) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        rules[tsv.relative_to(workdir / "logs" / "benchmarks").with_suffix("").as_posix()] = {
            "s": float(row["s"]), "max_rss_mb": float(row["max_rss"])}
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} {psutil.cpu_count()} cpus",
              "wall_s": round(wall, 1), "peak_rss_tree_gb": round(peak_total / 2**30, 2),
              "peak_rss_process_gb": round(peak_single / 2**30, 2), "rules": rules, "workdir": str(workdir)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
