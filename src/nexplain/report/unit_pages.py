"""Static HTML pages of the score report: an index of every unit, sortable by each method's
score, and one page per unit.

Each unit page shows the unit's top images with the outline of its top-quantile region
(`nexplain.report.unit_strips`), every method's explanation of it (NetDissect, CoEx, Clustered CoEx
ranges, LE per source), its simulation scores and Top Impact, and, for the units of
`report.units`, the report's figures of it.
Figures are embedded as data URIs, so a page is one file that opens from disk, from an MLflow
artifact view or inside the Snakemake report alike; pages link to each other relatively.
No timestamps: the same tables and figures give the same bytes.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from nexplain.errors import DataError
from nexplain.io import atomic_dir
from nexplain.report.report import DEAD

CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top;font-size:14px}th{background:#eee}td.num{text-align:right}
code{font-size:13px}img{max-width:100%;display:block;margin:0.3em 0 1.2em}nav a{margin-right:1em}
table.sortable th{cursor:pointer}table.sortable th:after{content:" \\2195";color:#999}dt{font-weight:bold}"""

# Click a header to sort the index by it (numbers by value, blanks last; click again to reverse).
SORT_JS = """document.querySelectorAll("table.sortable").forEach(function(t){
t.querySelectorAll("th").forEach(function(th,j){th.addEventListener("click",function(){
var rows=Array.from(t.tBodies[0].rows),up=th.dataset.up!=="1";th.dataset.up=up?"1":"0";
function key(r){var v=r.cells[j].dataset.v;return v===undefined?r.cells[j].textContent:v===""?null:Number(v);}
rows.sort(function(a,b){var x=key(a),y=key(b);if(x===null)return 1;if(y===null)return -1;
var c=typeof x==="number"?x-y:String(x).localeCompare(String(y));return up?c:-c;});
rows.forEach(function(r){t.tBodies[0].appendChild(r);});});});});"""

GLOSSARY = {
    "IoU": "overlap of the unit's top-quantile cells with the explanation's mask, over the probe set "
           "(NetDissect, CoEx; Clustered CoEx: the mean over its ranges)",
    "val corr": "Linear Explanations: Pearson correlation of the weighted concepts with the unit's "
                "activation on the validation images",
    "test corr": "the explanation simulated on the simulator's concept scores, correlated with the unit's "
                 "activation on the test images",
    "TI": "Top Impact at beta = 0.02: the share of the unit's total effect on the loss that comes from the "
          "2% of images where it is most active",
    "dead": "the unit's activation is constant on the probe set: nothing to explain",
}


class Raw(str):
    """Markup made here (a link), which a table cell takes as it is."""


def _esc(value) -> str:
    if isinstance(value, Raw):
        return value
    if value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value)):
        return "&ndash;"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3f}"
    return html.escape(str(value))


def html_table(header: list[str], rows: list[list], code_cols=(), sortable: bool = False) -> str:
    """A table; `sortable` adds each number's value as data-v, for SORT_JS."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for j, v in enumerate(row):
            text = _esc(v)
            if j in code_cols and isinstance(v, str):
                text = f"<code>{text}</code>"
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            if num and sortable:
                key = f"{float(v):.6g}" if np.isfinite(v) else ""
                cells.append(f'<td class="num" data-v="{key}">{text}</td>')
            else:
                cells.append(f'<td class="num">{text}</td>' if num else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _page(title: str, nav: str, body: str, script: str = "") -> str:
    title = html.escape(title)
    script = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head>\n<body><nav>{nav}</nav><h1>{title}</h1>\n{body}\n{script}</body></html>\n")


def _unit_name(u: int) -> str:
    return f"unit_{u:04d}.html"


def _get(row: pd.Series, column: str, source):
    if column not in row.index:
        raise DataError(f"{source}: no column {column!r} (was the report written by another version?)")
    return row[column]


def strip_section(strip) -> str:
    """The unit's top images with its region outlined; `strip` from `unit_strips.top_strip`."""
    if strip is None:
        return ""
    jpeg, ids, threshold = strip
    if jpeg is None:
        return "<h2>Top activations</h2><p>dead: the unit's activation is constant, so it has no top images.</p>"
    data = base64.b64encode(jpeg).decode("ascii")
    shown = ", ".join(f"#{i}" for i in ids)
    return (f'<h2>Top activations</h2><img alt="top images" src="data:image/jpeg;base64,{data}">'
            f"<p>Images {shown}, most cells above the unit's threshold {_esc(float(threshold))} first; "
            "outlined in yellow: those cells (the region NetDissect and CoEx explain).</p>")


def unit_body(row: pd.Series, u: int, names: dict, simulator: str, figures: dict[str, Path | None] | None,
              source="units table", strip=None) -> str:
    """The sections of one unit's page; `figures` {caption key: PNG path or None when absent},
    or None for a unit outside `report.units` (no figures drawn)."""
    rows = []
    for m in names["formulas"]:
        if m == "clustered":
            continue
        rows.append([m, _get(row, m, source), "IoU", _get(row, f"{m}_iou", source), row.get(f"{m}_corr_test")])
    for m in names["linear"]:
        rows.append([m, _get(row, m, source), "val corr", _get(row, f"{m}_val_corr", source),
                     row.get(f"{m}_corr_test")])
    header = ["method", "explanation", "score", "value", f"test corr ({simulator})"]
    if any(f"{m}_effect" in row.index for m in names["formulas"] + names["linear"]):  # rule causal ran
        header.append("causal effect")
        for r in rows:
            r.append(row.get(f"{r[0]}_effect"))
    parts = [strip_section(strip), "<h2>Explanations</h2>", html_table(header, rows, code_cols=(1,))]
    if "clustered" in names["formulas"]:
        text = _get(row, "clustered", source)
        if text == DEAD:  # no ranges to list: its bounds and IoU are NaN
            ranges = "<p>dead: the unit's activations are constant, so it has no ranges.</p>"
        else:
            split = [r.split(": ", 1) for r in text.split(" | ")] if isinstance(text, str) else []
            ranges = html_table(["range", "activations", "formula"], [[j, *r] for j, r in enumerate(split)], code_cols=(2,))
        parts += ["<h2>Clustered CoEx ranges</h2>", ranges,
                  f"<p>mean IoU over ranges: {_esc(_get(row, 'clustered_iou', source))}; "
                  f"test corr ({html.escape(simulator)}): {_esc(row.get('clustered_corr_test'))}"
                  + (f"; causal effect of the highest range's concepts: {_esc(row.get('clustered_effect'))}"
                     if "clustered_effect" in row.index else "") + "</p>"]
    ti = [c for c in row.index if c.startswith("ti_")]
    if ti:
        parts += ["<h2>Top Impact</h2>", html_table(["beta", "TI"], [[c[3:], row[c]] for c in ti])]
    parts.append("<h2>Figures</h2>")
    if figures is None:
        parts.append("<p><em>The report draws figures for the units of <code>report.units</code> in the config; "
                     "add this unit there to get them.</em></p>")
    for caption, path in (figures or {}).items():
        if path is not None and Path(path).is_file():
            parts += [f"<h3>{html.escape(caption)}</h3>", _image(Path(path), f"{caption}, unit {u}")]
        else:
            parts.append(f"<p><em>{html.escape(caption)}: no figure (the unit is dead for this method, "
                         "or the method did not run on it).</em></p>")
    return "\n".join(parts)


def unit_figures(u: int, figures_dir, pure_dir=None) -> dict[str, Path | None]:
    """The report's PNGs of unit `u`, by caption (None where absent)."""
    f = Path(figures_dir)
    out = {"NetDissect / CoEx: top activations": f / f"top_{u:04d}.png",
           "Clustered CoEx: ranges and their images": f / f"ranges_{u:04d}.png",
           "Linear Explanations: concept weights": f / f"le_{u:04d}.png",
           "Concept shares across the activation range": f / f"area_{u:04d}.png"}
    if pure_dir is not None:
        out["PURE circuits"] = Path(pure_dir) / f"unit_{u:04d}.png"
    return {k: (p if p.is_file() else None) for k, p in out.items()}


def _index_rows(table: pd.DataFrame, names: dict) -> tuple[list[str], list[list]]:
    """The index's columns: per method its explanation and score, test correlations, TI."""
    cols = []  # (header, column of the units table)
    for m in names["formulas"]:
        if m != "clustered":
            cols.append((m, m))
        cols.append((f"{m} IoU", f"{m}_iou"))
    for m in names["linear"]:
        cols += [(m, m), (f"{m} val corr", f"{m}_val_corr")]
    cols += [(f"{m} test corr", f"{m}_corr_test") for m in names["formulas"] + names["linear"]
             if f"{m}_corr_test" in table.columns]
    if "ti_0.02" in table.columns:
        cols.append(("TI", "ti_0.02"))
    cols += [(f"{m} causal effect", f"{m}_effect") for m in names["formulas"] + names["linear"]
             if f"{m}_effect" in table.columns]
    rows = [[Raw(f'<a href="{_unit_name(u)}">unit {u}</a>'),
             *[(table.loc[u, c] if c in table.columns else None) for _, c in cols]] for u in table.index]
    return ["unit", *[h for h, _ in cols]], rows


def write_pages(out_dir, units: pd.DataFrame, scores: pd.DataFrame, selected, names: dict, simulator: str,
                figures_dir, layer_figures: dict[str, Path], pure_dir=None, title: str = "",
                source: str = "units table", strips: dict | None = None) -> list[str]:
    """index.html and one unit_<u>.html per unit of `units` into `out_dir` (swapped in whole).
    The `selected` units (report.units) get the report's figures; `strips` {unit: top_strip()}
    adds each unit's top images."""
    table = units.set_index("unit").sort_index()
    selected = {int(u) for u in selected}
    missing = sorted(u for u in selected if u not in table.index)
    if missing:
        raise DataError(f"{source}: units {missing} of report.units are not in the table")
    every = [int(u) for u in table.index]
    pages = {}
    for k, u in enumerate(every):
        nav = ['<a href="index.html">index</a>']
        if k > 0:
            nav.append(f'<a href="{_unit_name(every[k - 1])}">previous: unit {every[k - 1]}</a>')
        if k + 1 < len(every):
            nav.append(f'<a href="{_unit_name(every[k + 1])}">next: unit {every[k + 1]}</a>')
        figures = unit_figures(u, figures_dir, pure_dir) if u in selected else None
        body = unit_body(table.loc[u], u, names, simulator, figures, source, (strips or {}).get(u))
        pages[_unit_name(u)] = _page(f"{title} unit {u}", " ".join(nav), body)
    header, rows = _index_rows(table, names)
    body = [f"<h2>Units ({len(every)})</h2><p>Click a column to sort by it; test correlations are under "
            f"the <code>{html.escape(str(simulator))}</code> simulator.</p>",
            html_table(header, rows, code_cols=tuple(j for j, h in enumerate(header) if h in names["formulas"] + names["linear"]),
                   sortable=True),
            "<h2>Glossary</h2><dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                                              for k, v in GLOSSARY.items()) + "</dl>"]
    body += ["<h2>Scores of the layer</h2>",
             html_table(list(scores.columns), scores.astype(object).where(scores.notna(), None).values.tolist())]
    for caption, path in layer_figures.items():
        body += [f"<h3>{html.escape(caption)}</h3>", _image(Path(path), caption)]
    pages["index.html"] = _page(f"{title} score report", "", "\n".join(body), SORT_JS)
    with atomic_dir(out_dir) as tmp:
        for name, text in pages.items():
            (tmp / name).write_text(text, encoding="utf-8")
    return sorted(pages)
