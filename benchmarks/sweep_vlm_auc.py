"""A search over VLM training settings and architectures: many `bench_vlm_auc.py` runs, N at a time.

Usage: python benchmarks/sweep_vlm_auc.py GRID.jsonl [--jobs 4] [--device cpu] [--threads 1]
                                          [--out sweep.jsonl] [--prepare]

Each GRID line is one run: {"tag": "...", "set": {train key: value}, "arch": {open_clip config
keys merged over the VLM's own config}} ("set" and "arch" optional). Every finished run appends
bench_vlm_auc.py's JSON line, with its tag, to --out. --prepare first builds what the benchmark
reads (the world, its concept tables, captions and splits, with config.yaml's values) through the
package functions the rules call, for a machine without Snakemake such as the lent GPU machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
BENCH = REPO / "benchmarks" / "bench_vlm_auc.py"


def prepare(config: dict, dataset: str = "world") -> None:
    """The world, concept tables, captions and splits, as rules world/concepts/captions/splits make them."""
    import pandas as pd

    from nexplain.data.broden import open_broden
    from nexplain.data.concepts import build_concept_tables
    from nexplain.data.world import generate_world
    from nexplain.splits import make_splits
    from nexplain.tables import write_table
    from nexplain.vlm.captions import caption_table

    res = REPO / config["results"]
    root, out = res / "datasets" / dataset, res / dataset
    if not root.exists():
        generate_world(root, **config["datasets"][dataset]["generate"])
    if not (out / "concepts").exists():
        build_concept_tables(open_broden(root), out / "concepts")
    presence = pd.read_parquet(out / "concepts" / "presence.parquet")
    if not (out / "captions.parquet").exists():
        cap = config["captions"]
        df = caption_table(open_broden(root), presence, cap["variants"], cap["seed"])
        write_table(df, out / "captions.parquet", {"dataset": dataset, **cap})
    if not (out / "splits.parquet").exists():
        split = config["linear"]["split"]
        make_splits(presence["image_id"].to_numpy(), split["fractions"], split["seed"]).to_parquet(
            out / "splits.parquet", index=False)


def arch_file(base: Path, changes: dict, folder: Path) -> Path:
    """An open_clip config JSON: `base` with `changes` merged in (one level deep), named by its hash."""
    cfg = json.loads(base.read_text())
    for k, v in changes.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    text = json.dumps(cfg, indent=1, sort_keys=True)
    path = folder / f"sweep-{hashlib.sha1(text.encode()).hexdigest()[:10]}.json"
    path.write_text(text)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("grid")
    ap.add_argument("--vlm", default="world_siglip")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="sweep.jsonl")
    ap.add_argument("--prepare", action="store_true")
    args = ap.parse_args()

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if args.prepare:
        t0 = time.perf_counter()
        prepare(config)
        print(f"prepared in {time.perf_counter() - t0:.1f} s", flush=True)
    from nexplain.models.clip_registry import CONFIG_DIR

    base = CONFIG_DIR / f"{config['vlms'][args.vlm]['arch']}.json"
    folder = REPO / "benchmarks" / ".cache" / "archs"
    folder.mkdir(parents=True, exist_ok=True)
    runs = [json.loads(line) for line in Path(args.grid).read_text().splitlines() if line.strip()]

    def one(run: dict) -> None:
        cmd = [sys.executable, str(BENCH), "--vlm", args.vlm, "--threads", str(args.threads), "--device", args.device]
        if run.get("arch"):
            cmd += ["--arch", str(arch_file(base, run["arch"], folder))]
        cmd += [f"{k}={json.dumps(v)}" for k, v in run.get("set", {}).items()]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        row = json.loads(lines[-1]) if done.returncode == 0 and lines else {"error": done.stderr[-800:]}
        row.update(tag=run.get("tag"), arch_changes=run.get("arch"))
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    one(runs[0])  # alone first: it builds the image cache the others read
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, runs[1:]))


if __name__ == "__main__":
    main()
