"""LangChain's `ChatOpenAI` against `/v1`, unchanged: only `base_url`, a Gaia key and a model.

Plain and streamed answers, bound tools whose calls come back as `tool_calls` (whole and
streamed) with a `ToolMessage` answered on the next turn, and `with_structured_output` by
each of its methods, through the built-in `local` provider, a loopback FakeOpenAI and a
loopback FakeAnthropic. The app is served by a real HTTP server on 127.0.0.1, and nothing
in this module may reach any other address: lookups and connections elsewhere are refused
and make the test fail (token counting, which would fetch tiktoken's tables, is never used).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import sys
from functools import reduce
from operator import add

import pytest

if sys.version_info < (3, 11):  # langchain-openai 1.x needs Python 3.11 (requirements-dev.txt)
    pytest.skip("langchain-openai needs Python 3.11 or newer", allow_module_level=True)

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402

from tests.fakes.llm_servers import Behaviour  # noqa: E402
from tests.test_anthropic_tools import (  # noqa: E402, F401 - fixtures
    CLAUDE,
    GPT,
    Npc,
    _fresh,
    ant,
    app,
    oai,
    sent,
)
from tests.test_openai_compat import base_url, key, no_proxy, sdk  # noqa: E402, F401 - fixtures

LOCAL = "gaia-local"
MODELS = [LOCAL, GPT, CLAUDE]
REPLY = "The north gate stands open."
ASK_WEATHER = "What is the weather in Paris for 3 days?"
WEATHER_CALL = ("get_weather", {"city": "Paris", "days": 3})
ASK_NPC = "Describe a knight named Ada at level 7."
ADA = {"name": "Ada", "level": 7}


@tool
def get_weather(city: str, days: int) -> str:
    """Current weather for a city, for a number of days."""
    return f"Sunny in {city} for {days} days"


# -- nothing leaves the machine ----------------------------------------------------------


def _loopback(host) -> bool:
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="module")
def refused(no_proxy):
    """Lookups of and connections to anything but loopback, refused and listed here."""
    attempts: list[str] = []
    lookup, connect = socket.getaddrinfo, socket.socket.connect

    def guarded_lookup(host, *args, **kwargs):
        if not _loopback(host.decode() if isinstance(host, bytes) else host):
            attempts.append(f"lookup {host}")
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: outside the machine")
        return lookup(host, *args, **kwargs)

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            attempts.append(f"connect {address[0]}")
            raise ConnectionRefusedError(f"{address[0]}: outside the machine")
        return connect(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        # Nothing from the shell steers the client: no key, URL, proxy, organisation or tracing.
        for name in [n for n in os.environ if n.startswith(("OPENAI_", "LANGSMITH_", "LANGCHAIN_"))]:
            patch.delenv(name)
        patch.setattr(socket, "getaddrinfo", guarded_lookup)
        patch.setattr(socket.socket, "connect", guarded_connect)
        yield attempts


@pytest.fixture(autouse=True)
def _stays_local(refused):
    yield
    assert refused == []


@pytest.fixture(scope="module")
def llm(base_url, key):
    """A ChatOpenAI for a model, built as any application builds it."""
    def build(model: str, **options) -> ChatOpenAI:
        return ChatOpenAI(base_url=base_url, api_key=key, model=model, max_retries=0, timeout=10, **options)
    return build


@pytest.fixture(params=MODELS)
def model(request):
    return request.param


def answer_with(oai, ant, **behaviour) -> None:
    oai.behaviour = Behaviour(**behaviour)
    ant.behaviour = Behaviour(**behaviour)


def local_answer(sdk, text: str) -> str:
    """What `local` answers to this one message, asked with the plain SDK."""
    completion = sdk.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": text}])
    return completion.choices[0].message.content


def calls_of(message: AIMessage) -> list[tuple[str, dict]]:
    return [(call["name"], call["args"]) for call in message.tool_calls]


# -- text ---------------------------------------------------------------------------------


def test_invoke_answers_in_text(llm, model, oai, ant, sdk):
    answer_with(oai, ant, reply=REPLY)
    message = llm(model).invoke("Is the north gate open?")
    expected = local_answer(sdk, "Is the north gate open?") if model == LOCAL else REPLY
    assert isinstance(message, AIMessage) and message.content == expected and not message.tool_calls
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.response_metadata["model_name"] == model
    assert message.usage_metadata["input_tokens"] > 0 and message.usage_metadata["output_tokens"] > 0


def test_stream_gives_the_same_text_in_pieces(llm, model, oai, ant):
    answer_with(oai, ant, reply=REPLY)
    chat = llm(model)
    whole = chat.invoke("Is the north gate open?").content
    chunks = list(chat.stream("Is the north gate open?"))
    assert len([c for c in chunks if c.content]) > 1
    streamed = reduce(add, chunks)
    assert streamed.content == whole and streamed.response_metadata["finish_reason"] == "stop"
    assert streamed.usage_metadata is None  # not asked for
    counted = reduce(add, llm(model, stream_usage=True).stream("Is the north gate open?"))
    assert counted.content == whole and counted.usage_metadata["output_tokens"] > 0


# -- tools --------------------------------------------------------------------------------


def test_bound_tools_give_tool_calls_and_a_tool_message_is_answered(llm, model, oai, ant):
    answer_with(oai, ant, tool_calls=[WEATHER_CALL])
    chat = llm(model).bind_tools([get_weather])
    ask = HumanMessage(ASK_WEATHER)
    first = chat.invoke([ask])
    assert calls_of(first) == [WEATHER_CALL]
    assert first.response_metadata["finish_reason"] == "tool_calls"
    [call] = first.tool_calls
    assert call["id"] and call["type"] == "tool_call"

    answer_with(oai, ant, reply="Sunny all week in Paris.")
    result = get_weather.invoke(call)  # the tool run as LangChain runs it: a ToolMessage
    assert isinstance(result, ToolMessage) and result.content == "Sunny in Paris for 3 days"
    second = chat.invoke([ask, first, result])
    assert not second.tool_calls and second.response_metadata["finish_reason"] == "stop"
    if model == LOCAL:
        assert "get_weather returned: Sunny in Paris for 3 days." in second.content
        return
    assert second.content == "Sunny all week in Paris."
    if model == GPT:
        history = sent(oai, 1)["messages"]
        assert history[1]["tool_calls"] == [{"id": call["id"], "type": "function", "function": {
            "name": "get_weather", "arguments": json.dumps(WEATHER_CALL[1])}}]
        assert history[2] == {"role": "tool", "tool_call_id": call["id"], "content": "Sunny in Paris for 3 days"}
    else:
        history = sent(ant, 1)["messages"]
        assert history[1]["content"] == [{"type": "tool_use", "id": call["id"], "name": "get_weather",
                                          "input": WEATHER_CALL[1]}]
        assert history[2]["content"] == [{"type": "tool_result", "tool_use_id": call["id"],
                                          "content": "Sunny in Paris for 3 days"}]


def test_streamed_tool_calls_add_up_to_the_whole_calls(llm, model, oai, ant):
    answer_with(oai, ant, tool_calls=[WEATHER_CALL])
    chat = llm(model).bind_tools([get_weather])
    chunks = list(chat.stream(ASK_WEATHER))
    assert len([c for c in chunks if c.tool_call_chunks]) > 2  # the arguments came in pieces
    streamed = reduce(add, chunks)
    assert calls_of(streamed) == [WEATHER_CALL] and streamed.tool_calls[0]["id"]
    assert streamed.response_metadata["finish_reason"] == "tool_calls"
    whole = chat.invoke(ASK_WEATHER)
    if model == LOCAL:  # the same request, the same call
        assert streamed.tool_calls == whole.tool_calls


def test_async_tool_calls(llm, model, oai, ant):
    answer_with(oai, ant, tool_calls=[WEATHER_CALL])
    message = asyncio.run(llm(model).bind_tools([get_weather]).ainvoke(ASK_WEATHER))
    assert calls_of(message) == [WEATHER_CALL]


# -- structured output --------------------------------------------------------------------


def _npc_answers(oai, ant, tool_on_openai: bool) -> None:
    """The fakes' answer: a JSON text from OpenAI (or a call of the `Npc` tool), a call of
    the forced tool from Anthropic (how Gaia asks Anthropic for any structured answer)."""
    oai.behaviour = Behaviour(tool_calls=[("Npc", ADA)]) if tool_on_openai else Behaviour(reply=json.dumps(ADA))
    ant.behaviour = Behaviour(tool_calls=[("Npc", ADA), ("json_object", ADA)])


def test_structured_output_by_default_is_a_json_schema(llm, model, oai, ant):
    _npc_answers(oai, ant, tool_on_openai=False)
    npc = llm(model).with_structured_output(Npc).invoke(ASK_NPC)
    assert npc == Npc(**ADA)
    if model == GPT:
        shape = sent(oai)["response_format"]
        assert shape["type"] == "json_schema" and shape["json_schema"]["name"] == "Npc"
        assert set(shape["json_schema"]["schema"]["properties"]) == {"name", "level"}
        assert "tools" not in sent(oai)
    elif model == CLAUDE:
        assert [tool["name"] for tool in sent(ant)["tools"]] == ["Npc"]
        assert sent(ant)["tool_choice"] == {"type": "tool", "name": "Npc", "disable_parallel_tool_use": True}


# The client's own dump of the SDK's parsed stream events warns; nothing Gaia sent is involved.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
def test_structured_output_streamed(llm, model, oai, ant):
    _npc_answers(oai, ant, tool_on_openai=False)
    parts = list(llm(model).with_structured_output(Npc).stream(ASK_NPC))
    assert parts and parts[-1] == Npc(**ADA)


def test_structured_output_by_function_calling(llm, model, oai, ant):
    _npc_answers(oai, ant, tool_on_openai=True)
    npc = llm(model).with_structured_output(Npc, method="function_calling").invoke(ASK_NPC)
    assert npc == Npc(**ADA)
    if model == GPT:
        assert sent(oai)["tool_choice"] == {"type": "function", "function": {"name": "Npc"}}
        assert sent(oai)["parallel_tool_calls"] is False
    elif model == CLAUDE:
        assert sent(ant)["tool_choice"] == {"type": "tool", "name": "Npc", "disable_parallel_tool_use": True}


def test_json_mode_gives_the_object(llm, model, oai, ant, sdk):
    """Without a schema JSON mode parses whatever object comes; `local` answers its own."""
    _npc_answers(oai, ant, tool_on_openai=False)
    found = llm(model).with_structured_output(None, method="json_mode").invoke(ASK_NPC)
    if model == LOCAL:
        text = sdk.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": ASK_NPC}],
                                           response_format={"type": "json_object"}).choices[0].message.content
        assert found == json.loads(text) and isinstance(found, dict)
    else:
        assert found == ADA
    if model == GPT:
        assert sent(oai)["response_format"] == {"type": "json_object"}
    elif model == CLAUDE:
        assert sent(ant)["tool_choice"] == {"type": "tool", "name": "json_object", "disable_parallel_tool_use": True}


@pytest.mark.parametrize("remote", [GPT, CLAUDE])
def test_json_mode_into_a_pydantic_model(llm, remote, oai, ant):
    """The schema lives only in the prompt here, which `local` does not read for JSON mode."""
    _npc_answers(oai, ant, tool_on_openai=False)
    structured = llm(remote).with_structured_output(Npc, method="json_mode")
    assert structured.invoke("Answer in JSON with a name and a level: " + ASK_NPC) == Npc(**ADA)
