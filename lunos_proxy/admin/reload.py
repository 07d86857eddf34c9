"""POST /admin/reload (scope: operator): reload the config file in every worker, as SIGHUP does.

    200 {"result": "applied", "providers": 2, "models": 5,
         "workers": [{"worker": 0, "pid": 4711, "result": "applied", "providers": 2, "models": 5},
                     {"worker": 1, "pid": 4712, ...}]}
    422 {"result": "rejected", "problems": ["lunos.yaml: models.x.fallbacks[0]: unknown model 'y'"],
         "workers": [...]}
    504 {"result": "incomplete", "workers": [...the answers], "missing": [1]}

Under `serve --workers N` the answer has one entry per worker, each
reporting a reload that began after the call (lunos_proxy/worker_control.py);
a single process answers as worker 0. A rejected file changes nothing; the
running config stays in force. 504 means some worker did not answer within
30 seconds: its config is unknown, so look at its logs (field ``worker``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..worker_control import this_worker
from .auth import GATEWAY, requires, send

if TYPE_CHECKING:
    from ..host import Host


@requires("operator", "config.reload")
async def reload(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    workers = this_worker()
    missing: list[int] = []
    if workers is None:
        result = await gateway.reload()
        answers = [{"worker": 0, "pid": os.getpid(), **result.answer(gateway.config)}]
    else:
        answers, missing = await workers.reload_all()
    if missing:
        return send({"result": "incomplete", "workers": answers, "missing": missing}, 504)
    rejected = [a for a in answers if a.get("result") != "applied"]
    if rejected:
        problems: list[Any] = rejected[0].get("problems", [])
        return send({"result": "rejected", "problems": problems, "workers": answers}, 422)
    first = answers[0]
    return send({"result": "applied", "providers": first["providers"],
                 "models": first["models"], "workers": answers})


def setup(app: web.Application, gateway: Host) -> None:
    app.router.add_post("/admin/reload", reload)
