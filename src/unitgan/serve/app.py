"""The web app: a page that translates one image in the browser, and ``POST /translate`` for programs.

The model is loaded once, outside the app, and handed to :func:`create_app`. Requests are decoded and
encoded in parallel worker threads; the model call itself is serialised by a lock, so concurrent requests
never share a batch and never see each other's results. Every bad request gets a 4xx with a one-line JSON
``{"detail": "..."}``:

    413  body or image larger than ``max_bytes``
    415  not an image (unknown format)
    400  image cannot be decoded, more pixels than ``max_pixels`` (decompression bomb), empty
    422  unknown or missing direction, missing ``image`` field

Scale: as ``unitgan translate``, an image is translated at the scale the model was trained at (the shorter
side at ``data.load_size``; native if that is 0), or at native resolution with ``native``; the answer is
resized back to the input's size, so the page shows input and translation side by side at one size.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from importlib import resources
from typing import Annotated, Any

import torchvision.transforms.v2.functional as TF
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError

from unitgan import __version__
from unitgan.data.io import tensor_to_pil, to_mode
from unitgan.inference import BaseTranslator

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 2**20  # 10 MiB per uploaded image
DEFAULT_MAX_PIXELS = 2**20  # 1024 x 1024; memory grows with pixels times model width
FORM_OVERHEAD = 64 * 2**10  # multipart headers and small fields allowed on top of max_bytes


class BadImage(Exception):
    """An upload the app refuses; carries the HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, channels: int, max_pixels: int) -> Image.Image:
    """Bytes of an uploaded file -> PIL 'L' or 'RGB', checking the pixel count before decoding."""
    if not data:
        raise BadImage(400, "the uploaded file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise BadImage(
                    400,
                    f"image is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels} "
                    "(refused as a possible decompression bomb)",
                )
            img.load()
            return to_mode(img, channels)
    except Image.DecompressionBombError as e:
        raise BadImage(400, f"image refused as a decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise BadImage(
            415, "the uploaded file is not an image in a known format (PNG, JPEG, WebP, BMP, TIFF, ...)"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadImage(400, f"the uploaded image cannot be decoded: {reason}") from None


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


def create_app(
    translator: BaseTranslator,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    directions: tuple[str, ...] | None = None,
    native: bool = False,
) -> FastAPI:
    """The FastAPI app around a loaded translator.

    Args:
        translator: a loaded model (Translator or ExportedTranslator); used for every request, one at a time.
        max_bytes: the largest uploaded image in bytes (413 above it).
        max_pixels: the most pixels (width x height) an image may declare; checked before decoding (400).
        directions: the directions offered; default those of the translator (both for a checkpoint).
        native: translate at the uploaded image's resolution instead of the training scale.
    """
    directions = tuple(directions or translator.directions)
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
        "unitgan_version": __version__,
    }

    app = FastAPI(
        title="unitgan",
        version=__version__,
        description=(
            "UNIT image-to-image translation. `POST /translate` with a multipart field `image` and a "
            f"`direction` ({', '.join(directions)}) returns the translation as PNG, same size as the input."
        ),
    )
    too_large = f"upload is larger than the limit of {max_bytes} bytes"
    app.add_middleware(BodyLimit, limit=max_bytes + FORM_OVERHEAD, message=too_large)

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
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info", summary="what this server translates and the limits it applies")
    def get_info() -> dict[str, Any]:
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
            422: {"description": "unknown or missing direction, or no image field"},
        },
    )
    def translate(
        image: Annotated[UploadFile, File(description="the image file (PNG, JPEG, WebP, BMP, TIFF, ...)")],
        direction: Annotated[str | None, Form(description="a2b or b2a (see GET /info)")] = None,
        direction_query: Annotated[
            str | None, Query(alias="direction", description="the direction, if not sent as a form field")
        ] = None,
    ) -> Response:
        chosen = _choose_direction(direction, direction_query, directions)
        data = image.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, too_large)
        try:
            img = decode_upload(data, translator.channels(chosen[0]), max_pixels)
        except BadImage as e:
            raise HTTPException(e.status, str(e)) from None
        x = translator.prepare(img, native=native).unsqueeze(0)  # [1, C_src, H', W'] at the translation scale
        with lock:
            y = translator.translate(x, chosen)[0]  # [C_dst, H', W']
        if tuple(y.shape[-2:]) != (img.height, img.width):
            y = TF.resize(y, [img.height, img.width], antialias=True)  # [C_dst, H, W], the input's size
        buf = io.BytesIO()
        tensor_to_pil(y).save(buf, format="PNG")
        name = f"{safe_stem(image.filename)}_{chosen}.png"
        log.debug("translated %s %dx%d %s", image.filename, img.width, img.height, chosen)
        return Response(
            buf.getvalue(),
            media_type="image/png",
            headers={"Content-Disposition": f'inline; filename="{name}"', "X-Unitgan-Direction": chosen},
        )

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
