"""Hostile and careless use of ``unitgan serve``: the health check under load, the host guard and token, and
start options that could never work (docs/hostile_input.md maps each case to its test).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import assert_cli_error
from serve_support import tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny trained checkpoint (domain A grey, B colour; size multiple 4)."""
    return tiny_checkpoint(tmp_path_factory.getbasetemp())


# -- UX: the server ---------------------------------------------------------------------------------------


MODEL_CALL_S = 2.0  # one model call of the slow translator


@pytest.fixture(scope="module")
def slow_translator(ckpt):
    from unitgan.inference import Translator

    tr = Translator.from_checkpoint(ckpt, "cpu")
    real = tr.run

    def slow(x, direction):
        time.sleep(MODEL_CALL_S)
        return real(x, direction)

    tr.run = slow
    return tr


def test_health_does_not_queue_behind_model_calls(slow_translator):
    import anyio
    import httpx
    from serve_support import png_bytes, random_image

    from unitgan.serve import create_app, serve_in_thread

    app = create_app(slow_translator)

    async def two_worker_threads() -> None:  # a busy server: every worker thread waits for the model
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2

    app.router.on_startup.append(two_worker_threads)
    image = png_bytes(random_image(16, 16, "L", seed=0))
    with serve_in_thread(app) as url:
        threads = [
            threading.Thread(
                target=lambda: httpx.post(
                    f"{url}/translate", files={"image": ("x.png", image)}, data={"direction": "a2b"}, timeout=30
                )
            )
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        assert httpx.get(f"{url}/health", timeout=30).json() == {"status": "ok"}
        waited = time.monotonic() - t0
        for t in threads:
            t.join()
    # queued behind the model calls, /health would wait for a worker thread: at least MODEL_CALL_S - 0.3 s;
    # the bound leaves room for a loaded machine (0.51 s was seen with two training jobs on the 2 cores)
    assert waited < MODEL_CALL_S / 2, waited


def test_host_guard_and_token(ckpt):
    from fastapi.testclient import TestClient

    from unitgan.inference import Translator
    from unitgan.serve import create_app
    from unitgan.serve.app import LOOPBACK_NAMES

    tr = Translator.from_checkpoint(ckpt, "cpu")
    with TestClient(create_app(tr, allowed_hosts=LOOPBACK_NAMES)) as c:
        r = c.get("/info", headers={"Host": "evil.example:7860"})
        assert r.status_code == 400 and "DNS rebinding" in r.json()["detail"]
        assert c.get("/info", headers={"Host": "localhost:7860"}).status_code == 200
        assert c.get("/info", headers={"Host": "[::1]:7860"}).status_code == 200
    with TestClient(create_app(tr, token="s3cret")) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/info").status_code == 401 and c.get("/").status_code == 401
        assert c.get("/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
        page = c.get("/?token=s3cret")  # a browser: the page sets a cookie its own requests then carry
        assert page.status_code == 200 and "unitgan_token" in page.headers["set-cookie"]
        assert c.get("/info").status_code == 200


def test_non_loopback_bind_needs_a_token_or_insecure(ckpt, capsys, monkeypatch):
    import unitgan.serve
    from unitgan.cli import main

    calls = []
    monkeypatch.setattr(unitgan.serve, "run", lambda app, host, port: calls.append(host))
    monkeypatch.delenv("UNITGAN_TOKEN", raising=False)
    assert_cli_error(capsys, ["serve", "--checkpoint", ckpt, "--host", "0.0.0.0"], "--token", "--insecure")
    assert main(["serve", "--checkpoint", str(ckpt), "--host", "0.0.0.0", "--token", "t"]) == 0
    assert main(["serve", "--checkpoint", str(ckpt), "--host", "0.0.0.0", "--insecure"]) == 0
    assert calls == ["0.0.0.0", "0.0.0.0"]


def test_serve_start_refuses_what_could_never_work(ckpt, capsys, monkeypatch):
    """A loopback address other than 127.0.0.1 answers its own Host name; tokens that cannot survive a URL,
    a header and a cookie unchanged, and a --max-pixels beyond memory, are refused at start; --port 0 prints
    the port chosen."""
    from fastapi.testclient import TestClient

    import unitgan.serve
    from unitgan.cli import main

    apps = []
    monkeypatch.setattr(unitgan.serve, "run", lambda app, host, port: apps.append((app, port)))
    monkeypatch.delenv("UNITGAN_TOKEN", raising=False)
    base = ["serve", "--checkpoint", str(ckpt)]
    assert main([*base, "--host", "127.0.0.2", "--port", "7861"]) == 0
    capsys.readouterr()
    with TestClient(apps[-1][0], base_url="http://127.0.0.2:7861") as c:
        assert c.get("/info").status_code == 200
    for token in ("a b+c%", "pässwört", "x\ty"):
        assert_cli_error(capsys, [*base, "--token", token], "--token", "letters, digits")
    assert_cli_error(capsys, [*base, "--max-pixels", "1000000000000"], "--max-pixels", "1000000000000", "memory")
    assert main([*base, "--port", "0"]) == 0
    port = apps[-1][1]
    assert port > 0 and f"serving on http://127.0.0.1:{port}/" in capsys.readouterr().out


def test_the_bearer_scheme_is_case_insensitive_and_the_query_token_url_decoded(ckpt):
    from fastapi.testclient import TestClient

    from unitgan.inference import Translator
    from unitgan.serve import create_app

    with TestClient(create_app(Translator.from_checkpoint(ckpt, "cpu"), token="a-b.c~d_e")) as c:
        for scheme in ("Bearer", "bearer", "BEARER"):
            assert c.get("/info", headers={"Authorization": f"{scheme} a-b.c~d_e"}).status_code == 200
        assert c.get("/info", headers={"Authorization": "Basic a-b.c~d_e"}).status_code == 401
        assert c.get("/?token=a%2Db.c~d_e").status_code == 200  # a browser may percent-encode the token
