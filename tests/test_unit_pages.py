"""The static unit pages: what they say equals the report tables; they open in a browser with every
image decoded (skipped where Chromium is not installed)."""

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from browser import check_page, needs_chromium, screenshot
from nexplain.errors import DataError
from nexplain.unit_pages import write_pages

NAMES = {"formulas": ["netdissect", "clustered"], "linear": ["le_label"]}

def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def report(tmp_path):
    units = pd.DataFrame({"unit": [0, 1], "netdissect": ["red OR (circle AND <b>)", None],
                          "netdissect_iou": [0.25, np.nan], "clustered": ["0.00-1.50: sky | 1.50-4.00: red", None],
                          "clustered_iou": [0.3, np.nan], "le_label": ["0.50 red + 0.10", "(dead)"],
                          "le_label_val_corr": [0.8, np.nan], "le_label_corr_test": [0.75, np.nan],
                          "netdissect_corr_test": [0.2, np.nan], "ti_0.02": [0.12, np.nan]})
    scores = pd.DataFrame({"section": ["metrics"], "method": ["netdissect"], "simulator": [""], "metric": ["iou"],
                           "mean": [0.25], "std": [0.0], "n": [1]})
    figs = tmp_path / "units"
    for name in ("area_0000", "le_0000", "ranges_0000", "top_0000", "area_0001"):
        _png(figs / f"{name}.png", 90)
    pure = tmp_path / "pure"
    _png(pure / "unit_0000.png", 30)
    layer = {"Top Impact": _png(tmp_path / "ti.png", 200)}
    out = tmp_path / "pages"
    written = write_pages(out, units, scores, [0, 1], NAMES, "label", figs, layer, pure, title="m / d / layer4",
                          source="units.parquet")
    return {"out": out, "written": written, "units": units, "scores": scores, "figs": figs, "layer": layer,
            "pure": pure}


def test_pages_show_every_method_with_its_figures(report):
    out = report["out"]
    assert report["written"] == ["index.html", "unit_0000.html", "unit_0001.html"]
    page = (out / "unit_0000.html").read_text()
    assert "<code>red OR (circle AND &lt;b&gt;)</code>" in page  # escaped, not markup
    assert "<td class=\"num\">0.250</td>" in page and "<td class=\"num\">0.750</td>" in page
    assert "<code>sky</code>" in page and "<td>1.50-4.00</td>" in page  # one row per clustered range
    assert page.count("data:image/png;base64,") == 5  # top, ranges, le, area, PURE
    assert "src=\"http" not in page and "src=\"/" not in page
    assert re.findall(r'href="([^"]+)"', page) == ["index.html", "unit_0001.html"]
    dead = (out / "unit_0001.html").read_text()
    assert dead.count("data:image/png;base64,") == 1 and "PURE circuits: no figure" in dead
    index = (out / "index.html").read_text()
    assert '<a href="unit_0000.html">unit 0</a>' in index and '<a href="unit_0001.html">unit 1</a>' in index
    assert "<td>metrics</td><td>netdissect</td>" in index


def test_pages_are_the_same_bytes_on_a_rerun(report, tmp_path):
    r = report
    again = tmp_path / "again"
    write_pages(again, r["units"], r["scores"], [0, 1], NAMES, "label", r["figs"], r["layer"], r["pure"],
                title="m / d / layer4")
    for name in r["written"]:
        assert (again / name).read_bytes() == (r["out"] / name).read_bytes()


def test_bad_input_names_the_file_and_what_is_missing(report, tmp_path):
    r = report
    with pytest.raises(DataError, match=r"units.parquet: units \[5\] of report.units are not in the table"):
        write_pages(tmp_path / "x", r["units"], r["scores"], [0, 5], NAMES, "label", r["figs"], r["layer"],
                    source="units.parquet")
    with pytest.raises(DataError, match="units.parquet: no column 'le_label_val_corr'"):
        write_pages(tmp_path / "x", r["units"].drop(columns="le_label_val_corr"), r["scores"], [0], NAMES, "label",
                    r["figs"], r["layer"], source="units.parquet")
    assert not (tmp_path / "x").exists()  # nothing half-written


@needs_chromium
def test_a_unit_page_renders_with_every_image(report, tmp_path):
    info = check_page(report["out"] / "unit_0000.html", tmp_path)
    assert info["images"] == 5 and info["broken"] == []
    assert info["tables"] == 3 and info["rows"] >= 8  # explanations, ranges, Top Impact
    shot = screenshot(report["out"] / "unit_0000.html", tmp_path / "shot.png", tmp_path)
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        assert np.asarray(im.convert("L")).std() > 5  # something was drawn, not a blank page


@needs_chromium
def test_the_check_catches_a_broken_image(tmp_path):
    """A decoded relative image passes (the probe copy resolves it beside the original); a missing file and
    an img without src are reported; a step that finds no link says so."""
    site = tmp_path / "site"
    _png(site / "ok.png", 120)
    page = site / "broken.html"
    page.write_text('<!DOCTYPE html><html><head></head><body><img src="ok.png"><img src="missing.png">'
                    '<img alt="no src"><table><tr><td>x</td></tr></table></body></html>')
    probe = tmp_path / "probe"
    probe.mkdir()
    info = check_page(page, probe, ["no such link"])
    assert info["images"] == 3 and info["tables"] == 1 and info["steps"] == [False]
    assert info["broken"] == ["missing.png", ""]
    assert sorted(p.name for p in site.iterdir()) == ["broken.html", "ok.png"]  # nothing written beside it
