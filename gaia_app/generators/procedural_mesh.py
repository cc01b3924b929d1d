"""3-D models built offline with numpy for the built-in generator, written as binary glTF 2.0
(GLB) by hand with `struct` and `json`.

Shapes stand on the ground plane (y = 0), are about one unit tall and centred on the y axis,
y up, triangles counter-clockwise seen from outside. Round shapes are surfaces of revolution
of a profile (one code path for sphere, cylinder, barrel, cone, torus and the tree's parts),
with the seam duplicated so texture coordinates wrap; the rock is a sphere displaced by smooth
noise with its normals recomputed. The description's words pick the shape, the colour and how
metallic or rough its one PBR material is.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from gaia_app.generators.base import Progress
from gaia_app.generators.procedural_raster import Words, base_colour

TAU = 2 * np.pi
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
FLOAT, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5123, 5125


@dataclass(frozen=True)
class Mesh:
    positions: np.ndarray  # (n, 3)
    normals: np.ndarray  # (n, 3), unit length
    uvs: np.ndarray  # (n, 2)
    triangles: np.ndarray  # (m, 3) vertex indices
    colours: np.ndarray | None = None  # (n, 3) linear RGB, for shapes whose parts differ


def _merge(parts: list[Mesh]) -> Mesh:
    offsets = np.cumsum([0] + [len(part.positions) for part in parts[:-1]])
    colours = None
    if any(part.colours is not None for part in parts):
        colours = np.concatenate([part.colours if part.colours is not None else np.ones_like(part.positions)
                                  for part in parts])
    return Mesh(np.concatenate([p.positions for p in parts]), np.concatenate([p.normals for p in parts]),
                np.concatenate([p.uvs for p in parts]),
                np.concatenate([p.triangles + o for p, o in zip(parts, offsets)]), colours)


def _revolve(radius: np.ndarray, height: np.ndarray, normal_r: np.ndarray, normal_y: np.ndarray,
             segments: int, colour: tuple[float, float, float] | None = None) -> Mesh:
    """The surface swept by a profile (radius, height per point, walked with the solid on its
    left) turning about the y axis; normals from the profile's (normal_r, normal_y)."""
    angles = np.linspace(0, TAU, segments + 1)
    sin, cos = np.sin(angles)[None, :], np.cos(angles)[None, :]
    rings, columns = len(radius), segments + 1
    radius, height = radius[:, None], np.broadcast_to(height[:, None], (rings, columns))
    positions = np.stack([radius * sin, height, radius * cos], axis=-1).reshape(-1, 3)
    length = np.linalg.norm(np.stack([normal_r, normal_y]), axis=0)[:, None]
    normal_r, normal_y = normal_r[:, None] / length, np.broadcast_to(normal_y[:, None] / length, (rings, columns))
    normals = np.stack([normal_r * sin, normal_y, normal_r * cos], axis=-1).reshape(-1, 3)
    step = np.hypot(np.diff(radius[:, 0]), np.diff(height[:, 0]))
    along = np.concatenate([[0.0], np.cumsum(step)]) / max(step.sum(), 1e-12)
    uvs = np.stack(np.broadcast_arrays(angles[None, :] / TAU, 1 - along[:, None]), axis=-1).reshape(-1, 2)
    grid = np.arange(rings * columns).reshape(rings, columns)
    a, b, c, d = grid[:-1, :-1], grid[:-1, 1:], grid[1:, 1:], grid[1:, :-1]
    triangles = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    colours = None if colour is None else np.tile(np.asarray(colour, float), (len(positions), 1))
    return Mesh(positions, normals, uvs, triangles, colours)


def _disc(radius: float, y: float, segments: int, up: bool, colour: tuple | None = None) -> Mesh:
    profile = np.array([radius, 0.0]) if up else np.array([0.0, radius])
    return _revolve(profile, np.full(2, y), np.zeros(2), np.full(2, 1.0 if up else -1.0), segments, colour)


def _cylinder(segments: int, radius: float = 0.35, height: float = 1.0, bulge: float = 0.0,
              base: float = 0.0, colour: tuple | None = None) -> Mesh:
    """A closed cylinder; with `bulge`, a barrel whose side swells by that fraction mid-way."""
    rings = max(2, segments // 2) if bulge else 2
    t = np.linspace(0, 1, rings)
    side_r = radius * (1 + bulge * np.sin(np.pi * t))
    slope = radius * bulge * np.pi * np.cos(np.pi * t) / height  # d(radius)/d(height)
    side = _revolve(side_r, base + height * t, np.ones(rings), -slope, segments, colour)
    return _merge([_disc(side_r[0], base, segments, False, colour), side,
                   _disc(side_r[-1], base + height, segments, True, colour)])


def _cone(segments: int, radius: float = 0.45, height: float = 1.0, base: float = 0.0,
          colour: tuple | None = None) -> Mesh:
    side = _revolve(np.array([radius, 0.0]), np.array([base, base + height]), np.full(2, height),
                    np.full(2, radius), segments, colour)
    return _merge([_disc(radius, base, segments, False, colour), side])


def _sphere(segments: int, radius: float = 0.5) -> Mesh:
    theta = np.linspace(-np.pi / 2, np.pi / 2, max(2, segments // 2) + 1)
    ring = np.cos(theta)
    ring[[0, -1]] = 0.0  # exact poles, so their degenerate triangles are found and dropped
    return _revolve(radius * ring, radius * (1 + np.sin(theta)), np.cos(theta), np.sin(theta), segments)


def _torus(segments: int, major: float = 0.35, minor: float = 0.15) -> Mesh:
    theta = np.linspace(-np.pi / 2, 1.5 * np.pi, max(3, segments // 2) + 1)
    return _revolve(major + minor * np.cos(theta), minor * (1 + np.sin(theta)), np.cos(theta),
                    np.sin(theta), segments)


def _tree(segments: int, leaves: tuple[float, float, float], spread: float) -> Mesh:
    bark = (0.13, 0.06, 0.025)  # linear RGB of a brown
    return _merge([_cylinder(segments, 0.07, 0.35, colour=bark),
                   _cone(segments, 0.42 * spread, 0.55, base=0.25, colour=leaves),
                   _cone(segments, 0.32 * spread, 0.55, base=0.5, colour=leaves)])


def _cube() -> Mesh:
    """A unit cube on the ground: 4 vertices per face, so each face has its own normal."""
    normals = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    ups = np.array([[0, 1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1], [0, 1, 0], [0, 1, 0]], float)
    rights = np.cross(ups, normals)  # with up, a right-handed frame seen from outside
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)  # counter-clockwise
    positions = (normals[:, None] * 0.5 + corners[None, :, :1] * rights[:, None] * 0.5
                 + corners[None, :, 1:] * ups[:, None] * 0.5).reshape(-1, 3) + [0, 0.5, 0]
    uvs = np.tile((corners + 1) / 2 * [1, -1] + [0, 1], (6, 1))
    quads = np.arange(24).reshape(6, 4)
    triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return Mesh(positions, np.repeat(normals, 4, axis=0), uvs, triangles)


def _smooth_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals, shared by vertices at the same place (seams, poles)."""
    _, welded = np.unique(np.round(positions, 6), axis=0, return_inverse=True)
    corners = positions[triangles]
    faces = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    sums = np.zeros((welded.max() + 1, 3))
    np.add.at(sums, welded.reshape(-1)[triangles].reshape(-1), np.repeat(faces, 3, axis=0))
    normals = sums[welded.reshape(-1)]
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _rock(segments: int, rng: np.random.Generator) -> Mesh:
    sphere = _clean(_sphere(segments))
    direction = sphere.positions - [0, 0.5, 0]
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    waves = rng.standard_normal((12, 3))
    waves /= np.linalg.norm(waves, axis=1, keepdims=True)
    frequency = rng.uniform(1.5, 6.0, 12)
    bumps = (np.sin(direction @ (waves * frequency[:, None]).T + rng.uniform(0, TAU, 12)) / frequency).sum(axis=1)
    radius = 0.5 * (1 + 0.25 * bumps / np.abs(bumps).max())
    positions = direction * radius[:, None] * [1.0, 0.7, 1.0]  # a bit flattened, as rocks lie
    positions[:, 1] -= positions[:, 1].min()
    return Mesh(positions, _smooth_normals(positions, sphere.triangles), sphere.uvs, sphere.triangles)


def _clean(mesh: Mesh) -> Mesh:
    """Without degenerate triangles (at poles, apexes, disc centres) and unused vertices."""
    corners = mesh.positions[mesh.triangles]
    doubled_area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    kept = mesh.triangles[doubled_area > 1e-10]
    used, triangles = np.unique(kept, return_inverse=True)
    colours = None if mesh.colours is None else mesh.colours[used]
    return Mesh(mesh.positions[used], mesh.normals[used], mesh.uvs[used], triangles.reshape(-1, 3), colours)


SHAPE_WORDS: dict[str, str] = {
    **dict.fromkeys(("cube", "box", "crate", "block", "dice", "die"), "cube"),
    **dict.fromkeys(("sphere", "ball", "planet", "orb", "globe", "bubble"), "sphere"),
    **dict.fromkeys(("cylinder", "pillar", "column", "pipe", "tube", "can", "post"), "cylinder"),
    **dict.fromkeys(("barrel", "keg", "cask"), "barrel"),
    **dict.fromkeys(("cone", "spike", "pyramid", "traffic"), "cone"),
    **dict.fromkeys(("torus", "ring", "donut", "doughnut", "tire", "tyre", "hoop"), "torus"),
    **dict.fromkeys(("tree", "pine", "fir", "spruce", "conifer"), "tree"),
    **dict.fromkeys(("rock", "stone", "boulder", "pebble", "asteroid"), "rock"),
}
# Metallic and roughness factors by what a thing is said to be made of.
FINISHES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("metal", "metallic", "steel", "iron", "chrome", "silver", "gold", "golden",
                     "copper", "bronze", "brass", "aluminium", "aluminum"), (1.0, 0.3)),
    **dict.fromkeys(("wood", "wooden", "timber", "oak", "crate"), (0.0, 0.8)),
    **dict.fromkeys(("stone", "rock", "concrete", "marble", "boulder", "granite"), (0.0, 0.9)),
    **dict.fromkeys(("plastic", "toy", "rubber"), (0.0, 0.5)),
    **dict.fromkeys(("glossy", "shiny", "polished", "glass", "ceramic"), (0.0, 0.15)),
}
# sRGB colours for shapes and materials when the description names no colour.
DEFAULT_COLOURS: dict[str, tuple[float, float, float]] = {
    "wood": (0.55, 0.36, 0.2), "crate": (0.55, 0.36, 0.2), "rock": (0.5, 0.48, 0.45),
    "stone": (0.5, 0.48, 0.45), "metal": (0.8, 0.8, 0.82), "tree": (0.2, 0.5, 0.2),
}


def _linear(srgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """glTF colour factors are linear; colour words are sRGB."""
    channels = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in srgb]
    return (channels[0], channels[1], channels[2])


def _material(words: Words, shape: str, rng: np.random.Generator) -> dict[str, object]:
    colour = base_colour(words)
    if colour is None:
        colour = next((DEFAULT_COLOURS[w] for w in [*words, shape] if w in DEFAULT_COLOURS), None)
    if colour is None:  # nothing said about it: a soft colour of the seed's choosing
        red, green, blue = (float(c) for c in rng.uniform(0.35, 0.85, 3))
        colour = (red, green, blue)
    metallic, roughness = next((FINISHES[word] for word in words if word in FINISHES),
                               FINISHES["rock"] if shape == "rock" else (0.0, 0.6))
    factor = [1.0, 1.0, 1.0] if shape == "tree" else [round(c, 6) for c in _linear(colour)]
    return {"name": f"{shape} material", "pbrMetallicRoughness": {
        "baseColorFactor": factor + [1.0], "metallicFactor": metallic, "roughnessFactor": roughness}}


def build_mesh(shape: str, detail: int, words: Words, rng: np.random.Generator) -> Mesh:
    if shape == "cube":
        return _cube()
    if shape == "rock":
        return _rock(detail, rng)
    if shape == "tree":
        leaves = base_colour(words) or DEFAULT_COLOURS["tree"]
        return _clean(_tree(detail, _linear(leaves), rng.uniform(0.85, 1.15)))
    # The seed varies the proportions a little; a sphere is a sphere.
    builders = {
        "sphere": lambda: _sphere(detail),
        "cylinder": lambda: _cylinder(detail, radius=0.35 * rng.uniform(0.8, 1.2)),
        "barrel": lambda: _cylinder(detail, 0.3, 0.9, bulge=rng.uniform(0.1, 0.2)),
        "cone": lambda: _cone(detail, radius=0.45 * rng.uniform(0.8, 1.2)),
        "torus": lambda: _torus(detail, minor=rng.uniform(0.1, 0.18)),
    }
    return _clean(builders[shape]())


def _pad(data: bytes, filler: bytes) -> bytes:
    return data + filler * (-len(data) % 4)


def glb_bytes(mesh: Mesh, material: dict[str, object], name: str) -> bytes:
    """Binary glTF 2.0: one buffer, one view per attribute (4-byte aligned), one mesh, node,
    scene and material; the JSON chunk padded with spaces, the binary one with zeros."""
    binary = bytearray()
    views: list[dict[str, int]] = []
    accessors: list[dict[str, object]] = []

    def add(array: np.ndarray, target: int, kind: str, component: int, bounds: bool = False) -> int:
        data = np.ascontiguousarray(array).tobytes()
        views.append({"buffer": 0, "byteOffset": len(binary), "byteLength": len(data), "target": target})
        binary.extend(_pad(data, b"\0"))
        accessor: dict[str, object] = {"bufferView": len(views) - 1, "componentType": component,
                                       "count": len(array), "type": kind}
        if bounds:  # exact float32 values, as the validator compares them with the data
            accessor["min"] = [float(v) for v in array.min(axis=0)]
            accessor["max"] = [float(v) for v in array.max(axis=0)]
        accessors.append(accessor)
        return len(accessors) - 1

    attributes = {
        "POSITION": add(mesh.positions.astype("<f4"), ARRAY_BUFFER, "VEC3", FLOAT, bounds=True),
        "NORMAL": add(mesh.normals.astype("<f4"), ARRAY_BUFFER, "VEC3", FLOAT),
        "TEXCOORD_0": add(mesh.uvs.astype("<f4"), ARRAY_BUFFER, "VEC2", FLOAT),
    }
    if mesh.colours is not None:
        attributes["COLOR_0"] = add(mesh.colours.astype("<f4"), ARRAY_BUFFER, "VEC3", FLOAT)
    small = len(mesh.positions) < 65535  # 65535 itself is the primitive-restart value
    indices = add(mesh.triangles.reshape(-1).astype("<u2" if small else "<u4"), ELEMENT_ARRAY_BUFFER,
                  "SCALAR", UNSIGNED_SHORT if small else UNSIGNED_INT)
    document = {
        "asset": {"version": "2.0", "generator": "Gaia built-in generator"},
        "scene": 0, "scenes": [{"name": name, "nodes": [0]}], "nodes": [{"name": name, "mesh": 0}],
        "meshes": [{"name": name, "primitives": [
            {"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}],
        "materials": [material], "buffers": [{"byteLength": len(binary)}],
        "bufferViews": views, "accessors": accessors,
    }
    text = _pad(json.dumps(document, separators=(",", ":")).encode(), b" ")
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join([struct.pack("<4sII", b"glTF", 2, total), struct.pack("<I4s", len(text), b"JSON"), text,
                     struct.pack("<I4s", len(binary), b"BIN\0"), bytes(binary)])


def make_model(words: Words, rng: np.random.Generator, detail: int,
               progress: Progress) -> tuple[bytes, dict[str, object]]:
    """A model for the description: GLB bytes and what was built."""
    progress(10, "shaping")
    shape = next((SHAPE_WORDS[word] for word in words if word in SHAPE_WORDS), "sphere")
    mesh = build_mesh(shape, detail, words, rng)
    progress(60, "writing glTF")
    data = glb_bytes(mesh, _material(words, shape, rng), shape)
    progress(90, "written")
    return data, {"vertices": len(mesh.positions), "triangles": len(mesh.triangles), "shape": shape,
                  "bounds_min": mesh.positions.min(axis=0).round(6).tolist(),
                  "bounds_max": mesh.positions.max(axis=0).round(6).tolist()}
