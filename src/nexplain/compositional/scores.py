"""Layer-level scores of an explanation table: the JSON files `dvc metrics` compares across revisions."""

from __future__ import annotations

import pyarrow as pa

from nexplain.compositional.explain import METRICS


def scores(table: pa.Table) -> dict:
    """A layer's explanation scores for `dvc metrics`: means over explained rows, counts, visited."""
    df = table.to_pandas()
    ok = df[df["status"] == "ok"]
    out = {"units": int(df["unit"].nunique()), "rows": len(df), "explained": len(ok),
           "dead_units": int(df.loc[df["status"] == "dead", "unit"].nunique()),
           "median_visited": float(ok["visited"].median()) if len(ok) else 0.0}
    out.update({f"mean_{m}": round(float(ok[m].mean()), 6) if len(ok) else 0.0 for m in METRICS})
    return out
