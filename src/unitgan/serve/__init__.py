"""Serving a trained translator over HTTP: a web page for people and ``POST /translate`` for programs.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart): ``pip install 'unitgan[serve]'``.
"""

from unitgan.serve.app import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, create_app
from unitgan.serve.server import DEFAULT_HOST, DEFAULT_PORT, is_loopback, run, serve_in_thread

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_PORT",
    "create_app",
    "is_loopback",
    "run",
    "serve_in_thread",
]
