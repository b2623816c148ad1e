"""Counterfactual world images: a spec re-renders its image exactly, and an edit changes only its own pixels."""

import numpy as np
import pytest
from PIL import Image

from nexplain.causal.edits import WorldSpecs, add, image_of, pair, present, remove, toggles
from nexplain.data.world import generate_world, make_sample, make_spec, render_spec

SEED, N, MASK = 4, 112, 56


def _spec(i, cls=0):
    return make_spec(SEED, i, cls, N, MASK)


def _owner(spec):
    """Full-resolution owner map (render_spec samples it at mask resolution)."""
    from nexplain.data import render
    from nexplain.data.world import COLORS
    return render.paint(spec.objects, spec.layout, N, COLORS)[0]


@pytest.mark.parametrize("i,cls", [(0, 0), (1, 3), (2, 5), (3, 9)])
def test_a_spec_renders_its_image_exactly(i, cls):
    a, b = make_sample(SEED, i, cls, N, MASK), render_spec(_spec(i, cls))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.owner, b.owner) and a.objects == b.objects


def test_a_colour_edit_touches_only_the_objects_that_held_it():
    spec = _spec(0)  # class 0: a red circle
    assert present(spec, "red")
    rng = np.random.default_rng(0)
    gone = remove(spec, "red", rng)
    assert not present(gone, "red") and gone.layout == spec.layout and gone.scene == spec.scene
    changed = (image_of(spec) != image_of(gone)).any(-1)
    owner = _owner(spec)
    reds = [k + 1 for k, o in enumerate(spec.objects) if o.color == "red"]
    assert changed.any() and np.isin(owner[changed], reds).all()


def test_a_scene_edit_touches_only_the_background_and_a_shape_keeps_the_layout():
    spec = _spec(1, 3)
    rng = np.random.default_rng(1)
    other = next(s for s in ("grass", "lava") if s != spec.scene)
    moved = add(spec, other, rng)
    assert moved.scene == other and present(moved, other)
    changed = (image_of(spec) != image_of(moved)).any(-1)
    assert changed.any() and (_owner(spec)[changed] == 0).all()
    shape = next(s for s in ("hexagon", "cross") if s != spec.objects[0].shape)
    reshaped = add(spec, shape, rng, target=0)
    assert reshaped.objects[0].shape == shape and reshaped.layout == spec.layout
    assert reshaped.objects[1:] == spec.objects[1:]


def test_pairs_hold_the_concept_on_one_side_only_and_parts_do_not_toggle():
    spec = _spec(2, 5)
    for concept in ("red", "ring", "dotted", "snow", spec.scene, spec.objects[0].color):
        with_c, without = pair(spec, concept, np.random.default_rng(2))
        assert present(with_c, concept) and not present(without, concept)
        assert spec is with_c or spec is without
    assert not toggles("border") and not toggles("core") and toggles("solid") and toggles("ring")


def test_world_specs_rerender_the_generated_pngs(tmp_path):
    generate_world(tmp_path / "w", n_images=6, image_size=48, mask_size=24, seed=7, progress=False)
    specs = WorldSpecs(tmp_path / "w")
    import csv
    rows = list(csv.DictReader(open(tmp_path / "w" / "index.csv")))
    for i, row in enumerate(rows):
        disk = np.asarray(Image.open(tmp_path / "w" / "images" / row["image"]))
        assert np.array_equal(disk, image_of(specs.spec(i)))
    with pytest.raises(Exception, match="not a generated world"):
        WorldSpecs(tmp_path)
