"""Pictures for the built-in generator: a composition picked by the description's words
(landscape, planet, portrait, abstract), painted with the palette of its colour words and
varied by the seeded generator, then styled and encoded by `procedural_raster`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gaia_app.generators.base import Progress
from gaia_app.generators.procedural_raster import (
    Painter,
    Words,
    colour_word,
    encode_png,
    fbm_line,
    grid,
    lerp,
    palette,
    periodic_fbm,
    render,
)


def _disc(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, radius: float,
          pixel: float) -> np.ndarray:
    """Anti-aliased disc coverage (0..1)."""
    distance = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
    return np.clip((radius - distance) / pixel + 0.5, 0, 1)


def _stars(rng: np.random.Generator, height: int, width: int, density: float) -> np.ndarray:
    sparkle = rng.random((height, width), dtype=np.float32)
    return np.maximum(sparkle - (1 - density), 0) / density


# --------------------------------------------------------------------------- compositions


def _ridge_tops(rng: np.random.Generator, w: int, pixel: float, horizon: float, bottom: float,
                words: Words, water: bool) -> list[tuple[np.ndarray, float]]:
    """Top edge (1, w) and depth (0 far .. 1 near) of each hill or mountain layer, far first."""
    forest = any(word in words for word in ("forest", "tree", "woods", "jungle", "pine"))
    across = (np.arange(w, dtype=np.float32) + 0.5) / w
    layers = 2 if water else int(rng.integers(3, 5))
    tops = []
    for layer in range(layers):
        depth = (layer + 1) / layers
        ridge = fbm_line(rng, w, int(rng.integers(2, 5)) + layer, 6)
        peak = (0.22 if "mountain" in words else 0.14) * (1.2 - 0.7 * depth)
        top = horizon + (0 if water else 0.32 * depth ** 1.6 * (bottom - horizon)) - ridge * peak
        if forest and layer >= layers - 2:  # a row of pine tops on the nearer ridges
            teeth = max(4, int(w * pixel / 0.035))
            tall = rng.uniform(0.4, 1.0, teeth).astype(np.float32)
            along = across * teeth
            top = top - (1 - 2 * np.abs(along % 1 - 0.5)) * tall[along.astype(np.intp)] * 0.07 * depth
        tops.append((top[None, :].astype(np.float32), depth))
    return tops


def _paint_ridge(image: np.ndarray, pal: list[np.ndarray], y: np.ndarray, top: np.ndarray,
                 depth: float, pixel: float, shore: float | None) -> np.ndarray:
    if y[-1, 0] < top.min():
        return image  # the strip lies wholly above this layer
    colour = lerp(lerp(pal[3], pal[4], depth), pal[1], (1 - depth) * 0.35)  # hazier when far
    below = y - top
    cover = np.clip(below / pixel, 0, 1)
    if shore is not None:
        cover *= y <= shore
    return lerp(image, colour * (1 - 0.3 * np.clip(below / 0.4, 0, 1)), cover)


def _paint_sea(image: np.ndarray, pal: list[np.ndarray], xs: np.ndarray, y: np.ndarray,
               waves: np.ndarray, horizon: float, bottom: float, sun: tuple[float, ...]) -> np.ndarray:
    """Water below the horizon: reflected sky, wave streaks and the sun's glitter path."""
    below = y > horizon
    if not below.any():
        return image
    sea = lerp(pal[1] * 0.75, pal[0] * 0.7, np.clip((y - horizon) / (bottom - horizon), 0, 1))
    sea = sea + waves * 0.04
    glitter = np.exp(-(((xs - sun[0]) / (sun[2] * 1.6)) ** 2)) * np.clip(waves * 0.8, 0, 1)
    return np.where(below, lerp(sea, pal[2], glitter), image)


def _landscape(rng: np.random.Generator, h: int, w: int, pal: list[np.ndarray],
               words: Words) -> Painter:
    """Gradient sky, sun or moon with glow, clouds, stars at night, layered ridges, water."""
    sky_top, sky_low, light = pal[:3]
    xs, ys = grid(h, w)
    pixel, bottom = 1 / min(h, w), h / min(h, w)
    horizon = bottom * rng.uniform(0.5, 0.66)
    night = any(word in words for word in ("night", "moon", "star", "midnight"))
    water = any(word in words for word in ("ocean", "sea", "lake", "beach", "water", "island", "coast"))
    stars = _stars(rng, h, w, 0.0015) * (ys < horizon) if night else None
    sun = (rng.uniform(0.15, 0.85) * w * pixel, horizon * rng.uniform(0.3, 0.8), rng.uniform(0.04, 0.08))
    clouds = np.clip(periodic_fbm(rng, h, w, 6, 2, 4)[0] * 0.45 - 0.25, 0, 0.8)
    clouds *= np.clip(1.2 - ys / horizon, 0, 1)
    waves = periodic_fbm(rng, h, w, 48, 3, 3)[0] if water else None
    ridges = _ridge_tops(rng, w, pixel, horizon, bottom, words, water)
    cloud_colour, glow_strength = lerp(sky_low, light, 0.5), 0.3 if night else 0.6

    def paint(rows: slice) -> np.ndarray:
        y = ys[rows]
        distance = np.sqrt((xs - sun[0]) ** 2 + (y - sun[1]) ** 2)
        glow = np.maximum(np.exp(-((distance / (sun[2] * 4)) ** 2)) * glow_strength,
                          np.clip((sun[2] - distance) / pixel + 0.5, 0, 1))
        image = lerp(lerp(sky_top, sky_low, np.clip(y / horizon, 0, 1) ** 1.3), light, glow)
        if stars is not None:
            image += stars[rows]
        image = lerp(image, cloud_colour, clouds[rows])
        if waves is not None:
            image = _paint_sea(image, pal, xs, y, waves[rows], horizon, bottom, sun)
        for top, depth in ridges:
            image = _paint_ridge(image, pal, y, top, depth, pixel, horizon if water else None)
        return image

    return paint


def _planet(rng: np.random.Generator, h: int, w: int, pal: list[np.ndarray],
            words: Words) -> Painter:
    """A banded, lit sphere with an atmosphere halo against stars and a faint nebula."""
    sky_top, sky_low, light, far, near = pal
    xs, ys = grid(h, w)
    pixel = 1 / min(h, w)
    nebula, bands, spots = periodic_fbm(rng, h, w, 3, 3, 5, count=3)
    stars = _stars(rng, h, w, 0.002)
    cx, cy = w * pixel * rng.uniform(0.4, 0.6), h * pixel * rng.uniform(0.4, 0.6)
    radius, frequency = rng.uniform(0.28, 0.38), rng.uniform(6, 14)
    lx, ly, lz = (float(v) for v in np.array([-0.55, -0.45, 0.7]) / np.linalg.norm([-0.55, -0.45, 0.7]))

    def paint(rows: slice) -> np.ndarray:
        y = ys[rows]
        image = lerp(sky_top * 0.15, sky_low * 0.45, np.clip(nebula[rows] * 0.3, 0, 1))
        image += stars[rows]
        if np.abs(y - cy).min() > radius * 1.2:
            return image  # the strip misses the planet and its halo
        dx, dy = (xs - cx) / radius, (y - cy) / radius
        spread = dx * dx + dy * dy
        edge = np.sqrt(spread)
        lit = np.clip(dx * lx + dy * ly + np.sqrt(np.clip(1 - spread, 0, 1)) * lz, 0, 1)
        halo = np.exp(-(((edge - 1) * (radius / 0.03)) ** 2)) * np.clip(lit + 0.3, 0, 1)
        image = lerp(image, sky_low, halo * 0.7)
        stripes = 0.5 + 0.5 * np.sin(dy * frequency + bands[rows] * 0.8)
        surface = lerp(lerp(near, far, stripes), light, np.clip(spots[rows] * 0.25 - 0.2, 0, 1))
        surface *= 0.06 + 0.94 * lit
        return lerp(image, surface, np.clip((1 - edge) * (radius / pixel) + 0.5, 0, 1))

    return paint


def _portrait(rng: np.random.Generator, h: int, w: int, pal: list[np.ndarray],
              words: Words) -> Painter:
    """A head-and-shoulders silhouette with side and rim light against a soft backdrop."""
    sky_top, sky_low, light, far, near = pal
    xs, ys = grid(h, w)
    pixel = 1 / min(h, w)
    x = xs - w * pixel / 2
    tilt, shoulders = rng.uniform(-0.03, 0.03), rng.uniform(0.32, 0.4)
    head_w, head_h = rng.uniform(0.14, 0.17), rng.uniform(0.18, 0.21)
    side = np.clip(0.5 + x * 2.5, 0, 1)
    hair_length = rng.uniform(-0.08, 0.12)
    fringe = -0.17 + rng.uniform(0.0, 0.05) * np.cos((x - tilt) * rng.uniform(8, 20))

    def paint(rows: slice) -> np.ndarray:
        y = ys[rows] - (h * pixel - 0.5)  # the figure stands on the bottom edge

        def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
            """Approximate signed distance to an ellipse (negative inside)."""
            return (np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - 1) * min(rx, ry)

        image = lerp(sky_low, sky_top, np.clip(np.sqrt(x * x + (y + 0.1) ** 2) * 1.6, 0, 1))
        body = np.minimum(ellipse(tilt, -0.1, head_w, head_h), ellipse(0, 0.55, shoulders, 0.33))
        body = np.minimum(body, np.maximum(np.abs(x - tilt / 2) - 0.06, np.abs(y - 0.1) - 0.1))
        # Hair: a larger ellipse around the head, above the jaw, minus a face window under a fringe.
        face = np.maximum(ellipse(tilt, -0.06, head_w * 0.8, head_h * 0.85), fringe - y)
        hair = np.maximum(np.maximum(ellipse(tilt, -0.12, head_w * 1.15, head_h * 1.02), -face),
                          y - (0.0 + hair_length))
        body = np.minimum(body, hair)
        figure = lerp(near, far, side * 0.7)
        figure = lerp(figure, light, np.exp(-((body / 0.012) ** 2)) * side * 0.7)
        figure = lerp(figure, near * 0.6, np.clip(0.5 - hair / pixel, 0, 1))
        return lerp(image, figure, np.clip(0.5 - body / pixel, 0, 1))

    return paint


def _abstract(rng: np.random.Generator, h: int, w: int, pal: list[np.ndarray],
              words: Words) -> Painter:
    """A soft gradient under translucent discs and rings in the palette's colours."""
    xs, ys = grid(h, w)
    scale = min(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    cos_a, sin_a = float(np.cos(angle)) * scale / (w + h), float(np.sin(angle)) * scale / (w + h)
    swirl = periodic_fbm(rng, h, w, 2, 2, 4)[0]
    discs = [(rng.uniform(0, w / scale), rng.uniform(0, h / scale), rng.uniform(0.05, 0.3),
              rng.random() < 0.35, pal[int(rng.integers(1, 5))], rng.uniform(0.35, 0.85))
             for _ in range(int(rng.integers(6, 13)))]

    def paint(rows: slice) -> np.ndarray:
        y = ys[rows]
        image = lerp(pal[0], pal[1], np.clip(xs * cos_a + y * sin_a + 0.5 + swirl[rows] * 0.15, 0, 1))
        for cx, cy, radius, ring, colour, alpha in discs:
            # Only the disc's bounding box is touched: most discs are small.
            left, right = max(0, int((cx - radius) * scale) - 1), min(w, int((cx + radius) * scale) + 2)
            if left >= right or y[0, 0] > cy + radius + 1 / scale or y[-1, 0] < cy - radius - 1 / scale:
                continue
            cover = _disc(xs[:, left:right], y, cx, cy, radius, 1 / scale)
            if ring:
                cover -= _disc(xs[:, left:right], y, cx, cy, radius * 0.8, 1 / scale)
            image[:, :, left:right] = lerp(image[:, :, left:right], colour, cover * alpha)
        return image

    return paint


COMPOSITIONS: dict[str, Callable[[np.random.Generator, int, int, list[np.ndarray], Words], Painter]] = {
    "portrait": _portrait, "planet": _planet, "abstract": _abstract, "landscape": _landscape,
}
COMPOSITION_WORDS: dict[str, str] = {
    **dict.fromkeys(("landscape", "sky", "mountain", "hill", "valley", "field", "forest",
                     "tree", "ocean", "sea", "lake", "beach", "island", "coast", "desert",
                     "sunset", "sunrise", "dawn", "scenery", "horizon", "night"), "landscape"),
    **dict.fromkeys(("planet", "space", "moon", "galaxy", "cosmos", "world", "orb",
                     "sphere", "star"), "planet"),
    **dict.fromkeys(("portrait", "face", "person", "character", "bust", "head", "hero",
                     "avatar", "profile", "man", "woman"), "portrait"),
    **dict.fromkeys(("abstract", "circle", "bubble", "pattern", "shape", "geometric",
                     "dot"), "abstract"),
}


def make_image(words: Words, rng: np.random.Generator, width: int, height: int,
               progress: Progress) -> tuple[bytes, dict[str, object]]:
    """A picture for the description: PNG bytes and what was chosen."""
    progress(10, "composing")
    colours = palette(words, rng)
    named = {COMPOSITION_WORDS[word] for word in words if word in COMPOSITION_WORDS}
    # A subject (portrait, planet, abstract) wins over the scenery words around it.
    name = next((n for n in COMPOSITIONS if n in named), None) or str(rng.choice(sorted(COMPOSITIONS)))
    painter = COMPOSITIONS[name](rng, height, width, colours, words)
    xs, ys = grid(height, width)
    centre_x, centre_y = width / min(height, width) / 2, height / min(height, width) / 2

    def vignetted(rows: slice) -> np.ndarray:
        return painter(rows) * (1 - 0.3 * ((xs - centre_x) ** 2 + (ys[rows] - centre_y) ** 2))

    progress(30, "painting")
    planes = render(vignetted, height, width, words, tileable=False)
    progress(80, "encoding")
    return encode_png(planes), {"width": width, "height": height, "composition": name,
                                "palette": colour_word(words)}
