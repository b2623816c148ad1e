"""Linear Explanations: planted units, the length cap, elastic-net optimality, a direct greedy."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet

from nexplain.errors import ConfigError, DataError
from nexplain.linear.linear import ConceptFilter, LinearSettings, elastic_net, explain_units, keep_concepts, linear_table
from nexplain.splits import make_splits, split_masks


def concept_matrix(rng, n=3000, c=30):
    """Probabilities in [0, 1]: a mix of rare binary labels and smooth scores."""
    P = np.where(rng.random((n, c)) < 0.5, rng.random((n, c)) < 0.2, rng.beta(0.5, 0.5, (n, c)))
    return P.astype(np.float64)


def masks_for(n, seed=0):
    return split_masks(make_splits(np.arange(n), seed=seed), np.arange(n))


def test_planted_units_recovered():
    rng = np.random.default_rng(0)
    P = concept_matrix(rng)
    q0 = 2 * P[:, 3] + 1 * P[:, 17] + 0.05 * rng.standard_normal(len(P))
    q1 = 1.5 * P[:, 8] - 0.2 + 0.05 * rng.standard_normal(len(P))
    exps, keep, W = explain_units(P, np.column_stack([q0, q1]), masks_for(len(P)))
    assert keep.all()
    e0, e1 = exps
    assert set(e0.concepts) == {3, 17} and len(e0.concepts) == 2
    w = dict(zip(e0.concepts, e0.weights))
    assert w[3] == pytest.approx(2.0, rel=0.05) and w[17] == pytest.approx(1.0, rel=0.05)
    assert e0.val_corr > 0.95 and e0.train_corr > 0.95
    assert e1.concepts == (8,) and e1.weights[0] == pytest.approx(1.5, rel=0.05)
    assert e1.bias == pytest.approx(-0.2, abs=0.02)


def direct_greedy(P, q, tr, va, w, allowed, v, r, tol):
    """Algorithm 1 of the paper on the raw data, with lstsq and np.corrcoef."""
    chosen, banned, best, fit = [], set(np.flatnonzero(~allowed)), 0.0, None
    while len(chosen) < v:
        cands = [int(i) for i in np.argsort(-w, kind="stable") if i not in banned and i not in chosen][:r]
        if not cands:
            break
        scores = {}
        for c in cands:
            S = chosen + [c]
            X = np.column_stack([P[tr][:, S], np.ones(tr.sum())])
            coef = np.linalg.lstsq(X, q[tr], rcond=None)[0]
            pred = np.column_stack([P[va][:, S], np.ones(va.sum())]) @ coef
            scores[c] = (np.corrcoef(pred, q[va])[0, 1], coef)
        good = {c: s for c, s in scores.items() if s[0] >= best + tol}
        banned |= set(scores) - set(good)
        if not good:
            break
        c = max(good, key=lambda k: (good[k][0], -cands.index(k)))
        chosen.append(c)
        best, fit = good[c]
    return chosen, fit, best


@pytest.mark.parametrize("v", [2, 10])
def test_greedy_equals_direct_algorithm(v):
    """v=2 is the cap case: the returned concepts are the ones chosen, with their fit."""
    rng = np.random.default_rng(1)
    P = concept_matrix(rng, 2000, 25)
    Q = P[:, [2, 5, 9, 11]] @ rng.uniform(0.5, 2, (4, 3)) + 0.3 * rng.standard_normal((2000, 3))
    m = masks_for(len(P), seed=3)
    s = LinearSettings(v=v, r=4, tol=0.005)
    exps, keep, W = explain_units(P, Q, m, s)
    for u, e in enumerate(exps):
        chosen, coef, best = direct_greedy(P, Q[:, u], m["train"], m["val"], W[:, u], keep, v, 4, 0.005)
        assert list(e.concepts) == chosen and len(chosen) <= v
        np.testing.assert_allclose(e.weights, coef[:-1], rtol=1e-7, atol=1e-9)
        assert e.bias == pytest.approx(coef[-1], rel=1e-7, abs=1e-9)
        assert e.val_corr == pytest.approx(best, rel=1e-9)
    lengths = [len(e.concepts) for e in exps]
    assert max(lengths) == 2 if v == 2 else 2 < max(lengths) < v  # v=2: the cap is reached


def test_elastic_net_matches_sklearn_and_kkt():
    rng = np.random.default_rng(2)
    P = concept_matrix(rng, 400, 12)
    Q = P[:, :3] @ rng.standard_normal((3, 4)) + 0.5 * rng.standard_normal((400, 4))
    s = LinearSettings(lam=0.05, alpha=0.99, cd_tol=1e-10, max_iter=10000)
    W = elastic_net(P, Q, s)
    X = (P - P.mean(0)) / P.std(0)
    Y = (Q - Q.mean(0)) / Q.std(0)
    ref = ElasticNet(alpha=0.05, l1_ratio=0.99, fit_intercept=False, tol=1e-12, max_iter=100000).fit(X, Y)
    np.testing.assert_allclose(W, ref.coef_.T, atol=1e-7)
    # optimality of 1/(2N)||Xw - y||^2 + lam((1 - a)/2 ||w||^2 + a ||w||_1), from first principles
    grad = X.T @ (X @ W - Y) / len(X) + 0.05 * 0.01 * W
    on = W != 0
    np.testing.assert_allclose(grad[on], -0.05 * 0.99 * np.sign(W[on]), atol=1e-6)
    assert (np.abs(grad[~on]) <= 0.05 * 0.99 + 1e-6).all()
    assert 0 < on.sum() < on.size  # sparse, not empty


@pytest.mark.parametrize("lam, alpha, max_iter, tol, stopped", [(0.05, 0.99, 1000, 1e-6, 0), (0.002, 0.5, 1000, 1e-10, 0),
                                                               (0.01, 1.0, 30, 1e-6, 3)])
def test_enet_gram_is_enet_path_to_the_bit(lam, alpha, max_iter, tol, stopped):
    """The numba port gives scikit-learn's weights exactly, and says when it stopped at max_iter:
    the default penalty, a dense fit (many non-zeros and sweeps), and the lasso (no L2) with a
    near-copy of a concept, cut short for 3 of its 5 targets; all with a zero column."""
    from sklearn.linear_model import enet_path

    from nexplain.linear.cdgram import enet_gram

    rng = np.random.default_rng(9)
    P = concept_matrix(rng, 600, 40)
    if stopped:
        P[:, 7] = P[:, 3] + 1e-3 * rng.standard_normal(600)
    Y = P[:, :6] @ rng.uniform(0.5, 2, (6, 5)) + 0.3 * rng.standard_normal((600, 5))
    X, Y = (P - P.mean(0)) / P.std(0), (Y - Y.mean(0)) / Y.std(0)
    X[:, 11] = 0.0
    G = X.T @ X
    for y in np.ascontiguousarray(Y.T):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, ref, _ = enet_path(X, y, l1_ratio=alpha, alphas=[lam], precompute=G, Xy=X.T @ y,
                                  max_iter=max_iter, tol=tol, check_input=False)
        w, converged = enet_gram(G, G.diagonal().copy(), X.T @ y, np.dot(y, y), lam * alpha * 600,
                                 lam * (1 - alpha) * 600, max_iter, tol)  # enet_path's order of products
        assert np.array_equal(w, ref[:, 0]) and (w != 0).any() and w[11] == 0
        assert converged == (not any(issubclass(c.category, ConvergenceWarning) for c in caught))
        stopped -= not converged
    assert stopped == 0


def test_concept_filter_looks_at_train_only():
    rng = np.random.default_rng(4)
    P = concept_matrix(rng, 1000, 6)
    m = masks_for(1000)
    P[:, 1] = 0.0
    P[m["test"], 1] = 1.0           # only fires on test: must be dropped
    P[:, 2] = 0.3                   # constant: std 0
    P[:, 4] = np.where(m["train"], 0.1, 1.0)  # weak on train: top-5 mean 0.1 < 0.5
    keep = keep_concepts(P[m["train"]])
    assert keep.tolist() == [True, False, False, True, False, True]


def test_dead_unit_and_bad_settings():
    rng = np.random.default_rng(5)
    P = concept_matrix(rng, 500, 8)
    Q = np.column_stack([np.full(500, 0.7), P[:, 1] + 0.1 * rng.standard_normal(500)])
    exps, _, W = explain_units(P, Q, masks_for(500))
    assert exps[0].dead and exps[0].concepts == () and np.isnan(exps[0].val_corr)
    assert (W[:, 0] == 0).all() and not exps[1].dead and exps[1].concepts[0] == 1
    with pytest.raises(ConfigError, match="alpha"):
        LinearSettings(alpha=0)
    with pytest.raises(ConfigError, match="v >= 1"):
        LinearSettings(v=0)


def test_concept_filter_is_a_setting():
    """`linear.concept_filter` as the rule's params carry it decides which concepts are kept:
    a rare strong concept passes with top 1 only, a weak one with a lower min_mean only."""
    rng = np.random.default_rng(6)
    P = concept_matrix(rng, 1000, 6)
    m = masks_for(1000)
    tr = np.flatnonzero(m["train"])
    P[:, 2] = 0.0
    P[tr[:2], 2] = 0.9                                  # top 1: 0.9; top 5: 0.36
    P[:, 4] = 0.4 * rng.random(1000)                    # top 5 just under 0.4
    Q = np.column_stack([P[:, 4] + 0.01 * rng.standard_normal(1000), P[:, 0]])
    kept = {}
    for top, min_mean in [(5, 0.5), (1, 0.5), (5, 0.3)]:
        config = {"linear": {"concept_filter": {"top": top, "min_mean": min_mean}}}
        s = LinearSettings(concept_filter=config["linear"]["concept_filter"])
        exps, keep, W = explain_units(P, Q, m, s)
        kept[top, min_mean] = np.flatnonzero(keep).tolist()
        assert all(keep[c] for e in exps for c in e.concepts) and (W[~keep] == 0).all()
        assert (linear_table(exps, list("abcdef"), keep, W)["n_concepts_kept"] == keep.sum()).all()
    assert kept == {(5, 0.5): [0, 1, 3, 5], (1, 0.5): [0, 1, 2, 3, 5], (5, 0.3): [0, 1, 2, 3, 4, 5]}
    assert exps[0].concepts[0] == 4  # the weak concept, once kept, explains unit 0
    assert LinearSettings().concept_filter == ConceptFilter(top=5, min_mean=0.5)  # docs/methods.md's values


@pytest.mark.reliability
def test_no_concept_passing_the_filter_is_a_one_line_error():
    rng = np.random.default_rng(7)
    P = 0.3 * rng.random((500, 8))
    P[:100, 2] = 0.42                                  # the best concept: top-5 mean 0.42 < 0.5
    m, Q = masks_for(500), rng.standard_normal((500, 2))
    with pytest.raises(DataError) as err:
        explain_units(P, Q, m, matrix="results/world/concept_matrix/label.parquet")
    assert str(err.value) == (
        "results/world/concept_matrix/label.parquet: none of its 8 concepts passes linear.concept_filter "
        "{top: 5, min_mean: 0.5}: the largest mean of a concept's top 5 train values is 0.42; "
        "lower linear.concept_filter.min_mean to 0.42 or less")
    _, keep, _ = explain_units(P, Q, m, LinearSettings(concept_filter={"top": 5, "min_mean": 0.42}))
    assert np.flatnonzero(keep).tolist() == [2]       # the advice works
    P[:, :] = 0.8                                      # above min_mean, but constant
    with pytest.raises(DataError, match=r"^m.parquet: none of its 8 concepts .* every concept is constant on "
                                        r"the train split \(std < 1e-05\); fix the concept matrix$"):
        keep_concepts(P[m["train"]], what="m.parquet")
    for bad in ({"top": 0, "min_mean": 0.5}, {"top": 5, "min_mean": 1.5}, {"top": 5, "mean": 0.5}, None):
        with pytest.raises(ConfigError, match="linear.concept_filter: need"):
            LinearSettings(concept_filter=bad)


@pytest.mark.reliability
def test_nan_is_refused_not_taken_for_a_dead_unit():
    """A constant unit is dead (flagged, NaN correlations); a NaN activation or concept value is
    an error naming the file, not a dead unit or a silently dropped concept."""
    rng = np.random.default_rng(8)
    P = concept_matrix(rng, 500, 8)
    Q = np.column_stack([np.zeros(500), P[:, 1] + 0.1 * rng.standard_normal(500)])
    m = masks_for(500)
    exps, keep, W = explain_units(P, Q, m)
    t = linear_table(exps, list("abcdefgh"), keep, W)
    assert t["dead"].tolist() == [True, False] and t.loc[0, "length"] == 0 and t.loc[0, "bias"] == 0.0
    assert np.isnan(t.loc[0, ["train_corr", "val_corr"]].astype(float)).all()
    assert np.isfinite(t.loc[1, ["train_corr", "val_corr"]].astype(float)).all()
    Q[7, 0] = np.nan
    with pytest.raises(DataError, match=r"^summary.parquet: 1 of its 2 units hold NaN or infinite values "
                                        r"\(first: unit 0\); NaN is not a dead unit"):
        explain_units(P, Q, m, activations="summary.parquet")
    Q[7, 0], P[3, 5] = 0.0, np.inf
    with pytest.raises(DataError, match=r"^label.parquet: 1 of its 8 concepts hold NaN or infinite values "
                                        r"\(first: concept 5\)"):
        explain_units(P, Q, m, matrix="label.parquet")
