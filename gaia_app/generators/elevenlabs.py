"""Sound effects (WAV) from ElevenLabs' sound generation API (`POST /v1/sound-generation`).

The request is JSON (`text`, optional `duration_seconds` 0.5..30, `prompt_influence` 0..1)
with the key in `xi-api-key`; `output_format` is a query parameter. Gaia asks for
`pcm_44100`, raw 16-bit little-endian mono samples, and wraps them into a WAV itself. Errors
are `{"detail": {"status", "message"}}`, or FastAPI's `{"detail": [{"loc", "msg", "type"}]}`
for a 422.
Reference: https://elevenlabs.io/docs/api-reference/text-to-sound-effects/convert
"""

from __future__ import annotations

import io
import wave
from collections.abc import Mapping
from typing import Any

from gaia_app.generators.base import (
    GeneratedFile,
    GenerationRequest,
    GeneratorKind,
    Progress,
)
from gaia_app.generators.checks import check_file
from gaia_app.generators.remote import (
    ErrorDetail,
    RemoteGenerator,
    compose_prompt,
    pick_number,
    refuse_unknown,
)

ELEVENLABS_DEFAULT_BASE_URL = "https://api.elevenlabs.io"
OUTPUT_FORMAT = "pcm_44100"
SAMPLE_RATE = 44_100
SAMPLE_BYTES = 2
WAV_HEADER_BYTES = 44  # the samples were held to the limit; the WAV adds its header
DURATION_RANGE = (0.5, 30.0)
DEFAULT_PROMPT_INFLUENCE = 0.3
# The API documents no prompt limit; this only keeps a runaway description from being sent.
PROMPT_LIMIT = 5_000
# Answers that are certainly not raw PCM: an error or a page sent as 200, another container.
NOT_PCM_TYPES = ("application/json", "audio/mpeg", "audio/mp3", "audio/ogg", "audio/opus")
CONTAINER_MAGIC = (b"ID3", b"OggS", b"RIFF", b"fLaC", b"{", b"<")

# Credits from ElevenLabs' help centre ("Sound Effects: API 100 credits per generation, or 20
# credits per second when the duration is set"), at $0.24 per 1,000 credits (the Pro plan's
# usage-based rate; pcm_44100 needs Pro); estimates.
CREDITS_PER_AUTO_GENERATION = 100
CREDITS_PER_SECOND = 20
USD_PER_CREDIT = 0.24 / 1000


def read_elevenlabs_error(status: int, body: Any) -> ErrorDetail:
    """`{"detail": {"status", "message"}}`, `{"detail": [{"loc", "msg"}]}` or a string."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        message = ": ".join(str(detail[k]) for k in ("status", "message") if detail.get(k))
    elif isinstance(detail, list):
        message = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', []))}: {item.get('msg')}"
            for item in detail if isinstance(item, dict))
    else:
        message = str(detail) if detail else None
    return ErrorDetail(message[:500] if message else None)


class ElevenLabsSoundGenerator(RemoteGenerator):
    id = "elevenlabs"
    name = "ElevenLabs Sound Effects"
    categories = ("audio",)

    default_base_url = ELEVENLABS_DEFAULT_BASE_URL
    read_error = staticmethod(read_elevenlabs_error)

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"xi-api-key": api_key}

    def check_options(self, category: str, options: Mapping[str, Any]) -> dict[str, Any]:
        self.check_category(category)
        refuse_unknown(options, ("duration", "prompt_influence"))
        return {
            # None: the provider picks a length that suits the prompt.
            "duration": pick_number(options, "duration", *DURATION_RANGE, None),
            "prompt_influence": pick_number(options, "prompt_influence", 0.0, 1.0,
                                            DEFAULT_PROMPT_INFLUENCE),
        }

    def cost(self, request: GenerationRequest) -> float:
        duration = self.check_options(request.category, request.options)["duration"]
        credits = (CREDITS_PER_AUTO_GENERATION if duration is None
                   else CREDITS_PER_SECOND * duration)
        return round(credits * USD_PER_CREDIT, 6)

    def generate(self, request: GenerationRequest, progress: Progress) -> GeneratedFile:
        self.api.require_key()
        options = self.check_options(request.category, request.options)
        body: dict[str, Any] = {
            "text": compose_prompt(request, self.id, PROMPT_LIMIT),
            "prompt_influence": options["prompt_influence"],
        }
        if options["duration"] is not None:
            body["duration_seconds"] = options["duration"]
        progress(5, "asking ElevenLabs for the sound")
        limit = self.settings.max_download_bytes
        answer = self.api.call("POST", "/v1/sound-generation", json_body=body,
                               params={"output_format": OUTPUT_FORMAT}, max_bytes=limit)
        samples = answer.content
        if answer.content_type in NOT_PCM_TYPES or answer.content_type.startswith("text/"):
            raise self.api.fail("bad_response", f"ElevenLabs answered {answer.content_type!r}, "
                                                f"not the {OUTPUT_FORMAT} samples asked for")
        if not samples or len(samples) % SAMPLE_BYTES or samples.startswith(CONTAINER_MAGIC):
            raise self.api.fail("bad_response", "ElevenLabs' answer is not 16-bit PCM samples")
        progress(80, "checking the sound")
        data = wav_of(samples)
        metadata = check_file("wav", data, limit + WAV_HEADER_BYTES, generator=self.id)
        metadata["prompt_influence"] = options["prompt_influence"]
        return GeneratedFile(data, "wav", metadata)


def wav_of(samples: bytes) -> bytes:
    """Raw 16-bit little-endian mono samples at 44.1 kHz, as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(SAMPLE_BYTES)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(samples)
    return buffer.getvalue()


KIND = GeneratorKind(
    id="elevenlabs",
    name="ElevenLabs Sound Effects",
    categories=("audio",),
    factory=ElevenLabsSoundGenerator,
    key_variable="ELEVENLABS_API_KEY",
    url_variable="ELEVENLABS_BASE_URL",
    default_base_url=ELEVENLABS_DEFAULT_BASE_URL,
)
