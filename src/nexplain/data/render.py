"""Drawing for the probe world: procedural scene backgrounds and analytic shapes.

Pure functions of a numpy Generator and sizes; `nexplain.data.world` decides what to
draw. Designed at 112 px and scaled, so any image size shows the same world.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


# ---------------------------------------------------------------- scenes

class _Grid(NamedTuple):
    n: int           # image side in pixels
    s: float         # scale relative to the 112 px design size
    y: np.ndarray    # (n, 1) pixel-centre rows
    x: np.ndarray    # (1, n) pixel-centre columns


def _noise(rng, n, cells):
    """Smooth value noise in [0, 1]: a random (cells+1)^2 grid, bilinearly upsampled."""
    g = rng.random((cells + 1, cells + 1))
    t = (np.arange(n) + 0.5) / n * cells
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = g[i] * (1 - f)[:, None] + g[i + 1] * f[:, None]
    return rows[:, i] * (1 - f) + rows[:, i + 1] * f


def _mix(a, b, t):
    """Blend colours (or images) a and b with per-pixel weight t."""
    t = np.clip(t, 0, 1)[..., None]
    return np.asarray(a, float) * (1 - t) + np.asarray(b, float) * t


def _grass(rng, g):
    blades = 0.6 * rng.random((1, g.n)) + 0.4 * _noise(rng, g.n, 6)
    return _mix((40, 110, 30), (110, 190, 70), blades)


def _water(rng, g):
    phase = rng.uniform(0, 2 * np.pi, 2)
    ripple = 0.3 * np.sin(2 * np.pi * g.x / (40 * g.s) + phase[0])
    wave = np.sin(2 * np.pi * (g.y / (7 * g.s) + ripple) + phase[1])
    return _mix((20, 60, 150), (80, 150, 220), ((wave + 1) / 2) ** 3)


def _sand(rng, g):
    base = _mix((200, 170, 110), (235, 210, 150), _noise(rng, g.n, 4))
    return _mix(base, (140, 110, 70), rng.random((g.n, g.n)) < 0.08)


def _sky(rng, g):
    blue = _mix((70, 130, 220), (190, 220, 250), g.y / g.n + 0.1 * _noise(rng, g.n, 4))
    return _mix(blue, (250, 250, 250), (_noise(rng, g.n, 3) - 0.6) * 3)


def _snow(rng, g):
    return _mix((205, 215, 230), (250, 252, 255), _noise(rng, g.n, 5))


def _road(rng, g):
    base = _mix((60, 60, 65), (100, 100, 105), 0.5 * rng.random((g.n, g.n)) + 0.5 * _noise(rng, g.n, 8))
    dash = (np.abs(g.y - g.n / 2) < 1.5 * g.s) & ((g.x / (12 * g.s) + rng.random()) % 1 < 0.5)
    if rng.random() < 0.5:
        dash = dash.T  # vertical road
    return _mix(base, (235, 235, 220), dash)


def _forest(rng, g):
    crowns = _noise(rng, g.n, 7)
    return _mix((15, 50, 20), (45, 110, 45), 0.7 * (crowns > 0.5) + 0.3 * crowns)


def _lava(rng, g):
    cracks = np.exp(-(((_noise(rng, g.n, 6) - 0.5) / 0.05) ** 2))
    return _mix((70, 15, 5), (255, 170, 30), cracks + 0.2 * _noise(rng, g.n, 12))


def _brick(rng, g):
    h, w, joint = 8 * g.s, 18 * g.s, 1.2 * g.s
    shifted = g.x + (np.floor(g.y / h) % 2) * w / 2  # every other row offset by half a brick
    mortar = (g.y % h < joint) | (shifted % w < joint)
    return _mix(_mix((150, 60, 40), (185, 85, 55), _noise(rng, g.n, 10)), (200, 195, 185), mortar)


def _night(rng, g):
    sky = _mix((5, 8, 30), (25, 30, 80), g.y / g.n + np.zeros((1, g.n)))
    return _mix(sky, (255, 255, 230), rng.random((g.n, g.n)) < 0.006)


BACKGROUNDS = {"grass": _grass, "water": _water, "sand": _sand, "sky": _sky, "snow": _snow,
               "road": _road, "forest": _forest, "lava": _lava, "brick": _brick, "night": _night}


def background(rng, scene: str, n: int) -> np.ndarray:
    """An n x n float RGB scene (0-255 range, before clipping)."""
    y = np.arange(n, dtype=float)[:, None] + 0.5
    image = BACKGROUNDS[scene](rng, _Grid(n, n / 112, y, y.T))
    return image * rng.uniform(0.9, 1.1)


# ---------------------------------------------------------------- objects

def _star(points=5, inner=0.45):
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _regular(k, start):
    angles = np.deg2rad(start + np.arange(k) * 360 / k)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


_A, _W = 0.94, 0.3  # cross arm length and half-width
# Polygon vertices in units of the object radius, y down; all lie within radius 1
# so an object centred >= r from the edges stays inside the image.
_POLYGONS = {
    "square": np.array([(-0.7, -0.7), (0.7, -0.7), (0.7, 0.7), (-0.7, 0.7)]),
    "triangle": _regular(3, -90),
    "star": _star(),
    "cross": np.array([(-_W, -_A), (_W, -_A), (_W, -_W), (_A, -_W), (_A, _W), (_W, _W),
                       (_W, _A), (-_W, _A), (-_W, _W), (-_A, _W), (-_A, -_W), (-_W, -_W)]),
    "diamond": np.array([(0, -1), (0.62, 0), (0, 1), (-0.62, 0)]),
    "hexagon": _regular(6, 0),
}


def _in_polygon(u, v, verts):
    """Even-odd rule, vectorised over pixels: a rightward ray crosses the edges an odd number of times."""
    inside = np.zeros(np.broadcast(u, v).shape, bool)
    for (x0, y0), (x1, y1) in zip(verts, np.roll(verts, 1, axis=0)):
        crosses = (y0 > v) != (y1 > v)
        with np.errstate(divide="ignore", invalid="ignore"):  # horizontal edges never cross
            x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < x_at)
    return inside


def _shape_mask(shape, u, v):
    rho2 = u * u + v * v
    if shape == "circle":
        return rho2 <= 1
    if shape == "ring":
        return (rho2 <= 1) & (rho2 >= 0.55 ** 2)
    return _in_polygon(u, v, _POLYGONS[shape])


def _texture_mask(texture, px, py, p):
    """Pixels drawn in the contrasting shade; px, py in pixels from the centre, p the period."""
    if texture == "solid":
        return np.zeros(px.shape, bool)
    if texture == "striped":
        return np.floor((px + py) / p) % 2 == 1
    if texture == "dotted":
        step = 1.2 * p
        dx, dy = px - step * np.round(px / step), py - step * np.round(py / step)
        return dx * dx + dy * dy < (0.35 * step) ** 2
    if texture == "checkered":
        return (np.floor(px / p) + np.floor(py / p)) % 2 == 1
    if texture == "wavy":
        return np.floor((py + 0.35 * p * np.sin(np.pi * px / p)) / p) % 2 == 1
    raise ValueError(f"unknown texture {texture!r}")


def _shade(rgb):
    """A contrasting shade of the same hue: lighten dark colours, darken light ones."""
    rgb = np.asarray(rgb, float)
    if rgb @ (0.299, 0.587, 0.114) < 128:
        return rgb + (255 - rgb) * 0.5
    return rgb * 0.55


def _erode(mask, steps):
    """4-neighbour binary erosion; outside the array counts as background."""
    out = np.pad(mask, steps)
    for _ in range(steps):
        m = out.copy()
        m[1:] &= out[:-1]
        m[:-1] &= out[1:]
        m[:, 1:] &= out[:, :-1]
        m[:, :-1] &= out[:, 1:]
        out = m
    return out[steps:-steps, steps:-steps]


def _draw(obj, x, y, r, angle, n):
    """Rasterise one object on its bounding box: (box, inside, shaded, border)."""
    x0, x1 = max(int(x - r) - 1, 0), min(int(x + r) + 2, n)
    y0, y1 = max(int(y - r) - 1, 0), min(int(y + r) + 2, n)
    dx = np.arange(x0, x1)[None, :] + 0.5 - x
    dy = np.arange(y0, y1)[:, None] + 0.5 - y
    pu = np.cos(angle) * dx + np.sin(angle) * dy  # rotate into the object's frame
    pv = -np.sin(angle) * dx + np.cos(angle) * dy
    inside = _shape_mask(obj.shape, pu / r, pv / r)
    shaded = _texture_mask(obj.texture, pu, pv, max(2.0, r / 2.2))
    border = inside & ~_erode(inside, max(1, round(r * 0.22)))
    return (slice(y0, y1), slice(x0, x1)), inside, shaded, border


def paint(objects, layout, n: int, colors):
    """Draw objects in order (later ones occlude earlier ones).

    Returns owner (0 = background, k = k-th object), part (1 border, 2 core of the
    owner), the objects' colours, and each object's full (unoccluded) area.
    """
    owner = np.zeros((n, n), np.int16)
    part = np.zeros((n, n), np.uint8)
    rgb = np.zeros((n, n, 3))
    areas = []
    for k, (obj, geom) in enumerate(zip(objects, layout), start=1):
        box, inside, shaded, border = _draw(obj, *geom, n)
        base = np.asarray(colors[obj.color], float)
        owner[box][inside] = k
        part[box][inside] = np.where(border, 1, 2)[inside]
        rgb[box][inside] = np.where(shaded[..., None], _shade(base), base)[inside]
        areas.append(int(inside.sum()))
    return owner, part, rgb, areas
