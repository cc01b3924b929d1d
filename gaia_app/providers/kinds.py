"""The one table of provider adapters. Settings read each adapter's environment variables
from it, GAIA_PROVIDERS_FILE's `kind` names one of its entries, and the registry builds
providers with its adapters.

Adding a provider: write its module (an adapter class and a `KIND`), then add it here.
"""

from __future__ import annotations

from gaia_app.providers import anthropic, local, openai_compat
from gaia_app.providers.base import EnvProvider, ProviderKind

KINDS: dict[str, ProviderKind] = {
    module.KIND.kind: module.KIND for module in (openai_compat, anthropic, local)
}


def environment_providers() -> list[tuple[ProviderKind, EnvProvider]]:
    """Every provider environment variables can configure, in preference order."""
    found = [(kind, spec) for kind in KINDS.values() for spec in kind.environment]
    return sorted(found, key=lambda pair: pair[1].rank)
