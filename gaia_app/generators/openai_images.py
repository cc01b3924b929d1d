"""Images and textures from OpenAI's Images API (`POST /images/generations`).

gpt-image-1 always answers with the PNG in base64 (`data[0].b64_json`) and reports token
`usage`, from which the real cost is known; dall-e-3 is asked for a `url`, which expires
within the hour and is downloaded at once. Moderation refusals come back as 400 with the
error code `moderation_blocked` (gpt-image-1) or `content_policy_violation` (dall-e-3).
Reference: https://platform.openai.com/docs/api-reference/images/create
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
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
    pick_choice,
    refuse_unknown,
)

OPENAI_IMAGES_DEFAULT_BASE_URL = "https://api.openai.com/v1"
REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
# A base64 PNG is 4/3 of the file, inside a small JSON envelope.
JSON_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class ImageModel:
    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    default_quality: str
    prompt_limit: int


MODELS: Mapping[str, ImageModel] = {
    "gpt-image-1": ImageModel(("1024x1024", "1536x1024", "1024x1536", "auto"),
                              ("low", "medium", "high", "auto"), "medium", 32_000),
    "dall-e-3": ImageModel(("1024x1024", "1792x1024", "1024x1792"), ("standard", "hd"),
                           "standard", 4_000),
}
DEFAULT_MODEL = "gpt-image-1"
DEFAULT_SIZE = "1024x1024"

# USD per image, from OpenAI's pricing page (https://platform.openai.com/docs/pricing, image
# generation) as of 2025: estimates, the real gpt-image-1 cost follows from `usage`. "auto"
# is counted as the dearest choice it may make.
PRICES: Mapping[tuple[str, str, str], float] = {
    ("gpt-image-1", "low", "square"): 0.011, ("gpt-image-1", "low", "wide"): 0.016,
    ("gpt-image-1", "medium", "square"): 0.042, ("gpt-image-1", "medium", "wide"): 0.063,
    ("gpt-image-1", "high", "square"): 0.167, ("gpt-image-1", "high", "wide"): 0.25,
    ("dall-e-3", "standard", "square"): 0.04, ("dall-e-3", "standard", "wide"): 0.08,
    ("dall-e-3", "hd", "square"): 0.08, ("dall-e-3", "hd", "wide"): 0.12,
}
# gpt-image-1 per million tokens: text input 5.00, image input 10.00, image output 40.00.
TOKEN_PRICES_PER_MILLION = {"text_input": 5.0, "image_input": 10.0, "output": 40.0}


def read_openai_error(status: int, body: Any) -> ErrorDetail:
    """`{"error": {"message", "type", "param", "code"}}`."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ErrorDetail()
    message = error.get("message")
    if error.get("param"):
        message = f"{message} (param: {error['param']})"
    return ErrorDetail(str(message)[:500] if message else None,
                       refused=error.get("code") in REFUSAL_CODES)


class OpenAIImagesGenerator(RemoteGenerator):
    id = "openai"
    name = "OpenAI Images"
    categories = ("image", "texture")

    default_base_url = OPENAI_IMAGES_DEFAULT_BASE_URL
    read_error = staticmethod(read_openai_error)

    def check_options(self, category: str, options: Mapping[str, Any]) -> dict[str, Any]:
        self.check_category(category)
        refuse_unknown(options, ("model", "size", "quality"))
        model = pick_choice(options, "model", MODELS, DEFAULT_MODEL)
        facts = MODELS[model]
        return {
            "model": model,
            "size": pick_choice(options, "size", facts.sizes, DEFAULT_SIZE),
            "quality": pick_choice(options, "quality", facts.qualities, facts.default_quality),
        }

    def cost(self, request: GenerationRequest) -> float:
        options = self.check_options(request.category, request.options)
        quality = "high" if options["quality"] == "auto" else options["quality"]
        shape = "square" if options["size"] == "1024x1024" else "wide"
        return PRICES[(options["model"], quality, shape)]

    def generate(self, request: GenerationRequest, progress: Progress) -> GeneratedFile:
        self.api.require_key()
        options = self.check_options(request.category, request.options)
        model = options["model"]
        body: dict[str, Any] = {
            "model": model, "n": 1, "size": options["size"], "quality": options["quality"],
            "prompt": compose_prompt(request, self.id, MODELS[model].prompt_limit),
        }
        if model == "gpt-image-1":
            body["output_format"] = "png"
        else:  # only the DALL-E models take response_format; gpt-image-1 refuses it
            body["response_format"] = "url"
        progress(5, "asking OpenAI for the image")
        limit = self.settings.max_download_bytes
        answer = self.api.call("POST", "/images/generations", json_body=body,
                               max_bytes=limit * 4 // 3 + JSON_OVERHEAD_BYTES)
        document = self.api.json_of(answer)
        image = self._first_image(document)
        progress(80, "checking the image")
        data = self._image_bytes(image, limit)
        metadata = check_file("png", data, limit, generator=self.id)
        if image.get("revised_prompt"):
            metadata["revised_prompt"] = str(image["revised_prompt"])
        return GeneratedFile(data, "png", {**metadata, "model": model},
                             cost=self._usage_cost(document.get("usage")))

    def _first_image(self, answer: dict[str, Any]) -> dict[str, Any]:
        images = answer.get("data")
        if not isinstance(images, list) or not images or not isinstance(images[0], dict):
            raise self.api.fail("bad_response", "OpenAI answered without an image in `data`")
        return images[0]

    def _image_bytes(self, image: dict[str, Any], limit: int) -> bytes:
        encoded, url = image.get("b64_json"), image.get("url")
        if isinstance(encoded, str):
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise self.api.fail("bad_response", "OpenAI's b64_json is not base64") from None
        if isinstance(url, str):
            return self.api.download(url, limit)
        raise self.api.fail("bad_response", "OpenAI's image has neither b64_json nor url")

    @staticmethod
    def _usage_cost(usage: Any) -> float | None:
        """What gpt-image-1 charged, from the token usage it reports (None without one)."""
        if not isinstance(usage, dict):
            return None
        try:
            details = usage.get("input_tokens_details") or {}
            text_tokens = float(details.get("text_tokens", usage.get("input_tokens", 0)))
            image_tokens = float(details.get("image_tokens", 0))
            output_tokens = float(usage["output_tokens"])
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        prices = TOKEN_PRICES_PER_MILLION
        return round((text_tokens * prices["text_input"] + image_tokens * prices["image_input"]
                      + output_tokens * prices["output"]) / 1_000_000, 6)


KIND = GeneratorKind(
    id="openai",
    name="OpenAI Images",
    categories=("image", "texture"),
    factory=OpenAIImagesGenerator,
    key_variable="OPENAI_IMAGES_API_KEY",
    fallback_key_variable="OPENAI_API_KEY",
    url_variable="OPENAI_IMAGES_BASE_URL",
    default_base_url=OPENAI_IMAGES_DEFAULT_BASE_URL,
)
