"""The key form (`/ui/key`): asks for an API key once and sets the dashboard cookie; and
`/ui/key/forget`, which clears it (see `hsi.web.auth` for the choices)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from hsi.web.auth import COOKIE, KEY_FORM, MAX_FORM_BYTES, cross_site, parse_form, safe_next
from hsi.web.site import Site


def key_routes(site: Site) -> list[BaseRoute]:
    render, gate = site.render, site.gate

    def form(request: Request, next_path: str, error: str | None, status: int) -> Response:
        return render.page(
            request,
            "key.html",
            {"title": "Enter your key", "current": None, "next": next_path, "error": error},
            status_code=status,
        )

    async def key(request: Request) -> Response:
        """GET: the form. POST: check the key, set the cookie and go back to the page."""
        if not gate.enabled:
            return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        if request.method != "POST":
            return form(request, safe_next(request.query_params.get("next")), None, 200)
        if cross_site(request.headers.get("sec-fetch-site")):
            return form(request, "/", "Enter the key on this page, not from another site.", 403)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return form(request, "/", "That form was too large.", 413)
        fields = parse_form(body)
        next_path = safe_next(fields.get("next"))
        given = fields.get("api_key", "").strip()
        if not gate.key_accepted(given):
            message = "Enter your API key." if not given else "That key is not accepted."
            return form(request, next_path, message, 401)
        response = RedirectResponse(next_path, status_code=303)
        gate.set_cookie(response, request, given)
        return response

    async def forget(request: Request) -> Response:
        """Clear the cookie (the page's script clears its stored copy of the key)."""
        if cross_site(request.headers.get("sec-fetch-site")):
            return Response("refused: sent from another site", status_code=403)
        response = RedirectResponse(KEY_FORM if gate.enabled else "/", status_code=303)
        response.delete_cookie(
            COOKIE, path="/", secure=request.url.scheme == "https", httponly=True, samesite="lax"
        )
        return response

    return [
        Route(KEY_FORM, key, methods=["GET", "POST"], name="web_key"),
        Route(f"{KEY_FORM}/forget", forget, methods=["POST"], name="web_key_forget"),
    ]
