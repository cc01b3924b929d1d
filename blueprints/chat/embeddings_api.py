"""`POST /v1/embeddings`: OpenAI's Embeddings API, so `client.embeddings.create(...)` of the
official SDKs works with `base_url=<gaia>/v1` and a Gaia API key.

OpenAI-kind providers get the body as the client sent it (the model resolved) and their answer
is relayed as it came; `local` answers with `gaia-local-embed`; which model id names which
provider is `providers.embeddings.resolve`. There is no fallback to another provider: vectors
of different models cannot be compared. Every call that reaches a provider leaves a row in
`usage_events` (kind `embeddings`). Errors come in OpenAI's shape, as on every /v1 path.
"""

from __future__ import annotations

import time

from flask import Response

from blueprints.chat import routing
from blueprints.chat.embeddings_request import EmbeddingsRequest, read_request
from blueprints.chat.openai_request import read_body
from blueprints.chat.embeddings_schemas import OpenAIEmbeddingListSchema, OpenAIEmbeddingRequestSchema
from blueprints.chat.openai_api import PERSONA_PREFIX
from blueprints.chat.routing import Target
from gaia_app.blueprint import Blueprint
from gaia_app.errors import APIError, InvalidField, UnknownModel
from gaia_app.extensions import release_connection
from gaia_app.identity import current_principal, require_auth
from gaia_app.providers import embeddings
from gaia_app.providers.base import ProviderError
from gaia_app.state import gaia

blp = Blueprint("openai_embeddings", __name__, url_prefix="/v1", description="OpenAI-compatible API: embeddings")

USAGE_KIND = "embeddings"
# Failures that say something about the provider's health (not about the request).
_NOT_THE_PROVIDER = frozenset({"rejected", "not_found"})


def _refusal(refused: embeddings.EmbeddingRefused) -> APIError:
    problem = InvalidField(refused.param, refused.message)
    problem.openai_code = refused.code
    return problem


def resolve(wanted: EmbeddingsRequest) -> Target:
    """The provider and model for the request, with the provider's own checks (`local`'s)."""
    if wanted.model.startswith(PERSONA_PREFIX):
        raise InvalidField("model", f"'{wanted.model}' is a persona, which answers chat; embeddings "
                                    f"need an embedding model such as {embeddings.LOCAL_MODEL_ID}.")
    try:
        provider, model = embeddings.resolve(routing.registry(), wanted.model)
    except embeddings.EmbeddingRefused as refused:
        raise _refusal(refused) from None
    except embeddings.UnknownEmbeddingModel as unknown:
        raise UnknownModel(unknown.message, available=unknown.available) from None
    return Target(provider, model)


def embed(target: Target, wanted: EmbeddingsRequest, body: dict) -> embeddings.EmbeddingAnswer:
    """One call to the provider, its usage recorded whatever happens."""
    call = embeddings.EmbeddingCall(
        body={**body, "model": target.model.id}, inputs=wanted.inputs,
        encoding_format=wanted.encoding_format, dimensions=wanted.dimensions,
    )
    if target.provider.kind == "local":
        try:
            embeddings.check_local(call, wanted.unknown_fields)
        except embeddings.EmbeddingRefused as refused:
            raise _refusal(refused) from None
    started = time.monotonic()
    # No connection is held while a provider works.
    release_connection()
    # A provider inside a Retry-After it gave is not called: the client hears how long is left.
    pause = routing.pause_of(target)
    try:
        if pause is not None:
            raise pause
        answer = embeddings.create(target.provider, call)
    except ProviderError as error:
        if error is not pause and error.kind not in _NOT_THE_PROVIDER:
            routing.note_failure(target, error)
        record_usage(target, None, started, error)
        raise routing.problem_for(error) from None
    record_usage(target, answer.prompt_tokens, started)
    return answer


def record_usage(target: Target, prompt_tokens: int | None, started: float,
                 error: ProviderError | None = None) -> None:
    principal = current_principal()
    model = target.model
    tokens = prompt_tokens or 0
    price = model.input_price_per_mtok
    gaia().usage.record(
        user_id=principal.user_id,
        api_key_id=principal.key_id,
        conversation_id=None,
        kind=USAGE_KIND,
        provider=target.provider.id,
        model=model.id,
        stream=False,
        status="error" if error else "ok",
        error_type=error.kind if error else None,
        prompt_tokens=tokens,
        completion_tokens=0,
        total_tokens=tokens,
        cost=round(tokens * price / 1_000_000, 8) if price is not None else None,
        latency_ms=round((time.monotonic() - started) * 1000, 1),
        first_token_ms=None,
    )


@blp.route("/embeddings", methods=["POST"])
@require_auth("chat")
@blp.doc(
    summary="Create embeddings (OpenAI-compatible)",
    requestBody={"required": True, "content": {"application/json": {"schema": OpenAIEmbeddingRequestSchema}}},
    responses={"200": {"description": "One embedding per input, in the order given",
                       "content": {"application/json": {"schema": OpenAIEmbeddingListSchema}}}},
)
def create_embeddings():
    """OpenAI's Embeddings API: `gaia-local-embed`, or an OpenAI-kind provider's model."""
    body = read_body()
    wanted = read_request(body)
    answer = embed(resolve(wanted), wanted, body)
    return Response(answer.content, status=200, mimetype="application/json")
