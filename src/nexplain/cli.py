"""`nexplain ...`: small commands around the workflow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nexplain.errors import NexplainError


def _check_config(args) -> None:
    from nexplain.config import check_plan, load_config

    config = load_config(args.config)
    check_plan(config, source=args.config, workdir=Path.cwd())  # what the workflow checks before any job
    print(f"{args.config}: valid")


def _layers(args) -> None:
    from nexplain.activations.hooks import list_layers
    from nexplain.config import load_config
    from nexplain.models.load import load_model
    from nexplain.models.manifest import read_manifest

    config = load_config(args.config)
    models = config["models"]
    if args.model not in models:
        raise NexplainError(f"unknown model '{args.model}'; valid choices: {', '.join(models)}")
    spec = models[args.model]
    if spec["source"] == "train":  # the trained model's manifest holds its layers
        manifest = Path(config["results"]) / "models" / args.model / "model.json"
        if not manifest.is_file():
            raise NexplainError(f"{manifest} not found: run the pipeline first (make run)")
        print("\n".join(read_manifest(manifest)["layers"]))
        return
    print("\n".join(list_layers(load_model(spec).module)))


def _summary(args) -> None:
    from nexplain.config import load_config
    from nexplain.report.run_summary import summary

    print(summary(load_config(args.config)), end="")


def _code_files(args) -> None:
    from nexplain.codeversion import code_files, code_version

    root = Path(args.package_root)
    for path in code_files(args.script, root):
        print(path.relative_to(root))
    print(f"code version: {code_version(args.script, root)}")


def _lineage(args) -> None:
    import json

    from nexplain.tracking import lineage as ln

    if args.dependents:
        result = ln.dependents(args.path, args.workdir)
        text = ln.format_dependents
    else:
        result = ln.lineage(args.path, args.workdir, args.tracking_uri, args.experiment, not args.no_mlflow)
        text = ln.format_lineage
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else text(result))


def _concept_set(args) -> None:
    """A Broden-format dataset's label names as a concept set (one a line, by category)."""
    from nexplain.data.broden import open_broden

    ds = open_broden(args.root, check_images=False)
    lines = [f"# concepts of {Path(args.root).resolve().name} (nexplain concept-set)"]
    for cat in ds.categories:
        lines.append(f"# {cat}")
        lines += ds.category_labels(cat)["name"].astype(str).tolist()
    print("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nexplain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate a config file: the schema, layer names, concept sets")
    p.add_argument("config", nargs="?", default="config.yaml")
    p.set_defaults(func=_check_config)

    p = sub.add_parser("layers", help="list the dotted layer names of a configured model")
    p.add_argument("model")
    p.add_argument("--config", default="config.yaml")
    p.set_defaults(func=_layers)

    p = sub.add_parser("summary", help="where a run's results are, its headline numbers, and how to open them")
    p.add_argument("--config", default="config.yaml")
    p.set_defaults(func=_summary)

    p = sub.add_parser("code-files", help="the package modules a script depends on (its rerun trigger)")
    p.add_argument("script")
    p.add_argument("--package-root", default="src")
    p.set_defaults(func=_code_files)

    p = sub.add_parser("lineage", help="the rules, params, input hashes and MLflow runs behind an artifact; "
                                       "flags files changed since their job made them")
    p.add_argument("path")
    p.add_argument("--dependents", action="store_true", help="list the artifacts that depend on PATH instead")
    p.add_argument("--workdir", default=".", help="the workflow dir holding .snakemake/")
    p.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else <workdir>/mlflow.db)")
    p.add_argument("--experiment", default="nexplain")
    p.add_argument("--no-mlflow", action="store_true",
                   help="use the workdir's records alone (Snakemake's, nexplain's content records, dvc.lock)")
    p.add_argument("--json", action="store_true", help="one machine-readable JSON object")
    p.set_defaults(func=_lineage)

    p = sub.add_parser("concept-set", help="print a Broden-format dataset's labels as a concept set file")
    p.add_argument("root")
    p.set_defaults(func=_concept_set)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except NexplainError as e:
        print(f"nexplain: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
