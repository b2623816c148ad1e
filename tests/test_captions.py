"""Captions from Broden-format pixel labels: things, scenes, variants and prompts."""

import numpy as np
import pandas as pd

from broden_fixture import write_broden_fixture
from nexplain.data.broden import open_broden
from nexplain.vlm.captions import caption, caption_table, image_things, prompt

NAMES = {1: "red", 2: "blue", 10: "circle", 11: "star", 20: "striped", 30: "grass"}


def _seg():
    obj = np.zeros((6, 6), np.int32)
    obj[:3, :3], obj[3:, 3:] = 10, 11
    obj[0, 5] = 11  # a single stray cell of another tuple: below MIN_PIXELS, not a thing
    color = np.where(obj == 10, 1, np.where(obj == 11, 2, 0))
    color[0, 5] = 1
    texture = np.where(obj == 11, 20, 0)
    return {"color": [color], "object": [obj], "texture": [texture], "scene": [30], "part": [obj * 0]}


def test_things_are_label_tuples_under_the_object_mask():
    things, scene = image_things(_seg(), NAMES)
    assert scene == ["grass"]
    assert things == [{"object": "circle", "color": "red"},
                      {"object": "star", "color": "blue", "texture": "striped"}]


def test_things_without_object_labels():
    seg = _seg()
    del seg["object"]
    assert image_things(seg, NAMES) == ([], ["grass"])


def test_captions_name_the_things_and_vary_with_the_seed():
    things, scene = image_things(_seg(), NAMES)
    texts = [caption(np.random.default_rng([0, k]), things, scene) for k in range(20)]
    assert all("circle" in t and "star" in t for t in texts)
    assert sum("grass" in t for t in texts) >= 10  # the scene is named in most variants
    assert any("striped star" in t for t in texts) and any("blue star" in t for t in texts)
    assert len(set(texts)) >= 10
    again = [caption(np.random.default_rng([0, k]), things, scene) for k in range(20)]
    assert again == texts


def test_prompts_use_the_bare_name_or_a_category_template():
    rng = np.random.default_rng(0)
    out = {prompt(rng, "red_ball", "color") for _ in range(50)}
    assert "red ball" in out and out <= {"red ball", "something red ball", "a red ball object"}
    assert {prompt(rng, "x", None) for _ in range(5)} == {"x"}


def test_caption_table_on_a_broden_fixture(tmp_path):
    write_broden_fixture(tmp_path / "b")
    ds = open_broden(tmp_path / "b")
    from nexplain.data.concepts import column_names
    names = column_names(ds.concepts)
    presence = pd.DataFrame({"image_id": np.arange(len(ds))} | {n: np.zeros(len(ds)) for n in names})
    presence.loc[0, names[0]] = 1.0
    df = caption_table(ds, presence, variants=3, seed=1, progress=False)
    assert list(df.columns) == ["image_id", "captions", "concepts", "prompts"]
    assert df["captions"].map(len).tolist() == [3] * len(ds)
    assert df.loc[0, "concepts"] == [names[0]] and len(df.loc[0, "prompts"]) == 1
    assert df.loc[1, "concepts"] == [] and df.loc[1, "prompts"] == []
    assert caption_table(ds, presence, variants=3, seed=1, progress=False).equals(df)
