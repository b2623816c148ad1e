"""Content records: an output edited after its job made it is found; touched or restored ones are not."""

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nexplain.hashing import content_hash
from nexplain.tracking import records
from nexplain.tracking.records import Edit, edited, load, refusal, save

TABLE = "results/m/world/layer3/explanations/coex.parquet"
DATASET = "results/datasets/world"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _job(wd: Path, rule: str, outputs: list[str], inputs: list[str] = ()) -> dict:
    """A `tracking.job_record`-like dict: paths as the job saw them, relative to the workdir."""
    return {"rule": rule, "wildcards": {"model": "m"}, "params": {"code": "abcdabcdabcdabcd", "batch_size": "16"},
            "inputs": {p: content_hash(wd / p) for p in inputs}, "outputs": {p: content_hash(wd / p) for p in outputs},
            "code_version": "abcdabcdabcdabcd", "git_commit": "abc123", "git_dirty": "false",
            "version": "0.1.0", "workdir": str(wd)}


def _age(path: Path, seconds: int = 10) -> None:
    """Date a file back, as a file written well before its record (not in the same clock tick)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


@pytest.fixture
def wd(tmp_path):
    """A workdir with one file output and one directory output, recorded as their jobs wrote them."""
    wd = tmp_path / "wf"
    _write(wd / TABLE, b"PAR1 table")
    for rel, data in [("images/a.png", b"png-a"), ("index.csv", b"image\na.png\n"), (".snakemake_timestamp", b"")]:
        _write(wd / DATASET / rel, data)
    for path in [wd / TABLE, *(wd / DATASET).rglob("*")]:
        _age(path)
    save(_job(wd, "world", [DATASET]), wd)
    save(_job(wd, "explain", [TABLE], [DATASET]), wd)
    return wd


@pytest.mark.reliability
def test_an_edited_output_is_listed_with_one_command_that_remakes_it(wd):
    assert edited(wd) == []
    recorded = content_hash(wd / TABLE)
    (wd / TABLE).write_bytes(b"PAR1 edited by hand")
    assert edited(wd) == [Edit(TABLE, "explain", recorded, content_hash(wd / TABLE), False)]
    assert refusal(edited(wd)) == (
        f"{TABLE} was changed after rule explain made it (its content no longer matches the job's record); "
        f"to remake it and what was computed from it, run `snakemake --cores 2 --forcerun {TABLE}`")
    assert edited(wd, skip=[TABLE]) == [] and edited(wd, skip=["results/m"]) == []  # about to be remade


@pytest.mark.reliability
def test_a_touched_output_is_not_edited_and_is_hashed_once(wd, monkeypatch):
    for path in (wd / TABLE, wd / DATASET / "index.csv"):
        _age(path, -5)  # touched: 5 s later than as written, same bytes
    (wd / DATASET / ".snakemake_timestamp").write_bytes(b"")  # Snakemake rewrites its marker
    assert edited(wd) == []
    assert load(TABLE, wd)["mtime_ns"] == (wd / TABLE).stat().st_mtime_ns  # the new stat is recorded

    def no_hashing(path):
        raise AssertionError(f"{path} hashed although its stat matches the record")

    monkeypatch.setattr(records, "content_hash", no_hashing)
    assert edited(wd) == []


@pytest.mark.reliability
def test_a_same_size_edit_in_the_clock_tick_of_the_record_is_found(wd):
    rec = load(TABLE, wd)
    (wd / TABLE).write_bytes(b"PAR1 TABLE")  # same size
    os.utime(wd / TABLE, ns=(rec["mtime_ns"], rec["mtime_ns"]))  # and the same mtime: a coarse clock
    record_file = next(f for f in (wd / records.RECORDS).iterdir() if json.loads(f.read_text())["path"] == TABLE)
    os.utime(record_file, ns=(rec["mtime_ns"], rec["mtime_ns"]))  # the record written in that tick too
    assert [e.path for e in edited(wd)] == [TABLE]


@pytest.mark.reliability
def test_a_directory_output_is_edited_by_a_changed_added_or_renamed_file(wd):
    image = wd / DATASET / "images" / "a.png"
    image.write_bytes(b"png-b")
    assert [(e.path, e.rule) for e in edited(wd)] == [(DATASET, "world")]
    image.write_bytes(b"png-a")
    assert edited(wd) == []
    (wd / DATASET / "images" / "b.png").write_bytes(b"png-b")
    assert [e.path for e in edited(wd)] == [DATASET]
    (wd / DATASET / "images" / "b.png").rename(wd / DATASET / "images" / "c.png")
    assert [e.path for e in edited(wd)] == [DATASET]
    (wd / DATASET / "images" / "c.png").unlink()
    image.rename(wd / DATASET / "images" / "z.png")  # same bytes, another name
    assert [e.path for e in edited(wd)] == [DATASET]


def test_missing_outputs_and_broken_records_are_not_edits(wd, caplog):
    (wd / TABLE).unlink()  # Snakemake remakes a missing output anyway
    (wd / records.RECORDS / "torn.json").write_text('{"path": "results/x", "ha')
    (wd / records.RECORDS / "list.json").write_text("[1, 2]")
    assert edited(wd) == []
    assert edited(wd / "elsewhere") == []  # no records at all
    with caplog.at_level(logging.WARNING, logger="nexplain.tracking.records"):
        save({"rule": "x"}, wd)  # no outputs: logged, never raised into the job
        save({"rule": "x", "outputs": {"results/gone.txt": "sha256:0"}}, wd)
    assert caplog.text.count("could not record the content of the job's outputs") == 2


def test_paths_are_workdir_relative_and_the_default_workdir_is_the_current_one(wd, monkeypatch):
    _write(wd / "results/abs.txt", b"abs")
    save(_job(wd, "report", [str(wd / "results/abs.txt")]), wd)
    assert load("results/abs.txt", wd)["path"] == "results/abs.txt"
    monkeypatch.chdir(wd)
    assert load(f"./{TABLE}")["rule"] == "explain" and load(TABLE)["params"]["batch_size"] == "16"
    (wd / "results/abs.txt").write_bytes(b"ABS!")
    assert [e.path for e in edited()] == ["results/abs.txt"]


def test_parallel_jobs_save_their_records_without_losing_one(tmp_path):
    wd = tmp_path / "wf"
    outs = [f"results/part{i}.txt" for i in range(40)]
    for i, out in enumerate(outs):
        _write(wd / out, f"part {i}".encode())
    with ThreadPoolExecutor(8) as pool:  # like parallel jobs: one record directory, created by whoever is first
        list(pool.map(lambda out: save(_job(wd, "explain", [out]), wd), outs))
    assert all(load(out, wd)["hash"] == content_hash(wd / out) for out in outs)
    assert sorted(p.suffix for p in (wd / records.RECORDS).iterdir()) == [".json"] * 40  # no temporaries left


def test_several_edits_are_named_short_and_remade_by_one_command():
    edits = [Edit(f"results/t{i}.parquet", "explain", "sha256:0", "sha256:1", False) for i in range(4)]
    edits[1] = Edit("results/my table.json", "report", "sha256:0", "sha256:1", False)
    assert refusal(edits, "snakemake --profile profiles/slurm") == (
        "4 outputs were changed after their rules made them (their content no longer matches the jobs' records): "
        "results/t0.parquet (rule explain), results/my table.json (rule report), results/t2.parquet (rule explain) "
        "and 1 more; to remake them and what was computed from them, run `snakemake --profile profiles/slurm "
        "--forcerun results/t0.parquet 'results/my table.json' results/t2.parquet results/t3.parquet`")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _pin(wd: Path, files: dict[str, bytes]) -> None:
    """dvc.lock pinning `results` as one directory, its listing (and objects) in DVC 3's cache."""
    listing = json.dumps([{"md5": _md5(data), "relpath": rel} for rel, data in sorted(files.items())]).encode()
    cache = wd / ".dvc" / "cache" / "files" / "md5"
    for data in [listing, *files.values()]:
        _write(cache / _md5(data)[:2] / (_md5(data)[2:] + (".dir" if data is listing else "")), data)
    (wd / "dvc.lock").write_text("schema: '2.0'\nstages:\n  pipeline:\n    cmd: snakemake --cores 2\n    outs:\n"
                                 f"    - path: results\n      hash: md5\n      md5: {_md5(listing)}.dir\n")


@pytest.mark.reliability
def test_the_version_dvc_lock_pins_is_adopted_not_refused(wd):
    table = TABLE.removeprefix("results/")
    _pin(wd, {table: b"PAR1 committed", f"{DATASET.removeprefix('results/')}/images/a.png": b"png-a",
              f"{DATASET.removeprefix('results/')}/index.csv": b"image\na.png\n"})
    (wd / TABLE).write_bytes(b"PAR1 committed")  # `dvc checkout` brought back the committed version
    assert edited(wd) == []
    assert load(TABLE, wd)["hash"] == content_hash(wd / TABLE) and load(TABLE, wd)["restored"] == "dvc.lock"
    (wd / TABLE).write_bytes(b"PAR1 edited by hand")
    [edit] = edited(wd)
    assert edit.restorable
    assert refusal([edit]).endswith(f"`snakemake --cores 2 --forcerun {TABLE}`, or restore the version "
                                    f"dvc.lock pins with `dvc checkout --force {TABLE}`")
    assert records.DvcLock(wd).matches(DATASET) and records.DvcLock(wd).matches("results/other") is None
