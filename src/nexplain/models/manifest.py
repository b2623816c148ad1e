"""Model manifests: what the model step resolved, so later stages load exactly that model.

A trained world model becomes a plain `checkpoint` spec pointing at its file; the
manifest records the weights' SHA-256 and the valid layer names for lineage.
"""

from __future__ import annotations

import json
from pathlib import Path

from nexplain.hashing import sha256_file
from nexplain.io import write_text


def resolve_spec(spec: dict, checkpoint: str | None = None, metrics: str | None = None) -> dict:
    """Turn a config model entry into a spec `load_model` takes."""
    if spec["source"] == "open_clip" and checkpoint:  # a VLM's image tower: the file the job was handed
        return {**spec, "pretrained": str(checkpoint)}
    if spec["source"] != "train":
        return dict(spec)
    num_classes = json.loads(Path(metrics).read_text())["num_classes"]
    return {"source": "checkpoint", "arch": spec["arch"], "num_classes": num_classes,
            "path": str(checkpoint), "input": spec["input"]}


def manifest(name: str, spec: dict, module, layers: list[str]) -> dict:
    weights = spec.get("path") or (spec.get("pretrained") if spec.get("vlm") else None)
    if weights and spec["source"] == "open_clip" and not Path(weights).is_file():
        weights = None  # an open_clip tag: the cache, not a file of ours
    return {
        "name": name,
        "spec": spec,
        "weights_sha256": sha256_file(weights) if weights else None,
        "n_parameters": int(sum(p.numel() for p in module.parameters())),
        "layers": layers,
    }


def write_manifest(path: str | Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_manifest(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
