"""The official `openai` SDK as a client of Gaia's /v1: `OpenAI(base_url=..., api_key=...)`.

For gaia-local, gpt-4o-mini (through the OpenAI fake) and claude-sonnet-4-5 (through the
Anthropic fake):
  tools             get_weather offered; the call comes back with its arguments, the tool's
                    result goes back as a tool message, a text answer comes back
  tools streamed    the same with stream=True, the call put together from its deltas
  parse             client.chat.completions.parse(response_format=Npc): `.parsed` is an Npc
And once, on gaia-local-embed: embeddings as floats (the SDK asks for base64 and decodes it).
"""

from __future__ import annotations

import json

from checks_common import (
    ASK_NPC, ASK_WEATHER, WEATHER_TOOL, Checks, Npc, expect, expect_npc, expect_text,
    expect_weather_args, get_weather, main_guard, npc_answer, tools_answer, version_of,
)

import openai  # noqa: E402


def _streamed_call(stream) -> tuple[str, dict]:
    """(finish_reason, the one call put together from its deltas)."""
    call = {"id": "", "name": "", "arguments": ""}
    finish, pieces = None, 0
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            expect(delta.index == 0, f"a second call (index {delta.index})")
            pieces += 1
            call["id"] += delta.id or ""
            if delta.function:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    expect(pieces >= 2, f"the call came in {pieces} delta(s)")
    return finish, call


def main() -> int:
    checks = Checks("openai", version_of("openai"), __doc__.split("\n\n")[0])
    sdk = openai.OpenAI(base_url=checks.base_url, api_key=checks.key, max_retries=0, timeout=30,
                        http_client=openai.DefaultHttpxClient(trust_env=False))

    def tool_round_trip(model: str, stream: bool):
        checks.control.answer(tools_answer())
        messages = [{"role": "user", "content": ASK_WEATHER}]
        if stream:
            finish, call = _streamed_call(sdk.chat.completions.create(
                model=model, messages=messages, tools=[WEATHER_TOOL], stream=True))
        else:
            first = sdk.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
            finish = first.choices[0].finish_reason
            calls = first.choices[0].message.tool_calls or []
            expect(len(calls) == 1, f"{len(calls)} tool calls: {calls!r}")
            call = {"id": calls[0].id, "name": calls[0].function.name, "arguments": calls[0].function.arguments}
        expect(finish == "tool_calls", f"finish_reason {finish!r}")
        expect(bool(call["id"]), "the call has no id")
        expect_weather_args(call["name"], call["arguments"])
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]},
            {"role": "tool", "tool_call_id": call["id"], "content": get_weather(**json.loads(call["arguments"]))},
        ]
        second = sdk.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
        expect(not second.choices[0].message.tool_calls, f"called again: {second.choices[0].message.tool_calls!r}")
        expect(second.choices[0].finish_reason == "stop", f"finish_reason {second.choices[0].finish_reason!r}")
        expect_text(second.choices[0].message.content)

    def parse(model: str):
        openai_answer, anthropic_answer = npc_answer()
        checks.control.answer(openai_answer, anthropic_answer)
        answer = sdk.chat.completions.parse(model=model, messages=[{"role": "user", "content": ASK_NPC}],
                                            response_format=Npc)
        expect_npc(answer.choices[0].message.parsed)

    def embeddings():
        texts = ["The knight rode to the castle.", "Lanterns glow along the river."]
        answer = sdk.embeddings.create(model="gaia-local-embed", input=texts)
        expect([item.index for item in answer.data] == [0, 1], f"indexes {[i.index for i in answer.data]}")
        expect(all(len(item.embedding) == 256 and all(isinstance(x, float) for x in item.embedding)
                   for item in answer.data), "not two vectors of 256 floats")
        again = sdk.embeddings.create(model="gaia-local-embed", input=texts, dimensions=64)
        expect(len(again.data[0].embedding) == 64, "dimensions not honoured")

    for model in checks.models:
        checks.run(model, "tools", lambda: tool_round_trip(model, stream=False))
        checks.run(model, "tools streamed", lambda: tool_round_trip(model, stream=True))
        checks.run(model, "parse", lambda: parse(model))
    checks.run("gaia-local-embed", "embeddings", embeddings)
    return checks.finish()


if __name__ == "__main__":
    main_guard(main)
