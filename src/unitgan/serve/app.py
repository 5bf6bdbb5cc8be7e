"""The web app: a page that translates one image in the browser, and ``POST /translate`` for programs.

The model is loaded once, outside the app, and handed to :func:`create_app`. Requests are decoded and
encoded in parallel worker threads; the model call itself is serialised by a lock, so concurrent requests
never share a batch and never see each other's results. Every bad request gets a 4xx with a one-line JSON
``{"detail": "..."}``:

    413  body or image larger than ``max_bytes``
    415  not an image (unknown format)
    400  image cannot be decoded, more pixels than ``max_pixels`` (decompression bomb), empty
    422  unknown or missing direction, missing ``image`` field; a seed or style image for a UNIT model

Scale: as ``unitgan translate``, an image is translated at the scale the model was trained at (the shorter
side at ``data.load_size``; native if that is 0), or at native resolution with ``native``; the answer is
resized back to the input's size, so the page shows input and translation side by side at one size.

Styles (MUNIT models; ``/info`` says ``multimodal``): ``seed`` picks the style drawn from N(0, I) (style 0 of
``draw_styles(1, seed, target domain)``, seed 0 by default; the page's "another style" sends a new one), and a
``style_image`` of the target domain gives its own style instead (example-guided). UNIT is unimodal and
refuses both with 422.
"""

from __future__ import annotations

import hmac
import io
import logging
import re
import threading
import urllib.parse
from importlib import resources
from typing import Annotated, Any

import torchvision.transforms.v2.functional as TF
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image

from unitgan import __version__
from unitgan.data.io import ALLOWED_NAMES, NotAnImage, decode_image, tensor_to_pil
from unitgan.errors import UnitganError
from unitgan.inference import UNIMODAL_MESSAGE, BaseTranslator

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 2**20  # 10 MiB per uploaded image
DEFAULT_MAX_PIXELS = 0  # 0 = from the memory available and the model's cost per pixel (BaseTranslator.pixel_budget)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")  # Host headers a loopback-bound server answers
TOKEN_COOKIE = "unitgan_token"
OPEN_PATHS = ("/health",)  # answered without a token (liveness probes)
FORM_OVERHEAD = 64 * 2**10  # multipart headers and small fields allowed on top of max_bytes


class BadImage(Exception):
    """An upload the app refuses; carries the HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, channels: int, max_pixels: int) -> Image.Image:
    """Bytes of an uploaded file -> PIL 'L' or 'RGB' through :func:`unitgan.data.io.decode_image` (allowed
    formats only, the pixel count checked before decoding, EXIF orientation applied)."""
    if not data:
        raise BadImage(400, "the uploaded file is empty")
    try:
        return decode_image(io.BytesIO(data), "upload", channels, max_pixels)
    except NotAnImage:
        raise BadImage(415, f"the uploaded file is not an image in an allowed format ({ALLOWED_NAMES})") from None
    except UnitganError as e:
        text = str(e).replace("image 'upload' cannot be read", "image 'upload' cannot be decoded", 1)
        raise BadImage(400, text.replace("image 'upload'", "the uploaded image", 1)) from None


def safe_stem(filename: str | None) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", (filename or "image").rsplit("/", 1)[-1].rsplit(".", 1)[0])
    return stem.strip("._")[:80] or "image"


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413, by header or while streaming.

    Args:
        app: the wrapped ASGI app.
        limit: the largest body accepted, in bytes.
        message: the ``detail`` of the 413 answer.
    """

    def __init__(self, app: Any, limit: int, message: str):
        self.app = app
        self.limit = limit
        self.message = message

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
            return
        seen = 0
        exceeded = False

        async def counting_receive() -> dict:
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    return {"type": "http.disconnect"}  # stops the body parser; the reply below says why
            return msg

        replied = False

        async def guarded_send(msg: dict) -> None:
            nonlocal replied
            if exceeded:
                if not replied:  # replace whatever the app answers to a truncated body
                    replied = True
                    await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
                return
            await send(msg)

        await self.app(scope, counting_receive, guarded_send)
        if exceeded and not replied:
            await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)


class Guard:
    """ASGI middleware: the DNS-rebinding guard and the optional token.

    Args:
        app: the wrapped ASGI app.
        allowed_hosts: Host header names accepted (any port); None accepts any (a non-loopback bind).
        token: when set, every path but ``/health`` needs ``Authorization: Bearer TOKEN``, or the cookie that
            ``GET /?token=TOKEN`` sets (so the web page works in a browser).
    """

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...] | None, token: str | None):
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.token = token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        if self.allowed_hosts is not None:
            host = headers.get("host", "")
            name = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host.rsplit(":", 1)[0]
            if name.lower() not in self.allowed_hosts:
                detail = f"Host header '{host[:100]}' is not allowed on a loopback server (DNS rebinding guard)"
                await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
                return
        if self.token and scope["path"] not in OPEN_PATHS:
            query = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
            bearer = credentials.strip() if scheme.lower() == "bearer" else ""  # schemes are case-insensitive
            cookies = dict(c.strip().split("=", 1) for c in headers.get("cookie", "").split(";") if "=" in c)
            given = bearer or cookies.get(TOKEN_COOKIE, "") or (query.get("token", "") if scope["path"] == "/" else "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                detail = "a token is needed: send 'Authorization: Bearer TOKEN' (or open /?token=TOKEN in a browser)"
                await JSONResponse({"detail": detail}, status_code=401)(scope, receive, send)
                return
            if scope["path"] == "/" and query.get("token"):  # the page's own requests then carry the cookie

                async def with_cookie(msg: dict) -> None:
                    if msg["type"] == "http.response.start":
                        cookie = f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                        msg = {**msg, "headers": [*msg.get("headers", []), (b"set-cookie", cookie.encode())]}
                    await send(msg)

                await self.app(scope, receive, with_cookie)
                return
        await self.app(scope, receive, send)


def create_app(
    translator: BaseTranslator,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    directions: tuple[str, ...] | None = None,
    native: bool = False,
    allowed_hosts: tuple[str, ...] | None = None,
    token: str | None = None,
) -> FastAPI:
    """The FastAPI app around a loaded translator.

    Args:
        translator: a loaded model (Translator or ExportedTranslator); used for every request, one at a time.
        max_bytes: the largest uploaded image in bytes (413 above it).
        max_pixels: the most pixels (width x height) an image may declare; checked before decoding (400).
        directions: the directions offered; default those of the translator (both for a checkpoint).
        native: translate at the uploaded image's resolution instead of the training scale.
        allowed_hosts: Host header names to answer (:data:`LOOPBACK_NAMES` for a loopback bind); None = any.
        token: require this token on every path but ``/health`` (see :class:`Guard`); None = no token.
    """
    directions = tuple(directions or translator.directions)
    max_pixels = max_pixels or translator.pixel_budget(1)
    lock = threading.Lock()
    info = {
        "directions": list(directions),
        "channels": {"a": translator.channels("a"), "b": translator.channels("b")},
        "size_multiple": translator.size_multiple,
        "training_scale": translator.scale,
        "native": native,
        "max_bytes": max_bytes,
        "max_pixels": max_pixels,
        "engine": translator.engine,
        "multimodal": translator.multimodal,
        "style_dim": translator.style_dim,
        "unitgan_version": __version__,
    }

    app = FastAPI(
        docs_url=None,  # Swagger UI and ReDoc load from a CDN (blank offline): only /openapi.json is served
        redoc_url=None,
        title="unitgan",
        version=__version__,
        description=(
            "UNIT image-to-image translation. `POST /translate` with a multipart field `image` and a "
            f"`direction` ({', '.join(directions)}) returns the translation as PNG, same size as the input."
        ),
    )
    too_large = f"upload is larger than the limit of {max_bytes} bytes"
    uploads = 2 if translator.multimodal else 1  # the image, and a style image for a MUNIT model
    app.add_middleware(BodyLimit, limit=uploads * max_bytes + FORM_OVERHEAD, message=too_large)
    app.add_middleware(Guard, allowed_hosts=allowed_hosts, token=token)  # added last: runs first

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
            parts.append(f"{field}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = resources.files("unitgan.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    @app.get("/health", summary="liveness check")
    async def health() -> dict[str, str]:  # on the event loop: never queues behind model calls in the threads
        return {"status": "ok"}

    @app.get("/info", summary="what this server translates and the limits it applies")
    async def get_info() -> dict[str, Any]:
        return info

    @app.post(
        "/translate",
        summary="translate one image",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "the translation, PNG, same size as the input"},
            400: {"description": "undecodable, empty, or too many pixels (decompression bomb)"},
            413: {"description": "larger than max_bytes"},
            415: {"description": "not an image"},
            422: {"description": "unknown or missing direction, no image field, or a style for a UNIT model"},
        },
    )
    def translate(
        image: Annotated[UploadFile, File(description="the image file (PNG, JPEG, WebP, BMP, TIFF, ...)")],
        direction: Annotated[str | None, Form(description="a2b or b2a (see GET /info)")] = None,
        direction_query: Annotated[
            str | None, Query(alias="direction", description="the direction, if not sent as a form field")
        ] = None,
        seed: Annotated[
            int | None,
            Form(ge=0, lt=2**63, description="MUNIT: the seed of the random style (default 0); see GET /info"),
        ] = None,
        style_image: Annotated[
            UploadFile | None, File(description="MUNIT: an image of the TARGET domain whose style is used")
        ] = None,
    ) -> Response:
        chosen = _choose_direction(direction, direction_query, directions)
        if (seed is not None or style_image is not None) and not translator.multimodal:
            raise HTTPException(422, UNIMODAL_MESSAGE)
        if seed is not None and style_image is not None:
            raise HTTPException(422, "give a seed or a style image, not both")
        img = _read_image(image, translator.channels(chosen[0]))
        x = translator.prepare(img, native=native).unsqueeze(0)  # [1, C_src, H', W'] at the translation scale
        ref = None
        if style_image is not None:
            ref = translator.prepare(_read_image(style_image, translator.channels(chosen[2])), native=native)
        with lock:
            if ref is not None:
                y = translator.translate(x, chosen, translator.style_of(ref.unsqueeze(0), chosen[2]))[0]
            elif translator.multimodal:
                y = translator.translate(x, chosen, translator.draw_styles(1, seed or 0, chosen[2]))[0]
            else:
                y = translator.translate(x, chosen)[0]  # [C_dst, H', W']
        if tuple(y.shape[-2:]) != (img.height, img.width):
            y = TF.resize(y, [img.height, img.width], antialias=True)  # [C_dst, H, W], the input's size
        buf = io.BytesIO()
        tensor_to_pil(y).save(buf, format="PNG")
        name = f"{safe_stem(image.filename)}_{chosen}.png"
        log.debug("translated %s %dx%d %s", image.filename, img.width, img.height, chosen)
        headers = {"Content-Disposition": f'inline; filename="{name}"', "X-Unitgan-Direction": chosen}
        if translator.multimodal:
            headers["X-Unitgan-Style"] = "image" if ref is not None else f"seed {seed or 0}"
        return Response(buf.getvalue(), media_type="image/png", headers=headers)

    def _read_image(upload: UploadFile, channels: int) -> Image.Image:
        """An uploaded file decoded with the app's limits (413 over ``max_bytes``, 4xx when undecodable)."""
        data = upload.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, too_large)
        try:
            img = decode_upload(data, channels, max_pixels)
        except BadImage as e:
            raise HTTPException(e.status, str(e)) from None
        # the raw count bounds decoding; the count at the translation scale bounds the model's memory: a
        # 60000x1 strip is 60000 pixels raw but 2400000x40 once its shorter side goes to a load_size of 40
        tw, th = translator.scaled_size(img.width, img.height, native=native)
        if tw * th > max_pixels:
            raise HTTPException(
                400,
                f"image '{upload.filename}' ({img.width}x{img.height}) would be translated at {tw}x{th} = "
                f"{tw * th} pixels, more than the limit of {max_pixels}",
            )
        return img

    return app


def _choose_direction(form: str | None, query: str | None, directions: tuple[str, ...]) -> str:
    if form is not None and query is not None and form != query:
        raise HTTPException(422, f"direction given twice and differently: form '{form}', query '{query}'")
    chosen = form if form is not None else query
    if chosen is None:
        if len(directions) == 1:
            return directions[0]
        raise HTTPException(422, f"direction is missing; send one of {', '.join(directions)}")
    if chosen not in directions:
        raise HTTPException(422, f"unknown direction '{chosen}'; this server translates {', '.join(directions)}")
    return chosen
