"""Concept matrices from a vision-language model (docs/methods.md, VLM mode).

P = sigmoid(a * (cos(E_T(c), E_I(x)) + b)) with L2-normalised open_clip embeddings.
Image embeddings are cached as Parquet (`image_id`, `embedding`), so a new concept set
only encodes its texts. (a, b) minimise binary cross-entropy against labelled data: the
concepts of the set that the dataset also labels (names compared case-insensitively,
`_` as a space). That is a one-feature logistic regression: a = w, b = w0 / w.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from nexplain import tables
from nexplain.compute import Compute
from nexplain.data.images import ImageDataset, ImageTable
from nexplain.errors import DataError

log = logging.getLogger(__name__)
META_KEY = b"nexplain"


def read_concept_set(path) -> list[str]:
    """One concept a line; blank lines and `#` comments skipped; duplicates are an error."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read concept set {path}: {e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"cannot read concept set {path} as UTF-8 ({e.reason})") from None
    names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    seen, dup = set(), []
    for n in names:
        (dup.append(n) if n in seen else seen.add(n))
    if dup:
        raise DataError(f"{path}: concepts listed twice: {dup[:5]}")
    if not names:
        raise DataError(f"{path}: no concepts")
    return names


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def image_embeddings(model, preprocess, table: ImageTable, batch_size: int = 64,
                     progress: bool = True, compute: Compute | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, L2-normalised embeddings (N, D) float32), in image-id order, computed on
    `compute`'s device (default: the CPU)."""
    compute = compute or Compute()
    model.to(compute.device)
    ds = ImageDataset(table, preprocess)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, **compute.loader_options())
    ids, out = [], []
    for x, i in tqdm(loader, desc="image embeddings", disable=not progress):
        with compute.autocast():
            emb = model.encode_image(compute.to(x))
        out.append(_normalise(emb.float()).cpu())
        ids.append(i)
    return torch.cat(ids).numpy().astype(np.int64), torch.cat(out).numpy()


@torch.no_grad()
def text_embeddings(model, tokenizer, concepts: list[str], template: str = "{}") -> np.ndarray:
    tokens = tokenizer([template.format(c.replace("_", " ")) for c in concepts])
    return _normalise(model.encode_text(tokens).float()).numpy()


def _write_vectors(path, key: str, keys: pa.Array, emb: np.ndarray, meta: dict) -> None:
    """(`key`, `embedding` fixed-size float32 list) with `meta`."""
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.astype(np.float32).ravel()), emb.shape[1])
    tables.write_table(pa.table({key: keys, "embedding": col}), path, meta)


def _read_vectors(path, key: str, what: str) -> tuple[list, np.ndarray, dict]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read {what} ({e})") from e
    col = table.column("embedding").combine_chunks()
    emb = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)
    return table.column(key).to_pylist(), emb, tables.read_metadata(path)


def write_embeddings(path, ids: np.ndarray, emb: np.ndarray, meta: dict) -> None:
    _write_vectors(path, "image_id", pa.array(ids, pa.int64()), emb, meta)


def read_embeddings(path) -> tuple[np.ndarray, np.ndarray, dict]:
    ids, emb, meta = _read_vectors(path, "image_id", "image embeddings")
    return np.asarray(ids, np.int64), emb, meta


def _label_key(name: str) -> str:
    return name.strip().lower().replace("_", " ")


def matched_labels(concepts: list[str], label_names: list[str]) -> list[tuple[int, int]]:
    """(index in the set, index in the labels) for concepts the dataset labels."""
    key = {_label_key(n): j for j, n in enumerate(label_names)}
    return [(i, key[_label_key(c)]) for i, c in enumerate(concepts) if _label_key(c) in key]


def calibrate(cos: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the BCE of sigmoid(a (cos + b)) against 0/1 labels (same shape)."""
    from sklearn.linear_model import LogisticRegression  # slow import, only needed here

    x, y = np.asarray(cos, np.float64).ravel(), np.asarray(labels).ravel() > 0.5
    if y.all() or not y.any():
        raise DataError("calibration needs labelled data with both positives and negatives; "
                        f"got {int(y.sum())} positives of {y.size}")
    fit = LogisticRegression(C=1e6, tol=1e-10, max_iter=10000).fit(x[:, None], y)
    w, w0 = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if w == 0:
        raise DataError("calibration found no relation between the VLM's similarities and the labels")
    return w, w0 / w


def vlm_matrix(img: np.ndarray, txt: np.ndarray, a: float, b: float) -> np.ndarray:
    cos = np.asarray(img, np.float64) @ np.asarray(txt, np.float64).T
    return (1.0 / (1.0 + np.exp(-a * (cos + b)))).astype(np.float32)


def cached_text_embeddings(path, model, tokenizer, concepts: list[str], template: str, meta: dict) -> np.ndarray:
    """Text embeddings of `concepts`, encoding only those the cache at `path` lacks (the
    cache is valid for the same model and template, recorded in its metadata)."""
    have: dict[str, np.ndarray] = {}
    if Path(path).is_file():
        names, emb, old = _read_vectors(path, "concept", "text embeddings")
        if old == meta:
            have = dict(zip(names, emb))
    missing = [c for c in concepts if c not in have]
    if missing:
        have.update(zip(missing, text_embeddings(model, tokenizer, missing, template)))
        names = sorted(have)
        _write_vectors(path, "concept", pa.array(names, pa.string()), np.stack([have[n] for n in names]), meta)
    return np.stack([have[c] for c in concepts])


def concept_matrix(img_ids, img_emb, concepts: list[str], txt_emb, label_ids, labels, label_names,
                   calibration: dict | None = None):
    """(DataFrame image_id + one column per concept, metadata with the calibration).

    `calibration` ({a, b, ...}, e.g. the one stored beside a trained model) is used as is;
    without it (a, b) are fitted on the concepts of the set that `label_names` also has, on
    the images `label_ids` (the train split), and the metadata says what they came from."""
    import pandas as pd

    if calibration is None:
        calibration = fit_calibration(img_ids, img_emb, concepts, txt_emb, label_ids, labels, label_names)
    a, b = float(calibration["a"]), float(calibration["b"])
    P = vlm_matrix(img_emb, txt_emb, a, b)
    df = pd.DataFrame({"image_id": np.asarray(img_ids, np.int64)} | {c: P[:, k] for k, c in enumerate(concepts)})
    return df, {"source": "vlm", "calibration": calibration}


def _labelled(img_ids, img_emb, concepts, txt_emb, label_ids, labels, label_names):
    """(cos (n, m), 0/1 labels (n, m), matched concept names) over the labelled images and
    the concepts of the set that the labels also name."""
    pairs = matched_labels(concepts, label_names)
    if not pairs:
        raise DataError(f"no concept of the set is labelled in the dataset; calibration needs some "
                        f"(labelled: {', '.join(label_names[:10])}, ...)")
    pos = {int(i): k for k, i in enumerate(label_ids)}
    rows = [k for k, i in enumerate(img_ids) if int(i) in pos]
    if not rows:
        raise DataError("no embedded image has labels: the image ids do not overlap")
    cos = np.asarray(img_emb, np.float64)[rows] @ np.asarray(txt_emb, np.float64)[[i for i, _ in pairs]].T
    lab = np.asarray(labels)[[pos[int(img_ids[k])] for k in rows]][:, [j for _, j in pairs]]
    return cos, lab, [concepts[i] for i, _ in pairs]


def fit_calibration(img_ids, img_emb, concepts, txt_emb, label_ids, labels, label_names) -> dict:
    """{a, b, labelled_concepts, images}: BCE fit over every labelled (image, concept) pair."""
    cos, lab, names = _labelled(img_ids, img_emb, concepts, txt_emb, label_ids, labels, label_names)
    a, b = calibrate(cos, lab)
    log.info("calibration a=%.4f b=%.4f from %d labelled concepts x %d images", a, b, len(names), len(cos))
    return {"a": a, "b": b, "labelled_concepts": names, "images": len(cos)}


def zero_shot_auc(img_ids, img_emb, concepts, txt_emb, label_ids, labels, label_names):
    """Per labelled concept: ROC AUC of cos(image, concept text) for its presence, with the
    positive and negative counts; NaN where the images hold only one of the two."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    cos, lab, names = _labelled(img_ids, img_emb, concepts, txt_emb, label_ids, labels, label_names)
    rows = []
    for j, name in enumerate(names):
        y = lab[:, j] > 0.5
        auc = roc_auc_score(y, cos[:, j]) if 0 < y.sum() < len(y) else float("nan")
        rows.append((name, float(auc), int(y.sum()), int((~y).sum())))
    return pd.DataFrame(rows, columns=["concept", "auc", "positives", "negatives"])
