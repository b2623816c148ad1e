"""Static HTML pages of the score report: an index and one page per selected unit.

Each unit page shows every method's explanation of the unit (NetDissect, CoEx, Clustered CoEx
ranges, LE per source), its simulation scores and Top Impact, and the report's figures of it.
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
from nexplain.report import DEAD

CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top;font-size:14px}th{background:#eee}td.num{text-align:right}
code{font-size:13px}img{max-width:100%;display:block;margin:0.3em 0 1.2em}nav a{margin-right:1em}"""


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


def _table(header: list[str], rows: list[list], code_cols=()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for j, v in enumerate(row):
            text = _esc(v)
            if j in code_cols and isinstance(v, str):
                text = f"<code>{text}</code>"
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            cells.append(f'<td class="num">{text}</td>' if num else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _page(title: str, nav: str, body: str) -> str:
    title = html.escape(title)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head>\n<body><nav>{nav}</nav><h1>{title}</h1>\n{body}\n</body></html>\n")


def _unit_name(u: int) -> str:
    return f"unit_{u:04d}.html"


def _get(row: pd.Series, column: str, source):
    if column not in row.index:
        raise DataError(f"{source}: no column {column!r} (was the report written by another version?)")
    return row[column]


def unit_body(row: pd.Series, u: int, names: dict, simulator: str, figures: dict[str, Path | None],
              source="units table") -> str:
    """The sections of one unit's page; `figures` {caption key: PNG path or None when absent}."""
    rows = []
    for m in names["formulas"]:
        if m == "clustered":
            continue
        rows.append([m, _get(row, m, source), "IoU", _get(row, f"{m}_iou", source), row.get(f"{m}_corr_test")])
    for m in names["linear"]:
        rows.append([m, _get(row, m, source), "val corr", _get(row, f"{m}_val_corr", source),
                     row.get(f"{m}_corr_test")])
    parts = ["<h2>Explanations</h2>",
             _table(["method", "explanation", "score", "value", f"test corr ({simulator})"], rows, code_cols=(1,))]
    if "clustered" in names["formulas"]:
        text = _get(row, "clustered", source)
        if text == DEAD:  # no ranges to list: its bounds and IoU are NaN
            ranges = "<p>dead: the unit's activations are constant, so it has no ranges.</p>"
        else:
            split = [r.split(": ", 1) for r in text.split(" | ")] if isinstance(text, str) else []
            ranges = _table(["range", "activations", "formula"], [[j, *r] for j, r in enumerate(split)], code_cols=(2,))
        parts += ["<h2>Clustered CoEx ranges</h2>", ranges,
                  f"<p>mean IoU over ranges: {_esc(_get(row, 'clustered_iou', source))}; "
                  f"test corr ({html.escape(simulator)}): {_esc(row.get('clustered_corr_test'))}</p>"]
    ti = [c for c in row.index if c.startswith("ti_")]
    if ti:
        parts += ["<h2>Top Impact</h2>", _table(["beta", "TI"], [[c[3:], row[c]] for c in ti])]
    parts.append("<h2>Figures</h2>")
    for caption, path in figures.items():
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


def write_pages(out_dir, units: pd.DataFrame, scores: pd.DataFrame, selected, names: dict, simulator: str,
                figures_dir, layer_figures: dict[str, Path], pure_dir=None, title: str = "",
                source: str = "units table") -> list[str]:
    """index.html and one unit_<u>.html per selected unit into `out_dir` (swapped in whole)."""
    table = units.set_index("unit")
    selected = [int(u) for u in selected]
    missing = [u for u in selected if u not in table.index]
    if missing:
        raise DataError(f"{source}: units {missing} of report.units are not in the table")
    pages = {}
    for k, u in enumerate(selected):
        nav = ['<a href="index.html">index</a>']
        if k > 0:
            nav.append(f'<a href="{_unit_name(selected[k - 1])}">previous: unit {selected[k - 1]}</a>')
        if k + 1 < len(selected):
            nav.append(f'<a href="{_unit_name(selected[k + 1])}">next: unit {selected[k + 1]}</a>')
        body = unit_body(table.loc[u], u, names, simulator, unit_figures(u, figures_dir, pure_dir), source)
        pages[_unit_name(u)] = _page(f"{title} unit {u}", " ".join(nav), body)
    index_rows = [[Raw(f'<a href="{_unit_name(u)}">unit {u}</a>'),
                   *[table.loc[u, m] for m in names["formulas"] + names["linear"]]]
                  for u in selected]
    body = ["<h2>Units</h2>", _table(["unit", *names["formulas"], *names["linear"]], index_rows)]
    body += ["<h2>Scores of the layer</h2>",
             _table(list(scores.columns), scores.astype(object).where(scores.notna(), None).values.tolist())]
    for caption, path in layer_figures.items():
        body += [f"<h3>{html.escape(caption)}</h3>", _image(Path(path), caption)]
    pages["index.html"] = _page(f"{title} score report", "", "\n".join(body))
    with atomic_dir(out_dir) as tmp:
        for name, text in pages.items():
            (tmp / name).write_text(text, encoding="utf-8")
    return sorted(pages)
