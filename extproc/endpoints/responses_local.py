"""A Responses request as the chat request a locally answering algorithm (fusion) reads.

What maps is mapped: instructions, message items, function calls and their outputs, function
tools, tool_choice, sampling, `max_output_tokens`, `text.format`, `reasoning.effort`, plugins.
What an answer produced by Quorum cannot honour is a 400 naming the field: provider-held state
(`previous_response_id`, `conversation`, `prompt`), `background`, non-text input, hosted tools.
Bookkeeping fields (`store`, `metadata`, `include`, `truncation`, `user`, ...) are dropped.
"""

from __future__ import annotations

from typing import Any

from extproc.errors import BadRequest
from extproc.openai import ChatRequest

# Fields whose value lives at the provider, or that ask for a behaviour a local answer does not have.
_UNANSWERABLE = {
    "previous_response_id": "a previous response is state held by the provider that produced it",
    "conversation": "a conversation is state held by the provider",
    "prompt": "a stored prompt template is held by the provider",
    "background": "a fused answer cannot run in the background",
}
_COPIED = ("model", "stream", "temperature", "top_p", "parallel_tool_calls", "plugins", "user", "seed")
_SKIPPED_ITEMS = frozenset({"reasoning"})  # a model's own reasoning summary: context, not conversation


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    for field, why in _UNANSWERABLE.items():
        if body.get(field) not in (None, False):
            raise _refuse(field, f"'{field}' cannot be used with a fused answer: {why}.")
    out: dict[str, Any] = {key: body[key] for key in _COPIED if body.get(key) is not None}
    messages: list[dict[str, Any]] = []
    if body.get("instructions") is not None:
        messages.append({"role": "system", "content": body["instructions"]})
    source = body["input"]
    if isinstance(source, str):
        messages.append({"role": "user", "content": source})
    else:
        for i, item in enumerate(source):
            _add_item(messages, item, f"input[{i}]")
    if not messages:
        raise _refuse("input", "'input' has no message to answer.")
    out["messages"] = messages
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        out["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(body["tools"])]
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        out["response_format"] = _response_format(fmt)
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if effort is not None:
        out["reasoning_effort"] = effort
    return out


def local_chat_request(body: dict[str, Any]) -> ChatRequest:
    return ChatRequest(chat_body(body))


def _add_item(messages: list[dict[str, Any]], item: dict[str, Any], path: str) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        messages.append({"role": item["role"], "content": _text(item.get("content"), f"{path}.content")})
    elif kind == "function_call":
        call = {"id": item.get("call_id", ""), "type": "function"}
        call["function"] = {"name": item.get("name", ""), "arguments": item.get("arguments", "")}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and last.get("tool_calls") and not last.get("content"):
            last["tool_calls"].append(call)  # parallel calls: one assistant message
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        content = output if isinstance(output, str) else _text(output, f"{path}.output")
        messages.append({"role": "tool", "tool_call_id": item.get("call_id", ""), "content": content})
    elif kind not in _SKIPPED_ITEMS:
        raise _refuse(f"{path}.type", f"Input items of type '{kind}' cannot be used with a fused answer.")


def _text(content: Any, path: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _refuse(path, f"'{path}' must be a string or an array of text parts to be fused.")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
            raise _refuse(f"{path}[{j}]", f"'{path}[{j}]' cannot be fused: text parts only.")
        texts.append(part.get("text") if isinstance(part.get("text"), str) else "")
    return "".join(texts)


def _tool(tool: dict[str, Any], path: str) -> dict[str, Any]:
    if tool["type"] != "function":
        raise _refuse(f"{path}.type", f"The '{tool['type']}' tool is hosted by a provider and cannot be fused.")
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
    return {"type": "json_schema", "json_schema": schema}


def _refuse(param: str, message: str) -> BadRequest:
    return BadRequest(message, param=param, code="unsupported_for_fusion")
