"""The provider registry: which LLM providers this deployment has, and their models.

Adding a provider means one module implementing `LLMProvider` and one entry in
`PROVIDER_KINDS` (for a new wire format) or `BUILT_IN` (for a provider with no declaration).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gaia_app.config import Settings
from gaia_app.llm_settings import ProviderDeclaration
from gaia_app.providers.anthropic import AnthropicProvider
from gaia_app.providers.base import LLMProvider, ModelInfo
from gaia_app.providers.local import LocalProvider
from gaia_app.providers.openai_compat import OpenAICompatibleProvider

# Wire format -> adapter, for providers declared by settings (env and GAIA_PROVIDERS_FILE).
PROVIDER_KINDS: dict[str, Callable[..., LLMProvider]] = {
    "openai": OpenAICompatibleProvider,
    "anthropic": AnthropicProvider,
}
# Providers that need no declaration; None when the settings turn them off.
BUILT_IN: dict[str, Callable[[Settings], LLMProvider | None]] = {
    "local": lambda s: None if s.disable_local_provider else LocalProvider(s.local_provider_latency_ms),
}


class ProviderRegistry:
    def __init__(self, providers: list[LLMProvider], fallbacks: dict | None = None) -> None:
        self._providers = {provider.id: provider for provider in providers}
        self.fallbacks: dict[str, tuple[str, ...]] = dict(fallbacks or {})
        # Bumped whenever what the registry lists changes, so listings cached from it expire.
        self.version = 0
        # provider id -> monotonic time before which it asked not to be called (Retry-After).
        self._cooldowns: dict[str, float] = {}

    def changed(self) -> None:
        self.version += 1

    def providers(self) -> list[LLMProvider]:
        return list(self._providers.values())

    def get(self, provider_id: str) -> LLMProvider | None:
        return self._providers.get(provider_id)

    def ids(self) -> list[str]:
        return list(self._providers)

    def models(self, provider: str | None = None, capability: str | None = None) -> list[ModelInfo]:
        found = []
        for candidate in self._providers.values():
            if provider is not None and candidate.id != provider:
                continue
            for model in candidate.list_models():
                if capability is None or capability in model.capabilities:
                    found.append(model)
        return found

    def find_model(self, model_id: str, provider: str | None = None) -> ModelInfo | None:
        """By id, on the named provider or on the first provider (in preference order) that has it."""
        candidates = [self.get(provider)] if provider is not None else self._providers.values()
        for candidate in candidates:
            if candidate is not None:
                found = candidate.get_model(model_id)
                if found is not None:
                    return found
        return None

    def cool_down(self, provider_id: str, seconds: float) -> None:
        self._cooldowns[provider_id] = time.monotonic() + seconds

    def cooling(self, provider_id: str) -> float:
        """Seconds this provider still asked us to wait (0 when it may be called)."""
        until = self._cooldowns.get(provider_id)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            self._cooldowns.pop(provider_id, None)
            return 0.0
        return left


def build_registry(settings: Settings) -> ProviderRegistry:
    registry = ProviderRegistry([], settings.llm.fallbacks)
    declaration: ProviderDeclaration
    for declaration in settings.llm.providers:
        adapter = PROVIDER_KINDS[declaration.kind]
        provider = adapter(declaration, settings.llm, on_change=registry.changed)
        registry._providers[provider.id] = provider
    for make in BUILT_IN.values():
        provider = make(settings)
        if provider is not None:
            registry._providers[provider.id] = provider
    return registry
