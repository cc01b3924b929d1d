"""Which LLM providers a deployment has, read from the environment and GAIA_PROVIDERS_FILE.

Part of `Settings` (as `settings.llm`): checked when the app starts, so a typo in a provider
file stops start-up with one clear line instead of failing the first chat. Which variables
configure which provider is not written here: each adapter declares it (`providers.kinds`).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from gaia_app.environment import ConfigError, flag, number, text
from gaia_app.providers.base import EnvProvider, ProviderDeclaration, ProviderKind
from gaia_app.providers.kinds import KINDS, environment_providers

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_MODEL_FIELDS = {
    "id", "name", "capabilities", "context_window", "max_tokens",
    "input_price_per_mtok", "output_price_per_mtok",
}
FILE_PROVIDER_RANK = 50


class ProviderFileError(ConfigError):
    pass


@dataclass(frozen=True)
class LLMSettings:
    # Every configured provider, in the order chat prefers them.
    providers: tuple[ProviderDeclaration, ...] = ()
    # "provider/model" -> equivalent "provider/model"s to fall back to, in order.
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_provider: str | None = None
    default_model: str | None = None
    max_message_chars: int = 32_000
    max_messages: int = 100
    history_messages: int = 40
    stream_keepalive: float = 10.0
    usage_flush_interval: float = 1.0
    # Drop a Chat Completions parameter the provider cannot take (and say so in a response
    # header) instead of refusing the request: for clients that always send one.
    drop_unsupported_params: bool = False


def _base_url(name: str, value: str) -> str:
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ProviderFileError(f"{name}={value!r} is not an http(s) URL")
    return value


def _from_environment(spec: EnvProvider, kind: ProviderKind, env: Mapping[str, str]) -> ProviderDeclaration | None:
    if spec.enabled_by and not any(text(env, name) for name in spec.enabled_by):
        return None
    if spec.disabled_by and flag(env, spec.disabled_by):
        return None
    base_url = None
    if spec.url_variable or spec.default_base_url:
        given = text(env, spec.url_variable) if spec.url_variable else None
        base_url = _base_url(spec.url_variable or spec.id, given or spec.default_base_url or "")
        if spec.url_suffix and not base_url.endswith(spec.url_suffix):
            base_url += spec.url_suffix
    return ProviderDeclaration(
        id=spec.id,
        kind=kind.kind,
        name=spec.name,
        base_url=base_url,
        api_key=text(env, spec.key_variable) if spec.key_variable else None,
        preferred_model=spec.preferred_model,
        options={option: number(env, variable, default) for option, (variable, default) in spec.options.items()},
    )


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


def _file_provider(entry, env: Mapping[str, str], path: Path) -> ProviderDeclaration:
    if not isinstance(entry, dict):
        raise ProviderFileError(f"GAIA_PROVIDERS_FILE {path}: each provider is a table")
    provider_id = str(entry.get("id", ""))
    if not _ID_RE.match(provider_id):
        raise ProviderFileError(
            f"GAIA_PROVIDERS_FILE: provider id {provider_id!r} must be 1-32 lower-case "
            "letters, digits, '-' or '_'"
        )
    kinds = [name for name, kind in KINDS.items() if kind.declarable]
    kind = entry.get("kind", "openai")
    if kind not in kinds:
        raise ProviderFileError(
            f"provider {provider_id!r}: kind {kind!r} is not one of {', '.join(kinds)}"
        )
    key_variable = entry.get("api_key_env")
    api_key = None
    if key_variable:
        api_key = text(env, key_variable)
        if not api_key:
            raise ProviderFileError(
                f"provider {provider_id!r} reads its key from {key_variable}, which is not set"
            )
    list_models = entry.get("list_models", True)
    if not isinstance(list_models, bool):
        raise ProviderFileError(f"provider {provider_id!r}: `list_models` is true or false")
    return ProviderDeclaration(
        id=provider_id,
        kind=kind,
        name=str(entry.get("name") or provider_id),
        base_url=_base_url(f"provider {provider_id!r} base_url", str(entry.get("base_url", ""))),
        api_key=api_key,
        models=_declared_models(provider_id, entry.get("models")),
        list_models=list_models,
    )


def _read_fallbacks(data: dict, path: Path) -> dict[str, tuple[str, ...]]:
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
    return {source: tuple(targets) for source, targets in fallbacks.items()}


def _read_providers_file(path: Path, env: Mapping[str, str]):
    try:
        content = path.read_text()
    except OSError as exc:
        raise ProviderFileError(f"GAIA_PROVIDERS_FILE: cannot read {path}: {exc}") from None
    try:
        data = tomllib.loads(content) if path.suffix == ".toml" else json.loads(content)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ProviderFileError(f"GAIA_PROVIDERS_FILE {path} is not valid: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("providers", []), list):
        raise ProviderFileError(f"GAIA_PROVIDERS_FILE {path}: expected a `providers` list")
    declared = [_file_provider(entry, env, path) for entry in data.get("providers", [])]
    return declared, _read_fallbacks(data, path)


def _declarations(env: Mapping[str, str]):
    """(rank, declaration) of every configured provider, and the declared fallbacks."""
    ranked = []
    for kind, spec in environment_providers():
        declaration = _from_environment(spec, kind, env)
        if declaration is not None:
            ranked.append((spec.rank, declaration))
    fallbacks: dict[str, tuple[str, ...]] = {}
    providers_file = text(env, "GAIA_PROVIDERS_FILE")
    if providers_file:
        declared, fallbacks = _read_providers_file(Path(providers_file), env)
        reserved = {spec.id for _kind, spec in environment_providers()}
        for declaration in declared:
            if declaration.id in reserved or any(d.id == declaration.id for _, d in ranked):
                raise ProviderFileError(
                    f"GAIA_PROVIDERS_FILE: provider id {declaration.id!r} is already taken"
                )
            ranked.append((FILE_PROVIDER_RANK, declaration))
    ranked.sort(key=lambda pair: pair[0])
    return [declaration for _, declaration in ranked], fallbacks


def _tuned(declaration: ProviderDeclaration, env: Mapping[str, str], default_provider, default_model):
    """The shared timeouts, and the deployment's default model listed on its provider."""
    models = declaration.models
    if default_model and default_provider == declaration.id and not any(m["id"] == default_model for m in models):
        models = models + ({"id": default_model},)
    return replace(
        declaration,
        models=models,
        connect_timeout=number(env, "LLM_CONNECT_TIMEOUT", 3.0, 0.1),
        read_timeout=number(env, "LLM_READ_TIMEOUT", 60.0, 0.1),
        model_list_ttl=number(env, "LLM_MODEL_LIST_TTL", 600.0, 1.0),
    )


def load_llm_settings(env: Mapping[str, str]) -> LLMSettings:
    declarations, fallbacks = _declarations(env)
    known_ids = [d.id for d in declarations]
    default_provider = text(env, "DEFAULT_LLM_PROVIDER")
    if default_provider and default_provider not in known_ids:
        raise ProviderFileError(
            f"DEFAULT_LLM_PROVIDER={default_provider!r} is not a configured provider "
            f"(configured: {', '.join(known_ids) or 'none'})"
        )
    default_model = text(env, "DEFAULT_LLM_MODEL")
    return LLMSettings(
        providers=tuple(_tuned(d, env, default_provider, default_model) for d in declarations),
        fallbacks=fallbacks,
        default_provider=default_provider,
        default_model=default_model,
        max_message_chars=int(number(env, "CHAT_MAX_MESSAGE_CHARS", 32_000, 1)),
        max_messages=int(number(env, "CHAT_MAX_MESSAGES", 100, 1)),
        history_messages=int(number(env, "CHAT_HISTORY_MESSAGES", 40, 0)),
        stream_keepalive=number(env, "CHAT_STREAM_KEEPALIVE", 10.0, 0.05),
        usage_flush_interval=number(env, "USAGE_FLUSH_INTERVAL", 1.0, 0.05),
        drop_unsupported_params=flag(env, "GAIA_DROP_UNSUPPORTED_PARAMS"),
    )
