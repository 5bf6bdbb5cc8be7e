"""TorchScript exports are programs: tampered code or pickles are refused and run no Python, but TorchScript
code itself can read files (docs/reliability.md, "Loading TorchScript")."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import assert_cli_error, tiny_config, write_images

from unitgan.errors import UnitganError
from unitgan.train.loop import train


class _RunsCode:
    """Unpickling this calls ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


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
