"""The built-in demo provider: deterministic answers in OpenAI, Anthropic and
Gemini format, streaming included, with real `usage` counts (common.py has
the OpenAI and Anthropic endpoints and the helpers gemini.py builds on)."""

from __future__ import annotations

from aiohttp import web

from .common import ANSWER, chat, completions, count_tokens, embeddings, messages, responses
from .gemini import add_gemini_routes

__all__ = ["ANSWER", "demo_app"]


def demo_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    add_gemini_routes(app)
    return app
