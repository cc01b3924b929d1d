"""llama-index against Gaia's /v1: `llama_index.llms.openai_like.OpenAILike(api_base=..., api_key=...)`.

For gaia-local, gpt-4o-mini (through the OpenAI fake) and claude-sonnet-4-5 (through the
Anthropic fake):
  tools                         chat_with_tools([get_weather]): the call (get_tool_calls_from_response),
                                the tool run (FunctionTool.call), its result sent back as a tool
                                message, a text answer
  tools streamed                the same with stream_chat_with_tools
  structured_predict            OpenAILike's default: a forced Npc tool
  structured_predict json_schema  should_use_structured_outputs=True: response_format json_schema
  as_structured_llm             as_structured_llm(Npc).chat(...): the answer's `raw` is an Npc
  as_structured_llm streamed    as_structured_llm(Npc).stream_chat(...): the last `raw` is an Npc
"""

from __future__ import annotations

from checks_common import (
    ASK_NPC, ASK_WEATHER, LOCAL, Checks, Npc, expect, expect_npc, expect_text, expect_weather_args,
    get_weather, main_guard, npc_answer, tools_answer, version_of,
)

import httpx  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, MessageRole  # noqa: E402
from llama_index.core.prompts import PromptTemplate  # noqa: E402
from llama_index.core.tools import FunctionTool  # noqa: E402
from llama_index.llms.openai_like import OpenAILike  # noqa: E402



def main() -> int:
    versions = (f"core {version_of('llama-index-core')}, openai-like {version_of('llama-index-llms-openai-like')}, "
                f"openai {version_of('llama-index-llms-openai')}")
    checks = Checks("llama-index", versions, __doc__.split("\n\n")[0])
    weather = FunctionTool.from_defaults(fn=get_weather)

    def llm(model: str, **options) -> OpenAILike:
        return OpenAILike(model=model, api_base=checks.base_url, api_key=checks.key, is_chat_model=True,
                          is_function_calling_model=True, context_window=128000, max_retries=0, timeout=30,
                          http_client=httpx.Client(trust_env=False), **options)

    def tool_round_trip(model: str, stream: bool):
        checks.control.answer(tools_answer())
        chat = llm(model)

        def ask(**kwargs):
            if not stream:
                return chat.chat_with_tools([weather], **kwargs)
            responses = list(chat.stream_chat_with_tools([weather], **kwargs))
            expect(len(responses) >= 2, f"{len(responses)} streamed response(s)")
            return responses[-1]

        ask_message = ChatMessage(role=MessageRole.USER, content=ASK_WEATHER)
        first = ask(chat_history=[ask_message])
        calls = chat.get_tool_calls_from_response(first, error_on_no_tool_call=True)
        expect(len(calls) == 1, f"{len(calls)} tool calls: {calls!r}")
        [call] = calls
        expect(bool(call.tool_id), "the call has no id")
        expect_weather_args(call.tool_name, call.tool_kwargs)
        output = weather.call(**call.tool_kwargs)
        result = ChatMessage(role=MessageRole.TOOL, content=str(output),
                             additional_kwargs={"tool_call_id": call.tool_id, "name": call.tool_name})
        second = ask(chat_history=[ask_message, first.message, result])
        expect(chat.get_tool_calls_from_response(second, error_on_no_tool_call=False) == [],
               "called the tool again")
        expect_text(second.message.content)

    def structured(model: str, how: str):
        openai, anthropic = npc_answer(None if how == "json_schema" else "Npc")
        checks.control.answer(openai, anthropic)
        prompt = PromptTemplate("{request}")
        if how == "predict":
            expect_npc(llm(model).structured_predict(Npc, prompt, request=ASK_NPC))
        elif how == "json_schema":
            expect_npc(llm(model, should_use_structured_outputs=True).structured_predict(Npc, prompt, request=ASK_NPC))
        elif how == "structured_llm":
            answer = llm(model).as_structured_llm(Npc).chat([ChatMessage(role=MessageRole.USER, content=ASK_NPC)])
            expect_npc(answer.raw)
        else:
            parts = list(llm(model).as_structured_llm(Npc).stream_chat(
                [ChatMessage(role=MessageRole.USER, content=ASK_NPC)]))
            expect(len(parts) >= 1, "nothing streamed")
            expect_npc(Npc.model_validate(parts[-1].raw.model_dump()))

    for model in checks.models:
        checks.run(model, "tools", lambda: tool_round_trip(model, stream=False))
        checks.run(model, "tools streamed", lambda: tool_round_trip(model, stream=True))
        checks.run(model, "structured_predict", lambda: structured(model, "predict"))
        checks.run(model, "structured_predict json_schema", lambda: structured(model, "json_schema"))
        checks.run(model, "as_structured_llm", lambda: structured(model, "structured_llm"))
        checks.run(model, "as_structured_llm streamed", lambda: structured(model, "structured_llm stream"))
    return checks.finish()


if __name__ == "__main__":
    main_guard(main)
