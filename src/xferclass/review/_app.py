"""The review's web application: a Starlette app served by uvicorn on 127.0.0.1.

Every request must carry the review's token, in the URL (``?token=``) or in
the ``X-Token`` header, as Jupyter asks for its own: without it the answer is
403. Images are served only when they are images of the review, inside the
data's folder. A bad request gets a 4xx answer with a one-line message.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
from typing import Any

from ..core._errors import InvalidArgumentError, MissingDependencyError, XferclassError
from ._page import PAGE
from ._session import Review, UnknownItemError

__all__ = ["create_app", "serve", "DEFAULT_PORT"]

#: The port ``xferclass review`` tries first; a free one is taken when it is busy.
DEFAULT_PORT = 8765
TOKEN_HEADER = "x-token"


def _starlette() -> Any:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "xferclass review needs the web server of the review extra: "
            "pip install 'xferclass[review]'"
        ) from None


def create_app(review: Review, token: str) -> Any:
    """The Starlette application of ``review``, answering only requests with ``token``."""
    _starlette()
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse
    from starlette.routing import Route

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> JSONResponse:
        decided, total = review.progress()
        return JSONResponse({
            "data": review.dataset.table or review.dataset.root,
            "class_names": review.findings.class_names,
            "items": [item.to_dict() for item in review.items],
            "decisions": review.decisions,
            "progress": {"decided": decided, "total": total},
        })  # fmt: skip

    async def decide(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object {item, action[, label, keep]}")
        if not isinstance(body.get("item"), str) or not isinstance(body.get("action"), str):
            return error(400, "the body needs 'item' and 'action', both strings")
        try:
            decision = review.decide(
                body["item"], body["action"], label=body.get("label"),
                keep=body.get("keep"),
            )  # fmt: skip
        except UnknownItemError as failure:
            return error(404, str(failure.args[0]))
        except InvalidArgumentError as failure:
            return error(400, str(failure))
        decided, total = review.progress()
        progress = {"decided": decided, "total": total}
        return JSONResponse({"decision": decision, "progress": progress})

    async def apply(request: Request) -> JSONResponse:
        try:
            path = review.write_table()
        except (OSError, XferclassError) as failure:
            return error(409, f"the table could not be written: {failure}")
        return JSONResponse({"table": path, **review.summary()})

    async def image(request: Request) -> Any:
        try:
            path = review.image_file(request.query_params.get("path"))
        except InvalidArgumentError as failure:
            return error(404 if "not an image" in str(failure) else 400, str(failure))
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    routes = [
        Route("/", page),
        Route("/api/state", state),
        Route("/api/decide", decide, methods=["POST"]),
        Route("/api/apply", apply, methods=["POST"]),
        Route("/image", image),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_TokenCheck, token=token)])


class _TokenCheck:
    """ASGI middleware: a request without the token gets 403 and nothing else."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse

        if scope["type"] == "http":
            request = Request(scope)
            given = request.query_params.get("token") or request.headers.get(TOKEN_HEADER, "")
            if not secrets.compare_digest(given.encode(), self.token):
                answer = PlainTextResponse(
                    "403: this review needs its token: open the URL xferclass review printed",
                    status_code=403,
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _json_body(request: Any) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


def _socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``port``, or on a free one when ``port`` is busy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        if port == 0:
            raise
        sock.bind((host, 0))
    sock.listen(128)
    return sock


def serve(
    review: Review, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
    token: str | None = None, open_browser: bool = False,
) -> None:  # fmt: skip
    """Serve ``review`` until interrupted, printing the URL (with its token) to open.

    Args:
        review: The review.
        host: The address to bind; 127.0.0.1 keeps it to this machine.
        port: The port; a free one is taken when it is busy (0: any free one).
        token: The token every request must carry; a random one when None.
        open_browser: Open the URL in the system's browser.
    """
    _starlette()
    import uvicorn

    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port={port!r} must be an integer from 0 to 65535")
    token = token or secrets.token_urlsafe(24)
    app = create_app(review, token)
    sock = _socket(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/?token={token}"
    decided, total = review.progress()
    print(f"review: {decided} of {total} decided; open {url}", flush=True)
    print("review: Ctrl+C stops the server; every decision is already saved", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
