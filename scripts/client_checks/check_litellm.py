"""litellm as a client of Gaia's /v1: `litellm.completion(model="openai/<model>", api_base=...)`.

For gaia-local, gpt-4o-mini (through the OpenAI fake) and claude-sonnet-4-5 (through the
Anthropic fake):
  tools             get_weather offered; the call comes back with its arguments, the tool's
                    result goes back as a tool message, a text answer comes back
  tools streamed    the same with stream=True, the call put together from its chunks
                    (litellm.stream_chunk_builder)
  json_schema       response_format {"type": "json_schema", ...}: the content parses as an Npc
  pydantic class    response_format=Npc (litellm turns the class into a json_schema)
"""

from __future__ import annotations

import json

from checks_common import (
    ASK_NPC, ASK_WEATHER, WEATHER_TOOL, Checks, Npc, expect, expect_npc, expect_text,
    expect_weather_args, get_weather, main_guard, npc_answer, tools_answer, version_of,
)

import litellm  # noqa: E402

litellm.telemetry = False
litellm.drop_params = False
litellm.suppress_debug_info = True


def main() -> int:
    checks = Checks("litellm", version_of("litellm"), __doc__.split("\n\n")[0])

    def call(model: str, **kwargs):
        return litellm.completion(model=f"openai/{model}", api_base=checks.base_url, api_key=checks.key,
                                  num_retries=0, timeout=30, **kwargs)

    def tool_round_trip(model: str, stream: bool):
        checks.control.answer(tools_answer())
        messages = [{"role": "user", "content": ASK_WEATHER}]
        if stream:
            chunks = list(call(model, messages=messages, tools=[WEATHER_TOOL], stream=True))
            pieces = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
            expect(len(pieces) >= 2, f"the call came in {len(pieces)} chunk(s)")
            first = litellm.stream_chunk_builder(chunks, messages=messages)
        else:
            first = call(model, messages=messages, tools=[WEATHER_TOOL])
        message = first.choices[0].message
        expect(first.choices[0].finish_reason == "tool_calls", f"finish_reason {first.choices[0].finish_reason!r}")
        calls = message.tool_calls or []
        expect(len(calls) == 1, f"{len(calls)} tool calls: {calls!r}")
        [tool_call] = calls
        expect(bool(tool_call.id), "the call has no id")
        expect_weather_args(tool_call.function.name, tool_call.function.arguments)
        result = get_weather(**json.loads(tool_call.function.arguments))
        messages += [message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": tool_call.id, "content": result}]
        if stream:
            chunks = list(call(model, messages=messages, tools=[WEATHER_TOOL], stream=True))
            second = litellm.stream_chunk_builder(chunks, messages=messages)
        else:
            second = call(model, messages=messages, tools=[WEATHER_TOOL])
        expect(not second.choices[0].message.tool_calls, f"called again: {second.choices[0].message.tool_calls!r}")
        expect(second.choices[0].finish_reason == "stop", f"finish_reason {second.choices[0].finish_reason!r}")
        expect_text(second.choices[0].message.content)

    def structured(model: str, response_format):
        openai, anthropic = npc_answer()
        checks.control.answer(openai, anthropic)
        answer = call(model, messages=[{"role": "user", "content": ASK_NPC}], response_format=response_format)
        content = answer.choices[0].message.content
        expect_npc(Npc.model_validate_json(content))

    schema_format = {"type": "json_schema", "json_schema": {
        "name": "Npc", "strict": True, "schema": {**Npc.model_json_schema(), "additionalProperties": False}}}

    for model in checks.models:
        checks.run(model, "tools", lambda: tool_round_trip(model, stream=False))
        checks.run(model, "tools streamed", lambda: tool_round_trip(model, stream=True))
        checks.run(model, "response_format json_schema", lambda: structured(model, schema_format))
        checks.run(model, "response_format pydantic class", lambda: structured(model, Npc))
    return checks.finish()


if __name__ == "__main__":
    main_guard(main)
