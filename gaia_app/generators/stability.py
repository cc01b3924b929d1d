"""Images and textures from Stability AI's Stable Image API (v2beta `generate/core`,
`generate/ultra` and `generate/sd3`).

Requests are multipart/form-data. With `Accept: image/*` the PNG comes back as bytes, with
the outcome in the `finish-reason` header (and `application/json` answers carry it as
`{"image", "finish_reason", "seed"}`): `CONTENT_FILTERED` means the output was blocked.
Errors are `{"id", "name", "errors": [...]}`; a 403 named `content_moderation` is a refusal.
Reference: https://platform.stability.ai/docs/api-reference#tag/Generate
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
    OptionError,
    Progress,
)
from gaia_app.generators.checks import check_file
from gaia_app.generators.remote import (
    Answer,
    ErrorDetail,
    RemoteGenerator,
    compose_prompt,
    pick_choice,
    pick_text,
    refuse_unknown,
)

STABILITY_DEFAULT_BASE_URL = "https://api.stability.ai"
PROMPT_LIMIT = 10_000
MAX_SEED = 4_294_967_294
ASPECT_RATIOS = ("1:1", "16:9", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
STYLE_PRESETS = (
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance",
    "fantasy-art", "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk",
    "origami", "photographic", "pixel-art", "tile-texture",
)
JSON_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class StabilityModel:
    endpoint: str  # the path under /v2beta/stable-image/generate/
    form_model: str | None  # the `model` field the sd3 endpoint needs
    # USD per image: credits from https://platform.stability.ai/pricing at $0.01 a credit
    # (core 3, ultra 8, SD 3.5 large 6.5, large turbo 4, medium 3.5); estimates.
    price: float
    negative_prompt: bool = True
    style_preset: bool = False


MODELS: Mapping[str, StabilityModel] = {
    "core": StabilityModel("core", None, 0.03, style_preset=True),
    "ultra": StabilityModel("ultra", None, 0.08),
    "sd3.5-large": StabilityModel("sd3", "sd3.5-large", 0.065),
    "sd3.5-large-turbo": StabilityModel("sd3", "sd3.5-large-turbo", 0.04, negative_prompt=False),
    "sd3.5-medium": StabilityModel("sd3", "sd3.5-medium", 0.035),
}
DEFAULT_MODEL = "core"


def read_stability_error(status: int, body: Any) -> ErrorDetail:
    """`{"id", "name", "errors": [...]}`; `content_moderation` (403) is a refusal."""
    if not isinstance(body, dict):
        return ErrorDetail()
    errors = body.get("errors")
    reasons = "; ".join(str(e) for e in errors) if isinstance(errors, list) else body.get("message")
    name = body.get("name")
    message = f"{name}: {reasons}" if name and reasons else (reasons or name)
    return ErrorDetail(str(message)[:500] if message else None,
                       refused=name == "content_moderation")


class StabilityGenerator(RemoteGenerator):
    id = "stability"
    name = "Stability AI"
    categories = ("image", "texture")

    default_base_url = STABILITY_DEFAULT_BASE_URL
    read_error = staticmethod(read_stability_error)

    def check_options(self, category: str, options: Mapping[str, Any]) -> dict[str, Any]:
        self.check_category(category)
        refuse_unknown(options, ("model", "aspect_ratio", "negative_prompt", "style_preset"))
        model = pick_choice(options, "model", MODELS, DEFAULT_MODEL)
        facts = MODELS[model]
        checked = {
            "model": model,
            "aspect_ratio": pick_choice(options, "aspect_ratio", ASPECT_RATIOS, "1:1"),
            "negative_prompt": pick_text(options, "negative_prompt", PROMPT_LIMIT),
            "style_preset": pick_choice(options, "style_preset", STYLE_PRESETS, None),
        }
        if checked["negative_prompt"] and not facts.negative_prompt:
            raise OptionError("negative_prompt", f"{model} does not take a negative_prompt")
        if checked["style_preset"] and not facts.style_preset:
            raise OptionError("style_preset", f"only core takes a style_preset, not {model}")
        return checked

    def cost(self, request: GenerationRequest) -> float:
        return MODELS[self.check_options(request.category, request.options)["model"]].price

    def generate(self, request: GenerationRequest, progress: Progress) -> GeneratedFile:
        self.api.require_key()
        options = self.check_options(request.category, request.options)
        facts = MODELS[options["model"]]
        form: dict[str, Any] = {
            "prompt": compose_prompt(request, self.id, PROMPT_LIMIT),
            "aspect_ratio": options["aspect_ratio"],
            "seed": request.seed % (MAX_SEED + 1),
            "output_format": "png",
        }
        if facts.form_model:
            form["model"] = facts.form_model
        for name in ("negative_prompt", "style_preset"):
            if options[name]:
                form[name] = options[name]
        progress(5, "asking Stability AI for the image")
        limit = self.settings.max_download_bytes
        answer = self.api.call("POST", f"/v2beta/stable-image/generate/{facts.endpoint}",
                               form=form, headers={"Accept": "image/*"},
                               max_bytes=limit * 4 // 3 + JSON_OVERHEAD_BYTES)
        data, finish_reason, seed = self._image_of(answer)
        if finish_reason == "CONTENT_FILTERED":
            raise self.api.fail("refused", "Stability AI filtered the image (CONTENT_FILTERED)")
        if finish_reason not in (None, "SUCCESS"):
            raise self.api.fail("bad_response", f"Stability AI finished with {finish_reason!r}")
        progress(80, "checking the image")
        metadata = check_file("png", data, limit, generator=self.id)
        metadata.update(model=options["model"], aspect_ratio=options["aspect_ratio"])
        if seed is not None:
            metadata["provider_seed"] = seed
        return GeneratedFile(data, "png", metadata)

    def _image_of(self, answer: Answer) -> tuple[bytes, str | None, str | None]:
        """(image bytes, finish reason, seed) from either answer shape."""
        if answer.content_type != "application/json":
            return answer.content, answer.headers.get("finish-reason"), answer.headers.get("seed")
        document = self.api.json_of(answer)
        encoded = document.get("image")
        if not isinstance(encoded, str):
            raise self.api.fail("bad_response", "Stability AI answered JSON without an image")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise self.api.fail("bad_response", "Stability AI's image is not base64") from None
        seed = document.get("seed")
        return data, document.get("finish_reason"), None if seed is None else str(seed)


KIND = GeneratorKind(
    id="stability",
    name="Stability AI",
    categories=("image", "texture"),
    factory=StabilityGenerator,
    key_variable="STABILITY_API_KEY",
    url_variable="STABILITY_BASE_URL",
    default_base_url=STABILITY_DEFAULT_BASE_URL,
)
