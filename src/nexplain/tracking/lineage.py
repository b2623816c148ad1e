"""Lineage of workflow artifacts: the rules, params, input hashes, code and MLflow runs behind a file.

Facts are read where they live, never copied: `.snakemake/metadata` gives the graph, the files on
disk their current hashes, nexplain's content records (`nexplain.tracking.records`) and MLflow's child runs
(optional) named params and the hashes jobs saw, dvc.lock the versions DVC pins.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

from nexplain.errors import NexplainError
from nexplain.hashing import content_hash
from nexplain.tracking import records

CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".safetensors", ".bin"}
DIFFERS = "recorded hash differs from the file on disk"
GONE = "not on disk now (a temporary or deleted file); the run recorded its hash"
EDITED = "changed after its job made it (its content no longer matches the job's record)"
UNPINNED = "not the version dvc.lock pins (edited, or remade since dvc.lock was written)"


def read_records(workdir: str | Path) -> dict[str, dict]:
    """Snakemake's job record of every output, keyed by the output path (relative to the workdir)."""
    root = Path(workdir) / ".snakemake" / "metadata"
    if not root.is_dir():
        raise NexplainError(f"{root} not found: run the workflow in {workdir} first "
                            "(or `snakemake --touch` after `dvc pull`) so Snakemake records its jobs")
    records = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            file = Path(dirpath) / name
            # Snakemake splits names over 255 chars into directories of 255-char chunks
            encoded = "".join(file.relative_to(root).parts)
            try:
                records[os.path.normpath(base64.urlsafe_b64decode(encoded).decode())] = json.loads(file.read_text())
            except (ValueError, OSError):
                continue  # a stray file, not a record: Snakemake ignores it too
    return records


def _inside(path: str, parent: str) -> bool:
    return path.startswith(parent.rstrip("/") + "/")


def _overlaps(a: str, b: str) -> bool:  # same path, or a directory output and a file in it
    return a == b or _inside(a, b) or _inside(b, a)


def _not_produced(path) -> str:
    return f"{path} was not produced by any rule of this workflow (no record in .snakemake/metadata)"


def _tag_json(run, tag: str) -> dict:
    try:
        return json.loads(run.data.tags.get(tag, "{}")) if run else {}
    except ValueError:  # a hand-edited or truncated tag: treat as unrecorded
        return {}


class _Workflow:
    """One workdir's records, file hashes (cached: datasets are big) and MLflow runs (one query per rule)."""

    def __init__(self, workdir, uri=None, experiment="nexplain", use_mlflow=True):
        self.workdir = Path(workdir).resolve()
        self.records = read_records(self.workdir)
        self.dvc = records.DvcLock(self.workdir)
        self._hashes, self._runs = {}, {}
        self.client = self.experiment_id = None
        db = self.workdir / "mlflow.db"  # where the workflow's own tracking puts its store by default
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or (f"sqlite:///{db}" if db.is_file() else None)
        if not use_mlflow:
            self.mlflow = "not consulted (--no-mlflow)"
        elif uri is None:
            self.mlflow = "not consulted (no --tracking-uri, no MLFLOW_TRACKING_URI, no mlflow.db in the workdir)"
        else:
            self.mlflow = self._connect(uri, experiment)

    def _connect(self, uri: str, experiment: str) -> str:
        try:
            from mlflow import MlflowClient

            from nexplain.tracking.tracking import check_reachable

            check_reachable(uri)  # an HTTP store that is down would otherwise retry for minutes
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name(experiment)
        except Exception as e:  # lineage stands on Snakemake's records alone; say why MLflow is missing
            return f"not consulted ({uri}: {e})"
        if exp is None:
            return f"not consulted (no experiment '{experiment}' at {uri})"
        self.client, self.experiment_id = client, exp.experiment_id
        return f"{uri}, experiment '{experiment}'"

    def normalise(self, path: str | Path) -> str:
        """Workdir-relative for paths inside the workdir, absolute for the rest (as rules write them)."""
        p = Path(path)
        if p.is_absolute():
            for candidate in (Path(os.path.abspath(p)), p.resolve()):
                if candidate.is_relative_to(self.workdir):
                    return candidate.relative_to(self.workdir).as_posix()
        return os.path.normpath(p)

    def users(self, key: str) -> list[str]:
        """Outputs whose job read key, a directory holding it, or a file inside it."""
        if not hasattr(self, "_inputs"):  # normalising resolves paths: once per record
            self._inputs = {out: [self.normalise(i) for i in rec.get("input", [])]
                            for out, rec in self.records.items()}
        return sorted(out for out, inputs in self._inputs.items()
                      if out != key and any(_overlaps(i, key) for i in inputs))

    def producer(self, key: str) -> str | None:
        """The record that made key: its own, or that of the directory output holding it."""
        if key in self.records:
            return key
        parents = [out for out in self.records if _inside(key, out)]
        return max(parents, key=len) if parents else None

    def hash(self, key: str) -> str | None:
        if key not in self._hashes:
            path = self.workdir / key
            self._hashes[key] = content_hash(path) if path.exists() else None
        return self._hashes[key]

    def edited(self, key: str, current: str | None, saved: dict | None) -> str | None:
        """EDITED when the file no longer matches its job's record; UNPINNED when only dvc.lock knows it."""
        if current is None or (saved and saved["hash"] == current):
            return None
        pinned = self.dvc.matches(key)
        if pinned:  # a version a rule made, brought back by `dvc checkout`
            return None
        return EDITED if saved else UNPINNED if pinned is False else None

    def run_for(self, rule: str, output: str, current: str | None):
        """(run, note): the newest run whose recorded output hash matches the file, else the newest, flagged."""
        if self.client is None:
            return None, None
        if rule not in self._runs:
            runs, token = [], None
            while True:
                page = self.client.search_runs([self.experiment_id], f"tags.`nexplain.rule` = '{rule}'",
                                               order_by=["attributes.start_time DESC"], page_token=token)
                runs += page
                if not (token := page.token):
                    break
            self._runs[rule] = [r for r in runs if r.data.tags.get("nexplain.workdir") == str(self.workdir)]
        runs = [r for r in self._runs[rule] if output in _tag_json(r, "nexplain.outputs")]
        if not runs:
            return None, "no MLflow run records this output"
        matching = [r for r in runs if _tag_json(r, "nexplain.outputs")[output] == current]
        if matching:
            return matching[0], None
        return runs[0], GONE if current is None else DIFFERS

    def node(self, key: str) -> dict:
        rec, current = self.records.get(key), self.hash(key)
        if rec is None:
            return {"path": key, "kind": "source", "hash": current, "role": _role(key, None, self.workdir)}
        run, note = self.run_for(rec["rule"], key, current)
        tags = run.data.tags if run else {}
        saved = records.load(key, self.workdir)
        # without an MLflow run, the job's own record names the params and the input hashes it saw
        job = saved if saved and saved["rule"] == rec["rule"] and not run else {}
        recorded_in = _tag_json(run, "nexplain.inputs") if run else job.get("inputs") or {}
        inputs = []
        for raw in dict.fromkeys(rec.get("input", [])):
            path = self.normalise(raw)
            cur, was = self.hash(path), recorded_in.get(raw)
            inputs.append({"path": path, "node": self.producer(path) or path, "current": cur,
                           "recorded": was, "differs": None not in (was, cur) and was != cur})
        reprs = rec.get("params", [])
        params = run.data.params if run else job.get("params") if isinstance(job.get("params"), dict) else None
        return {
            "path": key, "kind": "output", "rule": rec["rule"], "hash": current,
            "role": _role(key, rec["rule"], self.workdir), "note": note,
            "recorded_hash": _tag_json(run, "nexplain.outputs").get(key),
            "edited": self.edited(key, current, saved), "saved_hash": saved["hash"] if saved else None,
            "wildcards": _tag_json(run, "nexplain.wildcards") if run else job.get("wildcards"),
            "params": reprs if params is None else dict(sorted(params.items())),
            "code_version": tags.get("nexplain.code_version") or job.get("code_version") or _code_from_reprs(reprs),
            "git_commit": tags.get("nexplain.git_commit") or job.get("git_commit"),
            "git_dirty": tags.get("nexplain.git_dirty") or job.get("git_dirty"),
            "mlflow_run_id": run.info.run_id if run else None,
            "mlflow_parent_run_id": tags.get("mlflow.parentRunId"),
            "starttime": rec.get("starttime"), "endtime": rec.get("endtime"),
            "incomplete": bool(rec.get("incomplete")), "inputs": inputs,
        }


def _code_from_reprs(reprs: list[str]) -> str | None:
    # Without MLflow the `code` param is nameless; it is the only 16-hex string rules pass
    found = [r.strip("'") for r in reprs if re.fullmatch(r"'[0-9a-f]{16}'", r)]
    return found[0] if len(found) == 1 else None


def _role(key: str, rule: str | None, workdir: Path) -> str | None:
    """The chain's bottom: the dataset (rule `world`, or a source directory) and the checkpoint."""
    if rule == "world" or (rule is None and (workdir / key).is_dir()):
        return "dataset"
    return "checkpoint" if Path(key).suffix in CHECKPOINT_SUFFIXES else None


def lineage(path, workdir=".", tracking_uri=None, experiment="nexplain", use_mlflow=True) -> dict:
    """Every node from path down to its sources: {root, query, workdir, mlflow, nodes, edges}."""
    wf = _Workflow(workdir, tracking_uri, experiment, use_mlflow)
    key = wf.normalise(path)
    root = wf.producer(key)
    result = {"query": key, "workdir": str(wf.workdir), "mlflow": wf.mlflow, "edges": []}
    if root is None:  # an external or source input: say who uses it
        users = wf.users(key)
        if not users:
            raise NexplainError(_not_produced(path))
        return {**result, "root": key, "nodes": {key: {**wf.node(key), "used_by": users}}}
    nodes, edges = {}, set()

    def visit(k):
        nodes[k] = wf.node(k)  # set before recursing: a node reached twice is walked once
        for inp in nodes[k].get("inputs", []):
            edges.add((k, inp["node"]))
            if inp["node"] not in nodes:
                visit(inp["node"])

    visit(root)
    return {**result, "root": root, "nodes": nodes, "edges": sorted(edges)}


def dependents(path, workdir=".") -> dict:
    """Every output that depends on path, transitively: {root, workdir, dependents: {path: rule}, edges}."""
    wf = _Workflow(workdir, use_mlflow=False)
    key = wf.normalise(path)
    found, edges, queue = {}, set(), [key]
    while queue:
        current = queue.pop()
        for out in wf.users(current):
            edges.add((current, out))
            if out not in found:
                found[out] = wf.records[out]["rule"]
                queue.append(out)
    if not found and wf.producer(key) is None:
        raise NexplainError(_not_produced(path) + " and no rule uses it")
    return {"root": key, "workdir": str(wf.workdir), "dependents": dict(sorted(found.items())),
            "edges": sorted(edges)}


def _short(digest: str | None) -> str:
    return digest[:len("sha256:") + 12] if digest else "missing"


def format_lineage(result: dict) -> str:
    """Indented tree, inputs under their consumer; deterministic (no times)."""
    nodes, lines, seen, jobs = result["nodes"], [], set(), {}
    lines += [f"lineage of {result['query']}  (workdir {result['workdir']})", f"MLflow: {result['mlflow']}"]
    if result["query"] != result["root"]:
        lines.append(f"{result['query']} lies inside the directory output {result['root']}")

    def emit(key, pad):
        node = nodes[key]
        role = f"  [{node['role']}]" if node["role"] else ""
        if node["kind"] == "source":
            lines.append(f"{pad}source  {key}  {_short(node['hash'])}{role}")
            if "used_by" in node:
                lines.append(f"{pad}  not produced by any rule; it is an input of " + ", ".join(node["used_by"]))
            return
        if key in seen:
            lines.append(f"{pad}{key}  {_short(node['hash'])}  rule {node['rule']}  (see above)")
            return
        seen.add(key)
        job = (node["rule"], node["mlflow_run_id"] or repr((node["params"], [i["path"] for i in node["inputs"]])))
        sub = pad + "    "
        if job in jobs:  # another output of a job already shown
            lines.append(f"{pad}{key}  {_short(node['hash'])}  rule {node['rule']}  (same job as {jobs[job]})")
            lines.extend(_flags(node, sub, job_notes=False))  # the job's own notes are shown above
            return
        jobs[job] = key
        lines.append(f"{pad}{key}  {_short(node['hash'])}  rule {node['rule']}{role}")
        lines.extend(_flags(node, sub))
        if node["wildcards"]:
            lines.append(f"{sub}wildcards: " + ", ".join(f"{k}={v}" for k, v in sorted(node["wildcards"].items())))
        if isinstance(node["params"], dict):
            lines.extend(f"{sub}param {k} = {v}" for k, v in node["params"].items() if k != "code")
        elif node["params"]:
            lines.append(f"{sub}params (unnamed, from Snakemake): " + ", ".join(node["params"]))
        git = f"  git {node['git_commit']}" + (" (dirty)" if node["git_dirty"] == "true" else "")
        lines.append(f"{sub}code version: {node['code_version'] or 'unknown'}" + (git if node["git_commit"] else ""))
        if node["mlflow_run_id"]:
            lines.append(f"{sub}mlflow run: {node['mlflow_run_id']}  parent {node['mlflow_parent_run_id'] or '-'}")
        for inp in node["inputs"]:
            flag = ("" if inp["recorded"] is None else
                    f"  ! differs from recorded {_short(inp['recorded'])}" if inp["differs"] else
                    f"  (recorded {_short(inp['recorded'])})" if inp["current"] is None else "  (= recorded)")
            lines.append(f"{sub}input {inp['path']}  {_short(inp['current'])}{flag}")
        for child in dict.fromkeys(inp["node"] for inp in node["inputs"]):
            emit(child, sub)

    emit(result["root"], "")
    return "\n".join(lines)


def _flags(node: dict, pad: str, job_notes: bool = True) -> list[str]:
    """The `!` lines of an output: MLflow's note, and the file changed since its job or dvc.lock."""
    lines = []
    if node["note"] and (job_notes or node["note"] in (DIFFERS, GONE)):
        lines.append(f"{pad}! {node['note']}" + (f" (recorded {_short(node['recorded_hash'])})"
                                                 if node["note"] in (DIFFERS, GONE) else ""))
    if node.get("edited"):
        lines.append(f"{pad}! {node['edited']}" + (f" (recorded {_short(node['saved_hash'])})"
                                                   if node["edited"] == EDITED else ""))
    return lines


def format_dependents(result: dict) -> str:
    """Sorted list of dependents, each with its rule and the paths it depends on them through."""
    deps, via = result["dependents"], {}
    for parent, child in result["edges"]:
        via.setdefault(child, []).append(parent)
    lines = [f"dependents of {result['root']}  (workdir {result['workdir']}): {len(deps)}"]
    for path, rule in deps.items():
        direct = result["root"] in via[path]
        lines.append(f"    {path}  rule {rule}  " + ("(direct)" if direct else "via " + ", ".join(sorted(via[path]))))
    return "\n".join(lines)
