"""The provider registry: which LLM providers this deployment has, and their models.

The providers themselves are adapters listed in `providers.kinds` (one module each), built
here from the declarations in `settings.llm`. Adding a provider touches its module and that
table, nothing else.
"""

from __future__ import annotations

from gaia_app.providers.base import LLMProvider, ModelInfo
from gaia_app.providers.kinds import KINDS
from gaia_app.providers.settings import LLMSettings
from gaia_app.runtime.clock import Clock


class ProviderRegistry:
    def __init__(self, providers: list[LLMProvider], fallbacks: dict | None = None,
                 clock: Clock | None = None) -> None:
        self._clock = clock or Clock()
        self._providers = {provider.id: provider for provider in providers}
        self.fallbacks: dict[str, tuple[str, ...]] = dict(fallbacks or {})
        # Bumped whenever what the registry lists changes, so listings cached from it expire.
        self.version = 0
        # provider id -> monotonic time before which it asked not to be called (Retry-After).
        self._cooldowns: dict[str, float] = {}

    def changed(self) -> None:
        self.version += 1

    def add(self, provider: LLMProvider) -> None:
        self._providers[provider.id] = provider

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
        self._cooldowns[provider_id] = self._clock.monotonic() + seconds

    def cooling(self, provider_id: str) -> float:
        """Seconds this provider still asked us to wait (0 when it may be called)."""
        until = self._cooldowns.get(provider_id)
        if until is None:
            return 0.0
        left = until - self._clock.monotonic()
        if left <= 0:
            self._cooldowns.pop(provider_id, None)
            return 0.0
        return left


    def clear_cooldowns(self) -> None:
        self._cooldowns.clear()


def build_registry(llm: LLMSettings, clock: Clock | None = None) -> ProviderRegistry:
    registry = ProviderRegistry([], llm.fallbacks, clock)
    for declaration in llm.providers:
        registry.add(KINDS[declaration.kind].adapter(declaration, on_change=registry.changed, clock=clock))
    return registry
