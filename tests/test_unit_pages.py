"""The static unit pages: what they say equals the report tables; they open in a browser with every
image decoded (skipped where Chromium is not installed)."""

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from browser import check_page, needs_chromium, screenshot
from nexplain.errors import DataError
from nexplain.report.report import unit_table
from nexplain.report.unit_pages import write_pages

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


def test_every_unit_gets_a_page_and_a_sortable_index_row(report, tmp_path):
    """Figures only for report.units (here unit 0), but a page and an index row for every unit,
    with its top-image strip when one is given."""
    r = report
    strips = {0: (b"\xff\xd8jpeg", [7, 3], 1.25), 1: (None, [], float("nan"))}
    written = write_pages(tmp_path / "p", r["units"], r["scores"], [0], NAMES, "label", r["figs"], r["layer"],
                          r["pure"], strips=strips)
    assert written == ["index.html", "unit_0000.html", "unit_0001.html"]
    one = (tmp_path / "p" / "unit_0001.html").read_text()
    assert "add this unit there to get them" in one and "data:image/png" not in one
    assert "dead: the unit's activation is constant, so it has no top images." in one
    zero = (tmp_path / "p" / "unit_0000.html").read_text()
    assert "data:image/jpeg;base64," in zero and "Images #7, #3" in zero and "threshold 1.250" in zero
    index = (tmp_path / "p" / "index.html").read_text()
    assert '<table class="sortable">' in index and "<script>" in index and "<dt>IoU</dt>" in index
    assert '<td class="num" data-v="0.25">0.250</td>' in index  # netdissect IoU of unit 0, sortable by value
    assert '<td class="num" data-v="">&ndash;</td>' in index    # a NaN sorts last and reads as a dash
    assert "<th>netdissect IoU</th>" in index and "<th>le_label val corr</th>" in index and "<th>TI</th>" in index


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


def _rows(method_rows):
    cols = ["unit", "cluster", "status", "lo", "hi", "n_cells", "formula", "length", "iou"]
    return pd.DataFrame(method_rows, columns=cols)


@pytest.mark.reliability
def test_a_dead_unit_page_says_dead_and_never_nan(tmp_path):
    """Unit 1 is dead (constant) for every method, as the method tables write it: bounds, IoU and
    correlations NaN, no formula. Unit 0 is live, with a range that holds no cells."""
    nan = np.nan
    formulas = {"netdissect": _rows([[0, 0, "ok", 0.5, 2.0, 10, "red", 1, 0.3],
                                     [1, -1, "dead", 0.0, 0.0, 0, None, 0, nan]]),
                "clustered": _rows([[0, 0, "ok", 0.0, 1.0, 5, "sky", 1, 0.2],
                                    [0, 1, "empty", 1.0, 2.0, 0, None, 0, nan],
                                    [1, -1, "dead", nan, nan, 0, None, 0, nan]])}
    linear = {"le_label": pd.DataFrame({"unit": [0, 1], "concepts": [["red"], []], "weights": [[1.0], []],
                                        "bias": [0.1, 0.7], "length": [1, 0], "val_corr": [0.8, nan],
                                        "dead": [False, True]})}
    sim = pd.DataFrame({"explainer": ["le_label", "le_label", "netdissect", "netdissect", "clustered", "clustered"],
                        "unit": [0, 1] * 3, "dead": [False, True] * 3, "corr_test": [0.5, nan, 0.2, nan, 0.1, nan]})
    ti = pd.DataFrame({"unit": [0, 1], "computed": True, "dead": [False, True], "ti_0.02": [0.1, nan]})
    units = unit_table(formulas, linear, sim, ti)
    scores = pd.DataFrame({"section": ["metrics"], "method": ["netdissect"], "simulator": [""], "metric": ["iou"],
                           "mean": [nan], "std": [nan], "n": [0]})
    names = {"formulas": ["netdissect", "clustered"], "linear": ["le_label"]}
    write_pages(tmp_path / "pages", units, scores, [0, 1], names, "label", tmp_path / "figs", {})
    dead = (tmp_path / "pages" / "unit_0001.html").read_text()
    assert "<p>dead: the unit's activations are constant, so it has no ranges.</p>" in dead
    assert dead.count("<code>(dead)</code>") == 2  # NetDissect and LE
    live = (tmp_path / "pages" / "unit_0000.html").read_text()
    assert "<td>1.00-2.00</td><td><code>(none)</code></td>" in live  # the empty range
    for name in ("unit_0000.html", "unit_0001.html", "index.html"):
        assert not re.search(r"\bnan\b", (tmp_path / "pages" / name).read_text(), re.IGNORECASE), name


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


def test_causal_effects_show_where_rule_causal_ran(report, tmp_path):
    units = report["units"].assign(netdissect_effect=[0.625, np.nan], clustered_effect=[1.25, np.nan],
                                   le_label_effect=[0.375, np.nan])
    out = tmp_path / "with_effects"
    write_pages(out, units, report["scores"], [0, 1], NAMES, "label", report["figs"], report["layer"],
                report["pure"], title="t", source="units.parquet")
    page = (out / "unit_0000.html").read_text()
    assert "<th>causal effect</th>" in page and '<td class="num">0.625</td>' in page
    assert "causal effect of the highest range's concepts: 1.25" in page
    assert "netdissect causal effect" in (out / "index.html").read_text()
    assert "causal effect" not in (report["out"] / "unit_0000.html").read_text()  # not without the rule
