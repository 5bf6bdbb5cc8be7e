"""Serving a trained translator over HTTP: a web page for people and ``POST /translate`` for programs.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart): ``pip install 'unitgan[serve]'``.
"""

from unitgan.serve.app import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, create_app
from unitgan.serve.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    free_port,
    is_loopback,
    run,
    serve_in_thread,
    token_problem,
)

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_PORT",
    "create_app",
    "free_port",
    "is_loopback",
    "run",
    "serve_in_thread",
    "token_problem",
]
