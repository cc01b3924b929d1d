"""The one table of asset generators, and which of them the environment configures.

Adding a generator: write its module (a generator class and a `KIND`), then add it here.
The built-in one is always configured; an external one when its key variable (or the
fallback, OPENAI_API_KEY for OpenAI images) is set.
"""

from __future__ import annotations

from collections.abc import Mapping

from gaia_app.environment import number
from gaia_app.generators import builtin, elevenlabs, meshy, openai_images, stability
from gaia_app.generators.base import Generator, GeneratorKind, GeneratorSettings

KINDS: dict[str, GeneratorKind] = {
    module.KIND.id: module.KIND for module in (builtin, openai_images, stability, meshy, elevenlabs)
}


def configured_settings(env: Mapping[str, str]) -> list[GeneratorSettings]:
    """The generators this environment configures, built-in first, in table order."""
    found = []
    for kind in KINDS.values():
        key = None
        if kind.key_variable:
            key = (env.get(kind.key_variable) or "").strip() or (
                (env.get(kind.fallback_key_variable) or "").strip() if kind.fallback_key_variable else ""
            )
            if not key:
                continue
        base_url = (env.get(kind.url_variable) or "").strip() if kind.url_variable else ""
        latency = number(env, kind.latency_variable, 0.0) if kind.latency_variable else 0.0
        found.append(GeneratorSettings(id=kind.id, api_key=key, base_url=base_url or kind.default_base_url,
                                       latency_ms=latency))
    return found


def build(settings: GeneratorSettings) -> Generator:
    return KINDS[settings.id].factory(settings)
