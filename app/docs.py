"""/docs from files the API serves itself: Swagger UI's assets come from the swagger-ui-bundle package.

FastAPI's default /docs page loads Swagger UI from a CDN, so it is blank on a machine without internet,
including the offline container the image promises. Here the page and its assets are local; nothing
in them names another host.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs-assets"


def install_docs(app: FastAPI) -> None:
    """GET /docs (Swagger UI) and its assets under /docs-assets; the app is built with docs_url=None."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    async def docs(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy prefix, as FastAPI's own page does
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - docs",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
