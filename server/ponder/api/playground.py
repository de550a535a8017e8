"""The playground page (`GET /playground`, docs/api.md "Playground"): static HTML, CSS and
JavaScript shipped in the package (`api/static/`), no build step and nothing fetched from
elsewhere, so it works offline. The page calls this server's own API with the key the user
types (kept in the page's memory, nothing stored server-side); the files themselves hold no
data and are served without a key. Off with PONDER_PLAYGROUND=false (404)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .errors import ApiError

router = APIRouter()

FILES = {
    "playground.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
"""The only files served (a name in a path is looked up here, never on the file system)."""

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return (resources.files("ponder.api") / "static" / name).read_bytes()


def _serve(request: Request, name: str) -> Response:
    if not request.app.state.settings.playground or name not in FILES:
        raise ApiError(404, "not found", code="not_found")
    return Response(_read(name), media_type=FILES[name], headers=HEADERS)


@router.get("/playground", include_in_schema=False)
async def page(request: Request) -> Response:
    return _serve(request, "playground.html")


@router.get("/playground/{name}", include_in_schema=False)
async def asset(name: str, request: Request) -> Response:
    return _serve(request, name)
