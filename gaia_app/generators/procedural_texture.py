"""Seamless material textures for the built-in generator: brick, wood, marble, stone, grass,
sand, water, metal, fabric and plain noise, picked by the description's words.

A texture tiles because everything in it repeats exactly once across the square: the noise
comes from wrapping lattices (`periodic_fbm`), stripes and rings use whole numbers of cycles,
and grids (bricks, planks, threads) divide the side evenly, alternate over an even count and
look their colours up by index modulo the count.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gaia_app.generators.base import Progress
from gaia_app.generators.procedural_raster import (
    Painter,
    Words,
    base_colour,
    encode_png,
    lerp,
    palette,
    periodic_fbm,
    render,
    rgb,
)

TAU = 2 * np.pi


def _coordinates(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in 0..1: u across (1, size), v down (size, 1)."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    return centres[None, :], centres[:, None]


def _distance_to_line(position: np.ndarray) -> np.ndarray:
    """How far (in cells) a coordinate measured in cells is from the nearest cell boundary."""
    return np.abs(position - np.round(position))


def _brick(rng: np.random.Generator, n: int, dark: np.ndarray, light: np.ndarray) -> Painter:
    courses, per_course = (8, 4) if n >= 128 else (4, 2)  # even courses: the offset alternates
    u, v = _coordinates(n)
    shades = rng.uniform(0.75, 1.12, (courses, per_course)).astype(np.float32)
    noise, grit = periodic_fbm(rng, n, n, 4, 4, 5, count=2)
    mortar_colour = rgb((0.70, 0.68, 0.64))

    def paint(rows: slice) -> np.ndarray:
        course = v[rows] * courses
        row = course.astype(np.intp)
        along = u * per_course + 0.5 * (row % 2)
        joint = np.minimum(_distance_to_line(along) / per_course, _distance_to_line(course) / courses)
        face = np.clip((joint - 0.012) * (n * 0.7), 0, 1)  # 0 in the mortar, 1 on a brick
        shade = np.take(shades, (row % courses) * per_course + along.astype(np.intp) % per_course)
        shade *= 0.8 + 0.2 * np.clip(joint / 0.03, 0, 1)  # bevelled edges
        brick = lerp(dark, light, np.clip(0.55 + 0.18 * noise[rows], 0, 1)) * shade
        return lerp(mortar_colour * (0.92 + 0.05 * grit[rows]), brick, face)

    return paint


def _wood(rng: np.random.Generator, n: int, dark: np.ndarray, light: np.ndarray) -> Painter:
    planks = 4 if n >= 128 else 2
    u, v = _coordinates(n)
    across = u * planks + 0.5  # the seam runs down the middle of a plank, not along a gap
    plank = across.astype(np.intp) % planks
    offsets = rng.uniform(0, 8, planks).astype(np.float32)[plank]
    ends = rng.uniform(0, 1, planks).astype(np.float32)[plank]
    tone = rng.uniform(0.85, 1.1, planks).astype(np.float32)[plank]
    gap = np.clip((_distance_to_line(across) / planks - 0.002) * n, 0, 1)
    warp = periodic_fbm(rng, n, n, 4, 2, 4)[0]
    fibre = periodic_fbm(rng, n, n, 4, 64, 2)[0]  # fine streaks along the grain

    def paint(rows: slice) -> np.ndarray:
        rings = 0.5 + 0.5 * np.cos(TAU * (across * 3 + warp[rows] * 0.35 + offsets))
        tint = np.clip(0.2 + 0.55 * rings ** 3 + 0.1 * fibre[rows], 0, 1)
        butt = np.clip((_distance_to_line(v[rows] - ends) - 0.002) * n, 0, 1)  # plank ends
        return lerp(light, dark, tint) * (tone * (0.55 + 0.45 * gap * butt))

    return paint


def _marble(rng: np.random.Generator, n: int, dark: np.ndarray, light: np.ndarray) -> Painter:
    u, v = _coordinates(n)
    turbulence, cloud = periodic_fbm(rng, n, n, 3, 3, 5, count=2)
    cycles_u, cycles_v = int(rng.integers(1, 3)), int(rng.integers(2, 4))

    def paint(rows: slice) -> np.ndarray:
        phase = u * cycles_u + v[rows] * cycles_v + 0.18 * turbulence[rows]
        vein = 1 - np.abs(np.sin(np.pi * phase))
        vein *= vein
        vein *= vein  # fourth power, by squaring: narrow dark veins, much cheaper than **
        fine = 1 - np.abs(np.sin(np.pi * (3 * phase + 0.5 * cloud[rows])))
        fine *= fine
        fine *= fine
        tone = vein * 0.7 + fine * fine * 0.25 + 0.06 * cloud[rows]
        return lerp(light, dark, np.clip(tone, 0, 1))

    return paint


def _stone(rng: np.random.Generator, n: int, dark: np.ndarray, light: np.ndarray) -> Painter:
    body, cracks, speckle = periodic_fbm(rng, n, n, 4, 4, 5, count=3)

    def paint(rows: slice) -> np.ndarray:
        crack = np.clip(1 - np.abs(cracks[rows]) / 0.06, 0, 1)
        tone = np.clip(0.55 + 0.25 * body[rows] - 0.2 * np.abs(speckle[rows]), 0, 1)
        return lerp(dark, light, tone) * (1 - 0.65 * crack * crack)

    return paint


def _grass(rng: np.random.Generator, n: int, dark: np.ndarray, light: np.ndarray) -> Painter:
    blades = periodic_fbm(rng, n, n, 8, 64, 2)[0]  # streaks: fast across, slow down
    patches, fine = periodic_fbm(rng, n, n, 4, 4, 5, count=2)
    straw = rgb((0.72, 0.66, 0.36))

    def paint(rows: slice) -> np.ndarray:
        colour = lerp(dark, light, np.clip(0.5 + 0.25 * blades[rows] + 0.12 * fine[rows], 0, 1))
        return lerp(colour, straw, np.clip(patches[rows] * 0.35 - 0.25, 0, 0.5))

    return paint


def _sand(rng: np.random.Generator, n: int, dark: np.ndarray, light: np.ndarray) -> Painter:
    u, v = _coordinates(n)
    dunes = periodic_fbm(rng, n, n, 3, 3, 4)[0]
    speck = periodic_fbm(rng, n, n, 64, 64, 2)[0]
    ripples, slant = int(rng.integers(8, 14)), int(rng.integers(-2, 3))

    def paint(rows: slice) -> np.ndarray:
        ripple = np.sin(TAU * (v[rows] * ripples + u * slant + 0.5 * dunes[rows]))
        return lerp(dark, light, np.clip(0.55 + 0.12 * ripple + 0.12 * dunes[rows] + 0.08 * speck[rows], 0, 1))

    return paint


def _water(rng: np.random.Generator, n: int, dark: np.ndarray, light: np.ndarray) -> Painter:
    swell, depth = periodic_fbm(rng, n, n, 3, 3, 5, count=2)

    def paint(rows: slice) -> np.ndarray:
        caustic = np.clip(1 - np.abs(swell[rows] + 0.4 * depth[rows]) * 1.8, 0, 1) ** 4
        return lerp(lerp(dark, light, np.clip(0.45 + 0.18 * depth[rows], 0, 1)), 1.0, caustic * 0.45)

    return paint


def _metal(rng: np.random.Generator, n: int, dark: np.ndarray, light: np.ndarray) -> Painter:
    _, v = _coordinates(n)
    brushed = periodic_fbm(rng, n, n, 128, 2, 2)[0]  # fast down, slow across: horizontal strokes
    mottle = periodic_fbm(rng, n, n, 3, 3, 4)[0]

    def paint(rows: slice) -> np.ndarray:
        sheen = 0.5 + 0.5 * np.cos(TAU * (v[rows] + 0.08 * mottle[rows]))
        return lerp(dark, light, np.clip(0.4 + 0.08 * brushed[rows] + 0.3 * sheen + 0.05 * mottle[rows], 0, 1))

    return paint


def _fabric(rng: np.random.Generator, n: int, dark: np.ndarray, light: np.ndarray) -> Painter:
    threads = max(8, min(64, n // 8)) // 2 * 2  # even, so over/under alternates across the seam
    u, v = _coordinates(n)
    across = u * threads + 0.5  # the seam runs along the middle of a thread
    warp_thread = np.sin(np.pi * (across % 1)) ** 0.7
    fibre, mottle = periodic_fbm(rng, n, n, 32, 32, 3, count=2)

    def paint(rows: slice) -> np.ndarray:
        down = v[rows] * threads + 0.5
        over = (across.astype(np.intp) + down.astype(np.intp)) % 2 == 0
        weft_thread = np.sin(np.pi * (down % 1)) ** 0.7
        height = np.where(over, warp_thread * (0.7 + 0.3 * weft_thread), weft_thread * (0.7 + 0.3 * warp_thread))
        colour = lerp(dark, light, np.clip(0.15 + 0.7 * height + 0.06 * fibre[rows] + 0.05 * mottle[rows], 0, 1))
        return colour * np.where(over, np.float32(1.0), np.float32(0.9))

    return paint


def _noise(rng: np.random.Generator, n: int, dark: np.ndarray, light: np.ndarray) -> Painter:
    broad, fine = periodic_fbm(rng, n, n, 4, 4, 6, count=2)

    def paint(rows: slice) -> np.ndarray:
        return lerp(dark, light, np.clip(0.5 + 0.22 * broad[rows] + 0.08 * fine[rows], 0, 1))

    return paint


Material = Callable[[np.random.Generator, int, np.ndarray, np.ndarray], Painter]
# Each material with its own dark and light colours (sRGB 0..1); None: from the palette.
MATERIALS: dict[str, tuple[Material, tuple[float, ...] | None, tuple[float, ...] | None]] = {
    "brick": (_brick, (0.43, 0.16, 0.12), (0.69, 0.33, 0.22)),
    "wood": (_wood, (0.36, 0.22, 0.11), (0.68, 0.48, 0.28)),
    "marble": (_marble, (0.30, 0.30, 0.34), (0.93, 0.92, 0.89)),
    "stone": (_stone, (0.30, 0.29, 0.27), (0.64, 0.62, 0.58)),
    "grass": (_grass, (0.12, 0.30, 0.08), (0.38, 0.62, 0.20)),
    "sand": (_sand, (0.66, 0.54, 0.36), (0.92, 0.83, 0.63)),
    "water": (_water, (0.04, 0.22, 0.40), (0.18, 0.52, 0.68)),
    "metal": (_metal, (0.40, 0.42, 0.45), (0.82, 0.84, 0.87)),
    "fabric": (_fabric, (0.18, 0.22, 0.38), (0.42, 0.50, 0.72)),
    "noise": (_noise, None, None),
}
MATERIAL_WORDS: dict[str, str] = {
    **dict.fromkeys(("brick", "wall", "masonry"), "brick"),
    **dict.fromkeys(("wood", "wooden", "plank", "floor", "timber", "oak", "parquet"), "wood"),
    **dict.fromkeys(("marble",), "marble"),
    **dict.fromkeys(("stone", "rock", "cobble", "granite", "concrete", "cliff"), "stone"),
    **dict.fromkeys(("grass", "lawn", "meadow", "moss", "turf"), "grass"),
    **dict.fromkeys(("sand", "beach", "desert", "dune"), "sand"),
    **dict.fromkeys(("water", "ocean", "sea", "lake", "pool", "river"), "water"),
    **dict.fromkeys(("metal", "steel", "iron", "brushed", "aluminium", "aluminum", "chrome"), "metal"),
    **dict.fromkeys(("fabric", "cloth", "textile", "denim", "cotton", "wool", "canvas", "weave"), "fabric"),
    **dict.fromkeys(("noise", "cloud", "smoke", "fog"), "noise"),
}


def _colours(words: Words, rng: np.random.Generator, material: str) -> tuple[np.ndarray, np.ndarray]:
    """The material's dark and light colours, or ones from a colour word in the description
    (a material word such as "sand" or "stone" does not count as a colour here)."""
    colour = base_colour([word for word in words if word not in MATERIAL_WORDS])
    if colour is not None:
        base = rgb(colour)
        return base * 0.45, lerp(base, 1.0, 0.15)
    _, dark, light = MATERIALS[material]
    if dark is None or light is None:
        colours = palette(words, rng)
        return colours[4], colours[1]
    return rgb(dark), rgb(light)


def make_texture(words: Words, rng: np.random.Generator, size: int,
                 progress: Progress) -> tuple[bytes, dict[str, object]]:
    """A seamless square texture for the description: PNG bytes and what was chosen."""
    progress(10, "preparing the material")
    material = next((MATERIAL_WORDS[word] for word in words if word in MATERIAL_WORDS), "noise")
    dark, light = _colours(words, rng, material)
    painter = MATERIALS[material][0](rng, size, dark, light)
    progress(30, "painting")
    planes = render(painter, size, size, words, tileable=True)
    progress(80, "encoding")
    return encode_png(planes), {"width": size, "height": size, "material": material, "tileable": True}
