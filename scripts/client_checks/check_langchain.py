"""LangChain's `ChatOpenAI` as a client of Gaia's /v1: `ChatOpenAI(base_url=..., api_key=..., model=...)`.

For gaia-local, gpt-4o-mini (through the OpenAI fake) and claude-sonnet-4-5 (through the
Anthropic fake):
  bind_tools            get_weather bound; the AIMessage carries the call with parsed args,
                        a ToolMessage answers it, a text answer comes back
  bind_tools streamed   the same, the call put together from the streamed chunks
  with_structured_output  Npc by each method: function_calling, json_schema, json_mode
"""

from __future__ import annotations

import json
from functools import reduce
from operator import add

from checks_common import (
    ASK_NPC, ASK_WEATHER, Checks, Npc, expect, expect_npc, expect_text, expect_weather_args,
    get_weather, main_guard, npc_answer, tools_answer, version_of,
)

from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402


@tool("get_weather")
def weather_tool(city: str, days: int) -> str:
    """Current weather for a city, for a number of days."""
    return get_weather(city, days)


def main() -> int:
    checks = Checks("langchain-openai", version_of("langchain-openai"), __doc__.split("\n\n")[0])

    def chat(model: str) -> ChatOpenAI:
        return ChatOpenAI(model=model, base_url=checks.base_url, api_key=checks.key, max_retries=0, timeout=30)

    def tool_round_trip(model: str, stream: bool):
        checks.control.answer(tools_answer())
        bound = chat(model).bind_tools([weather_tool])
        messages = [HumanMessage(ASK_WEATHER)]
        first = reduce(add, bound.stream(messages)) if stream else bound.invoke(messages)
        expect(len(first.tool_calls) == 1, f"{len(first.tool_calls)} tool calls: {first.tool_calls!r}")
        [call] = first.tool_calls
        expect(bool(call["id"]), "the call has no id")
        expect_weather_args(call["name"], call["args"])
        messages += [first, ToolMessage(weather_tool.invoke(call["args"]), tool_call_id=call["id"])]
        second = bound.invoke(messages)
        expect(not second.tool_calls, f"called again: {second.tool_calls!r}")
        expect_text(second.content)

    def structured(model: str, method: str):
        openai_answer, anthropic_answer = npc_answer("Npc" if method == "function_calling" else None)
        checks.control.answer(openai_answer, anthropic_answer)
        messages = [HumanMessage(ASK_NPC)]
        if method == "json_mode":  # the schema goes in the prompt, as LangChain's docs show
            schema = json.dumps(Npc.model_json_schema())
            messages.insert(0, SystemMessage(f"Answer in JSON that matches this JSON Schema: {schema}"))
        answer = chat(model).with_structured_output(Npc, method=method).invoke(messages)
        expect_npc(answer if isinstance(answer, Npc) else Npc.model_validate(answer))

    for model in checks.models:
        checks.run(model, "bind_tools", lambda: tool_round_trip(model, stream=False))
        checks.run(model, "bind_tools streamed", lambda: tool_round_trip(model, stream=True))
        for method in ("function_calling", "json_schema", "json_mode"):
            checks.run(model, f"with_structured_output {method}", lambda: structured(model, method))
    return checks.finish()


if __name__ == "__main__":
    main_guard(main)
