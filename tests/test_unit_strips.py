"""Top-image strips of every unit's page: NetDissect's region, outlined on the top images."""

import io

import numpy as np
import pytest
from PIL import Image

from nexplain.report.unit_strips import outline, thumbnail, top_strip


def test_outline_is_the_border_of_the_region():
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True
    edge = outline(m)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any() and edge[1, 1:5].all()
    assert outline(np.ones((3, 3), bool)).sum() == 8  # the image edge closes the region


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_strip_shows_the_images_with_most_top_cells_first(images):
    maps = np.zeros((5, 4, 4), np.float32)
    maps[3, :2, :2] = 5.0      # image 3: four top cells
    maps[1, 0, 0] = 5.0        # image 1: one
    jpeg, ids, threshold = top_strip(np.arange(5), maps, images, q=0.9, n=6, size=32)
    assert ids == [3, 1] and 0 <= threshold < 5
    strip = np.asarray(Image.open(io.BytesIO(jpeg)))
    assert strip.shape == (32, 2 * 32 + 4, 3)
    thumb = thumbnail(images[3], maps[3], threshold, 32)
    assert np.allclose(thumb[thumb.shape[0] - 1, -1], 120 * 0.55)  # outside the region: dimmed
    assert (thumb == [255, 221, 0]).all(-1).sum() > 20  # the outline, in yellow
    assert top_strip(np.arange(5), maps, images, q=0.9, n=6, size=32)[0] == jpeg  # same bytes again


def test_a_dead_unit_has_no_strip(images):
    assert top_strip(np.arange(5), np.full((5, 4, 4), 0.3, np.float32), images) == (None, [], pytest.approx(np.nan, nan_ok=True))
