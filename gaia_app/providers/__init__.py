"""The provider registry: which LLM providers this deployment has, and their models.

Adding a provider means one module implementing `LLMProvider` and one entry in
`PROVIDER_FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable

from gaia_app.config import Settings
from gaia_app.providers.base import LLMProvider, ModelInfo
from gaia_app.providers.local import LocalProvider

# id -> factory returning a provider, or None when the settings do not configure it.
PROVIDER_FACTORIES: dict[str, Callable[[Settings], LLMProvider | None]] = {
    "local": lambda s: None if s.disable_local_provider else LocalProvider(s.local_provider_latency_ms),
}


class ProviderRegistry:
    def __init__(self, providers: list[LLMProvider]) -> None:
        self._providers = {provider.id: provider for provider in providers}
        # Bumped whenever what the registry lists changes, so listings cached from it expire.
        self.version = 0

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
        for model in self.models(provider=provider):
            if model.id == model_id:
                return model
        return None


def build_registry(settings: Settings) -> ProviderRegistry:
    providers = []
    for factory in PROVIDER_FACTORIES.values():
        provider = factory(settings)
        if provider is not None:
            providers.append(provider)
    return ProviderRegistry(providers)
