"""MUNIT for users: styles in the translator and ``unitgan translate``, exports with a style input, UNIT refusing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_cli_error
from munit_support import munit_config, synthetic, tiny_munit_checkpoint
from PIL import Image
from serve_support import random_image, tiny_checkpoint

from unitgan.cli import main
from unitgan.data.io import tensor_to_pil
from unitgan.export import FORMATS, PARITY_TOL, export_checkpoint, load_export
from unitgan.inference import Translator
from unitgan.metrics.multimodal import synthetic_ground_truth


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_munit_checkpoint(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def reference(checkpoint) -> Translator:
    return Translator.from_checkpoint(checkpoint, "cpu")


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted(folder.iterdir())}


def test_two_style_samples_of_one_input_differ(reference):
    assert reference.multimodal and reference.style_dim == 4
    x = torch.rand(2, 1, 16, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1
    s = reference.draw_styles(2, seed=7)  # [2, style_dim]
    y0, y1 = reference.translate(x, "a2b", s[:1]), reference.translate(x, "a2b", s[1:])
    assert y0.shape == y1.shape == (2, 3, 16, 20)
    assert (y0 - y1).abs().mean() > 0.01  # on [-1, 1]; the same style twice gives exactly the same output
    assert torch.equal(reference.translate(x, "a2b", s[:1]), y0)
    assert torch.equal(reference.draw_styles(2, seed=7), s) and not torch.equal(reference.draw_styles(2, seed=8), s)
    per_image = reference.translate(x, "a2b", s)  # one style per image
    assert torch.equal(per_image[1], y1[1])
    with pytest.raises(Exception, match=r"style must be \[2 or 1, 4\]"):
        reference.translate(x, "a2b", torch.zeros(3, 4))


def test_cli_styles_name_the_files_and_the_seed_reproduces(checkpoint, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    random_image(16, 16, "L", seed=0).save(src / "cat.png")
    random_image(21, 13, "L", seed=1).save(src / "dog.jpg")
    base = ["translate", str(src), "--checkpoint", str(checkpoint), "--direction", "a2b"]
    runs = {}
    for name, extra in [
        ("s0", ["--styles", "3"]),
        ("s0again", ["--styles", "3"]),
        ("s1", ["--seed", "1", "--styles", "3"]),
    ]:
        assert main([*base, "--output", str(tmp_path / name), *extra]) == 0
        runs[name] = _pixels(tmp_path / name)
    assert "6 image(s) (3 styles per input)" in capsys.readouterr().out
    names = [f"{stem}_style{k}.png" for stem in ("cat", "dog") for k in range(3)]
    assert sorted(runs["s0"]) == sorted(names)
    assert runs["s0"]["dog_style0.png"].shape == (13, 21, 3)
    for n in names:
        np.testing.assert_array_equal(runs["s0"][n], runs["s0again"][n])  # same seed, same styles
    assert all(np.abs(runs["s0"][n] - runs["s1"][n]).mean() > 1 for n in names)  # another seed, other styles
    assert np.abs(runs["s0"]["cat_style0.png"] - runs["s0"]["cat_style1.png"]).mean() > 1  # styles differ
    # without --styles: one output per input, named as the input, in style 0 of the seed
    assert main([*base, "--output", str(tmp_path / "one")]) == 0
    one = _pixels(tmp_path / "one")
    assert sorted(one) == ["cat.png", "dog.png"]
    np.testing.assert_array_equal(one["cat.png"], runs["s0"]["cat_style0.png"])


def test_cli_style_image_uses_the_reference_style(checkpoint, reference, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    img = random_image(16, 16, "L", seed=3)
    img.save(src / "x.png")
    ref = tmp_path / "ref.png"
    random_image(24, 24, "RGB", seed=4).save(ref)
    out = tmp_path / "out"
    argv = ["translate", str(src), "--checkpoint", str(checkpoint), "--direction", "a2b", "--output", str(out)]
    assert main([*argv, "--style-image", str(ref)]) == 0
    got = _pixels(out)["x.png"]
    x_ref = reference.prepare(Image.open(ref)).unsqueeze(0)  # [1, 3, 24, 24]
    style = reference.style_of(x_ref, "b")  # [1, style_dim]
    want = reference.translate(reference.prepare(img).unsqueeze(0), "a2b", style)[0]
    np.testing.assert_array_equal(got, np.asarray(tensor_to_pil(want), dtype=np.int16))


def test_unit_and_bad_style_options_get_one_line_errors(tmp_path_factory, checkpoint, tmp_path, capsys):
    unit = tiny_checkpoint(tmp_path_factory.getbasetemp())
    src = tmp_path / "x.png"
    random_image(16, 16, "L", seed=0).save(src)
    base = ["translate", src, "--direction", "a2b", "--output", tmp_path / "out"]
    assert_cli_error(capsys, [*base, "--checkpoint", unit, "--styles", "2"], "UNIT is unimodal")
    assert_cli_error(capsys, [*base, "--checkpoint", unit, "--style-image", src], "UNIT is unimodal")
    assert_cli_error(capsys, [*base, "--checkpoint", checkpoint, "--styles", "-1"], "--styles must be >= 0")
    assert_cli_error(capsys, [*base, "--checkpoint", checkpoint, "--seed", "-3"], "--seed must be in 0..2^63-1")
    assert_cli_error(capsys, [*base, "--checkpoint", checkpoint, "--style-image", tmp_path / "no.png"], "no.png")
    with pytest.raises(SystemExit):  # one or the other
        main([*map(str, base), "--checkpoint", str(checkpoint), "--styles", "2", "--style-image", str(src)])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exports(checkpoint, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for fmt in FORMATS:
        folder = tmp_path_factory.mktemp(f"munit-{fmt}")
        export_checkpoint(checkpoint, folder, "both", fmt)
        out[fmt] = folder
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_munit_matches_pytorch_for_random_styles(fmt, exports, reference):
    exported = load_export(exports[fmt], device="cpu", threads=1)
    assert exported.multimodal and exported.style_dim == reference.style_dim
    g = torch.Generator().manual_seed(5)
    for direction in ("a2b", "b2a"):
        c_src, c_dst = reference.channels(direction[0]), reference.channels(direction[2])
        for n, h, w, per_image in [(1, 16, 16, False), (3, 13, 22, True), (2, 24, 8, False)]:
            x = torch.rand(n, c_src, h, w, generator=g) * 2 - 1
            style = torch.randn(n if per_image else 1, reference.style_dim, generator=g)
            want, got = reference.translate(x, direction, style), exported.translate(x, direction, style)
            assert got.shape == want.shape == (n, c_dst, h, w)
            assert (got - want).abs().max().item() <= PARITY_TOL, (fmt, direction, n, h, w)
            ref = torch.rand(n, c_dst, h + 3, w, generator=g) * 2 - 1  # an example of the target domain
            diff = (exported.style_of(ref, direction[2]) - reference.style_of(ref, direction[2])).abs().max()
            assert diff.item() <= PARITY_TOL


def test_munit_manifest_records_the_style_input(exports):
    manifest = json.loads((exports["onnx"] / "export.json").read_text())
    assert manifest["style_dim"] == 4
    assert manifest["directions"]["a2b"] == {
        "file": "a2b.onnx",
        "input": "x_a",
        "style_input": "s_b",
        "output": "x_ab",
        "in_channels": 1,
        "out_channels": 3,
    }
    assert manifest["style_encoders"]["b"] == {
        "file": "style_b.onnx",
        "input": "x_b",
        "output": "s_b",
        "in_channels": 3,
    }
    assert set(manifest["parity_check"]["max_abs_diff"]) == {"a2b", "b2a", "style_a", "style_b"}
    import onnxruntime as ort  # what a user without unitgan runs: names from the manifest, style from N(0, I)

    session = ort.InferenceSession(str(exports["onnx"] / "a2b.onnx"), providers=["CPUExecutionProvider"])
    x = np.zeros((3, 1, 8, 12), np.float32)
    (y,) = session.run(["x_ab"], {"x_a": x, "s_b": np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)})
    assert y.shape == (3, 3, 8, 12)


def test_cli_translate_styles_from_an_export(exports, checkpoint, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    random_image(20, 12, "L", seed=5).save(src / "a.png")
    outs = {}
    for name, source, engine in [("torch", checkpoint, "torch"), ("onnx", exports["onnx"], "onnx")]:
        argv = ["translate", str(src), "--checkpoint", str(source), "--direction", "a2b", "--engine", engine]
        assert main([*argv, "--output", str(tmp_path / name), "--styles", "2", "--seed", "3"]) == 0
        outs[name] = _pixels(tmp_path / name)
    assert sorted(outs["onnx"]) == ["a_style0.png", "a_style1.png"]
    for n, want in outs["torch"].items():
        assert np.abs(outs["onnx"][n] - want).max() <= 1  # 1e-4 in [-1, 1] can flip one rounding step


@pytest.mark.slow
def test_style_image_of_the_own_domain_reconstructs(tmp_path):
    """Example-guided translation in domain B, whose four palettes are the style: translate x_b to A (a random style),
    then back to B with ``--style-image x_b``: the content of x_ba decoded with the style of x_b is x_b again.

    On a model fitted for 600 reconstruction steps (about 90 s) the mean absolute error on the [0, 1] scale is
    about 0.10 on held-out paintings (measured: 0.102); the same content with a random style instead of x_b's
    scores 0.30 (the palette is wrong), the untrained network 0.35. Assert below 0.15, and below half the
    error of a random style. (Domain A, the sketches, has a single look: there a random style reconstructs
    almost as well as the own one, 0.116 against 0.075, so it cannot show that the style image is used.)"""
    cfg = munit_config()
    ds_b = synthetic(cfg, "b", "test")
    src = tmp_path / "b"
    src.mkdir()
    for i in range(len(ds_b)):
        tensor_to_pil(ds_b[i]).save(src / f"scene{i}.png")
    assert len({ds_b.mode(i) for i in range(len(ds_b))}) >= 3  # the held-out paintings show several palettes

    def error(folder: Path) -> float:
        return float(
            np.mean(
                [
                    np.abs(
                        np.asarray(Image.open(folder / f.name), np.float64) - np.asarray(Image.open(f), np.float64)
                    ).mean()
                    / 255
                    for f in sorted(src.iterdir())
                ]
            )
        )

    errors = {}
    for steps in (0, 600):
        ckpt = tiny_munit_checkpoint(tmp_path, steps)
        ba, own, rnd = tmp_path / f"ba{steps}", tmp_path / f"own{steps}", tmp_path / f"random{steps}"
        base = ["translate", "--checkpoint", str(ckpt)]
        assert main([*base, str(src), "--direction", "b2a", "--output", str(ba), "--seed", "1"]) == 0
        for f in sorted(src.iterdir()):
            argv = [*base, str(ba / f.name), "--direction", "a2b", "--style-image", str(f), "--output", str(own)]
            assert main([*argv, "--overwrite"]) == 0
        assert main([*base, str(ba), "--direction", "a2b", "--output", str(rnd), "--seed", "2"]) == 0
        errors[steps] = {"own style": error(own), "random style": error(rnd)}
    print(errors)
    assert errors[600]["own style"] < 0.15, errors
    assert errors[600]["own style"] < 0.5 * errors[600]["random style"], errors
    assert errors[0]["own style"] > 0.15, errors  # the threshold bites: an untrained network does not reconstruct


def test_munit_demo_writes_samples_truths_and_coverage(tmp_path, monkeypatch, capsys):
    """``unitgan demo munit`` end to end with a stand-in for the MUNIT trainer (a 30-step reconstruction fit,
    saved as the trainer saves) and no Inception network: the scores, results.json and the page."""
    from types import SimpleNamespace

    from munit_support import fit_reconstruction

    import unitgan.demo_munit as demo_munit
    from unitgan.config import save_config
    from unitgan.models import build_generator

    preset = tmp_path / "munit_demo.yaml"
    save_config(munit_config("data.synthetic_modes=4", "data.synthetic_test=100"), preset)
    trained = []

    def stand_in_train(cfg, progress=True):
        torch.manual_seed(0)
        gen = build_generator(cfg.model)
        fit_reconstruction(gen, cfg, 30)
        path = Path(cfg.train.out_dir) / "step_30.pt"
        path.parent.mkdir(parents=True)
        torch.save({"gen": gen.state_dict(), "config": cfg.to_dict(), "step": 30}, path)
        trained.append(cfg)
        return SimpleNamespace(checkpoint=path, step=30)

    monkeypatch.setattr(demo_munit, "MUNIT_DEMO_PRESET", str(preset))
    monkeypatch.setattr(demo_munit, "train", stand_in_train)
    monkeypatch.setattr(demo_munit, "optional_inception", lambda: None)
    out = tmp_path / "demo"
    assert main(["demo", "munit", "--out", str(out), "--no-progress", "data.synthetic_test=6"]) == 0
    text = capsys.readouterr().out
    assert "4 modes per held-out scene, 4 style samples per input, 6 inputs, after 30 steps" in text
    assert "coverage" in text and "untrained network" in text
    assert trained[0].data.synthetic_test == 6 and trained[0].train.out_dir == str(out / "run")
    results = json.loads((out / "results.json").read_text())
    munit, untrained = results["munit"], results["baselines"]["untrained network"]
    assert (munit["n_inputs"], munit["n_samples"], munit["n_modes"]) == (6, 4, 4)
    assert 0 <= munit["coverage"] <= 1 and munit["feature_diversity"] is None
    assert munit["pixel_diversity"] > 0 and munit["pixel_diversity"] != untrained["pixel_diversity"]
    page = (out / "index.html").read_text()
    assert page.count("<img") == 6 * (1 + 4 + 4)  # per shown input: the sketch, 4 samples, 4 ground truths
    assert f"{munit['coverage']:.3f}" in page and "ground truths (modes 0..3)" in page
    truth = np.asarray(Image.open(out / "examples" / "truth005_003.png"))
    x_a, truths = synthetic_ground_truth(trained[0])
    want = np.asarray(tensor_to_pil(truths[5, 3]).resize((64, 64), resample=0))
    np.testing.assert_array_equal(truth, want)  # mode 3 of scene 5, 4x enlarged
    assert main(["demo", "--model", "unit", "munit", "--out", str(out)]) == 2
    assert "given twice and differently" in capsys.readouterr().err
    assert main(["demo", "cyclegan", "--out", str(out)]) == 2


def test_demo_picks_the_model_and_its_own_default_folder(monkeypatch, capsys):
    import unitgan.demo_munit as demo_munit
    from unitgan.cli import demo_model

    assert demo_model(None, []) == ("unit", [])
    assert demo_model(None, ["munit", "train.steps=5"]) == ("munit", ["train.steps=5"])
    assert demo_model("munit", ["train.steps=5"]) == ("munit", ["train.steps=5"])
    calls = []

    def fake(out, overrides, progress):
        calls.append((out, overrides))
        raise KeyboardInterrupt  # stop before any training; the CLI answers 130

    monkeypatch.setattr(demo_munit, "run_munit_demo", fake)
    assert main(["demo", "--model", "munit", "train.steps=5"]) == 130
    assert calls == [(Path("demo_munit_out"), ["train.steps=5"])]  # not the UNIT demo's folder
