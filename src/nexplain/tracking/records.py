"""Content records of the workflow's outputs: each output's hash as its job wrote it.

Snakemake reruns on mtime, so a hand-edited output looks new and its consumers rerun on
the edited content. Each job leaves one small JSON per output in `.snakemake/nexplain/records/`
(inside .snakemake, so DVC and results/ never see it): its job record (rule, params, input
hashes), its content hash, and its size and mtime as written, so the check hashes only files
whose stat changed. A file whose content differs from its record is edited, unless it is the
version dvc.lock pins (restored by `dvc checkout`, a version a rule made).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
from configparser import ConfigParser, Error as ConfigError
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from nexplain.hashing import IGNORED, content_hash
from nexplain.io import TEMPORARY, write_text

log = logging.getLogger("nexplain.tracking.records")

RECORDS = Path(".snakemake") / "nexplain" / "records"
SHOWN = 3  # edited outputs named in a refusal; the command lists them all


@dataclass(frozen=True)
class Edit:
    path: str  # workdir-relative, as the rules name it
    rule: str
    recorded: str  # content hash the job wrote
    current: str  # content hash on disk now
    restorable: bool  # dvc.lock pins a version of it and the DVC cache holds it


def save(record: dict, workdir: str | Path = ".") -> None:
    """One record per output of a finished job (a `tracking.job_record`); logs, never raises."""
    try:
        root = Path(workdir).resolve()
        job = {k: v for k, v in record.items() if k != "outputs"}
        for path, digest in record["outputs"].items():
            key = _key(path, root)
            _write(root, {**job, "path": key, "hash": digest, **_stat(root / key)})
    except Exception as e:  # the outputs are complete: a recording problem must not fail the job
        log.warning("could not record the content of the job's outputs: %s", e)


def load(path: str | Path, workdir: str | Path = ".") -> dict | None:
    """The record of one output, or None (never recorded, or unreadable)."""
    root = Path(workdir).resolve()
    return _read(_file(root, _key(path, root)))


def edited(workdir: str | Path = ".", skip=()) -> list[Edit]:
    """Recorded outputs on disk whose content no longer matches their record, by path; `skip`: paths
    (or directories) to leave out, such as the outputs a run is about to regenerate."""
    root = Path(workdir).resolve()
    skip = [_key(p, root) for p in skip]
    dvc, found = DvcLock(root), []
    for file in sorted((root / RECORDS).glob("*.json")):
        rec = _read(file)
        if rec is None or any(rec["path"] == s or rec["path"].startswith(s.rstrip("/") + "/") for s in skip):
            continue
        target = root / rec["path"]
        try:
            stat, written = _stat(target), file.stat().st_mtime_ns
        except OSError:  # not on disk (temp, deleted): Snakemake remakes it anyway
            continue
        # git's racy-clean rule: a same-size edit in the clock tick of the record keeps the mtime, so hash it
        racy = stat["mtime_ns"] >= written
        if _same_stat(rec, stat) and not racy:
            continue
        try:
            current = content_hash(target)
        except OSError:  # unreadable: the job that reads it will say so
            continue
        if current == rec["hash"]:  # touched, not changed: store the new stat, so it is hashed once
            _refresh(file, rec, {**{k: v for k, v in rec.items() if k != "tree"}, **stat}, force=racy)
        elif dvc.matches(rec["path"]):  # `dvc checkout` brought back a version a rule made: adopt it
            _refresh(file, rec, {"path": rec["path"], "rule": rec["rule"], "hash": current, **stat,
                                 "restored": "dvc.lock"})
        elif (_read(file) or rec)["hash"] != current:  # unless a job of another run just saved this content
            found.append(Edit(rec["path"], rec["rule"], rec["hash"], current, dvc.restorable(rec["path"])))
    return found


def refusal(edits: list[Edit], command: str = "snakemake --cores 2") -> str:
    """One line: which outputs were edited and the one command that remakes them (and their dependents)."""
    paths = " ".join(shlex.quote(e.path) for e in edits)
    remake = f"`{command} --forcerun {paths}`"
    restore = f", or restore the version{'s' * (len(edits) > 1)} dvc.lock pins with `dvc checkout --force {paths}`"
    restore = restore if all(e.restorable for e in edits) else ""
    if len(edits) == 1:
        e = edits[0]
        return (f"{e.path} was changed after rule {e.rule} made it (its content no longer matches the job's "
                f"record); to remake it and what was computed from it, run {remake}{restore}")
    named = ", ".join(f"{e.path} (rule {e.rule})" for e in edits[:SHOWN])
    more = f" and {len(edits) - SHOWN} more" if len(edits) > SHOWN else ""
    return (f"{len(edits)} outputs were changed after their rules made them (their content no longer matches "
            f"the jobs' records): {named}{more}; to remake them and what was computed from them, run {remake}{restore}")


def _key(path, root: Path) -> str:
    """Workdir-relative for paths inside the workdir (as rules write them), absolute for the rest."""
    p = Path(path)
    if p.is_absolute():
        for candidate in (Path(os.path.abspath(p)), p.resolve()):
            if candidate.is_relative_to(root):
                return candidate.relative_to(root).as_posix()
        return os.path.abspath(p)
    return Path(os.path.normpath(p)).as_posix()


def _file(root: Path, key: str) -> Path:
    # one file per output: parallel jobs never write the same output, so never the same record
    return root / RECORDS / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def _write(root: Path, rec: dict) -> None:
    write_text(_file(root, rec["path"]), json.dumps(rec, sort_keys=True) + "\n")


def _read(file: Path) -> dict | None:
    try:
        rec = json.loads(file.read_text())
        return rec if all(isinstance(rec.get(k), str) for k in ("path", "hash", "rule")) else None
    except (OSError, ValueError, AttributeError):  # torn by a kill, or not a record: never block a run on it
        return None


def _refresh(file: Path, old: dict, new: dict, force: bool = False) -> None:
    """Rewrite a record (`force`: rewrite it unchanged, to date it after a racy file)."""
    if new == old and not force:
        return
    try:
        if _read(file) == old:  # unless a job rewrote it meanwhile
            write_text(file, json.dumps(new, sort_keys=True) + "\n")
    except OSError as e:  # a read-only workdir: the check still holds, it only hashes again next time
        log.debug("could not refresh %s: %s", file, e)


def _stat(path: Path) -> dict:
    """Size and mtime as written; for a directory, the total, the newest and a digest of every file's."""
    if not path.is_dir():
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    h, size, newest = hashlib.sha256(), 0, 0
    for rel in sorted(_files(path)):
        st = (path / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        size, newest = size + st.st_size, max(newest, st.st_mtime_ns)
    return {"size": size, "mtime_ns": newest, "tree": h.hexdigest()}


def _same_stat(rec: dict, stat: dict) -> bool:
    return all(rec.get(k) == v for k, v in stat.items()) and ("tree" in rec) == ("tree" in stat)


def _files(root: Path):
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name not in IGNORED:
                yield (Path(dirpath) / name).relative_to(root).as_posix()


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class DvcLock:
    """The md5 of every file the workdir's dvc.lock pins, read (once, when first asked) from the DVC
    cache's directory listings; paths are workdir-relative, as in the records."""

    def __init__(self, workdir: str | Path = "."):
        self.root = Path(workdir).resolve()

    @cached_property
    def pins(self) -> dict[str, str]:
        import yaml  # only when a record disagrees with the disk

        try:
            stages = (yaml.safe_load((self.root / "dvc.lock").read_text()) or {}).get("stages", {})
            outs = [o for s in stages.values() for o in s.get("outs", [])]
        except (OSError, yaml.YAMLError, AttributeError):  # no DVC here, or a lock it could not read either
            return {}
        pins = {}
        for out in outs:
            if not isinstance(out, dict) or out.get("hash") != "md5" or not isinstance(out.get("path"), str) \
                    or not isinstance(out.get("md5"), str):
                continue  # DVC 2's md5-dos2unix hashes text differently: not compared
            path = _key(out["path"], self.root)
            if not out["md5"].endswith(".dir"):
                pins[path] = out["md5"]
                continue
            try:
                listing = json.loads(self.object(out["md5"]).read_text())
                pins.update({f"{path}/{e['relpath']}": e["md5"] for e in listing})
            except (OSError, ValueError, KeyError, TypeError):  # the listing is not in the cache (not pulled)
                continue
        return pins

    @cached_property
    def cache(self) -> Path:
        parser = ConfigParser(interpolation=None)
        try:  # DVC's own config, then the machine-local one; both may move the cache
            parser.read([self.root / ".dvc" / "config", self.root / ".dvc" / "config.local"])
            cache = parser.get("cache", "dir", fallback="cache").strip("'\"")
        except ConfigError:
            cache = "cache"
        return self.root / ".dvc" / cache

    def object(self, md5: str) -> Path:
        return self.cache / "files" / "md5" / md5[:2] / md5[2:]

    def _pinned(self, key: str) -> dict[str, str]:
        """{file on disk: pinned md5} for key: the file itself, or every file of a directory."""
        if key in self.pins:
            return {key: self.pins[key]}
        prefix = key.rstrip("/") + "/"
        return {p: md5 for p, md5 in self.pins.items() if p.startswith(prefix)}

    def matches(self, key: str) -> bool | None:
        """Whether the file (or directory) is the version dvc.lock pins; None where DVC lists no such path."""
        pinned = self._pinned(key)
        if not pinned:
            return None
        path = self.root / key
        if path.is_dir():  # .dvcignore hides killed jobs' temporaries from DVC too
            on_disk = {f"{key}/{rel}" for rel in _files(path)
                       if not any(map(TEMPORARY.match, rel.split("/")))}
        else:
            on_disk = {key}
        return on_disk == set(pinned) and all(_md5(self.root / p) == md5 for p, md5 in pinned.items())

    def restorable(self, key: str) -> bool:
        """Whether `dvc checkout` can bring back the pinned version: the cache holds every file of it."""
        pinned = self._pinned(key)
        return bool(pinned) and all(self.object(md5).is_file() for md5 in pinned.values())
