"""Layer explanation tables on a tiny generated world with planted units."""

from collections import OrderedDict

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from nexplain.activations.activations import extract_batches
from nexplain.compositional.explain import Settings, explain_layer, merge_tables, select_units, write_table
from nexplain.compositional.formulas import evaluate, leaf, parse
from nexplain.compositional.masks import ConceptStore
from nexplain.compositional.store import open_store
from nexplain.data.broden import open_broden
from nexplain.data.concepts import PackedMasks, build_concept_tables
from nexplain.data.world import generate_world
from nexplain.errors import ConfigError, DataError

N, S = 40, 16  # images, mask size (maps are planted at mask size: upsampling is the identity)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    generate_world(root / "world", n_images=N, image_size=32, mask_size=S, seed=3,
                   splits={"train": 0.6, "val": 0.2, "test": 0.2})
    build_concept_tables(open_broden(root / "world"), root / "concepts", progress=False)
    store = ConceptStore.from_packed(PackedMasks(root / "concepts" / "masks"))
    dense = np.stack([_dense(store, c) for c in range(store.n_concepts)])  # (C, N, S, S)
    pixel = [c for c in range(store.n_concepts) if 0 < dense[c].mean() < 0.3]
    # a pair that overlaps without nesting, so a OR b and a AND NOT b are new masks
    parts = {(a, b): min((dense[a] & dense[b]).sum(), (dense[a] & ~dense[b]).sum(), (dense[b] & ~dense[a]).sum())
             for a in pixel for b in pixel if a < b}
    a, b = max(parts, key=parts.get)
    assert parts[(a, b)] >= 5
    return root, dense, store, (a, b)


def _dense(store, c):
    return evaluate(leaf(c), store).to_dense()


def _mask_of(text, store, names):
    return evaluate(parse(text, names), store).to_dense()


def _write_maps(path, maps):
    """Planted (N, U, S, S) maps as an activation table, through the real writer."""
    module = torch.nn.Sequential(OrderedDict(body=torch.nn.Identity()))
    batch = (torch.from_numpy(maps.astype(np.float32)), np.arange(len(maps)))
    extract_batches(module, "body", [batch], len(maps), path.parent / "summary.parquet", path)
    return path


def _q_for(mask):
    """A quantile whose threshold falls between the planted cells (~1) and the rest (~0)."""
    return (mask.size - mask.sum() - 0.5) / (mask.size - 1)  # numpy's linear quantile position


@pytest.fixture(scope="module")
def planted(world):
    root, dense, store, (a, b) = world
    rng = np.random.default_rng(0)
    f_or = dense[a] | dense[b]
    units = [
        f_or + 0.001 * rng.random((N, S, S)),                    # a OR b at the top
        np.zeros((N, S, S)),                                       # dead: never fires
        np.full((N, S, S), 0.7),                                   # constant
        1.0 * (dense[a] & ~dense[b]) + 2.0 * dense[b],             # two ranges: a AND NOT b, then b
    ]
    maps = np.stack(units, axis=1)
    return _write_maps(root / "acts" / "maps.parquet", maps), root / "concepts", dense, (a, b), f_or


def test_select_units_and_shards():
    assert select_units("all", 5).tolist() == [0, 1, 2, 3, 4]
    assert select_units("0-2,4", 6).tolist() == [0, 1, 2, 4]
    assert select_units([3, 1], 6, shard=(1, 2)).tolist() == [3]
    assert select_units("all", 7, shard=(1, 3)).tolist() == [1, 4]
    with pytest.raises(ConfigError, match="units 0..5"):
        select_units("4-9", 6)


def test_coex_recovers_a_planted_or_and_marks_dead_units(planted):
    maps, concepts, dense, _, f_or = planted
    store, names = open_store(concepts)
    table, seconds = explain_layer(maps, concepts, Settings("coex", quantile=_q_for(f_or)), progress=False)
    rows = table.to_pylist()
    assert [r["status"] for r in rows[:3]] == ["ok", "dead", "dead"]
    top = rows[0]
    assert top["iou"] == pytest.approx(1.0) and top["n_cells"] == f_or.sum() and top["length"] >= 2
    assert (_mask_of(top["formula"], store, names) == f_or).all()  # the string parses back to the plant
    assert top["detection_accuracy"] == pytest.approx(1.0) and top["activation_coverage"] == pytest.approx(1.0)
    assert top["visited"] >= top["visited_compound"] > 0
    assert rows[1]["formula"] is None and rows[1]["iou"] == 0.0
    assert seconds.num_rows == 4


def test_clustered_explains_each_range_with_its_own_formula(planted):
    maps, concepts, dense, (a, b), _ = planted
    store, names = open_store(concepts)
    s = Settings("clustered", k=2, start_beam=10)
    low, high = explain_layer(maps, concepts, s, units=[3], progress=False)[0].to_pylist()
    assert (low["cluster"], high["cluster"]) == (0, 1)
    assert low["lo"] == 0 and low["hi"] == pytest.approx(1.5) and high["lo"] == low["hi"] and high["hi"] == 2
    assert low["iou"] == pytest.approx(1.0) and (_mask_of(low["formula"], store, names) == dense[a] & ~dense[b]).all()
    assert high["iou"] == pytest.approx(1.0) and (_mask_of(high["formula"], store, names) == dense[b]).all()


def test_workers_and_shards_give_the_same_table(planted, tmp_path):
    maps, concepts, _, _, f_or = planted
    s = Settings("coex", quantile=_q_for(f_or))
    one = explain_layer(maps, concepts, s, progress=False)[0]
    two = explain_layer(maps, concepts, s, workers=2, progress=False)[0]
    assert one.equals(two)
    parts = []
    for i in range(3):
        part = explain_layer(maps, concepts, s, shard=(i, 3), progress=False)[0]
        write_table(part, tmp_path / f"p{i}.parquet", {"shard": [i, 3]})
        parts.append(tmp_path / f"p{i}.parquet")
    assert merge_tables(parts).equals(one)
    write_table(one, tmp_path / "a.parquet", {"m": 1})
    write_table(two, tmp_path / "b.parquet", {"m": 1})
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert pq.read_table(tmp_path / "a.parquet").num_rows == 4


def test_activations_of_another_dataset_are_refused(world, tmp_path):
    root = world[0]
    maps = _write_maps(tmp_path / "maps.parquet", np.zeros((N - 1, 1, S, S)))
    with pytest.raises(DataError, match="covers 39 images but the concept masks"):
        explain_layer(maps, root / "concepts", Settings("netdissect"), progress=False)


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="valid choices: netdissect, coex, clustered"):
        Settings("lime")


def test_saved_geometry_gives_the_same_table(planted, tmp_path):
    from nexplain.compositional.store import save_geometry

    maps, concepts, _, _, f_or = planted
    save_geometry(concepts, tmp_path / "geometry.npz")
    s = Settings("coex", quantile=_q_for(f_or))
    fresh = explain_layer(maps, concepts, s, progress=False)[0]
    saved = explain_layer(maps, concepts, s, progress=False, geometry=tmp_path / "geometry.npz")[0]
    assert saved.equals(fresh)
    np.savez(tmp_path / "short.npz", box=np.zeros((3, 4), np.int16), rect=np.zeros((3, 4), np.int16),
             meets=np.zeros((2, 2), bool))
    with pytest.raises(DataError, match="geometry of 3 pairs"):
        explain_layer(maps, concepts, s, progress=False, geometry=tmp_path / "short.npz")
    np.save(tmp_path / "old.npy", np.zeros((3, 8), np.int16))  # the format before the meets matrix
    with pytest.raises(DataError, match="not a geometry file"):
        explain_layer(maps, concepts, s, progress=False, geometry=tmp_path / "old.npy")


def test_scores_summarise_the_explained_rows(planted):
    from nexplain.compositional.scores import scores

    maps, concepts, _, _, f_or = planted
    table = explain_layer(maps, concepts, Settings("coex", quantile=_q_for(f_or)), progress=False)[0]
    s = scores(table)
    ok = [r for r in table.to_pylist() if r["status"] == "ok"]
    assert (s["units"], s["rows"], s["explained"], s["dead_units"]) == (4, 4, len(ok), 2)
    assert s["mean_iou"] == pytest.approx(np.mean([r["iou"] for r in ok]), abs=1e-6)


@pytest.mark.parametrize("method", ["netdissect", "coex", "clustered"])
def test_the_python_api_gives_the_rules_table_from_arrays(planted, method):
    """nx.<method> on in-memory maps and masks is the code the explain rule runs: same table."""
    import nexplain as nx
    from nexplain.activations.read import read_all_maps

    maps_path, concepts, *_ = planted
    store, names = open_store(concepts)
    ids, maps = read_all_maps(maps_path)
    assert ids.tolist() == list(range(N))
    rule, _ = explain_layer(maps_path, concepts, Settings(method), progress=False)
    api = getattr(nx, method)(maps, store, names)
    assert len(api) >= 4 and set(api["status"]) >= {"ok", "dead"}
    pd.testing.assert_frame_equal(api, rule.to_pandas())


@pytest.mark.parametrize("method", ["coex", "clustered"])
def test_exact_search_records_the_beam_the_optimum_and_the_proof(planted, method):
    maps, concepts, _, _, f_or = planted
    kw = {"quantile": _q_for(f_or)} if method == "coex" else {"k": 2, "beam": 1, "start_beam": 1}
    beam = explain_layer(maps, concepts, Settings(method, **kw), progress=False)[0].to_pandas()
    exact = explain_layer(maps, concepts, Settings(method, search="exact", **kw), progress=False)[0].to_pandas()
    assert beam[["beam_iou", "gap", "pruned_bound"]].isna().all().all()
    ok = exact[exact["status"] == "ok"]
    assert len(ok) >= 1 and (exact["status"] == beam["status"]).all()
    assert np.array_equal(ok["beam_iou"], beam.loc[ok.index, "iou"])  # the beam is the pipeline's own
    assert (ok["iou"] >= ok["beam_iou"]).all() and np.allclose(ok["gap"], ok["iou"] - ok["beam_iou"])
    assert (ok["pruned_bound"] < ok["score"]).all()
    two = explain_layer(maps, concepts, Settings(method, search="exact", **kw), workers=2, progress=False)[0]
    assert two.to_pandas().equals(exact)


def test_unknown_search_names_the_choices():
    with pytest.raises(ConfigError, match="mmesh, beam, exact"):
        Settings("coex", search="optimal")
