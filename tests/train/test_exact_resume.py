"""README / docs guarantees, each checked through public entry points so that it fails when the guarantee breaks.

Which breakage each test was shown to catch is listed in docs/reliability.md.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_cli_error, tiny_config, write_images

from unitgan.config import load_config
from unitgan.errors import UnitganError
from unitgan.train.checkpoint import load_checkpoint
from unitgan.train.loop import train

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "src" / "unitgan" / "configs"


def flat_tensors(obj, prefix: str = "") -> dict[str, torch.Tensor | float | int]:
    """Every tensor and number inside nested dicts / lists, keyed by its path (for exact comparisons)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flat_tensors(v, f"{prefix}/{k}"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(flat_tensors(v, f"{prefix}/{i}"))
        return out
    if isinstance(obj, (torch.Tensor, float, int)) and not isinstance(obj, bool):
        return {prefix: obj}
    return {}


def assert_states_equal(a: dict, b: dict) -> int:
    """Weights, optimiser and scheduler states (lr included), RNG: all equal bit for bit. Returns the count."""
    fa, fb = flat_tensors(a), flat_tensors(b)
    fa.pop("/_path", None), fb.pop("/_path", None)
    assert sorted(fa) == sorted(fb)
    differ = [k for k in fa if not (torch.equal(fa[k], fb[k]) if isinstance(fa[k], torch.Tensor) else fa[k] == fb[k])]
    assert not differ, f"{len(differ)} of {len(fa)} entries differ, e.g. {differ[:5]}"
    return len(fa)


# -- exact resume across an lr drop, for each preset family ------------------------------------------------


def test_exact_resume_across_a_learning_rate_drop(tmp_path):
    """Stop at step 3, resume to 8 with the rate halved at step 4 and 8: equal to a run never stopped."""
    extra = {"optim.lr_step": 4, "train.ckpt_every": 3, "train.image_every": 100}
    full = train(tiny_config(tmp_path / "full", **{"train.steps": 8, **extra}), progress=False)
    part = train(tiny_config(tmp_path / "part", **{"train.steps": 3, **extra}), progress=False)
    assert part.step == 3
    resumed = train(tiny_config(tmp_path / "part", **{"train.steps": 8, **extra}), progress=False)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["step"] == b["step"] == 8
    cfg = tiny_config(tmp_path)
    for opt, lr in (("opt_gen", cfg.optim.lr), ("opt_dis", cfg.optim.dis_lr)):
        assert b[opt]["param_groups"][0]["lr"] == pytest.approx(lr * cfg.optim.lr_gamma**2)  # two drops
    assert assert_states_equal(a, b) > 50


def write_digits_npz(path: Path, n: int, size: int, channels: int, seed: int) -> Path:
    """Tiny labelled 'digit' arrays (3 classes, a bright band whose row depends on the label)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "test"):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, size, size) + ((channels,) if channels == 3 else ())).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, label * size // 3 : (label + 1) * size // 3] = 250
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    np.savez(path, **arrays)
    return path


def da_config(tmp_path: Path, out: str, steps: int):
    a = write_digits_npz(tmp_path / "src.npz", 16, 12, 1, seed=0)
    b = write_digits_npz(tmp_path / "tgt.npz", 16, 12, 3, seed=1)
    overrides = [f"data.a={a}", f"data.b={b}", f"train.out_dir={tmp_path / out}", f"train.steps={steps}"]
    overrides += ["train.ckpt_every=3", "train.log_every=1", "data.crop_size=16", "data.batch_size=4"]
    overrides += ["model.ch=4", "model.dis_ch=4", "model.n_res=1", "da.n_classes=3", "optim.lr_step=4"]
    return load_config("da_mnist2mnistm_reduced", overrides)


def test_exact_resume_of_unit_da_across_a_learning_rate_drop(tmp_path):
    cfg = da_config(tmp_path, "full", 8)
    assert cfg.da.enabled
    full = train(cfg, progress=False)
    assert train(da_config(tmp_path, "part", 3), progress=False).step == 3
    resumed = train(da_config(tmp_path, "part", 8), progress=False)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["step"] == b["step"] == 8
    assert b["opt_gen"]["param_groups"][0]["lr"] == pytest.approx(cfg.optim.lr * cfg.optim.lr_gamma**2)
    assert assert_states_equal(a, b) > 20


# -- every preset key has a real YAML comment --------------------------------------------------------------


def uncommented_lines(text: str) -> list[str]:
    """Key lines of a YAML document without a comment. A comment starts at a '#' after whitespace, and
    cutting the line there must not change its value (so '#' inside a value or a quoted string is no comment)."""
    bad = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or s.endswith(":"):
            continue
        value = yaml.safe_load(line)
        if not any(_loads_or_none(line[: m.start()]) == value for m in re.finditer(r"\s#", line)):
            bad.append(s)
    return bad


def _loads_or_none(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:  # cut inside a quoted string
        return None


def test_every_preset_key_has_a_real_comment():
    assert uncommented_lines("out_dir: runs/small#1\nname: 'a #b'\nsteps: 3  # fine\n") == [
        "out_dir: runs/small#1",
        "name: 'a #b'",
    ]
    presets = sorted(PRESETS.glob("*.yaml"))
    assert len(presets) >= 9
    for path in presets:
        assert uncommented_lines(path.read_text()) == [], path.name


# -- safe loading ------------------------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this calls ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def test_torch_floor_is_a_version_whose_load_defaults_to_weights_only():
    """torch.load defaults to weights_only=True from torch 2.6 on; older versions would unpickle anything."""
    text = (ROOT / "pyproject.toml").read_text()
    floors = dict(re.findall(r'^\s*"(torch|torchvision)>=([0-9.]+)"', text, re.M))
    assert _version(floors["torch"]) >= (2, 6), floors
    assert _version(floors["torchvision"]) >= (0, 21), floors


def test_checkpoint_loading_passes_weights_only_even_where_the_default_is_unsafe(tmp_path, monkeypatch):
    """Simulate torch < 2.6 (default weights_only=False): loading must still refuse the crafted file."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"config": tiny_config(tmp_path).to_dict(), "gen": {}, "step": 1, "x": _RunsCode(marker)}, evil)
    real_load = torch.load

    def old_default_load(*args, weights_only=None, **kwargs):
        return real_load(*args, weights_only=bool(weights_only), **kwargs)

    monkeypatch.setattr(torch, "load", old_default_load)
    with pytest.raises(UnitganError, match="refused"):
        load_checkpoint(evil)
    assert not marker.exists()
    from unitgan.metrics.fid import load_inception

    with pytest.raises(UnitganError, match="evil.pt"):
        load_inception(evil)
    assert not marker.exists()


def rewrite_zip(src: Path, dst: Path, edit) -> None:
    """Copy a zip archive (TorchScript / torch.save file), passing every member through ``edit(name, data)``."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            zo.writestr(info, edit(info.filename, zi.read(info.filename)))


@pytest.fixture
def torchscript_export(tmp_path) -> Path:
    run = tmp_path / "run"
    train(tiny_config(run, **{"train.steps": 1}), progress=False)
    from unitgan.cli import main

    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--format", "torchscript", "--output", str(out)]) == 0
    return out


def test_a_tampered_torchscript_export_is_refused_and_runs_no_python(torchscript_export, tmp_path, capsys):
    """TorchScript code is not Python: an 'import os' in the code section and a pickle that would call
    os.system in data.pkl are both refused by torch.jit.load, and the command never runs."""
    marker = tmp_path / "pwned"
    model = torchscript_export / "a2b.torchscript.pt"
    original = model.read_bytes()
    images = write_images(tmp_path / "in", 1, mode="L")

    def python_in_code(name: str, data: bytes) -> bytes:
        if "/code/" in name and name.endswith(".py"):
            text = data.decode()
            head, sep, tail = text.partition("    return ")
            if sep:
                return f"{head}    import os\n    os.system('touch {marker}')\n{sep}{tail}".encode()
        return data

    def pickle_payload(name: str, data: bytes) -> bytes:
        return pickle.dumps(_RunsCode(marker), protocol=2) if name.endswith("/data.pkl") else data

    for edit in (python_in_code, pickle_payload):
        model.write_bytes(original)
        tampered = tmp_path / "tampered.pt"
        rewrite_zip(model, tampered, edit)
        assert tampered.read_bytes() != original
        model.write_bytes(tampered.read_bytes())
        args = ["translate", *images, "--checkpoint", torchscript_export, "--direction", "a2b"]
        assert_cli_error(capsys, [*args, "--output", tmp_path / "out"], "a2b.torchscript.pt", "cannot be loaded")
        from unitgan.metrics.fid import load_inception

        with pytest.raises(UnitganError, match="tampered.pt"):
            load_inception(tampered)
        assert not marker.exists(), edit.__name__
    # the untampered file loads and translates (so the refusals above come from the edits)
    model.write_bytes(original)
    from unitgan.cli import main

    out = tmp_path / "ok"
    args = ["translate", *map(str, images), "--checkpoint", str(torchscript_export), "--direction", "a2b"]
    assert main([*args, "--output", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 1


def test_torchscript_is_a_program_that_can_read_files(tmp_path):
    """What docs/reliability.md states: a TorchScript file (export or Inception) cannot run Python, but its
    TorchScript code can read any file the process can read (torch.from_file). Treat such files as code."""

    class Doubler(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2.0

    secret = tmp_path / "secret.txt"
    secret.write_bytes(bytes([1, 2, 3, 4]))
    path, tampered = tmp_path / "m.pt", tmp_path / "m_reads.pt"
    torch.jit.script(Doubler()).save(str(path))
    read_it = (
        f"y = torch.from_file('{secret}', False, 4, dtype=0)\n    return torch.add(torch.mul(x, 2.), torch.sum(y))"
    )

    def edit(name: str, data: bytes) -> bytes:
        if "/code/" in name and name.endswith(".py"):
            return data.decode().replace("return torch.mul(x, 2.)", read_it).encode()
        return data

    rewrite_zip(path, tampered, edit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        out = torch.jit.load(str(tampered))(torch.zeros(1))
    assert out.item() == 10.0  # 1 + 2 + 3 + 4: the file's bytes reached the output
