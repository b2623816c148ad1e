"""Label masking of explanations with a real (random-weight) ResNet on a tiny world."""

import numpy as np
import pytest
import torch
import torchvision

from nexplain.compositional.labelmask import label_masking_table
from nexplain.compositional.store import open_store
from nexplain.data.broden import open_broden
from nexplain.data.concepts import build_concept_tables
from nexplain.data.world import generate_world
from nexplain.models.load import LoadedModel, input_transform


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    generate_world(root / "world", n_images=30, image_size=32, mask_size=16, seed=1,
                   splits={"train": 0.6, "val": 0.2, "test": 0.2})
    build_concept_tables(open_broden(root / "world"), root / "concepts", progress=False)
    torch.manual_seed(0)
    module = torchvision.models.resnet18(num_classes=10).eval()
    loaded = LoadedModel(module, input_transform({"size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}), {})
    store, names = open_store(root / "concepts")
    return loaded, open_broden(root / "world").table, store, names


def _row(unit, formula, lo=-1e9, hi=1e9, cluster=0):
    return {"unit": unit, "cluster": cluster, "status": "ok", "formula": formula, "lo": lo, "hi": hi}


def test_a_mask_covering_whole_images_keeps_the_response(setup):
    loaded, table, store, names = setup
    scene = next(n for c, n in enumerate(names) if store.sizes[c] and np.all(store.areas(c) == 16 * 16))
    out = label_masking_table(loaded, table, "layer3", [_row(3, scene)], store, names,
                              clustered=False, n_images=4).to_pylist()
    assert out[0]["n_images"] == 4 and out[0]["label_masking"] == pytest.approx(1.0, abs=1e-6)


def test_a_small_mask_loses_part_of_the_response_and_is_seeded(setup):
    loaded, table, store, names = setup
    small = min((c for c in range(store.n_concepts) if 0 < store.sizes[c] and np.all(store.areas(c) < 64)),
                key=lambda c: -store.sizes[c])
    rows = [_row(5, names[small]), {**_row(6, names[small]), "status": "dead"}]
    first = label_masking_table(loaded, table, "layer3", rows, store, names, clustered=False, n_images=3)
    again = label_masking_table(loaded, table, "layer3", rows, store, names, clustered=False, n_images=3)
    assert first.equals(again) and first.num_rows == 1  # dead rows are skipped
    assert 0.0 <= first.to_pylist()[0]["label_masking"] < 0.999


def test_ranges_match_the_bitmaps_and_token_layers_are_refused(setup):
    from nexplain.compositional.labelmask import _in_range
    from nexplain.errors import ModelError

    a = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert _in_range({"lo": -2.0, "hi": 0.0, "cluster": 0}, True, False).contains(a).tolist() == \
        [True, True, True, False, False]  # a signed unit's lowest tile range holds its minimum
    assert _in_range({"lo": -2.0, "hi": 1.0, "cluster": 0}, True, True).contains(a).tolist() == \
        [False, True, True, False, False]  # strict: open interval, as the reference
    assert _in_range({"lo": 0.5, "hi": 9.0, "cluster": 0}, False, False).contains(a).tolist() == \
        [False, False, False, True, True]  # top rows: above the threshold
    loaded, table, store, names = setup
    with pytest.raises(ModelError, match="fc gives Tensor"):
        label_masking_table(loaded, table, "fc", [_row(0, names[int(np.argmax(store.sizes))])], store, names,
                            clustered=False)
