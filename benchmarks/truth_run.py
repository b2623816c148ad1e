"""The ground-truth figures of the README and docs/truth.md, from one stated `snakemake truth` run.

    python benchmarks/truth_run.py record RUN_DIR --wall-s 734 --command "make truth"
        reads RUN_DIR's logs/benchmarks/truth/*.tsv and results/truth/ (truth.json, summary.parquet,
        planting.parquet) and writes benchmarks/truth_run.json;
    python benchmarks/truth_run.py fill
        rewrites the blocks between `<!-- truth-run:begin -->` and `<!-- truth-run:end -->` of the
        README (the short form) and docs/truth.md (the tables). tests/test_docs.py checks both.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import sys
from pathlib import Path

import pandas as pd

from default_run import ROOT, _cpu, _mmss, fill_block

RECORD = ROOT / "benchmarks" / "truth_run.json"
BEGIN, END = "<!-- truth-run:begin -->", "<!-- truth-run:end -->"
GRADES = ("recovered", "set_f1", "mask_iou", "range_recovery", "ari", "pearson", "auprc", "f1", "iou", "seconds")


def record(run_dir: Path, wall_s: float, command: str) -> dict:
    jobs = {}
    for tsv in sorted((run_dir / "logs" / "benchmarks" / "truth").glob("*.tsv")):
        with tsv.open() as f:
            row = list(csv.DictReader(f, delimiter="\t"))[-1]
        jobs[tsv.stem] = {"wall_s": round(float(row["s"]), 1), "max_rss_mb": round(float(row["max_rss"] or 0))}
    truth = run_dir / "results" / "truth"
    summary = pd.read_parquet(truth / "summary.parquet")
    data = {"date": datetime.date.today().isoformat(), "machine": _cpu(), "command": command,
            "wall_s": round(wall_s), "jobs": jobs, "metrics": json.loads((truth / "truth.json").read_text()),
            "planting": json.loads(pd.read_parquet(truth / "planting.parquet").to_json(orient="records")),
            "summary": json.loads(summary.round(3).to_json(orient="records"))}
    RECORD.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


def _f(v) -> str:
    return "" if v is None else f"{v:.2f}"


def _table(rows: list[dict], cols: list[str]) -> list[str]:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_f(r[c]) if isinstance(r[c], (float, type(None))) else str(r[c]) for c in cols) + " |")
    return out


def render_short(data: dict) -> str:
    m, acc = data["metrics"], data["metrics"]
    best = sorted((r for r in data["summary"] if r["variant"] == "planted" and r["kind"] == "all"),
                  key=lambda r: -(r["pearson"] or 0))
    return (f"Measured on {data['date']} after the default run, in its clone: `{data['command']}` took "
            f"**{_mmss(data['wall_s'])}** ({len(data['jobs'])} jobs). {m['planting.passed']} of "
            f"{m['planting.units']} planted units pass their check; test accuracy {acc['accuracy.planted']:.3f} "
            f"planted, {acc['accuracy.base']:.3f} unplanted. Mean Pearson of each method's explanation with "
            "the planted function: " + ", ".join(f"{r['method']} {r['pearson']:.2f}" for r in best) + ".")


def render_full(data: dict) -> str:
    lines = [render_short(data), "", "Per job: " + ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in data["jobs"].items())
             + ".", "", "**Planting checks** (test split):", ""]
    lines += _table(data["planting"], ["layer", "unit", "kind", "corr", "top_iou", "passed"])
    lines += ["", "**Grades on the planted model** (means over the units of each kind; blank: does not apply):", ""]
    rows = [r for r in data["summary"] if r["variant"] == "planted" and r["kind"] != "all"]
    lines += _table(rows, ["method", "kind", "units", *GRADES])
    lines += ["", "**Sanity rows** (every kind):", ""]
    rows = [r for r in data["summary"] if r["kind"] == "all"]
    lines += _table(rows, ["variant", "method", "units", "recovered", "set_f1", "pearson", "auprc", "f1", "iou"])
    return "\n".join(lines)


def fill() -> None:
    data = json.loads(RECORD.read_text())
    fill_block(ROOT / "README.md", BEGIN, END, render_short(data))
    fill_block(ROOT / "docs" / "truth.md", BEGIN, END, render_full(data))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("record")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--wall-s", type=float, required=True)
    p.add_argument("--command", default="make truth")
    sub.add_parser("fill")
    args = parser.parse_args(argv)
    if args.action == "record":
        record(args.run_dir, args.wall_s, args.command)
    fill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
