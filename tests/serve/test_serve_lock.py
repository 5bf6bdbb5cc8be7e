"""serve: the lock around the model call, with a model that two simultaneous calls would corrupt."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import torch
from PIL import Image
from serve_support import png_bytes, random_image

from unitgan.config import load_config
from unitgan.inference import BaseTranslator
from unitgan.serve import create_app, serve_in_thread


class StatefulTranslator(BaseTranslator):
    """An identity 'model' (grey -> grey) that keeps its input in an attribute across a slow step, as a model
    with internal buffers or a stateful runtime session would: without serialisation, a second call replaces
    the first call's input before the first one returns."""

    def __init__(self):
        cfg = load_config("demo", ["model.input_nc_a=1", "model.input_nc_b=1"])
        super().__init__(cfg, 4, ("a2b",), torch.device("cpu"), scale=0, engine="torch")
        self.current: torch.Tensor | None = None
        self.inside = 0
        self.most_inside = 0
        self.count = threading.Lock()  # guards the counters only, not the model state

    def run(self, x: torch.Tensor, direction: str) -> torch.Tensor:  # [1, 1, H, W] -> [1, 1, H, W]
        with self.count:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.current = x
        time.sleep(0.05)  # the slow part of a forward pass; another thread runs meanwhile
        y = self.current.clone()
        with self.count:
            self.inside -= 1
        return y


def test_concurrent_requests_to_a_stateful_model_each_get_their_own_result():
    model = StatefulTranslator()
    app = create_app(model, max_bytes=100_000, max_pixels=64 * 64)
    images = [random_image(12, 10 + i, "L", seed=200 + i) for i in range(8)]
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:

        def send(img: Image.Image) -> httpx.Response:
            return http.post("/translate", files={"image": ("x.png", png_bytes(img), "image/png")})

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(send, images))
    for img, r in zip(images, responses, strict=True):
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), np.asarray(img))
    assert model.most_inside == 1  # never two model calls at once
