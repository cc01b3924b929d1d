"""The raster machinery of the built-in generator's pictures and textures: palettes from
colour words, periodic noise, styles, strip-by-strip rendering and PNG encoding.

Everything is vectorised. Noise is value noise on a wrapping lattice, interpolated by matrix
products, so fBm is periodic by construction (which is what makes textures tile). Colours are
sRGB floats in 0..1 until encoded. A picture is planned once (random choices, noise fields)
and then painted in horizontal strips by a `Painter`: a strip's temporaries stay small and are
reused from one strip to the next, where whole-picture temporaries would each cost fresh
memory pages, which dominated the time of whole-picture painting.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

Colour = tuple[float, float, float]
Words = Sequence[str]

# Plain colours (sRGB 0..255). A picture built on one derives its five palette roles from it.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (185, 38, 34), "orange": (226, 118, 38), "yellow": (236, 200, 58),
    "gold": (212, 170, 50), "green": (62, 148, 58), "blue": (46, 92, 196),
    "purple": (118, 58, 172), "pink": (232, 128, 172), "white": (236, 236, 236),
    "black": (26, 26, 30), "grey": (128, 128, 132), "brown": (118, 78, 42),
    "silver": (196, 198, 206), "teal": (30, 140, 140),
}
# Scenes whose colours do not follow from one colour: sky top, sky low, light, far, near.
SCENES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "sunset": ((44, 22, 84), (250, 122, 62), (255, 222, 124), (122, 52, 84), (42, 16, 42)),
    "dawn": ((62, 84, 152), (248, 182, 150), (255, 240, 204), (112, 100, 142), (50, 44, 72)),
    "forest": ((74, 124, 152), (192, 222, 202), (255, 250, 220), (42, 102, 62), (16, 52, 26)),
    "ocean": ((18, 60, 132), (152, 202, 232), (255, 255, 240), (22, 92, 142), (6, 40, 82)),
    "night": ((4, 7, 24), (30, 42, 84), (232, 236, 255), (22, 26, 52), (6, 8, 18)),
    "desert": ((72, 132, 202), (242, 212, 162), (255, 250, 222), (202, 150, 92), (150, 100, 56)),
    "autumn": ((92, 112, 152), (242, 192, 132), (255, 240, 202), (172, 82, 30), (92, 40, 16)),
}
SYNONYMS: dict[str, str] = {
    "crimson": "red", "scarlet": "red", "ruby": "red", "fire": "red", "golden": "gold",
    "amber": "orange", "lemon": "yellow", "emerald": "green", "lime": "green",
    "azure": "blue", "sapphire": "blue", "navy": "blue", "violet": "purple",
    "magenta": "pink", "rose": "pink", "snow": "white", "ice": "white", "ebony": "black",
    "gray": "grey", "stone": "grey", "cyan": "teal", "dusk": "sunset", "sunrise": "dawn",
    "jungle": "forest", "sea": "ocean", "midnight": "night", "sand": "desert", "fall": "autumn",
}


def colour_word(words: Words) -> str | None:
    """The first colour or scene word of the description, synonyms resolved."""
    for word in words:
        name = SYNONYMS.get(word, word)
        if name in COLOURS or name in SCENES:
            return name
    return None


def base_colour(words: Words) -> Colour | None:
    """One representative sRGB colour (0..1) for the first colour word, if any."""
    name = colour_word(words)
    if name is None:
        return None
    red, green, blue = COLOURS[name] if name in COLOURS else SCENES[name][3]
    return (red / 255, green / 255, blue / 255)


def palette(words: Words, rng: np.random.Generator) -> list[np.ndarray]:
    """Five (3, 1, 1) colours: sky top, sky low, light, far land, near land."""
    name = colour_word(words) or str(rng.choice(sorted(COLOURS) + sorted(SCENES)))
    if name in SCENES:
        return [rgb(np.array(c) / 255) for c in SCENES[name]]
    base = rgb(np.array(COLOURS[name]) / 255)
    return [base * 0.42, lerp(base, 1.0, 0.45), lerp(base, 1.0, 0.85), base * 0.8, base * 0.38]


# --------------------------------------------------------------------------- noise


@functools.lru_cache(maxsize=128)
def _lattice_weights(size: int, cells: int) -> np.ndarray:
    """(size, cells) matrix that interpolates a wrapping lattice of `cells` values across
    `size` pixels with the quintic fade, so the result repeats exactly every `size` pixels."""
    position = np.arange(size) * (cells / size)
    cell = np.floor(position).astype(np.intp)
    blend = position - cell
    blend = (blend * blend * blend * (blend * (blend * 6 - 15) + 10)).astype(np.float32)
    weights = np.zeros((size, cells), np.float32)
    rows = np.arange(size)
    np.add.at(weights, (rows, cell % cells), 1 - blend)
    np.add.at(weights, (rows, (cell + 1) % cells), blend)
    weights.flags.writeable = False
    return weights


def periodic_fbm(rng: np.random.Generator, height: int, width: int, cells_y: int, cells_x: int,
                 octaves: int, count: int = 1, gain: float = 0.5) -> np.ndarray:
    """`count` fBm fields (count, height, width), each scaled to unit standard deviation.

    Octaves double the lattice frequency; every octave's lattice wraps, so each field tiles.
    All octaves are summed by one matrix product: sum_o Wy G_o Wx^T = [Wy G_o]_o [Wx]_o^T.
    """
    cells_y, cells_x = min(cells_y, height), min(cells_x, width)
    lefts, rights, amplitude = [], [], 1.0
    for octave in range(octaves):
        fy, fx = cells_y << octave, cells_x << octave
        if fy > height or fx > width:
            break
        lattice = rng.uniform(-amplitude, amplitude, (count, fy, fx)).astype(np.float32)
        lefts.append(_lattice_weights(height, fy) @ lattice)
        rights.append(_lattice_weights(width, fx))
        amplitude *= gain
    left = np.concatenate(lefts, axis=2).reshape(count * height, -1)
    fields = (left @ np.concatenate(rights, axis=1).T).reshape(count, height, width)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-6
    return fields


def fbm_line(rng: np.random.Generator, length: int, cells: int, octaves: int,
             gain: float = 0.5) -> np.ndarray:
    """A 1-D fBm profile scaled to 0..1 (ridge lines)."""
    line = np.zeros(length, np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        frequency = min(cells << octave, length)
        line += _lattice_weights(length, frequency) @ rng.uniform(-amplitude, amplitude, frequency
                                                                  ).astype(np.float32)
        amplitude *= gain
    return (line - line.min()) / (np.ptp(line) + 1e-6)


# --------------------------------------------------------------------------- drawing helpers
# Pictures are channel-first (3, height, width) float32: numpy broadcasts a (height, width)
# mask over the three planes far faster than over a trailing axis of length 3.

Painter = Callable[[slice], np.ndarray]  # rows -> that strip of the picture, (3, rows, width)
STRIP_PIXELS = 16_384  # pixels per strip: small enough for its temporaries to stay cached


def rgb(values: Any) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(3, 1, 1)


def lerp(start: np.ndarray | float, end: np.ndarray | float, amount: np.ndarray | float) -> np.ndarray:
    result = (end - start) * amount
    result += start  # in place: one temporary fewer
    return result


def grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in units of the shorter side: x (1, w) and y (h, 1)."""
    scale = np.float32(min(height, width))
    xs = ((np.arange(width, dtype=np.float32) + 0.5) / scale)[None, :]
    ys = ((np.arange(height, dtype=np.float32) + 0.5) / scale)[:, None]
    return xs, ys


# --------------------------------------------------------------------------- styles, rendering, PNG

STYLE_WORDS: dict[str, frozenset[str]] = {
    "vivid": frozenset({"vivid", "saturated", "vibrant", "bold"}),
    "mono": frozenset({"mono", "monochrome", "grayscale", "greyscale", "noir", "bw"}),
    "sepia": frozenset({"sepia", "vintage", "antique"}),
    "pastel": frozenset({"pastel", "soft", "faded"}),
    "dark": frozenset({"dark", "gloomy", "moody", "noir", "grim"}),
    "pixel": frozenset({"pixel", "pixelated", "pixelart", "8bit", "retro", "sprite"}),
}


def style_effects(words: Words) -> frozenset[str]:
    found = set(words)
    return frozenset(effect for effect, triggers in STYLE_WORDS.items() if triggers & found)


def _recolour(strip: np.ndarray, effects: frozenset[str]) -> np.ndarray:
    """Per-pixel style changes (so textures still tile)."""
    if effects & {"vivid", "mono", "sepia"}:
        luminance = 0.299 * strip[0] + 0.587 * strip[1] + 0.114 * strip[2]
        if "vivid" in effects:
            strip = lerp(luminance, strip, 1.45)
        if "mono" in effects:
            strip = np.broadcast_to(luminance, strip.shape)
        elif "sepia" in effects:
            strip = luminance * rgb((1.08, 0.86, 0.62))
    if "pastel" in effects:
        strip = lerp(strip, 1.0, 0.45)
    if "dark" in effects:
        strip = strip * 0.55
    return strip


def _pixelate(planes: np.ndarray, block: int) -> np.ndarray:
    _, height, width = planes.shape
    rows, cols = -(-height // block), -(-width // block)
    padded = np.pad(planes, ((0, 0), (0, rows * block - height), (0, cols * block - width)), mode="edge")
    small = padded.reshape(3, rows, block, cols, block).mean(axis=(2, 4), dtype=np.float32)
    small = np.round(small * (7 / 255)) * (255 / 7)  # a few levels per channel, like old hardware
    return np.repeat(np.repeat(small.astype(np.uint8), block, axis=1), block, axis=2)[:, :height, :width]


def _pixel_block(height: int, width: int, tileable: bool) -> int:
    block = max(2, round(min(height, width) / 64))
    if not tileable:
        return block
    # A texture keeps tiling only if the blocks divide it exactly.
    return next((b for b in range(block, 1, -1) if height % b == 0 and width % b == 0), 1)


def render(painter: Painter, height: int, width: int, words: Words, tileable: bool) -> np.ndarray:
    """Paint the picture strip by strip, styled, into uint8 planes (3, height, width)."""
    effects = style_effects(words)
    planes = np.empty((3, height, width), np.uint8)
    step = max(1, STRIP_PIXELS // width)
    for top in range(0, height, step):
        rows = slice(top, min(height, top + step))
        strip = _recolour(painter(rows), effects) * 255
        strip += 0.5  # rounds on the truncating cast below
        planes[:, rows] = np.clip(strip, 0, 255, out=strip)
    if "pixel" in effects and (block := _pixel_block(height, width, tileable)) > 1:
        planes = _pixelate(planes, block)
    return planes


def encode_png(planes: np.ndarray) -> bytes:
    """RGB PNG of uint8 planes (3, h, w); little zlib effort, as speed matters more here."""
    picture = Image.merge("RGB", [Image.fromarray(plane) for plane in planes])
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", compress_level=1, compress_type=3)  # 3: zlib's Z_RLE
    return buffer.getvalue()
