"""Gradient x Activation relevance of earlier channels for a unit (docs/methods.md, PURE).

For unit k of a layer and image x, the backward pass is seeded by z = 1/2 ||relu(A_k(x))||^2
(A_k the unit's spatial map); the relevance of channel i of an earlier layer is
R_i = sum over space of A_i * dz/dA_i, then divided by the L1 norm over channels.

Work is batched over (unit, image) pairs: a batch holds any mix of units and images, the
forward pass stops at the unit's layer, and one backward pass gives every earlier layer's
relevances for every pair of the batch. In eval mode the images of a batch do not interact,
so the gradient of the summed seeds equals each pair's own gradient.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from nexplain.activations.hooks import TraceDict
from nexplain.compute import Compute
from nexplain.data.images import ImageTable, load_image


def top_images(ids: np.ndarray, peak: np.ndarray, m: int) -> np.ndarray:
    """(U, m) image ids: per unit the m images with the largest spatial max `peak` (N, U),
    ties broken by lower image id."""
    ids = np.asarray(ids, np.int64)
    order = np.lexsort((np.broadcast_to(ids[:, None], peak.shape), -peak), axis=0)  # per column
    return ids[order[:min(m, len(ids))].T]


def top_pairs(ids: np.ndarray, peak: np.ndarray, units: np.ndarray, m: int) -> np.ndarray:
    """(P, 2) int64 rows of (unit, image id): each of `units` with its `top_images`, unit by unit."""
    top = top_images(ids, peak[:, units], m)
    return np.column_stack([np.repeat(units, top.shape[1]), top.ravel()]).astype(np.int64)


def image_loader(table: ImageTable, transform, ids: np.ndarray):
    """`load(ids)` for `relevances`: every distinct image of `ids` decoded and transformed once, up front."""
    distinct = np.unique(ids)
    # One thread: a small image's ToTensor and Normalize are elementwise (the same bytes on any
    # thread count), and on a busy machine two threads made each image 13-60x slower (wake-ups).
    with torch_threads(1):
        images = torch.stack([transform(load_image(table.paths[int(i)])) for i in distinct])
    return lambda batch: images[torch.as_tensor(np.searchsorted(distinct, batch))]


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to `n` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pair_relevances(model: torch.nn.Module, x: torch.Tensor, units: torch.Tensor, layer: str,
                    earlier: list[str]) -> dict[str, torch.Tensor]:
    """{earlier layer: (B, C) L1-normalised relevances} for pairs (x[b], units[b]); a pair whose
    relevances are all zero (the unit is silent on that image) stays all zero."""
    x = x.detach()
    with TraceDict(model, [*earlier, layer], stop=True) as td:
        model(x)
    out = td[layer].output
    seed = 0.5 * out[torch.arange(len(units)), units].clamp_min(0).pow(2).sum()
    acts = [td[name].output for name in earlier]
    if not seed.requires_grad:  # nothing reaches the seed (e.g. every pair silent): no relevance
        return {name: torch.zeros(a.shape[:2], device=a.device) for name, a in zip(earlier, acts)}
    grads = torch.autograd.grad(seed, acts, allow_unused=True)
    rel = {}
    for name, a, g in zip(earlier, acts, grads):
        r = torch.zeros(a.shape[:2], device=a.device) if g is None else (a * g).flatten(2).sum(2).detach()
        rel[name] = r / r.abs().sum(1, keepdim=True).clamp_min(1e-30)
    return rel


def relevances(model: torch.nn.Module, load, pairs: np.ndarray, layer: str, earlier: list[str],
               batch_size: int = 32, progress: bool = True, compute: Compute | None = None) -> dict[str, np.ndarray]:
    """{earlier layer: (P, C) float32} for `pairs` (P, 2) rows of (unit, image id); `load(ids)`
    returns the images as a (n, 3, H, W) tensor in the model's input form. Runs on `compute`'s
    device (default: the CPU)."""
    compute = compute or Compute()
    model.to(compute.device).eval()
    parts: dict[str, list] = {name: [] for name in earlier}
    for s in tqdm(range(0, len(pairs), batch_size), desc=f"relevance {layer}", disable=not progress):
        chunk = pairs[s:s + batch_size]
        rel = pair_relevances(model, compute.to(load(chunk[:, 1])), compute.to(torch.as_tensor(chunk[:, 0])),
                              layer, earlier)
        for name in earlier:
            parts[name].append(rel[name].cpu().numpy().astype(np.float32))
    return {name: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for name, v in parts.items()}


def relevance_table(pairs: np.ndarray, rel: dict[str, np.ndarray], earlier: list[str]) -> pa.Table:
    """One table for every earlier layer: unit, image_id, layer, then channels c0000... (null past
    a layer's own channels); layer by layer, each in the order of `pairs`."""
    n, width = len(pairs), max(r.shape[1] for r in rel.values())
    full = np.full((len(earlier) * n, width), np.nan, np.float32)
    for k, layer in enumerate(earlier):
        full[k * n:(k + 1) * n, :rel[layer].shape[1]] = rel[layer]
    cols = {"unit": np.tile(pairs[:, 0], len(earlier)), "image_id": np.tile(pairs[:, 1], len(earlier)),
            "layer": np.repeat(earlier, n)}
    return pa.table({**{k: pa.array(v) for k, v in cols.items()},
                     **{f"c{j:04d}": pa.array(full[:, j], from_pandas=True) for j in range(width)}})
