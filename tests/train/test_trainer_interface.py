"""The loop drives any Trainer: a new model is a class and a registry entry, with no change to the loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from conftest import tiny_config
from torch import nn

from unitgan.config import load_config
from unitgan.train import registry
from unitgan.train.base import TrainData, weights_finite
from unitgan.train.da.reduced import DATrainer
from unitgan.train.loop import train
from unitgan.train.trainer import UNITTrainer


class LineTrainer(nn.Module):
    """A toy model (fit y = 3x) with only what the Trainer protocol asks for."""

    state_keys = ("net", "opt")
    eval_every = 2
    evaluated: list[tuple[int, bool]] = []

    def __init__(self, cfg, device, ddp=False):
        super().__init__()
        self.net = nn.Linear(1, 1)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1)
        self.last_skipped = False

    def data(self, start_step: int, rank: int, world_size: int) -> TrainData:
        step = {"n": start_step}

        def next_batch():
            step["n"] += 1
            x = torch.randn(8, 1, generator=torch.Generator().manual_seed(step["n"]))
            return x, 3 * x

        return TrainData(next_batch, ())

    def fixed_batch(self):
        return None

    def train_step(self, x, y) -> dict[str, torch.Tensor]:
        loss = ((self.net(x) - y) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"mse": loss.detach()}

    def sample_rows(self, fixed) -> list[torch.Tensor]:
        return []

    def evaluate(self, step: int, run_dir: Path, final: bool) -> dict[str, float]:
        LineTrainer.evaluated.append((step, final))
        if final:
            (run_dir / "line.json").write_text(json.dumps({"step": step, "w": self.net.weight.item()}))
        return {"w": self.net.weight.item()}

    def learning_rate(self) -> float:
        return 0.1

    def weights_finite(self) -> bool:
        return weights_finite(self)

    def state(self) -> dict[str, Any]:
        # "gen": the generator weights every checkpoint holds (translate and export read them)
        return {"gen": self.net.state_dict(), "net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])


def test_the_registry_picks_the_trainer_from_the_config(tmp_path):
    assert registry.trainer_class(tiny_config(tmp_path)) is UNITTrainer
    da = load_config("da_mnist2mnistm_reduced")
    assert registry.trainer_name(da) == "unit_da" and registry.trainer_class(da) is DATrainer


def test_a_registered_trainer_runs_resumes_and_is_evaluated_by_the_loop(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.TRAINERS, "unit", LineTrainer)
    LineTrainer.evaluated = []
    cfg = tiny_config(tmp_path, **{"train.steps": 5, "train.ckpt_every": 1, "train.log_every": 1})
    result = train(cfg, progress=False)
    assert result.step == 5 and result.checkpoint.name == "ckpt_000000005.pt"
    assert LineTrainer.evaluated == [(2, False), (4, False), (5, True)]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "w" in r] == [2, 4]  # the learning curve
    assert [r["step"] for r in records if "mse" in r] == [1, 2, 3, 4, 5]
    assert json.loads((tmp_path / "line.json").read_text())["step"] == 5
    assert not (tmp_path / "images").exists() or not list((tmp_path / "images").iterdir())  # no rows, no grid
    w5 = json.loads((tmp_path / "line.json").read_text())["w"]
    cfg.train.steps = 30  # resume from step 5 and keep fitting y = 3x
    assert train(cfg, progress=False).step == 30
    w30 = json.loads((tmp_path / "line.json").read_text())["w"]
    assert abs(w30 - 3) < abs(w5 - 3) and abs(w30 - 3) < 0.1
