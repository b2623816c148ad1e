"""Object crops from Broden-format pixel labels: one per visible thing, with that thing's concepts."""

import numpy as np
import pytest

from nexplain.data.broden import open_broden
from nexplain.data.concepts import column_names
from nexplain.data.world import SHAPES, generate_world
from nexplain.errors import DataError
from nexplain.vlm.crops import object_crops


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("crops") / "world"
    generate_world(root, n_images=24, image_size=112, mask_size=56, seed=5, progress=False)
    return open_broden(root)


def test_every_present_shape_has_a_crop_that_names_it(world):
    ids = np.arange(len(world))
    crops = object_crops(world, ids, input_size=112, size=48, progress=False)
    names = np.array(column_names(world.concepts))
    pairs = covered = 0
    for k, image_id in enumerate(ids):
        m = world.concept_masks(int(image_id))
        shapes = {names[c] for c in m.concepts if names[c] in SHAPES}
        mine = crops[crops["row"] == k]
        named = {c for row in mine["concepts"] for c in row if c in SHAPES}
        assert named <= shapes  # no crop names an absent shape
        assert all(set(row) & shapes for row in mine["concepts"])  # each names the thing it is centred on
        pairs, covered = pairs + len(shapes), covered + len(named)
        scene = [names[c] for c, lvl in zip(m.concepts, m.image_level) if lvl]
        assert all(set(scene) <= set(row) for row in mine["concepts"])  # the scene is behind every crop
    assert covered >= 0.9 * pairs  # all but occluded slivers get a crop
    assert crops["cy"].between(24, 88).all() and crops["cx"].between(24, 88).all()  # inside the image


def test_centres_map_through_the_resize_and_centre_crop(world):
    full = object_crops(world, [0], input_size=112, size=16, progress=False)
    half = object_crops(world, [0], input_size=56, size=16, progress=False)
    inside = full["cy"].between(16, 96) & full["cx"].between(16, 96)  # not clamped at either size
    assert np.allclose(full.loc[inside, ["cy", "cx"]].to_numpy() / 2, half.loc[inside, ["cy", "cx"]].to_numpy())


def test_a_crop_larger_than_the_input_is_an_error(world):
    with pytest.raises(DataError, match="crop size 128 is larger than the model input \\(112 px\\)"):
        object_crops(world, [0], input_size=112, size=128, progress=False)
