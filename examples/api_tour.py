# %% [markdown]
# # The Python API on in-memory arrays
#
# Every method of the workflow, called on numpy arrays: the same code the rules run on
# Parquet tables. Run it as a script (`python examples/api_tour.py`) or open it as a
# notebook (VS Code and Jupytext read the `# %%` cells). The tests run it.

# %%
import numpy as np

import nexplain as nx

rng = np.random.default_rng(0)
N, S = 200, 16                      # images, mask size

# %% [markdown]
# ## Concepts and units with a known answer
# Three concepts as pixel masks (C, N, H, W), and four units as activation maps (N, U, h, w):
# a "sky" detector, a unit for "sky OR water", a dead one, and a unit whose low range is
# "grass" and whose high range is "sky".

# %%
names = ["sky", "water", "grass"]
masks = np.zeros((3, N, S, S), bool)
masks[0, rng.random(N) < 0.4, :S // 3] = True           # sky: the top third
masks[1, rng.random(N) < 0.3, 2 * S // 3:] = True       # water: the bottom third
masks[2, rng.random(N) < 0.5, S // 3:2 * S // 3] = True  # grass: the middle band
noise = 0.01 * rng.random((N, S, S))
maps = np.stack([masks[0] + noise,
                 (masks[0] | masks[1]) + noise,
                 np.zeros((N, S, S)),
                 1.0 * masks[2] + 2.0 * masks[0] + noise], axis=1).astype(np.float32)
store = nx.concept_store(masks)

# %% [markdown]
# ## NetDissect, CoEx and Clustered CoEx
# One row per unit (per unit and range for Clustered CoEx), with the formula and its IoU.

# %%
print(nx.netdissect(maps, store, names, quantile=0.85)[["unit", "status", "formula", "iou"]])
print(nx.coex(maps, store, names, length=2, quantile=0.8)[["unit", "status", "formula", "iou"]])
ranges = nx.clustered(maps, store, names, k=3, units=[3])
print(ranges[["unit", "cluster", "lo", "hi", "formula", "iou"]])

# %% [markdown]
# ## Linear Explanations and simulation
# Image-level concept scores P (N, C) in [0, 1] and unit activations Q (N, U), here the
# spatial means of the maps; one split name per image.

# %%
P = masks.mean((2, 3)) * 3          # the share of the image each concept covers, scaled to [0, 1]
Q = maps.mean((2, 3))
splits = rng.choice(["train", "val", "test"], size=N, p=[0.6, 0.2, 0.2])
le = nx.linear(P.T, Q, splits, names, concept_filter=nx.ConceptFilter(top=5, min_mean=0.5))
print(le[["unit", "concepts", "weights", "val_corr", "dead"]])
scores = nx.simulate(le, P.T, names, Q, splits)
print(scores[["explainer", "unit", "corr_test"]])

# %% [markdown]
# ## PURE circuits
# Per unit, the relevances of an earlier layer's channels on its top-M images (U, M, C), and
# an embedding of those images (U, M, D): how well do distances in relevance space follow
# distances in the embedding?

# %%
U, M = 4, 30
kind = rng.integers(0, 2, (U, M))                        # two kinds of top image per unit
embedding = kind[..., None] * 4.0 + rng.normal(0, 0.2, (U, M, 8))
relevance = {"layer2": kind[..., None] * 2.0 + rng.normal(0, 0.2, (U, M, 16)),
             "layer1": rng.normal(0, 1.0, (U, M, 16))}
circuits, correlations, summary = nx.pure(relevance, embedding, k=2)
print(summary)
