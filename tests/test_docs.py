"""The README and the MkDocs site: small, self-contained, and every page builds and renders."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from browser import check_page, needs_chromium

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_points_only_inside_the_repo():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 15_000
    assert "../shared" not in text and "METHODS.md" not in text  # a clone does not have them
    for link in re.findall(r"\]\(([^)#]+)", text):
        if not link.startswith(("http://", "https://")):
            assert (ROOT / link).exists(), f"README links to {link}, which is not in the repo"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_docs_site_builds_strictly_with_every_page(site):
    for page in ("index", "api", "methods", "configuration", "benchmarks", "report", "reliability"):
        assert (site / page / "index.html").is_file() or (page == "index" and (site / "index.html").is_file()), page
    assert (site / "screenshots" / "unit_page.png").is_file()


@needs_chromium
@pytest.mark.parametrize("page", ["index.html", "report/index.html", "api/index.html"])
def test_docs_pages_render_with_every_image(site, page, tmp_path):
    info = check_page(site / page, tmp_path)
    assert info["broken"] == []
    assert len(info["text"]) > 500


def test_the_readme_run_figures_are_the_recorded_run():
    """README's run block is benchmarks/default_run.py's rendering of the recorded run, number for number."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("default_run", ROOT / "benchmarks" / "default_run.py")
    default_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(default_run)
    record = json.loads((ROOT / "benchmarks" / "default_run.json").read_text())
    text = (ROOT / "README.md").read_text()
    block = text.split(default_run.BEGIN, 1)[1].split(default_run.END, 1)[0]
    assert block.strip() == default_run.render(record).strip()
    assert record["headlines"] and sum(r["jobs"] for r in record["rules"].values()) > 50


def test_the_ground_truth_figures_are_the_recorded_truth_run(monkeypatch):
    """README's and docs/truth.md's truth blocks are benchmarks/truth_run.py's rendering of its record."""
    import importlib.util
    import json

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # truth_run imports default_run beside it
    spec = importlib.util.spec_from_file_location("truth_run", ROOT / "benchmarks" / "truth_run.py")
    truth_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(truth_run)
    record = json.loads((ROOT / "benchmarks" / "truth_run.json").read_text())
    for path, render in (("README.md", truth_run.render_short), ("docs/truth.md", truth_run.render_full)):
        block = (ROOT / path).read_text().split(truth_run.BEGIN, 1)[1].split(truth_run.END, 1)[0]
        assert block.strip() == render(record).strip(), path
    assert record["metrics"]["planting.units"] == len(record["planting"]) > 10
