"""pydantic-ai against Gaia's /v1: `OpenAIChatModel(<model>, provider=OpenAIProvider(...))`.

For gaia-local, gpt-4o-mini (through the OpenAI fake) and claude-sonnet-4-5 (through the
Anthropic fake):
  agent tool              an Agent with a get_weather tool: the model calls it (arguments
                          checked as sent), pydantic-ai runs it and sends its result back,
                          the run ends with a text answer
  agent tool streamed     the same with run_stream (every model request streamed)
  output_type             an Agent with output_type=Npc (pydantic-ai's output tool)
  output_type streamed    the same with run_stream
  NativeOutput            output_type=NativeOutput(Npc) (response_format json_schema)
"""

from __future__ import annotations

import asyncio

from checks_common import (
    ADA, ASK_NPC, ASK_WEATHER, Checks, Npc, expect, expect_npc, expect_text, expect_weather_args,
    get_weather, main_guard, tools_answer, version_of,
)

import httpx  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from pydantic_ai import Agent, NativeOutput, Tool  # noqa: E402
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402


def main() -> int:
    checks = Checks("pydantic-ai", version_of("pydantic-ai-slim"), __doc__.split("\n\n")[0])

    def chat_model(model: str) -> OpenAIChatModel:
        client = AsyncOpenAI(base_url=checks.base_url, api_key=checks.key, max_retries=0, timeout=30,
                             http_client=httpx.AsyncClient(trust_env=False, timeout=30))
        return OpenAIChatModel(model, provider=OpenAIProvider(openai_client=client))

    def npc_answers() -> None:
        checks.control.answer({"tool_calls": [["final_result", ADA]], "reply": None},
                              {"tool_calls": [["final_result", ADA], ["Npc", ADA], ["json_object", ADA]]})

    def agent_tool(model: str, stream: bool):
        checks.control.answer(tools_answer())
        ran = []

        def weather(city: str, days: int) -> str:
            """Current weather for a city, for a number of days."""
            ran.append((city, days))
            return get_weather(city, days)

        agent = Agent(chat_model(model), tools=[Tool(weather, name="get_weather")])

        if stream:
            async def go():
                async with agent.run_stream(ASK_WEATHER) as run:
                    output = await run.get_output()
                return output, run.all_messages()
            output, messages = asyncio.run(go())
        else:
            result = agent.run_sync(ASK_WEATHER)
            output, messages = result.output, result.all_messages()
        calls = [p for m in messages if isinstance(m, ModelResponse) for p in m.parts if isinstance(p, ToolCallPart)]
        returns = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
        expect(len(calls) == 1, f"{len(calls)} tool calls: {calls!r}")
        expect_weather_args(calls[0].tool_name, calls[0].args_as_dict())
        expect(len(ran) == 1 and isinstance(ran[0][0], str) and isinstance(ran[0][1], int), f"tool ran: {ran!r}")
        expect(len(returns) == 1 and returns[0].tool_call_id == calls[0].tool_call_id,
               f"tool results: {returns!r}")
        expect_text(output)
        answered = [i for i, m in enumerate(messages) if isinstance(m, ModelResponse)
                    and any(isinstance(p, TextPart) for p in m.parts)]
        returned = [i for i, m in enumerate(messages) if any(isinstance(p, ToolReturnPart) for p in m.parts)]
        expect(answered and returned and answered[-1] > returned[-1],
               "the text answer did not come after the tool's result")

    def output_type(model: str, native: bool = False, stream: bool = False):
        npc_answers()
        if native:
            checks.control.answer({"reply": '{"name": "Ada", "level": 7}'},
                                  {"tool_calls": [["Npc", ADA], ["json_object", ADA], ["final_result", ADA]]})
        agent = Agent(chat_model(model), output_type=NativeOutput(Npc) if native else Npc)
        if stream:
            async def go():
                async with agent.run_stream(ASK_NPC) as run:
                    return await run.get_output()
            npc = asyncio.run(go())
        else:
            npc = agent.run_sync(ASK_NPC).output
        expect_npc(npc)

    for model in checks.models:
        checks.run(model, "agent tool", lambda: agent_tool(model, stream=False))
        checks.run(model, "agent tool streamed", lambda: agent_tool(model, stream=True))
        checks.run(model, "output_type", lambda: output_type(model))
        checks.run(model, "output_type streamed", lambda: output_type(model, stream=True))
        checks.run(model, "NativeOutput", lambda: output_type(model, native=True))
    return checks.finish()


if __name__ == "__main__":
    main_guard(main)
