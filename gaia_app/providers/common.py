"""What every adapter shares: token counting, model metadata, and the remote-provider base.

Adapters take helpers from here (and from `base`, `http`, `live`), never from each other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from gaia_app.providers.base import ChatMessage, ModelInfo, ProviderDeclaration, Usage
from gaia_app.providers.http import ProviderHTTP
from gaia_app.providers.live import LiveCatalogue, LiveModels
from gaia_app.runtime.clock import Clock

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# Per message, for the role and separators a chat template adds.
MESSAGE_OVERHEAD_TOKENS = 4
DEFAULT_CAPABILITIES = ("chat", "streaming")


def count_tokens(text: str) -> int:
    """Words and punctuation marks: close enough to a tokenizer for usage and limits."""
    return len(_TOKEN_RE.findall(text))


def prompt_tokens(messages: Iterable[ChatMessage]) -> int:
    return sum(count_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def estimate_usage(messages: Iterable[ChatMessage], answer: str) -> Usage:
    """Usage counted here, for a provider that reported none (or an answer cut short)."""
    return Usage(prompt_tokens(messages), count_tokens(answer))


def generous_token_estimate(text: str) -> int:
    """An upper bound (about 3 characters a token), for fitting history into a context
    window: better drop a turn than overflow."""
    return len(text) // 3 + MESSAGE_OVERHEAD_TOKENS


# Known models of a provider: id -> (context window, output limit, USD per million input
# tokens, USD per million output tokens).
KnownModels = Mapping[str, tuple[int, int, float, float]]


def model_info(provider_id: str, model_id: str, declared: Mapping | None = None,
               known: KnownModels | None = None) -> ModelInfo:
    """A ModelInfo from what the operator declared, else from the known table, else bare."""
    facts = (known or {}).get(model_id)
    fields = {
        "context_window": facts[0] if facts else None,
        "max_tokens": facts[1] if facts else None,
        "input_price_per_mtok": facts[2] if facts else None,
        "output_price_per_mtok": facts[3] if facts else None,
    }
    declared = dict(declared or {})
    capabilities_known = "capabilities" in declared
    capabilities = tuple(declared.pop("capabilities", DEFAULT_CAPABILITIES))
    fields.update({k: v for k, v in declared.items() if k in fields})
    return ModelInfo(
        id=model_id,
        name=str(declared.get("name") or model_id),
        provider=provider_id,
        capabilities=capabilities,
        capabilities_known=capabilities_known,
        **fields,
    )


class RemoteProvider(LiveCatalogue):
    """A provider behind HTTP: one pooled session, and a model list fetched now and then.

    Subclasses set `capabilities`, give their auth headers and known models, and implement
    `_fetch_models`, `complete` and `stream`.
    """

    capabilities = DEFAULT_CAPABILITIES

    def __init__(
        self,
        declaration: ProviderDeclaration,
        headers: dict[str, str],
        known: KnownModels,
        on_change: Callable[[], None] = lambda: None,
        clock: Clock | None = None,
    ) -> None:
        self.id = declaration.id
        self.name = declaration.name
        self.preferred_model = declaration.preferred_model
        self.known = known
        self.http = ProviderHTTP(
            self.id, declaration.base_url or "", headers,
            declaration.connect_timeout, declaration.read_timeout,
        )
        self.live = LiveModels(
            self.id,
            self._fetch_models if declaration.list_models else None,
            [self.model(m["id"], m) for m in declaration.models],
            declaration.model_list_ttl,
            on_change,
            fallback=[self.model(model_id) for model_id in known],
            clock=clock,
        )

    def model(self, model_id: str, declared: Mapping | None = None) -> ModelInfo:
        return model_info(self.id, model_id, declared, self.known)

    def _fetch_models(self) -> list[ModelInfo]:
        raise NotImplementedError
