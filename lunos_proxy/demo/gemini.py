"""The demo provider's Google Gemini API: generateContent,
streamGenerateContent (``?alt=sse``) and countTokens, at
``/v1beta/models/MODEL:METHOD``.

Answers as demo.py's other formats do: the fixed text, a functionCall
when tools are offered and the last turn is not a functionResponse, JSON
made from `responseSchema` when JSON is asked for; `usageMetadata` counts
words. A stream sends one chunk per word, the finishReason and the usage
on the last.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from .common import ANSWER, example, open_stream, prompt_tokens, read_json, sse, words

_encode = msgspec.json.encode


def _first(node: dict[str, Any], *names: str) -> Any:
    """The first field present: the API takes proto field names in either case."""
    return next((node[n] for n in names if node.get(n)), None)


def _call(body: dict[str, Any]) -> dict[str, Any] | None:
    declarations = [d for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
    contents = body.get("contents") or [{}]
    last = contents[-1].get("parts") or []
    mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode")
    if not declarations or mode == "NONE" or any("functionResponse" in p for p in last):
        return None
    allowed = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get(
        "allowedFunctionNames"
    ) or [declarations[0].get("name")]
    chosen = next((d for d in declarations if d.get("name") in allowed), declarations[0])
    schema = _first(chosen, "parameters", "parametersJsonSchema", "parameters_json_schema")
    return {"name": chosen.get("name", ""), "args": example(schema or {"type": "object"})}


async def generate(request: web.Request) -> web.StreamResponse:
    model, _, method = request.match_info["target"].rpartition(":")
    if method not in ("generateContent", "streamGenerateContent", "countTokens"):
        raise web.HTTPNotFound(text='{"error":{"code":404,"message":"unknown method"}}')
    body = await read_json(request)
    if method == "countTokens":
        counted = body.get("generateContentRequest") or body
        return web.json_response({"totalTokens": prompt_tokens(counted)})
    config = body.get("generationConfig") or {}
    call = _call(body)
    text = ANSWER
    if config.get("responseMimeType") == "application/json":
        schema = _first(config, "responseSchema", "responseJsonSchema", "response_json_schema")
        text = _encode(example(schema or {"type": "object"})).decode()
    output = len(_encode(call)) // 4 + 1 if call else len(text.split())
    prompt = prompt_tokens(body)
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output,
    }
    parts: list[dict[str, Any]] = [{"functionCall": call}] if call else [{"text": text}]
    head = {"modelVersion": model, "responseId": "demo-response"}
    if method == "generateContent":
        candidate = {
            "content": {"role": "model", "parts": parts},
            "finishReason": "STOP",
            "index": 0,
        }
        return web.json_response({"candidates": [candidate], "usageMetadata": usage, **head})
    resp = await open_stream(request)
    pieces: list[list[dict[str, Any]]] = (
        [parts] if call or text is not ANSWER else [[{"text": w}] for w in words()]
    )
    for i, piece in enumerate(pieces):
        candidate = {"content": {"role": "model", "parts": piece}, "index": 0}
        chunk: dict[str, Any] = {"candidates": [candidate], **head}
        if i == len(pieces) - 1:
            candidate["finishReason"] = "STOP"
            chunk["usageMetadata"] = usage
        await resp.write(sse(_encode(chunk)))
    await resp.write_eof()
    return resp


def add_gemini_routes(app: web.Application) -> None:
    app.router.add_post("/v1beta/models/{target}", generate)
