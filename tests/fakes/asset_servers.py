"""Loopback fakes of the asset providers' HTTP APIs: OpenAI Images, Stability AI's Stable
Image (v2beta), Meshy Text to 3D (v2) and ElevenLabs sound generation.

The generators have to be tested against what the providers really put on the wire (request
and answer shapes, multipart forms, task polling, signed file URLs that expire, error bodies,
Retry-After) and against the ways they fail (refusals, garbage, a file of the wrong type or
too large, slowness), without internet access or API keys. Each fake is a small threaded
standard-library HTTP/1.1 server on 127.0.0.1 that checks the key the way its API does,
validates requests like the real one, records every request it gets, and answers as the
current `Fault` says. Files (real small PNG, WAV/PCM and GLB bytes) are served by the same
server under /files/, behind URLs that expire.
"""

from __future__ import annotations

import base64
import email
import email.policy
import io
import json
import math
import socket
import struct
import time
import uuid
import wave
import zlib
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from PIL import Image

from tests.fakes.loopback import LoopbackHandler, LoopbackServer

GARBAGE = b'<html><body>502 Bad Gateway</body></html> {"data": [{"b64_json": '


@dataclass
class Fault:
    """How a fake answers one request (taken from `queue` while it is non-empty, else the
    fake's `fault`; file downloads use `download_queue`, else `download_fault`). A wrong key
    still gets its 401 first; `delay` applies before anything else is sent."""

    status: int | None = None  # answer this HTTP error status, with the provider's error body
    retry_after: float | None = None  # a `retry-after` header (seconds) sent with `status`
    refuse: bool = False  # the provider's moderation refusal (its status and body)
    filtered: bool = False  # Stability: 200, but `finish-reason: CONTENT_FILTERED`
    garbage: bool = False  # 200 whose body or file is no file at all
    wrong_type: bool = False  # 200 with a real file of another type (JPEG, MP3, PNG for GLB)
    oversize: int | None = None  # the file grown, still valid, to at least this many bytes
    delay: float = 0.0  # wait this long before answering (for read timeouts)
    redirect_to: str | None = None  # downloads: answer 302 with this Location
    chunked: bool = False  # downloads: no Content-Length, the size shows only while reading


# ------------------------------------------------------------------------------ real files


def make_png(width: int = 64, height: int = 64, color=(40, 120, 200)) -> bytes:
    image = Image.new("RGB", (width, height), color)
    for x in range(0, width, 8):  # a few lines, so it is not one flat colour
        image.putpixel((x, x % height), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def make_jpeg(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def grow_png(png: bytes, size: int) -> bytes:
    """The PNG, still valid, grown to at least `size` bytes by a private ancillary chunk."""
    filler = b"\0" * max(size - len(png), 0)
    chunk = struct.pack(">I", len(filler)) + b"faKe" + filler
    chunk += struct.pack(">I", zlib.crc32(b"faKe" + filler))
    return png[:-12] + chunk + png[-12:]  # before IEND


def make_pcm(seconds: float, rate: int = 44_100, frequency: float = 440.0) -> bytes:
    """Raw 16-bit little-endian mono samples of a sine tone, as ElevenLabs' pcm_* formats."""
    count = int(seconds * rate)
    return struct.pack(f"<{count}h", *(int(8000 * math.sin(2 * math.pi * frequency * i / rate))
                                       for i in range(count)))


def make_wav(seconds: float = 0.25, rate: int = 22_050) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(make_pcm(seconds, rate))
    return buffer.getvalue()


MP3_STUB = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\0" * 413


def make_glb(extra: int = 0) -> bytes:
    """A one-triangle binary glTF 2.0, built by hand; `extra` bytes in an unknown chunk
    (which readers must skip) make it larger and still valid."""
    positions = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0)
    indices = struct.pack("<3H", 0, 1, 2) + b"\0\0"
    document = {
        "asset": {"version": "2.0", "generator": "gaia fake"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
             "min": [0, 0, 0], "max": [1, 1, 0]},
            {"bufferView": 1, "componentType": 5123, "count": 3, "type": "SCALAR"},
        ],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": 36},
                        {"buffer": 0, "byteOffset": 36, "byteLength": 6}],
        "buffers": [{"byteLength": 44}],
    }
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    binary = positions + indices
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
    chunks += struct.pack("<II", len(binary), 0x004E4942) + binary
    if extra:
        padding = b"\0" * (extra + (-extra % 4))
        chunks += struct.pack("<II", len(padding), 0x4B414646) + padding
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ------------------------------------------------------------------------------ transport


class _Abort(Exception):
    """Unwinds a request whose connection has to be dropped (stopping, client gone)."""


class _Handler(LoopbackHandler):
    """Transport only; the fakes decide what to answer."""

    fake: _AssetFake

    def do_GET(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = {"method": self.command, "path": split.path,
                  "query": dict(parse_qsl(split.query)), "headers": headers, "body": body,
                  "json": parsed, "form": _form_fields(headers.get("content-type", ""), body)}
        self.request_id = uuid.uuid4().hex
        try:
            self.fake._handle(self, record)
        except _Abort:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    do_POST = do_GET

    def pause(self, seconds: float):
        if self.server.stopping.wait(seconds) if seconds > 0 else self.server.stopping.is_set():
            raise _Abort

    def send(self, status: int, data: bytes, ctype: str, headers=(), chunked: bool = False):
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            if not chunked:
                self.wfile.write(data)
                return
            for start in range(0, len(data), 65536):
                piece = data[start:start + 65536]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        except OSError as exc:
            raise _Abort from exc

    def send_json(self, status: int, obj, headers=()):
        self.send(status, json.dumps(obj).encode(), "application/json", headers)


def _form_fields(content_type: str, body: bytes) -> dict[str, str] | None:
    """The fields of a multipart/form-data body (None for any other body)."""
    if not content_type.startswith("multipart/form-data"):
        return None
    message = email.message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
                                       + body, policy=email.policy.HTTP)
    return {part.get_param("name", header="content-disposition"):
            part.get_payload(decode=True).decode("utf-8") for part in message.iter_parts()}


@dataclass
class _File:
    data: bytes
    content_type: str
    expires_at: float


class _AssetFake(LoopbackServer):
    """Recording, faults and the /files/ downloads every fake shares.

    Subclasses implement `_auth_error(h) -> (status, body) | None`,
    `_forced_error(fault) -> (status, body, headers)` and `_api(h, record, fault)`.
    """

    handler = _Handler

    def __init__(self, api_key: str):
        self.api_key = api_key
        self.requests: list[dict] = []
        self.fault = Fault()
        self.queue: list[Fault] = []
        self.download_fault = Fault()
        self.download_queue: list[Fault] = []
        self.file_ttl = 60.0  # seconds a published file URL stays valid
        self.files: dict[str, _File] = {}
        super().__init__()

    def reset(self):
        with self._lock:
            self.requests.clear()
            self.queue.clear()
            self.download_queue.clear()
            self.files.clear()
            self.fault, self.download_fault = Fault(), Fault()
            self.file_ttl = 60.0
        self._reset()

    def _reset(self):
        pass

    def api_requests(self) -> list[dict]:
        return [r for r in self.requests if not r["path"].startswith("/files/")]

    def downloads(self) -> list[dict]:
        return [r for r in self.requests if r["path"].startswith("/files/")]

    def publish(self, data: bytes, content_type: str, name: str) -> str:
        """A signed-looking URL on this server for `data`, valid `file_ttl` seconds."""
        token = uuid.uuid4().hex
        expires_at = time.time() + self.file_ttl
        with self._lock:
            self.files[token] = _File(data, content_type, expires_at)
        return f"{self.url}/files/{token}/{name}?Expires={int(expires_at)}&Signature=fake"

    def _handle(self, h: _Handler, record: dict):
        downloading = record["path"].startswith("/files/")
        with self._lock:
            self.requests.append(record)
            if downloading:
                fault = self.download_queue.pop(0) if self.download_queue else self.download_fault
            else:
                fault = self.queue.pop(0) if self.queue else self.fault
        if downloading:
            return self._download(h, record["path"], fault)
        auth = self._auth_error(h)
        if auth is not None:
            return h.send_json(*auth)
        h.pause(fault.delay)
        if fault.status is not None:
            status, body, headers = self._forced_error(fault)
            if fault.retry_after is not None:
                headers = [*headers, ("retry-after", _seconds(fault.retry_after))]
            return h.send_json(status, body, headers)
        self._api(h, record, fault)

    def _download(self, h: _Handler, path: str, fault: Fault):
        h.pause(fault.delay)
        if fault.redirect_to:
            return h.send(302, b"", "text/plain", [("Location", fault.redirect_to)])
        if fault.status is not None:
            return h.send(fault.status, _storage_error("InternalError", "Forced"),
                          "application/xml")
        token = path.split("/")[2] if path.count("/") >= 3 else ""
        with self._lock:
            stored = self.files.get(token)
        if stored is None:
            return h.send(404, _storage_error("NoSuchKey", "The specified key does not exist."),
                          "application/xml")
        if time.time() >= stored.expires_at:
            return h.send(403, _storage_error("AccessDenied", "Request has expired"),
                          "application/xml")
        h.send(200, stored.data, stored.content_type, chunked=fault.chunked)


def _storage_error(code: str, message: str) -> bytes:
    """How a signed-URL object store (S3, CloudFront) refuses a download."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()


def _bearer(h: _Handler) -> str:
    given = h.headers.get("Authorization", "")
    return given[7:] if given.startswith("Bearer ") else ""


def _file_with_fault(good: bytes, fault: Fault, wrong: bytes, grow) -> bytes:
    if fault.garbage:
        return GARBAGE
    if fault.wrong_type:
        return wrong
    if fault.oversize:
        return grow(good, fault.oversize)
    return good


# ------------------------------------------------------------------------------ OpenAI


class FakeOpenAIImages(_AssetFake):
    """OpenAI Images (https://platform.openai.com/docs/api-reference/images/create)."""

    MODELS = {  # sizes, qualities, prompt limit
        "gpt-image-1": (("1024x1024", "1536x1024", "1024x1536", "auto"),
                        ("low", "medium", "high", "auto"), 32000),
        "dall-e-3": (("1024x1024", "1792x1024", "1024x1792"), ("standard", "hd"), 4000),
        "dall-e-2": (("256x256", "512x512", "1024x1024"), ("standard",), 1000),
    }
    # gpt-image-1 output image tokens per quality and shape (OpenAI's image pricing guide).
    OUTPUT_TOKENS = {"low": (272, 400), "medium": (1056, 1568), "high": (4160, 6208)}

    def __init__(self, api_key: str = "sk-fake-images"):
        super().__init__(api_key)

    @staticmethod
    def _error(status: int, message: str, type_: str, code=None, param=None, headers=()):
        return status, {"error": {"message": message, "type": type_, "param": param,
                                  "code": code}}, list(headers)

    def _auth_error(self, h):
        key = _bearer(h)
        if key == self.api_key:
            return None
        shown = key[:3] + "*" * (len(key) - 7) + key[-4:] if len(key) > 7 else key
        return self._error(401, f"Incorrect API key provided: {shown}. You can find your API "
                                "key at https://platform.openai.com/account/api-keys.",
                           "invalid_request_error", "invalid_api_key")[:2]

    def _forced_error(self, fault):
        if fault.status == 429:
            return self._error(429, "Rate limit reached for images per minute.", "requests",
                               "rate_limit_exceeded",
                               headers=[("x-ratelimit-limit-requests", "5"),
                                        ("x-ratelimit-remaining-requests", "0")])
        if fault.status >= 500:
            return self._error(fault.status, "The server had an error while processing your "
                                             "request.", "server_error")
        return self._error(fault.status, "Invalid request.", "invalid_request_error")

    def _validate(self, body) -> tuple | None:
        if not isinstance(body, dict):
            return self._error(400, "We could not parse the JSON body of your request.",
                               "invalid_request_error")
        model = body.get("model", "dall-e-2")
        if model not in self.MODELS:
            return self._error(400, f"Invalid model {model}. The model must be one of "
                                    f"{sorted(self.MODELS)}.", "invalid_request_error",
                               "invalid_value", "model")
        sizes, qualities, limit = self.MODELS[model]
        prompt = body.get("prompt")
        checks = [  # (failed, message, param); the first failure wins
            (not isinstance(prompt, str) or not prompt, "Missing required parameter: 'prompt'.",
             "prompt"),
            (isinstance(prompt, str) and len(prompt) > limit,
             f"Invalid 'prompt': string too long. Expected a string with maximum length {limit}.",
             "prompt"),
            (body.get("n", 1) != 1 and model == "dall-e-3", "Invalid 'n': dall-e-3 only "
             "supports n=1.", "n"),
            (body.get("size", sizes[0]) not in sizes, f"Invalid value: '{body.get('size')}'. "
             f"Supported values are: {', '.join(sizes)}.", "size"),
            (body.get("quality", qualities[0]) not in qualities, f"Invalid value: "
             f"'{body.get('quality')}'. Supported values are: {', '.join(qualities)}.", "quality"),
            (model == "gpt-image-1" and "response_format" in body,
             "Unknown parameter: 'response_format'.", "response_format"),
            (body.get("response_format", "url") not in ("url", "b64_json"),
             "Invalid value for 'response_format'.", "response_format"),
        ]
        for failed, message, param in checks:
            if failed:
                return self._error(400, message, "invalid_request_error", "invalid_value", param)
        return None

    def _api(self, h, record, fault):
        if (record["method"], record["path"]) != ("POST", "/v1/images/generations"):
            return h.send_json(*self._error(404, f"Invalid URL ({record['method']} "
                                                 f"{record['path']})", "invalid_request_error")[:2])
        body = record["json"]
        error = self._validate(body)
        if error is not None:
            return h.send_json(*error)
        model = body.get("model", "dall-e-2")
        if fault.refuse:
            code, type_ = (("moderation_blocked", "image_generation_user_error")
                           if model == "gpt-image-1" else
                           ("content_policy_violation", "invalid_request_error"))
            return h.send_json(*self._error(
                400, "Your request was rejected by the safety system. If you believe this is "
                     "an error, contact us at help.openai.com and include the request ID "
                     f"req_{h.request_id}. safety_violations=[violence].", type_, code)[:2])
        if fault.garbage:
            return h.send(200, GARBAGE, "application/json")
        h.send_json(200, self._answer(body, model, fault), [("x-request-id", h.request_id)])

    def _answer(self, body: dict, model: str, fault: Fault) -> dict:
        size = body.get("size", "1024x1024")
        width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
        png = _file_with_fault(make_png(width, height), fault, make_jpeg(width, height), grow_png)
        answer = {"created": int(time.time())}
        if model != "gpt-image-1":
            image = {"revised_prompt": "A fake revision of: " + body["prompt"][:100]}
            if body.get("response_format", "url") == "url":
                image["url"] = self.publish(png, "image/png", "img.png")
            else:
                image["b64_json"] = base64.b64encode(png).decode()
            return {**answer, "data": [image]}
        quality = body.get("quality", "auto")
        tokens = self.OUTPUT_TOKENS["high" if quality == "auto" else quality]
        output_tokens = tokens[0] if width == height else tokens[1]
        text_tokens = len(body["prompt"].split())
        return {**answer, "background": "opaque", "output_format": "png",
                "quality": "high" if quality == "auto" else quality, "size": f"{width}x{height}",
                "data": [{"b64_json": base64.b64encode(png).decode()}],
                "usage": {"input_tokens": text_tokens, "output_tokens": output_tokens,
                          "total_tokens": text_tokens + output_tokens,
                          "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens}}}


# ------------------------------------------------------------------------------ Stability


class FakeStability(_AssetFake):
    """Stability AI Stable Image v2beta generate (https://platform.stability.ai/docs/api-reference)."""

    ASPECT_SIZES = {"1:1": (1024, 1024), "16:9": (1344, 768), "21:9": (1536, 640),
                    "2:3": (832, 1216), "3:2": (1216, 832), "4:5": (896, 1088),
                    "5:4": (1088, 896), "9:16": (768, 1344), "9:21": (640, 1536)}
    ENDPOINTS = ("core", "ultra", "sd3")
    SD3_MODELS = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium")
    STYLE_PRESETS = ("3d-model", "analog-film", "anime", "cinematic", "comic-book",
                     "digital-art", "enhance", "fantasy-art", "isometric", "line-art",
                     "low-poly", "modeling-compound", "neon-punk", "origami", "photographic",
                     "pixel-art", "tile-texture")
    FORCED = {400: ("bad_request", "prompt: is required"),
              403: ("content_moderation", "Your request was flagged by our content moderation "
                                          "system, as a result your request was denied and you "
                                          "were not charged."),
              413: ("payload_too_large", "body: payloads cannot be larger than 10MiB in size"),
              422: ("invalid_language", "English is the only supported language for this "
                                        "service."),
              429: ("rate_limit_exceeded", "You have exceeded the rate limit of 150 requests "
                                           "within a 10 second period."),
              500: ("internal_error", "An unexpected server error has occurred, please try "
                                      "again later.")}

    def __init__(self, api_key: str = "sk-fake-stability"):
        super().__init__(api_key)

    @staticmethod
    def _error(status: int, name: str, *errors: str, headers=()):
        return status, {"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}, list(headers)

    def _auth_error(self, h):
        if _bearer(h) == self.api_key:
            return None
        return self._error(401, "unauthorized", "authorization: invalid or missing header "
                                                "value")[:2]

    def _forced_error(self, fault):
        name, message = self.FORCED.get(fault.status, ("server_error", "Server error"))
        return self._error(fault.status, name, message)

    def _validate(self, record: dict, endpoint: str) -> tuple | None:
        form, accept = record["form"], record["headers"].get("accept", "image/*")
        if form is None:
            return self._error(400, "bad_request", "content-type: must be multipart/form-data")
        seed = form.get("seed", "0")
        checks = [
            (accept not in ("image/*", "application/json"),
             "accept: must be image/* or application/json"),
            (not 1 <= len(form.get("prompt", "")) <= 10000,
             "prompt: must be between 1 and 10000 characters"),
            (form.get("aspect_ratio", "1:1") not in self.ASPECT_SIZES,
             f"aspect_ratio: must be one of {', '.join(self.ASPECT_SIZES)}"),
            (not seed.isdigit() or int(seed) > 4294967294,
             "seed: must be an integer between 0 and 4294967294"),
            (form.get("output_format", "png") not in ("jpeg", "png", "webp"),
             "output_format: must be one of jpeg, png, webp"),
            (len(form.get("negative_prompt", "")) > 10000,
             "negative_prompt: must be at most 10000 characters"),
            (form.get("style_preset", "enhance") not in self.STYLE_PRESETS,
             "style_preset: must be a known preset"),
            (endpoint == "sd3" and form.get("model", "sd3.5-large") not in self.SD3_MODELS,
             f"model: must be one of {', '.join(self.SD3_MODELS)}"),
        ]
        for failed, message in checks:
            if failed:
                return self._error(400, "bad_request", message)
        return None

    def _api(self, h, record, fault):
        parts = record["path"].split("/")
        endpoint = parts[-1] if record["path"].startswith("/v2beta/stable-image/generate/") else ""
        if record["method"] != "POST" or endpoint not in self.ENDPOINTS:
            return h.send_json(*self._error(404, "not_found", f"{record['path']}: not found")[:2])
        error = self._validate(record, endpoint)
        if error is not None:
            return h.send_json(*error)
        if fault.refuse:
            return h.send_json(*self._forced_error(Fault(status=403))[:2])
        form = record["form"]
        width, height = self.ASPECT_SIZES[form.get("aspect_ratio", "1:1")]
        image = self._image(form.get("output_format", "png"), width, height)
        data = _file_with_fault(image, fault, make_jpeg(width, height), grow_png)
        finish = "CONTENT_FILTERED" if fault.filtered else "SUCCESS"
        seed = form.get("seed", "0") if form.get("seed", "0") != "0" else "1229184957"
        ctype = f"image/{form.get('output_format', 'png')}"
        if record["headers"].get("accept", "image/*") == "application/json":
            return h.send(200, json.dumps({"image": base64.b64encode(data).decode(),
                                           "finish_reason": finish, "seed": int(seed)}).encode(),
                          f"application/json; type={ctype}", [("x-request-id", h.request_id)])
        h.send(200, data, ctype, [("finish-reason", finish), ("seed", seed),
                                  ("x-request-id", h.request_id)])

    @staticmethod
    def _image(output_format: str, width: int, height: int) -> bytes:
        if output_format == "png":
            return make_png(width, height)
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, output_format.upper())
        return buffer.getvalue()


# ------------------------------------------------------------------------------ Meshy


class FakeMeshy(_AssetFake):
    """Meshy Text to 3D v2 (https://docs.meshy.ai/api/text-to-3d): tasks advance one step per
    GET: PENDING, `steps` rounds of IN_PROGRESS with rising progress, then the end."""

    PATH = "/openapi/v2/text-to-3d"
    PREVIEW_FIELDS = {"mode", "prompt", "negative_prompt", "art_style", "ai_model", "topology",
                      "target_polycount", "should_remesh", "seed", "symmetry_mode",
                      "pose_mode", "moderation", "model_type"}
    REFINE_FIELDS = {"mode", "preview_task_id", "enable_pbr", "texture_prompt",
                     "texture_image_url", "ai_model", "moderation", "remove_lighting"}

    def __init__(self, api_key: str = "msy-fake-key"):
        super().__init__(api_key)
        self._reset()

    def _reset(self):
        self.tasks: dict[str, dict] = {}
        self.steps = 2  # IN_PROGRESS polls before a task ends
        self.end_preview = self.end_refine = "SUCCEEDED"  # or "FAILED" / "CANCELED"
        self.model_fault = Fault()  # garbage / wrong_type / oversize of the GLB made

    def _auth_error(self, h):
        if _bearer(h) == self.api_key:
            return None
        return 401, {"message": "Invalid API key"}

    def _forced_error(self, fault):
        messages = {402: "Insufficient funds", 429: "Too many requests",
                    400: "Invalid request"}
        return fault.status, {"message": messages.get(fault.status, "Internal server error")}, []

    def _api(self, h, record, fault):
        method, path = record["method"], record["path"]
        if method == "POST" and path == self.PATH:
            return self._create(h, record["json"])
        if method == "GET" and path.startswith(self.PATH + "/"):
            task = self.tasks.get(path[len(self.PATH) + 1:])
            if task is None:
                return h.send_json(404, {"message": "Task not found"})
            return h.send_json(200, self._advance(task))
        h.send_json(404, {"message": "Not Found"})

    def _problem(self, body) -> str | None:
        if not isinstance(body, dict) or body.get("mode") not in ("preview", "refine"):
            return "mode must be preview or refine"
        fields = self.PREVIEW_FIELDS if body["mode"] == "preview" else self.REFINE_FIELDS
        unknown = sorted(set(body) - fields)
        if unknown:
            return f"Unknown parameter: {unknown[0]}"
        if body["mode"] == "refine":
            preview = self.tasks.get(body.get("preview_task_id"))
            if not preview or preview["mode"] != "preview" or preview["status"] != "SUCCEEDED":
                return "preview_task_id must name a succeeded preview task"
            return None if isinstance(body.get("enable_pbr", False), bool) else "Invalid enable_pbr"
        prompt, polycount = body.get("prompt"), body.get("target_polycount", 30000)
        checks = [
            (not isinstance(prompt, str) or not 1 <= len(prompt) <= 600,
             "prompt is required, at most 600 characters"),
            (body.get("art_style", "realistic") not in ("realistic", "sculpture"), "Invalid art_style"),
            (body.get("ai_model", "latest") not in ("meshy-5", "meshy-6", "latest"), "Invalid ai_model"),
            (body.get("topology", "triangle") not in ("quad", "triangle"), "Invalid topology"),
            (not _is_int(polycount) or not 100 <= polycount <= 300000,
             "target_polycount must be between 100 and 300000"),
            (not _is_int(body.get("seed", 0)), "Invalid seed"),
        ]
        return next((message for failed, message in checks if failed), None)

    def _create(self, h, body):
        problem = self._problem(body)
        if problem:
            return h.send_json(400, {"message": problem})
        task_id = str(uuid.uuid4())
        now = int(time.time() * 1000)
        self.tasks[task_id] = {
            "id": task_id, "mode": body["mode"], "name": "", "seed": body.get("seed", 0),
            "art_style": body.get("art_style", "realistic"), "texture_richness": "",
            "prompt": body.get("prompt", ""), "negative_prompt": "", "texture_prompt": "",
            "model_urls": {}, "thumbnail_url": "", "video_url": "", "texture_urls": [],
            "progress": 0, "preceding_tasks": 1, "created_at": now, "started_at": 0,
            "finished_at": 0, "status": "PENDING", "task_error": {"message": ""}, "polls": 0,
        }
        h.send_json(202, {"result": task_id})

    def _advance(self, task: dict) -> dict:
        """One step further than the last GET saw."""
        task["polls"] += 1
        polls, now = task["polls"], int(time.time() * 1000)
        if task["status"] in ("PENDING", "IN_PROGRESS") and polls > 1:
            task.update(preceding_tasks=0, started_at=task["started_at"] or now)
            if polls <= self.steps + 1:
                task.update(status="IN_PROGRESS", progress=(polls - 1) * 100 // (self.steps + 1))
            else:
                self._end(task, now)
        return {k: v for k, v in task.items() if k != "polls"}

    def _end(self, task: dict, now: int):
        end = self.end_preview if task["mode"] == "preview" else self.end_refine
        task.update(status=end, finished_at=now)
        if end == "FAILED":
            task["task_error"] = {"message": "The server is busy, please try again later."}
            return
        if end == "CANCELED":
            return
        glb = _file_with_fault(make_glb(), self.model_fault, make_png(),
                               lambda good, size: make_glb(extra=size))
        task.update(progress=100, model_urls={
            "glb": self.publish(glb, "model/gltf-binary", "model.glb"),
            "fbx": f"{self.url}/files/missing/model.fbx",
            "usdz": f"{self.url}/files/missing/model.usdz",
            "obj": f"{self.url}/files/missing/model.obj",
            "mtl": f"{self.url}/files/missing/model.mtl"},
            thumbnail_url=self.publish(make_png(32, 32), "image/png", "preview.png"))


# ------------------------------------------------------------------------------ ElevenLabs


class FakeElevenLabs(_AssetFake):
    """ElevenLabs sound generation (https://elevenlabs.io/docs/api-reference/text-to-sound-effects/convert)."""

    PCM_RATES = {"pcm_8000": 8000, "pcm_16000": 16000, "pcm_22050": 22050, "pcm_24000": 24000,
                 "pcm_44100": 44100, "pcm_48000": 48000}
    MP3_FORMATS = ("mp3_22050_32", "mp3_44100_32", "mp3_44100_64", "mp3_44100_96",
                   "mp3_44100_128", "mp3_44100_192")
    AUTO_DURATION = 1.5  # what the fake "guesses" when no duration_seconds is given

    def __init__(self, api_key: str = "xi-fake-key"):
        super().__init__(api_key)

    @staticmethod
    def _invalid(where: str, name: str, message: str, type_: str):
        return 422, {"detail": [{"loc": [where, name], "msg": message, "type": type_}]}

    def _auth_error(self, h):
        if h.headers.get("xi-api-key") == self.api_key:
            return None
        return 401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}

    def _forced_error(self, fault):
        if fault.status == 422:
            return (*self._invalid("body", "text", "Field required", "missing"), [])
        statuses = {401: ("quota_exceeded", "This request exceeds your quota of 10000."),
                    429: ("too_many_concurrent_requests", "Too many concurrent requests. Your "
                          "current subscription is associated with a maximum of 2 concurrent "
                          "requests."),
                    400: ("invalid_request", "Invalid request.")}
        status, message = statuses.get(fault.status, ("internal_error", "Internal error."))
        return fault.status, {"detail": {"status": status, "message": message}}, []

    def _validate(self, record: dict) -> tuple | None:
        output_format = record["query"].get("output_format", "mp3_44100_128")
        if output_format not in self.PCM_RATES and output_format not in self.MP3_FORMATS:
            return self._invalid("query", "output_format", "Input should be a known output "
                                                           "format", "enum")
        body = record["json"]
        if not isinstance(body, dict):
            return self._invalid("body", "body", "Input should be a valid dictionary", "dict_type")
        text, duration = body.get("text"), body.get("duration_seconds")
        influence = body.get("prompt_influence")
        checks = [
            (not isinstance(text, str) or not text, "text", "Field required", "missing"),
            (duration is not None and not _is_number(duration), "duration_seconds",
             "Input should be a valid number", "float_type"),
            (_is_number(duration) and duration < 0.5, "duration_seconds",
             "Input should be greater than or equal to 0.5", "greater_than_equal"),
            (_is_number(duration) and duration > 30, "duration_seconds",
             "Input should be less than or equal to 30", "less_than_equal"),
            (influence is not None and (not _is_number(influence) or not 0 <= influence <= 1),
             "prompt_influence", "Input should be between 0 and 1", "value_error"),
        ]
        for failed, name, message, type_ in checks:
            if failed:
                return self._invalid("body", name, message, type_)
        return None

    def _api(self, h, record, fault):
        if (record["method"], record["path"]) != ("POST", "/v1/sound-generation"):
            return h.send_json(404, {"detail": "Not Found"})
        error = self._validate(record)
        if error is not None:
            return h.send_json(*error)
        output_format = record["query"].get("output_format", "mp3_44100_128")
        headers = [("request-id", h.request_id)]
        if fault.garbage:
            return h.send(200, GARBAGE, "audio/pcm", headers)
        if fault.wrong_type or output_format in self.MP3_FORMATS:
            return h.send(200, MP3_STUB, "audio/mpeg", headers)
        rate = self.PCM_RATES[output_format]
        duration = record["json"].get("duration_seconds") or self.AUTO_DURATION
        samples = make_pcm(duration, rate)
        if fault.oversize:
            samples += b"\0" * (fault.oversize - len(samples) + (fault.oversize % 2))
        h.send(200, samples, "audio/pcm", headers)
