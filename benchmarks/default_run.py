"""The README's run figures, from one stated run: recorded once, filled in by this script.

    python benchmarks/default_run.py record /tmp/fresh --wall-s 1234 --command "make run"
        reads the finished run folder (Snakemake's logs/benchmarks/*.tsv, results/headlines.json)
        and writes benchmarks/default_run.json: date, machine, command, wall time, per-rule
        job counts, seconds and peak memory, and the headline numbers;
    python benchmarks/default_run.py fill
        rewrites the README's block between `<!-- default-run:begin -->` and `<!-- default-run:end -->`
        from that JSON. tests/test_docs.py checks the README holds exactly this rendering, so a
        number in it cannot drift from the run it names.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import re
import sys
from collections import defaultdict
from pathlib import Path

from nexplain.report.run_summary import headline_lines

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "default_run.json"
BEGIN, END = "<!-- default-run:begin -->", "<!-- default-run:end -->"

# README rows: label -> the rules whose jobs it sums, in pipeline order
STAGES = [
    ("probe world, concept tables, geometry, splits, label matrix",
     ["world", "concepts", "geometry", "splits", "label_matrix"]),
    ("train the ResNet-18", ["train_model", "model"]),
    ("activation tables", ["activations"]),
    ("NetDissect, CoEx, Clustered CoEx", ["explain", "merge_explanations"]),
    ("world VLMs: captions, training, embeddings, evaluation, concept matrices",
     ["captions", "train_vlm", "vlm_embeddings", "evaluate_vlm", "vlm_matrix"]),
    ("Linear Explanations", ["linear"]),
    ("simulation, Top Impact, area charts",
     ["simulate", "merge_simulation", "top_impact", "merge_top_impact", "area_chart"]),
    ("PURE: relevances, circuits, figures", ["relevance", "merge_relevance", "pure"]),
    ("counterfactuals: causal efficacy, copy-paste", ["causal"]),
    ("progressive specialization: training snapshots explained", ["specialization"]),  # both of its rules
    ("score reports, unit pages, headlines", ["score_report", "unit_pages", "headlines"]),
]


def _cpu() -> dict:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split()) if "flags" in text else set()
    isa = "AMX" if "amx_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "?"
    return {"cpu": model.group(1).strip() if model else platform.processor(), "isa": isa,
            "cores": text.count("processor\t:") or None}


def record(run_dir: Path, wall_s: float, command: str, note: str = "") -> dict:
    rules: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "max_rss_mb": 0.0})
    bench = run_dir / "logs" / "benchmarks"
    for tsv in sorted(bench.rglob("*.tsv")):
        rule = tsv.relative_to(bench).parts[0].removesuffix(".tsv")
        if rule == "truth":  # `snakemake truth`, run after: benchmarks/truth_run.py records it
            continue
        with tsv.open() as f:
            row = list(csv.DictReader(f, delimiter="\t"))[-1]
        r = rules[rule]
        r["jobs"] += 1
        r["wall_s"] = round(r["wall_s"] + float(row["s"]), 1)
        r["cpu_s"] = round(r["cpu_s"] + float(row.get("cpu_time") or 0), 1)
        r["max_rss_mb"] = max(r["max_rss_mb"], round(float(row["max_rss"] or 0), 0))
    data = {"date": datetime.date.today().isoformat(), "machine": _cpu(), "command": command, "note": note,
            "wall_s": round(wall_s), "rules": dict(sorted(rules.items())),
            "headlines": json.loads((run_dir / "results" / "headlines.json").read_text())}
    RECORD.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


def _mmss(s: float) -> str:
    return f"{int(s // 60)} min {int(round(s % 60)):02d} s" if s >= 60 else f"{s:.0f} s"


def render(data: dict) -> str:
    rules, m = data["rules"], data["machine"]
    jobs = sum(r["jobs"] for r in rules.values())
    lines = [f"Measured in a fresh clone on {data['date']}: `{data['command']}` took "
             f"**{_mmss(data['wall_s'])}**, installation included, on this project's {m['cores']}-core "
             f"CPU machine ({m['cpu']}, {m['isa']}); Snakemake ran {jobs} jobs. Seconds are the jobs' "
             "own wall times, summed per step (`benchmarks/default_run.json`)."
             + (f" {data['note']}" if data.get("note") else ""), "",
             "| step | jobs | seconds | peak RSS |", "|---|---|---|---|"]
    for label, names in STAGES:
        part = [rules[n] for n in names if n in rules]
        if part:
            lines.append(f"| {label} | {sum(r['jobs'] for r in part)} | {sum(r['wall_s'] for r in part):.0f} "
                         f"| {max(r['max_rss_mb'] for r in part) / 1024:.1f} GB |")
    lines.append("")
    lines += [f"- {line}" for line in headline_lines(data["headlines"])]  # as the run's end prints them
    return "\n".join(lines)


def fill_block(path: Path, begin: str, end: str, block: str) -> None:
    """Replace the text between the `begin` and `end` markers of `path` with `block`."""
    text = path.read_text()
    if begin not in text or end not in text:
        sys.exit(f"{path}: no {begin} ... {end} block to fill")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{block}\n{end}{tail}")


def fill(readme: Path = ROOT / "README.md") -> None:
    fill_block(readme, BEGIN, END, render(json.loads(RECORD.read_text())))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("record")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--wall-s", type=float, required=True, help="the command's wall time (e.g. from /usr/bin/time)")
    p.add_argument("--command", default="make run")
    p.add_argument("--note", default="", help="what else shared the machine, say")
    sub.add_parser("fill")
    args = parser.parse_args(argv)
    if args.action == "record":
        record(args.run_dir, args.wall_s, args.command, args.note)
    fill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
