"""instructor against Gaia's /v1: `instructor.from_openai(OpenAI(base_url=..., api_key=...), mode=...)`.

For gaia-local, gpt-4o-mini (through the OpenAI fake) and claude-sonnet-4-5 (through the
Anthropic fake):
  tools                  through the patched client with response_model=None (as instructor
                         passes such calls on): get_weather called, its result sent back as a
                         tool message, a text answer
  tools streamed         the same, streamed, the call put together from its chunks
  TOOLS                  response_model=Npc in Mode.TOOLS (a forced Npc tool)
  TOOLS partial stream   create_partial in Mode.TOOLS: the last partial is a whole Npc
  JSON                   Mode.JSON (response_format json_object, the schema in the prompt)
  JSON_SCHEMA            Mode.JSON_SCHEMA (response_format json_schema)
  JSON_SCHEMA partial    create_partial in Mode.JSON_SCHEMA
"""

from __future__ import annotations

import json

from checks_common import (
    ASK_NPC, ASK_WEATHER, LOCAL, WEATHER_TOOL, Checks, Npc, expect, expect_npc, expect_text,
    expect_weather_args, get_weather, main_guard, npc_answer, tools_answer, version_of,
)

import instructor  # noqa: E402
import openai  # noqa: E402


def main() -> int:
    checks = Checks("instructor", version_of("instructor"), __doc__.split("\n\n")[0])
    sdk = openai.OpenAI(base_url=checks.base_url, api_key=checks.key, max_retries=0, timeout=30,
                        http_client=openai.DefaultHttpxClient(trust_env=False))
    clients = {mode: instructor.from_openai(sdk, mode=mode)
               for mode in (instructor.Mode.TOOLS, instructor.Mode.JSON, instructor.Mode.JSON_SCHEMA)}

    def tool_round_trip(model: str, stream: bool):
        checks.control.answer(tools_answer())
        client = clients[instructor.Mode.TOOLS]
        messages = [{"role": "user", "content": ASK_WEATHER}]

        def ask():
            if not stream:
                completion = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL],
                                                            response_model=None, max_retries=0)
                choice = completion.choices[0]
                calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or ()]
                return choice.message.content, calls, choice.finish_reason
            chunks = list(client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL],
                                                         response_model=None, max_retries=0, stream=True))
            text, calls, finish, pieces = "", {}, None, 0
            for chunk in chunks:
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    finish = choice.finish_reason or finish
                    for piece in choice.delta.tool_calls or ():
                        pieces += 1
                        call = calls.setdefault(piece.index, ["", "", ""])
                        call[0] = piece.id or call[0]
                        call[1] = (piece.function.name if piece.function and piece.function.name else call[1])
                        call[2] += (piece.function.arguments or "") if piece.function else ""
            if calls:
                expect(pieces >= 2, f"the call came in {pieces} chunk(s)")
            return text or None, [tuple(c) for _, c in sorted(calls.items())], finish

        content, calls, finish = ask()
        expect(finish == "tool_calls", f"finish_reason {finish!r}")
        expect(len(calls) == 1, f"{len(calls)} tool calls: {calls!r}")
        [(call_id, name, arguments)] = calls
        expect(bool(call_id), "the call has no id")
        expect_weather_args(name, arguments)
        messages.append({"role": "assistant", "content": content, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": get_weather(**json.loads(arguments))})
        content, calls, finish = ask()
        expect(not calls, f"called again: {calls!r}")
        expect(finish == "stop", f"finish_reason {finish!r}")
        expect_text(content)

    def structured(model: str, mode, partial: bool = False):
        openai_answer, anthropic_answer = npc_answer("Npc" if mode == instructor.Mode.TOOLS else None)
        checks.control.answer(openai_answer, anthropic_answer)
        client = clients[mode]
        messages = [{"role": "user", "content": ASK_NPC}]
        if not partial:
            npc = client.chat.completions.create(model=model, messages=messages, response_model=Npc, max_retries=0)
            expect_npc(npc)
            return
        parts = list(client.chat.completions.create_partial(model=model, messages=messages, response_model=Npc,
                                                            max_retries=0))
        expect(len(parts) >= 1, "no partial objects")
        last = parts[-1]
        expect_npc(Npc.model_validate(last.model_dump()))

    for model in checks.models:
        checks.run(model, "tools", lambda: tool_round_trip(model, stream=False))
        checks.run(model, "tools streamed", lambda: tool_round_trip(model, stream=True))
        checks.run(model, "TOOLS", lambda: structured(model, instructor.Mode.TOOLS))
        checks.run(model, "TOOLS partial stream", lambda: structured(model, instructor.Mode.TOOLS, partial=True))
        checks.run(model, "JSON", lambda: structured(model, instructor.Mode.JSON))
        checks.run(model, "JSON_SCHEMA", lambda: structured(model, instructor.Mode.JSON_SCHEMA))
        checks.run(model, "JSON_SCHEMA partial stream",
                   lambda: structured(model, instructor.Mode.JSON_SCHEMA, partial=True))
    return checks.finish()


if __name__ == "__main__":
    main_guard(main)
