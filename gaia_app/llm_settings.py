"""Which LLM providers a deployment has, read from the environment (and GAIA_PROVIDERS_FILE).

Part of `Settings` (as `settings.llm`): checked when the app starts, so a typo in a provider
file stops start-up with one clear line instead of failing the first chat.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"
BUILT_IN_PROVIDERS = ("openai", "anthropic", "ollama", "local")
PROVIDER_KINDS = ("openai", "anthropic")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_MODEL_FIELDS = {
    "id", "name", "capabilities", "context_window", "max_tokens",
    "input_price_per_mtok", "output_price_per_mtok",
}


class ProviderFileError(ValueError):
    pass


@dataclass(frozen=True)
class ProviderDeclaration:
    """A remote provider: where it is, how to authenticate, and what is known of its models."""

    id: str
    kind: str  # the wire format: "openai" (Chat Completions) or "anthropic" (Messages)
    name: str
    base_url: str
    api_key: str | None = None
    # Model metadata declared by the operator (dicts with the keys of `ModelInfo`).
    models: tuple[Mapping, ...] = ()
    # Ask the provider for its live model list (GET /models) now and then.
    list_models: bool = True


@dataclass(frozen=True)
class LLMSettings:
    # Remote providers, in the order chat prefers them (`local` is added after them).
    providers: tuple[ProviderDeclaration, ...] = ()
    # "provider/model" -> equivalent "provider/model"s to fall back to, in order.
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_provider: str | None = None
    default_model: str | None = None
    connect_timeout: float = 3.0
    # The longest silence allowed from a provider (between bytes, first token included).
    read_timeout: float = 60.0
    model_list_ttl: float = 600.0
    max_message_chars: int = 32_000
    max_messages: int = 100
    history_messages: int = 40
    stream_keepalive: float = 10.0
    usage_flush_interval: float = 1.0


def _base_url(name: str, value: str) -> str:
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ProviderFileError(f"{name}={value!r} is not an http(s) URL")
    return value


def _ollama_url(value: str) -> str:
    url = _base_url("OLLAMA_BASE_URL", value)
    # Ollama serves its OpenAI-compatible API under /v1.
    return url if url.endswith("/v1") else url + "/v1"


def _declared_models(provider_id: str, models) -> tuple[Mapping, ...]:
    if models is None:
        return ()
    if not isinstance(models, list):
        raise ProviderFileError(f"provider {provider_id!r}: `models` must be a list")
    declared = []
    for entry in models:
        if isinstance(entry, str):
            entry = {"id": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise ProviderFileError(
                f"provider {provider_id!r}: each model is a name or a table with an `id`"
            )
        unknown = set(entry) - _MODEL_FIELDS
        if unknown:
            raise ProviderFileError(
                f"provider {provider_id!r}, model {entry['id']!r}: unknown field(s) "
                f"{', '.join(sorted(unknown))} (known: {', '.join(sorted(_MODEL_FIELDS))})"
            )
        declared.append(dict(entry))
    return tuple(declared)


def _read_providers_file(path: Path, env: Mapping[str, str]):
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProviderFileError(f"GAIA_PROVIDERS_FILE: cannot read {path}: {exc}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ProviderFileError(f"GAIA_PROVIDERS_FILE {path} is not valid: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("providers", []), list):
        raise ProviderFileError(f"GAIA_PROVIDERS_FILE {path}: expected a `providers` list")
    declarations = []
    for entry in data.get("providers", []):
        if not isinstance(entry, dict):
            raise ProviderFileError(f"GAIA_PROVIDERS_FILE {path}: each provider is a table")
        provider_id = str(entry.get("id", ""))
        if not _ID_RE.match(provider_id):
            raise ProviderFileError(
                f"GAIA_PROVIDERS_FILE: provider id {provider_id!r} must be 1-32 lower-case "
                "letters, digits, '-' or '_'"
            )
        kind = entry.get("kind", "openai")
        if kind not in PROVIDER_KINDS:
            raise ProviderFileError(
                f"provider {provider_id!r}: kind {kind!r} is not one of {', '.join(PROVIDER_KINDS)}"
            )
        key_variable = entry.get("api_key_env")
        api_key = None
        if key_variable:
            api_key = env.get(key_variable, "").strip()
            if not api_key:
                raise ProviderFileError(
                    f"provider {provider_id!r} reads its key from {key_variable}, which is not set"
                )
        list_models = entry.get("list_models", True)
        if not isinstance(list_models, bool):
            raise ProviderFileError(f"provider {provider_id!r}: `list_models` is true or false")
        declarations.append(ProviderDeclaration(
            id=provider_id,
            kind=kind,
            name=str(entry.get("name") or provider_id),
            base_url=_base_url(f"provider {provider_id!r} base_url", str(entry.get("base_url", ""))),
            api_key=api_key,
            models=_declared_models(provider_id, entry.get("models")),
            list_models=list_models,
        ))
    fallbacks = data.get("fallbacks", {})
    if not isinstance(fallbacks, dict) or not all(
        isinstance(targets, list) and all(isinstance(t, str) and "/" in t for t in targets)
        and "/" in source
        for source, targets in fallbacks.items()
    ):
        raise ProviderFileError(
            f"GAIA_PROVIDERS_FILE {path}: `fallbacks` maps \"provider/model\" to a list of "
            "\"provider/model\""
        )
    return declarations, {source: tuple(targets) for source, targets in fallbacks.items()}


def load_llm_settings(env: Mapping[str, str], number, local_enabled: bool) -> LLMSettings:
    """`number(env, name, default, minimum)` reads a numeric setting (shared with Settings)."""
    declarations: list[ProviderDeclaration] = []
    openai_key = env.get("OPENAI_API_KEY", "").strip() or None
    openai_url = env.get("OPENAI_BASE_URL", "").strip()
    if openai_key or openai_url:
        declarations.append(ProviderDeclaration(
            id="openai", kind="openai", name="OpenAI",
            base_url=_base_url("OPENAI_BASE_URL", openai_url or OPENAI_DEFAULT_BASE_URL),
            api_key=openai_key,
        ))
    anthropic_key = env.get("ANTHROPIC_API_KEY", "").strip() or None
    if anthropic_key:
        declarations.append(ProviderDeclaration(
            id="anthropic", kind="anthropic", name="Anthropic",
            base_url=_base_url(
                "ANTHROPIC_BASE_URL",
                env.get("ANTHROPIC_BASE_URL", "").strip() or ANTHROPIC_DEFAULT_BASE_URL,
            ),
            api_key=anthropic_key,
        ))
    if env.get("OLLAMA_BASE_URL", "").strip():
        declarations.append(ProviderDeclaration(
            id="ollama", kind="openai", name="Ollama",
            base_url=_ollama_url(env["OLLAMA_BASE_URL"]),
        ))
    fallbacks: dict[str, tuple[str, ...]] = {}
    providers_file = env.get("GAIA_PROVIDERS_FILE", "").strip()
    if providers_file:
        declared, fallbacks = _read_providers_file(Path(providers_file), env)
        for declaration in declared:
            if declaration.id in BUILT_IN_PROVIDERS or any(d.id == declaration.id for d in declarations):
                raise ProviderFileError(
                    f"GAIA_PROVIDERS_FILE: provider id {declaration.id!r} is already taken"
                )
            declarations.append(declaration)

    known_ids = [d.id for d in declarations] + (["local"] if local_enabled else [])
    default_provider = env.get("DEFAULT_LLM_PROVIDER", "").strip() or None
    if default_provider and default_provider not in known_ids:
        raise ProviderFileError(
            f"DEFAULT_LLM_PROVIDER={default_provider!r} is not a configured provider "
            f"(configured: {', '.join(known_ids) or 'none'})"
        )
    return LLMSettings(
        providers=tuple(declarations),
        fallbacks=fallbacks,
        default_provider=default_provider,
        default_model=env.get("DEFAULT_LLM_MODEL", "").strip() or None,
        connect_timeout=number(env, "LLM_CONNECT_TIMEOUT", 3.0, 0.1),
        read_timeout=number(env, "LLM_READ_TIMEOUT", 60.0, 0.1),
        model_list_ttl=number(env, "LLM_MODEL_LIST_TTL", 600.0, 1.0),
        max_message_chars=int(number(env, "CHAT_MAX_MESSAGE_CHARS", 32_000, 1)),
        max_messages=int(number(env, "CHAT_MAX_MESSAGES", 100, 1)),
        history_messages=int(number(env, "CHAT_HISTORY_MESSAGES", 40, 0)),
        stream_keepalive=number(env, "CHAT_STREAM_KEEPALIVE", 10.0, 0.05),
        usage_flush_interval=number(env, "USAGE_FLUSH_INTERVAL", 1.0, 0.05),
    )
