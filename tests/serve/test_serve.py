"""The web app and HTTP API: good requests, each kind of bad request, concurrency, a bounded load test."""

from __future__ import annotations

import copy
import io
import struct
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from munit_support import tiny_munit_checkpoint
from PIL import Image
from serve_support import png_bytes, random_image, tiny_checkpoint

from unitgan.cli import main
from unitgan.data.io import pil_to_tensor, tensor_to_pil
from unitgan.errors import UnitganError
from unitgan.export import export_checkpoint, load_export
from unitgan.inference import Translator
from unitgan.serve import create_app, serve_in_thread

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from loadtest import run_load  # noqa: E402  (benchmark code: benchmarks/loadtest.py)

with warnings.catch_warnings():  # starlette 1.x asks for httpx2 (Python >= 3.11); httpx still works
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

MAX_BYTES = 20_000
MAX_PIXELS = 96 * 96


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def translator(tmp_path_factory) -> Translator:
    return Translator.from_checkpoint(tiny_checkpoint(tmp_path_factory.getbasetemp()), "cpu")


@pytest.fixture(scope="session")
def app(translator):
    return create_app(translator, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


@pytest.fixture(scope="session")
def client(app) -> TestClient:
    with TestClient(app) as c:
        yield c


def expected_png(translator: Translator, img: Image.Image, direction: str) -> np.ndarray:
    """What the server should return: the translation of one image on its own, as uint8 pixels."""
    channels = translator.channels(direction[0])
    x = pil_to_tensor(img.convert("L" if channels == 1 else "RGB")).unsqueeze(0)
    return np.asarray(tensor_to_pil(translator.translate(x, direction)[0]))


def post(client, data: bytes, direction: str | None = "a2b", name: str = "x.png", **kw) -> httpx.Response:
    form = {"direction": direction} if direction is not None else {}
    return client.post("/translate", files={"image": (name, data, "image/png")}, data=form, **kw)


def test_translates_a_good_image(client, translator):
    img = random_image(20, 12, "L", seed=0)
    r = post(client, png_bytes(img), "a2b", name="my photo.png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == 'inline; filename="my_photo_a2b.png"'
    out = Image.open(io.BytesIO(r.content))
    assert (out.size, out.mode) == ((20, 12), "RGB")
    np.testing.assert_array_equal(np.asarray(out), expected_png(translator, img, "a2b"))
    rgb = random_image(17, 9, "RGB", seed=1)
    r = client.post("/translate?direction=b2a", files={"image": ("y.jpg", png_bytes(rgb), "image/jpeg")})
    assert r.status_code == 200, r.text
    out = Image.open(io.BytesIO(r.content))
    assert (out.size, out.mode) == ((17, 9), "L")
    tiny = random_image(4, 30, "L", seed=3)  # smaller than the size multiple: padded like everywhere else
    r = post(client, png_bytes(tiny), "a2b")
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), expected_png(translator, tiny, "a2b"))


def test_page_docs_and_info(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for element in ('id="file"', 'id="direction"', 'id="input-img"', 'id="output-img"', 'id="download"'):
        assert element in page.text
    for element in ('id="style-controls" hidden', 'id="another-style"', 'id="style-file"'):  # shown for MUNIT
        assert element in page.text
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["directions"] == ["a2b", "b2a"] and info["channels"] == {"a": 1, "b": 3}
    assert info["max_bytes"] == MAX_BYTES and info["max_pixels"] == MAX_PIXELS
    assert info["multimodal"] is False and info["style_dim"] == 0
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN: not served
    schema = client.get("/openapi.json").json()
    assert "image/png" in schema["paths"]["/translate"]["post"]["responses"]["200"]["content"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (grey) but holds only a few bytes of pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "direction", "status", "message"),
    [
        (b"\x89PNG" + bytes(30_000), "a2b", 413, "larger than the limit"),
        (b"hello, I am text", "a2b", 415, "not an image"),
        (b"", "a2b", 400, "empty"),
        (png_bytes(random_image(32, 32, "L", seed=2))[:120], "a2b", 400, "cannot be decoded"),
        (_png_header_only(50_000, 50_000), "a2b", 400, "decompression bomb"),  # PIL's own limit trips first
        (_png_header_only(200, 100), "a2b", 400, "more than the limit of 9216"),  # the app's max_pixels
        (png_bytes(random_image(16, 16, "L", seed=4)), "x2y", 422, "unknown direction 'x2y'"),
        (png_bytes(random_image(16, 16, "L", seed=5)), None, 422, "direction is missing"),
    ],
    ids=[
        "too-large",
        "not-an-image",
        "empty",
        "truncated",
        "bomb",
        "too-many-pixels",
        "bad-dir",
        "no-dir",
    ],
)
def test_bad_requests_get_clear_4xx(client, data, direction, status, message):
    r = post(client, data, direction)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_other_bad_requests(client):
    r = client.post("/translate", data={"direction": "a2b"})
    assert r.status_code == 422 and r.json()["detail"] == "image: Field required"
    good = png_bytes(random_image(16, 16, "L", seed=6))
    r = client.post("/translate?direction=b2a", files={"image": ("x.png", good)}, data={"direction": "a2b"})
    assert r.status_code == 422 and "given twice" in r.json()["detail"]

    def chunked():  # no Content-Length: the limit is enforced while the body streams in
        yield b"--xyz\r\nContent-Disposition: form-data; name=image; filename=a.png\r\n\r\n"
        for _ in range(20):
            yield bytes(10_000)

    r = client.post("/translate", content=chunked(), headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and r.json()["detail"] == f"upload is larger than the limit of {MAX_BYTES} bytes"


def test_export_server_offers_only_exported_directions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-export")
    export_checkpoint(tiny_checkpoint(tmp_path_factory.getbasetemp()), folder, "a2b", "onnx")
    with TestClient(create_app(load_export(folder, threads=1))) as c:
        assert c.get("/info").json()["directions"] == ["a2b"]
        img = png_bytes(random_image(12, 12, "L", seed=7))
        assert post(c, img, None).status_code == 200  # the only direction is the default
        r = post(c, img, "b2a")
        assert r.status_code == 422 and "this server translates a2b" in r.json()["detail"]


def test_concurrent_requests_never_mix(app, translator):
    """16 different images (several sizes, both directions) 8 at a time over real HTTP; each result is
    the sequential translation of its own image."""
    jobs = []
    for i in range(16):
        direction = "a2b" if i % 2 == 0 else "b2a"
        img = random_image(12 + 4 * (i % 4), 16 + i, "L" if direction == "a2b" else "RGB", seed=100 + i)
        jobs.append((img, direction))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:

        def send(job):
            img, direction = job
            return post(http, png_bytes(img), direction)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(send, jobs))
    for (img, direction), r in zip(jobs, responses, strict=True):
        assert r.status_code == 200, r.text
        got = np.asarray(Image.open(io.BytesIO(r.content)))
        np.testing.assert_array_equal(got, expected_png(translator, img, direction))


def test_bounded_load_on_loopback(app):
    payloads = [(png_bytes(random_image(32, 32, "L", seed=s)), "a2b") for s in range(4)]
    with serve_in_thread(app) as url:
        report = run_load(url, payloads, requests=40, concurrency=8)
    print(report.summary())
    assert report.errors == []
    assert len(report.latencies) == 40
    with pytest.raises(UnitganError, match="loopback only"):
        run_load("http://192.0.2.1:7860", payloads, requests=1)


def test_cli_serve_binds_loopback_by_default(tmp_path_factory, monkeypatch, capsys):
    import unitgan.serve

    calls = []
    monkeypatch.setattr(unitgan.serve, "run", lambda app, host, port: calls.append((app, host, port)))
    ckpt = tiny_checkpoint(tmp_path_factory.getbasetemp())
    assert main(["serve", "--checkpoint", str(ckpt), "--device", "cpu"]) == 0
    assert [(host, port) for _, host, port in calls] == [("127.0.0.1", 7860)]
    assert "serving on http://127.0.0.1:7860/" in capsys.readouterr().out
    assert main(["serve", "--export", str(Path(ckpt).parent), "--port", "1"]) == 2  # not an export folder
    assert "not a unitgan export folder" in capsys.readouterr().err


def test_unit_server_refuses_styles(client):
    img = png_bytes(random_image(16, 16, "L", seed=8))
    r = client.post("/translate", files={"image": ("x.png", img)}, data={"direction": "a2b", "seed": "3"})
    assert r.status_code == 422 and "UNIT is unimodal" in r.json()["detail"]
    ref = png_bytes(random_image(16, 16, "RGB", seed=9))
    files = {"image": ("x.png", img), "style_image": ("ref.png", ref)}
    r = client.post("/translate", files=files, data={"direction": "a2b"})
    assert r.status_code == 422 and "UNIT is unimodal" in r.json()["detail"]


@pytest.fixture(scope="module")
def munit(tmp_path_factory):
    translator = Translator.from_checkpoint(tiny_munit_checkpoint(tmp_path_factory.getbasetemp()), "cpu")
    with TestClient(create_app(translator, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)) as c:
        yield translator, c


def test_munit_server_styles_from_a_seed_or_a_reference_image(munit):
    translator, c = munit
    assert c.get("/info").json()["multimodal"] is True and c.get("/info").json()["style_dim"] == 4
    img = random_image(20, 12, "L", seed=10)
    x = pil_to_tensor(img).unsqueeze(0)  # [1, 1, 12, 20]

    def send(**form) -> np.ndarray:
        files = {"image": ("x.png", png_bytes(img))}
        if "style_image" in form:
            files["style_image"] = ("ref.png", form.pop("style_image"))
        r = c.post("/translate", files=files, data={"direction": "a2b", **form})
        assert r.status_code == 200, r.text
        return np.asarray(Image.open(io.BytesIO(r.content)), dtype=np.int16)

    default, seed1, seed1_again, seed2 = send(), send(seed="1"), send(seed="1"), send(seed="2")
    np.testing.assert_array_equal(seed1, seed1_again)  # a seed names a style
    assert np.abs(seed1 - seed2).mean() > 1 and np.abs(default - seed1).mean() > 1  # another seed, another style
    want = translator.translate(x, "a2b", translator.draw_styles(1, 0))[0]
    np.testing.assert_array_equal(default, np.asarray(tensor_to_pil(want), dtype=np.int16))  # default: seed 0
    ref = random_image(24, 16, "RGB", seed=11)
    guided = send(style_image=png_bytes(ref))
    style = translator.style_of(pil_to_tensor(ref).unsqueeze(0), "b")
    want = translator.translate(x, "a2b", style)[0]
    np.testing.assert_array_equal(guided, np.asarray(tensor_to_pil(want), dtype=np.int16))
    files = {"image": ("x.png", png_bytes(img)), "style_image": ("ref.png", b"not an image")}
    r = c.post("/translate", files=files, data={"direction": "a2b"})
    assert r.status_code == 415, r.text
    files = {"image": ("x.png", png_bytes(img)), "style_image": ("ref.png", png_bytes(ref))}
    r = c.post("/translate", files=files, data={"direction": "a2b", "seed": "4"})
    assert r.status_code == 422 and "not both" in r.json()["detail"]
    r = c.post("/translate", files={"image": ("x.png", png_bytes(img))}, data={"direction": "a2b", "seed": "-1"})
    assert r.status_code == 422 and r.json()["detail"].startswith("seed: "), r.text


def test_limit_applies_at_the_translation_scale(translator):
    """A thin strip is few pixels raw but many once its shorter side is resized to the training scale: the
    server refuses it (400) from the scaled size instead of allocating memory for it."""
    scaled = copy.copy(translator)
    scaled.scale = 40  # as for a model trained on folders with data.load_size=40
    strip = png_bytes(random_image(6000, 1, "L", seed=1))  # 6000 raw pixels; 240000x40 at the training scale
    with TestClient(create_app(scaled, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)) as c:
        r = post(c, strip)
        assert r.status_code == 400, r.text
        assert "240000x40" in r.json()["detail"] and f"limit of {MAX_PIXELS}" in r.json()["detail"]
        ok = post(c, png_bytes(random_image(12, 8, "L", seed=2)))  # 60x40 at the training scale: under the limit
        assert ok.status_code == 200, ok.text
