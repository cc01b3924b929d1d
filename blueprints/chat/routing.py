"""Which provider and model answer a chat, what to fall back to, and how failures read.

Fallback happens only before anything of an answer has gone to the client, only for
failures that another provider (or later) can fix (connection, timeout, 5xx, 429), and only
to equivalent models: the same model id on another provider, or the `fallbacks` an operator
declared in GAIA_PROVIDERS_FILE.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from gaia_app.errors import (
    APIError,
    InvalidField,
    InvalidRequest,
    NoModel,
    RateLimited,
    UnknownModel,
    UnknownProvider,
    UpstreamFailure,
    UpstreamTimeout,
)
from gaia_app.providers import ProviderRegistry, embeddings
from gaia_app.providers.base import ChatRequest, Completion, LLMProvider, ModelInfo, ProviderError
from gaia_app.state import gaia

log = logging.getLogger(__name__)

_NAMED_IN_ERRORS = 40


@dataclass(frozen=True)
class Target:
    provider: LLMProvider
    model: ModelInfo

    @property
    def label(self) -> str:
        return f"{self.provider.id}/{self.model.id}"


def registry() -> ProviderRegistry:
    return gaia().providers


def provider_or_404(provider_id: str) -> LLMProvider:
    """The configured provider of that id; a 404 naming the configured ones otherwise."""
    reg = registry()
    provider = reg.get(provider_id)
    if provider is None:
        raise UnknownProvider(
            f"Unknown provider '{provider_id}'. Configured providers: {', '.join(reg.ids()) or 'none'}.",
            available=reg.ids(),
        )
    return provider


def _unknown_model(model_id: str, registry: ProviderRegistry, provider: str | None) -> UnknownModel:
    available = [m.id if provider else f"{m.provider}/{m.id}" for m in registry.models(provider=provider)]
    shown = ", ".join(available[:_NAMED_IN_ERRORS]) + (" ..." if len(available) > _NAMED_IN_ERRORS else "")
    where = f" on provider '{provider}'" if provider else ""
    return UnknownModel(
        f"Unknown model '{model_id}'{where}. Available models: {shown or 'none'}.",
        available=available,
    )


def embedding_only(model: ModelInfo) -> bool:
    """A model that embeds and does not chat (declared so, or one Gaia knows)."""
    return embeddings.EMBEDDINGS in model.capabilities and "chat" not in model.capabilities


def _not_for_chat(model: ModelInfo) -> InvalidField:
    return InvalidField("model", f"'{model.provider}/{model.id}' is an embedding model: POST /v1/embeddings takes "
                        "it. Chat needs a chat model (GET /api/v0.2/models?capability=chat lists them).")


def _default_model(provider: LLMProvider) -> ModelInfo | None:
    preferred = provider.preferred_model
    found = provider.get_model(preferred) if preferred else None
    if found is None:
        models = [model for model in provider.list_models() if not embedding_only(model)]
        found = models[0] if models else None
    return found


def find_model(model: str, provider: str | None = None) -> ModelInfo | None:
    """A model by its id, on `provider` or on the first provider that has it; without a
    provider, `<provider>/<model>` names both."""
    reg = registry()
    found = reg.find_model(model, provider)
    if found is None and provider is None and "/" in model:
        prefix, _, bare = model.partition("/")
        if reg.get(prefix) is not None:
            found = reg.find_model(bare, prefix)
    return found


def resolve_target(model: str | None, provider: str | None) -> Target:
    """The provider and model a request names, or the deployment's default. 404 if unknown."""
    reg = registry()
    llm = gaia().settings.llm
    if provider is not None:
        provider_or_404(provider)
    if model is None:
        provider = provider or llm.default_provider
        if llm.default_model and provider in (None, llm.default_provider):
            model = llm.default_model
    if model is None:
        for candidate in [reg.get(provider)] if provider else reg.providers():
            found = _default_model(candidate)
            if found is not None:
                return Target(candidate, found)
        raise NoModel("No model is available right now.")
    found = find_model(model, provider)
    if found is None:
        embedder = embeddings.find_embedding_model(reg, f"{provider}/{model}" if provider else model)
        if embedder is not None:
            raise _not_for_chat(embedder)
        raise _unknown_model(model, reg, provider)
    if embedding_only(found):
        raise _not_for_chat(found)
    return Target(reg.get(found.provider), found)


def candidates(target: Target, allow_fallback: bool) -> list[Target]:
    """The target, then (if allowed) equivalent models elsewhere, in preference order."""
    found = [target]
    if not allow_fallback:
        return found
    reg = registry()
    seen = {target.label}
    for label in reg.fallbacks.get(target.label, ()):
        provider_id, _, model_id = label.partition("/")
        provider = reg.get(provider_id)
        model = provider.get_model(model_id) if provider else None
        if model is not None and label not in seen:
            found.append(Target(provider, model))
            seen.add(label)
    for provider in reg.providers():
        label = f"{provider.id}/{target.model.id}"
        if label not in seen:
            model = provider.get_model(target.model.id)
            if model is not None:
                found.append(Target(provider, model))
                seen.add(label)
    return found


def note_failure(target: Target, error: ProviderError) -> None:
    if error.kind != "rejected":
        # A request the provider refused as invalid says nothing of its health.
        target.provider.record_failure(error)
    if error.kind == "rate_limited":
        registry().cool_down(target.provider.id, error.retry_after or 1.0)
    log.warning("chat via %s failed (%s): %s", target.label, error.kind, error.message)


def pause_of(target: Target) -> ProviderError | None:
    """The error to give instead of calling a provider that is inside a Retry-After it gave."""
    waiting = registry().cooling(target.provider.id)
    if not waiting:
        return None
    return ProviderError(
        target.provider.id, "rate_limited",
        f"{target.provider.id} asked for a pause (Retry-After)", retry_after=waiting,
    )


def attempt(targets: list[Target], call: Callable[[Target], object]):
    """Call `call(target)` on each target in turn until one works; returns (target, result).

    A provider still inside a Retry-After it gave is skipped while others remain. Raises the
    last ProviderError when none works.
    """
    last: ProviderError | None = None
    for target in targets:
        pause = pause_of(target)
        if pause is not None:
            last = pause
            continue
        try:
            return target, call(target)
        except ProviderError as error:
            note_failure(target, error)
            last = error
            if not error.retryable:
                raise
    assert last is not None
    raise last


def complete(targets: list[Target], make_request: Callable[[Target], ChatRequest]) -> tuple[Target, Completion]:
    return attempt(targets, lambda target: target.provider.complete(make_request(target)))


def _problem_kind(name: str, base: type[APIError], problem_type: str) -> type[APIError]:
    return type(name, (base,), {"type": problem_type, "__module__": __name__})


# What the client sees for each kind of provider failure: the status comes with the base.
ProviderUnavailable = _problem_kind("ProviderUnavailable", UpstreamFailure, "/problems/provider-unavailable")
_PROBLEMS: dict[str, type[APIError]] = {
    "rate_limited": _problem_kind("ProviderRateLimited", RateLimited, "/problems/provider-rate-limited"),
    "timeout": _problem_kind("ProviderTimeout", UpstreamTimeout, "/problems/provider-timeout"),
    "unavailable": ProviderUnavailable,
    "interrupted": ProviderUnavailable,
    "bad_response": _problem_kind("ProviderBadResponse", UpstreamFailure, "/problems/provider-bad-response"),
    "unauthorized": _problem_kind("ProviderMisconfigured", UpstreamFailure, "/problems/provider-misconfigured"),
    "not_found": UnknownModel,
    "rejected": _problem_kind("ProviderRejected", InvalidRequest, "/problems/provider-rejected-request"),
}


def problem_for(error: ProviderError) -> APIError:
    kind = _PROBLEMS.get(error.kind, ProviderUnavailable)
    detail = error.message
    if error.kind == "unauthorized":
        # The operator's key, not the client's: say so without repeating the provider's words.
        detail = f"Provider '{error.provider}' refused this deployment's credentials."
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    problem = kind(detail, headers=headers or None, provider=error.provider)
    if error.kind == "rejected" and (error.code or error.param):
        # The provider's own words on what was wrong (`context_length_exceeded`, the field).
        problem.openai_code = error.code
        if error.param:
            problem.errors = [{"field": error.param, "location": "json", "message": detail}]
    return problem
