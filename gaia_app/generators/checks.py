"""Checks that a file a provider sent really is what it claims to be, before Gaia keeps it.

A provider can answer 200 with an HTML error page, a JPEG where PNG was asked for, a cut-off
download or a decompression bomb. `check_file` decodes the file the way a client would (PNG
with Pillow, WAV with `wave`, GLB by its binary glTF header and JSON chunk), refuses it with
`GeneratorError(kind="bad_response")` when it does not hold up, and returns what it learnt
(width/height, duration, vertex and triangle counts) as the file's metadata.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import wave
import zlib
from typing import Any


from gaia_app.generators.base import GeneratorError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Larger than any image a provider makes (4096 x 4096 is 16.7M), far below what would take
# a worker's memory when decoded; checked before decoding.
MAX_PIXELS = 40_000_000
WAV_RATES = (8_000, 192_000)
WAV_MAX_CHANNELS = 8
GLB_MAGIC = b"glTF"
GLB_HEADER = struct.Struct("<4sII")
GLB_CHUNK_HEADER = struct.Struct("<II")
GLB_JSON_CHUNK = 0x4E4F534A
GLB_BIN_CHUNK = 0x004E4942
# glTF primitive modes: 4 triangles, 5 triangle strip, 6 triangle fan.
_TRIANGLES, _STRIP, _FAN = 4, 5, 6


def check_file(format: str, data: bytes, max_bytes: int, *, generator: str = "checks",
               max_pixels: int = MAX_PIXELS) -> dict[str, Any]:
    """What is known of `data` as a file of `format`; GeneratorError("bad_response") if it
    is not one, is larger than `max_bytes`, or does not decode."""
    if format not in ("png", "wav", "glb"):
        raise ValueError(f"no check for format {format!r}")
    if not data:
        raise _bad(generator, f"the {format.upper()} file is empty")
    if len(data) > max_bytes:
        raise _bad(generator, f"the {format.upper()} file is {len(data)} bytes, over the "
                              f"{max_bytes}-byte limit")
    if format == "png":
        return _check_png(data, generator, max_pixels)
    if format == "wav":
        return _check_wav(data, generator)
    return _check_glb(data, generator)


def _bad(generator: str, message: str) -> GeneratorError:
    return GeneratorError(generator, "bad_response", message)


# ------------------------------------------------------------------------------ PNG


def _check_png(data: bytes, generator: str, max_pixels: int) -> dict[str, Any]:
    # Pillow is loaded by the first check, not by every process that imports a generator.
    from PIL import Image

    if not data.startswith(PNG_SIGNATURE):
        raise _bad(generator, f"the file is not a PNG (it starts with {data[:8]!r})")
    try:
        with warnings.catch_warnings():
            # Pillow only warns below twice its own limit; any bomb is an error here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if image.format != "PNG":
                    raise _bad(generator, f"the file decodes as {image.format}, not PNG")
                if width * height > max_pixels:
                    raise _bad(generator, f"the PNG claims {width}x{height} pixels, over the "
                                          f"{max_pixels}-pixel limit")
                image.verify()  # chunk CRCs and structure, without decoding pixels
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # verify() does not decompress: a cut-off IDAT shows only here
                mode = image.mode
    except GeneratorError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bad(generator, f"the PNG does not decode: {exc}") from None
    return {"width": width, "height": height, "mode": mode}


# ------------------------------------------------------------------------------ WAV


def _check_wav(data: bytes, generator: str) -> dict[str, Any]:
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            channels, width, rate, frames = (reader.getnchannels(), reader.getsampwidth(),
                                             reader.getframerate(), reader.getnframes())
            compression = reader.getcomptype()
            samples = reader.readframes(frames)
    except (wave.Error, EOFError, struct.error, ValueError) as exc:
        raise _bad(generator, f"the WAV does not open: {exc}") from None
    problems = [
        (compression != "NONE", f"it is compressed ({compression}), not PCM"),
        (not 1 <= channels <= WAV_MAX_CHANNELS, f"it has {channels} channels"),
        (not 1 <= width <= 4, f"its samples are {width} bytes wide"),
        (not WAV_RATES[0] <= rate <= WAV_RATES[1], f"its sample rate is {rate} Hz"),
        (frames == 0, "it holds no samples"),
        (len(samples) != frames * channels * width,
         f"it is cut off ({len(samples)} of {frames * channels * width} bytes of samples)"),
    ]
    for failed, problem in problems:
        if failed:
            raise _bad(generator, f"the WAV is unusable: {problem}")
    return {"duration_s": round(frames / rate, 3), "sample_rate": rate, "channels": channels,
            "sample_bits": width * 8}


# ------------------------------------------------------------------------------ GLB


def _check_glb(data: bytes, generator: str) -> dict[str, Any]:
    if len(data) < GLB_HEADER.size + GLB_CHUNK_HEADER.size:
        raise _bad(generator, "the GLB is shorter than its headers")
    magic, version, length = GLB_HEADER.unpack_from(data)
    if magic != GLB_MAGIC:
        raise _bad(generator, f"the file is not a GLB (magic {magic!r})")
    if version != 2:
        raise _bad(generator, f"the GLB is glTF version {version}, not 2")
    if length != len(data):
        raise _bad(generator, f"the GLB header says {length} bytes, the file has {len(data)}")
    chunks = _glb_chunks(data, generator)
    if chunks[0][0] != GLB_JSON_CHUNK:
        raise _bad(generator, "the GLB's first chunk is not JSON")
    try:
        document = json.loads(chunks[0][1].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _bad(generator, "the GLB's JSON chunk does not parse") from None
    asset = document.get("asset") if isinstance(document, dict) else None
    if not isinstance(asset, dict) or asset.get("version") != "2.0":
        raise _bad(generator, "the GLB's JSON does not declare asset.version 2.0")
    binary = next((payload for kind, payload in chunks[1:] if kind == GLB_BIN_CHUNK), b"")
    _check_glb_buffer(document, binary, generator)
    return {"bytes": len(data), **_mesh_counts(document, generator)}


def _glb_chunks(data: bytes, generator: str) -> list[tuple[int, bytes]]:
    """(type, payload) of every chunk; they must tile the file exactly, 4-byte aligned."""
    chunks, offset = [], GLB_HEADER.size
    while offset < len(data):
        if offset + GLB_CHUNK_HEADER.size > len(data):
            raise _bad(generator, "the GLB ends inside a chunk header")
        size, kind = GLB_CHUNK_HEADER.unpack_from(data, offset)
        start = offset + GLB_CHUNK_HEADER.size
        if size % 4 or start + size > len(data):
            raise _bad(generator, f"a GLB chunk of {size} bytes does not fit the file")
        chunks.append((kind, data[start:start + size]))
        offset = start + size
    if not chunks:
        raise _bad(generator, "the GLB has no chunks")
    return chunks


def _check_glb_buffer(document: dict, binary: bytes, generator: str) -> None:
    """The buffer the BIN chunk stands for (the first one, without a uri) must fit in it."""
    buffers = document.get("buffers") or []
    if not isinstance(buffers, list) or not buffers or not isinstance(buffers[0], dict):
        return
    first = buffers[0]
    if "uri" in first:
        return
    needed = first.get("byteLength")
    if not isinstance(needed, int) or needed > len(binary):
        raise _bad(generator, f"the GLB's binary chunk holds {len(binary)} bytes, its buffer "
                              f"claims {needed}")


def _mesh_counts(document: dict, generator: str) -> dict[str, int]:
    """Meshes, vertices and triangles as the JSON describes them (accessor counts)."""
    try:
        accessors = document.get("accessors") or []
        meshes = document.get("meshes") or []
        vertices = triangles = 0
        for mesh in meshes:
            for primitive in mesh.get("primitives", []):
                count = accessors[primitive["attributes"]["POSITION"]]["count"]
                vertices += count
                indexed = primitive.get("indices")
                corners = count if indexed is None else accessors[indexed]["count"]
                mode = primitive.get("mode", _TRIANGLES)
                if mode == _TRIANGLES:
                    triangles += corners // 3
                elif mode in (_STRIP, _FAN):
                    triangles += max(corners - 2, 0)
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _bad(generator, "the GLB's JSON does not describe its meshes") from None
    return {"meshes": len(meshes), "vertices": vertices, "triangles": triangles}
