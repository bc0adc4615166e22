"""The wallet owner's dashboard at `/`: sign in once with the wallet key, then see the
balance and activity, add funds, manage cards and spend keys, read the payment history and
the per-request list, and see or disconnect the apps connected over OAuth. Pages are rendered on the server (Jinja2 templates, an SVG chart);
the only script is a small local one for copy buttons.

Every page is thin (`pages.py`): it calls the same core functions as the REST API and
the MCP tools. Sessions, form tokens and the Origin check are in `guard.py`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from lava_mcp.transports.dashboard import pages

STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}


async def static(request: Request) -> Response:
    """The dashboard's own stylesheet and script (nothing from any other host)."""
    name = request.path_params["name"]
    if name not in STATIC_FILES:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(
        STATIC_DIR / name,
        media_type=STATIC_FILES[name],
        headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"},
    )


routes = [
    Route("/", pages.overview, methods=["GET"]),
    Route(pages.SIGN_IN_PATH, pages.sign_in_page, methods=["GET", "POST"]),
    Route("/dashboard/signout", pages.sign_out, methods=["POST"]),
    Route("/dashboard/funds", pages.add_funds, methods=["GET", "POST"]),
    Route("/dashboard/cards", pages.cards, methods=["GET", "POST"]),
    Route("/dashboard/cards/{id}/default", pages.card_default, methods=["POST"]),
    Route("/dashboard/cards/{id}/remove", pages.card_remove, methods=["POST"]),
    Route("/dashboard/history", pages.payment_history, methods=["GET"]),
    Route("/dashboard/keys", pages.keys, methods=["GET", "POST"]),
    Route("/dashboard/keys/{id}", pages.key_detail, methods=["GET", "POST"]),
    Route("/dashboard/keys/{id}/status", pages.key_status, methods=["POST"]),
    Route("/dashboard/keys/{id}/rotate", pages.key_rotate, methods=["POST"]),
    Route("/dashboard/keys/{id}/revoke", pages.key_revoke, methods=["GET", "POST"]),
    Route("/dashboard/requests", pages.requests_page, methods=["GET"]),
    Route("/dashboard/apps", pages.connected_apps, methods=["GET"]),
    Route("/dashboard/apps/{id}/revoke", pages.app_revoke, methods=["GET", "POST"]),
    Route("/dashboard/static/{name}", static, methods=["GET"]),
]
