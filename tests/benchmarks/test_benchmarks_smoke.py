"""Each benchmark script end to end on tiny settings (seconds): progress printed, results and table written."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model_overrides
from PIL import Image

from unitgan.config import load_config

torch.set_num_threads(1)

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _script(name: str):
    """Import a benchmark script as a module (its folder goes on sys.path for ``common``)."""
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_unit(steps: int = 2) -> list[str]:
    return tiny_model_overrides(**{"train.steps": steps, "data.synthetic_train": 8, "data.synthetic_test": 3})


TINY_UNIT = _tiny_unit()


def test_ablation_smoke(tmp_path, capsys):
    bench = _script("ablation")
    out = tmp_path / "abl"
    assert bench.main(["--seeds", "0", "--variants", "full UNIT", "no KL", "--out", str(out), *TINY_UNIT]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"full UNIT/0", "no KL/0"}
    assert all(0 <= r["a2b"] <= 1 and 0 <= r["b2a"] <= 1 and r["steps"] == 2 for r in results.values())
    text = capsys.readouterr().out
    assert "[1/2] full UNIT, seed 0: A->B" in text and "| no KL |" in text
    runs = (out / "runs.csv").read_text().splitlines()
    assert runs[0].startswith("variant,seed,a2b_pixel_acc,b2a_pixel_acc,") and len(runs) == 3
    # a rerun skips finished runs
    assert bench.main(["--seeds", "0", "--variants", "full UNIT", "--out", str(out), *TINY_UNIT]) == 0
    assert "0 run(s) to do" in capsys.readouterr().out


@pytest.mark.integration
def test_ablation_runs_jobs_in_parallel_processes(tmp_path):
    """--jobs 2: each run in its own spawned process, results gathered by the parent into one file."""
    out = tmp_path / "abl"
    args = ["--seeds", "0", "1", "--variants", "full UNIT", "--jobs", "2", "--out", str(out), *TINY_UNIT]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "ablation.py"), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"full UNIT/0", "full UNIT/1"}
    assert all(r["device"] == "cpu" and r["cpu_s"] > 0 for r in results.values())
    for seed in (0, 1):  # each worker trained its own run folder with its own seed
        assert f"seed: {seed}" in (out / f"full_UNIT_seed{seed}" / "config.yaml").read_text()
    assert "[2/2]" in proc.stdout and "| full UNIT |" in proc.stdout


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # an orphan's zombie waits for a reaper but runs no more


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
def test_stopping_the_parent_stops_the_parallel_runs(tmp_path):
    """`kill PID` of a --jobs run must not leave orphaned workers training on."""
    out = tmp_path / "abl"
    args = ["--seeds", "0", "1", "--variants", "full UNIT", "--jobs", "2", "--out", str(out), *_tiny_unit(10**6)]
    proc = subprocess.Popen([sys.executable, str(BENCH / "ablation.py"), *args], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while not all((out / f"full_UNIT_seed{s}" / "config.yaml").is_file() for s in (0, 1)):
            assert proc.poll() is None and time.time() < deadline, "the runs did not start"
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0  # stopped, not finished
        deadline = time.time() + 30
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
        assert not (out / "results.json").exists()  # no run finished, none was recorded
    finally:
        workers = workers or _children(proc.pid)  # an assertion before they were listed leaves them running
        for pid in [proc.pid, *workers]:  # leave nothing running if an assertion failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def test_ablation_variants_change_the_config(tmp_path):
    from unitgan.config import load_config

    bench = _script("ablation")
    cfgs = {name: load_config("demo", overrides) for name, overrides in bench.VARIANTS.items()}
    assert cfgs["no weight sharing"].model.n_shared == 0
    assert cfgs["no cycle terms"].loss.cyc_recon_w == 0 and cfgs["no cycle terms"].loss.cyc_kl_w == 0
    assert cfgs["no KL"].loss.kl_w == 0 and cfgs["no KL"].loss.cyc_kl_w == 0
    assert cfgs["full UNIT"].model.n_shared >= 1


def _digits(path: Path, n: int, size: int, split: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, size, size), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    if split:
        np.savez(path, x_train=x, y_train=y, x_test=x[: n // 2], y_test=y[: n // 2])
    else:
        np.savez(path, x=x, y=y)


def test_update_order_times_both_orders(tmp_path, capsys):
    bench = _script("update_order")
    out = tmp_path / "order"
    assert bench.main(["demo", "--reps", "2", "--size", "16", "--out", str(out), *tiny_model_overrides()]) == 0
    text = capsys.readouterr().out
    assert (out / "table.md").read_text().strip() == text.strip()
    assert set(json.loads((out / "results.json").read_text())["orders"]) == {"simultaneous", "alternating"}
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) == {"update order", "simultaneous", "alternating"}, text
    cpu = {k: float(rows[k].split("|")[2]) for k in ("simultaneous", "alternating")}
    assert all(v > 0 for v in cpu.values()) and "16x16, batch 2" in text


def test_da_digits_smoke(tmp_path, capsys):
    pytest.importorskip("skimage")
    data = tmp_path / "data"
    data.mkdir()
    _digits(data / "mnist.npz", 12, 28, split=True)
    _digits(data / "sklearn_digits.npz", 10, 8, split=False)
    _digits(data / "usps.npz", 12, 16, split=True)
    bench = _script("da_digits")
    out = tmp_path / "da"
    tiny = ["train.steps=2", "train.log_every=1", "data.batch_size=4", "model.ch=4", "model.dis_ch=4", "model.n_res=1"]
    pairs = ["--pairs", "mnist2usps", "usps2mnist", "mnist2mnistm", "mnist2digits"]
    assert bench.main(["--data", str(data), "--out", str(out), "--seeds", "0", *pairs, "--", *tiny]) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 8  # four pairs x (source-only, UNIT-DA)
    assert all(0 <= r["target_acc"] <= 1 and r["cpu_s"] > 0 for r in results.values())
    assert (out / "data" / "mnistm.npz").is_file()
    header = "step,target_acc,source_acc,align_acc_ab,align_feat_gan_grad"
    da_curve = (out / "curves" / "mnist2usps_UNIT-DA_seed0.csv").read_text().splitlines()
    assert da_curve[0] == header
    step, target_acc, _, align_acc, grad_ratio = da_curve[-1].split(",")  # the last step logs both signals
    assert step == "2" and float(target_acc) == round(results["mnist2usps/UNIT-DA/0"]["target_acc"], 4)
    assert 0 <= float(align_acc) <= 1 and float(grad_ratio) > 0
    so_curve = (out / "curves" / "mnist2usps_source-only_seed0.csv").read_text().splitlines()
    assert so_curve[0] == header and so_curve[-1].endswith(",,")  # no translation to align in source-only
    text = capsys.readouterr().out
    assert "mnist2mnistm, UNIT-DA, seed 0" in text and "| mnist2digits |" in text
    row = next(line for line in text.splitlines() if line.startswith("| mnist2usps |"))
    assert "| 95.97 |" in row and "CPU min" in row and "last step (2)" in row


def test_da_digits_recipe_and_an_out_folder_of_other_settings(tmp_path, capsys):
    """--recipe puts its named deviations into every run's config (the user's overrides after them); a
    folder made with another recipe or other overrides is refused, as its finished runs would be skipped."""
    data = tmp_path / "data"
    data.mkdir()
    _digits(data / "mnist.npz", 12, 28, split=True)
    _digits(data / "usps.npz", 12, 16, split=True)
    bench = _script("da_digits")
    out = tmp_path / "da"
    tiny = ["train.steps=1", "data.batch_size=4", "model.ch=4", "model.dis_ch=4", "model.n_res=1"]
    common = ["--data", str(data), "--out", str(out), "--pairs", "usps2mnist", "--seeds", "0"]
    assert bench.main([*common, "--recipe", "self-training", "--", *tiny, "da.pseudo_start=5"]) == 0
    for method in ("source-only", "UNIT-DA"):
        cfg = load_config(out / f"usps2mnist_{method}_seed0" / "config.yaml")
        assert cfg.da.pseudo_align and cfg.da.pseudo_w == 10 and cfg.da.cls_ab_w == 10 and cfg.da.target_path == "a"
        assert cfg.da.pseudo_start == 5  # the user's override wins over the recipe's 2000
    assert bench.main([*common, "--seeds", "1", "--recipe", "self-training", "--", *tiny, "da.pseudo_start=5"]) == 0
    assert "2 run(s) to do, 2 done" in capsys.readouterr().out  # more seeds, the same settings: accepted
    with pytest.raises(SystemExit, match="recipe: 'self-training' there, 'preset' now"):
        bench.main([*common, "--", *tiny, "da.pseudo_start=5"])
    with pytest.raises(SystemExit, match="overrides: .*pseudo_start=5.* there, .*pseudo_start=6.* now"):
        bench.main([*common, "--recipe", "self-training", "--", *tiny, "da.pseudo_start=6"])
    assert bench.parse_args(["--recipe", "deviations"]).out.name == "bench_da_deviations"


def test_make_mnistm_smoke(tmp_path):
    pytest.importorskip("skimage")
    _digits(tmp_path / "mnist.npz", 6, 28, split=True)
    bench = _script("make_mnistm")
    out = tmp_path / "m.npz"
    assert bench.main(["--mnist", str(tmp_path / "mnist.npz"), "--out", str(out), "--limit", "4"]) == 0
    with np.load(out) as z:
        assert z["x_train"].shape == (4, 28, 28, 3)


@pytest.mark.parametrize("authors", [False, True])
def test_speed_counts_the_flops_of_a_training_step(authors):
    """The GFLOP/step column: counted on meta tensors, finite, and linear in the batch (convolutions only)."""
    speed = _script("speed")
    spec = {"config": "small", "size": 16, "precision": "bf16", "compile": True, "channels_last": True}
    spec.update(device="cuda", authors=authors, overrides=[], tiny=True)  # the count ignores these
    one, two = speed.count_flops({**spec, "batch": 1}), speed.count_flops({**spec, "batch": 2})
    assert 0 < one < float("inf")
    assert two == pytest.approx(2 * one, rel=1e-9)


def test_engine_speed_writes_results_and_table(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    bench = _script("engine_speed")
    out = tmp_path / "engines"
    args = ["--size", "16", "--batch-size", "2", "--seconds", "0.05", "--out", str(out), *tiny_model_overrides()]
    assert bench.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["images_per_s"]) == {"torch", "onnx"} and all(v > 0 for v in results["images_per_s"].values())
    assert "| onnx |" in (out / "table.md").read_text() and "| torch |" in capsys.readouterr().out


def test_serve_load_writes_results_and_table(tmp_path, capsys):
    pytest.importorskip("fastapi")
    bench = _script("serve_load")
    out, export = tmp_path / "load", tmp_path / "published"
    args = ["--requests", "4", "--concurrency", "2", "--size", "16", "--out", str(out), "--export", str(export)]
    assert bench.main([*args, *tiny_model_overrides()]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["errors"] == [] and len(results["latencies_s"]) == 4
    assert (export / "table.md").read_text() == (out / "table.md").read_text()
    assert "p50 ms" in capsys.readouterr().out


@pytest.mark.integration
def test_checkpointing_memory_writes_results_and_table(tmp_path):
    out = tmp_path / "ckpt"
    args = ["--config", "demo", "--crop", "16", "--batch", "1", "--steps", "1", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "checkpointing_memory.py"), *args, *tiny_model_overrides()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    variants = json.loads((out / "results.json").read_text())["variants"]
    assert [v["activation_checkpointing"] for v in variants] == [False, True]
    assert all("error" not in v and v["steps_per_s"] > 0 for v in variants), variants
    assert "| activation checkpointing |" in (out / "table.md").read_text()


EMOJI_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.skipif(not (EMOJI_DATA / "emoji_google.npz").is_file(), reason="needs ../shared/data/emoji_*.npz")
def test_emoji_smoke_scores_match_the_saved_images(tmp_path, capsys):
    """The emoji benchmark end to end on a tiny budget; every score it writes is recomputed here from the PNGs
    it saved and the true counterparts in the npz files (L1, PSNR, pixel accuracy by hand, SSIM by
    scikit-image, KID as the unbiased polynomial-kernel MMD of the same features)."""
    from metrics_support import TinyFeatures
    from skimage.metrics import structural_similarity

    from unitgan.metrics.fid import extract_features, load_inception

    bench = _script("emoji")
    net_path = tmp_path / "tiny_inception.pt"
    torch.jit.script(TinyFeatures()).save(str(net_path))
    out = tmp_path / "emoji"
    tiny = ["model.ch=4", "model.dis_ch=4", "model.n_res=1", "model.dis_n_layers=2", "data.batch_size=2"]
    args = ["--methods", "identity", "untrained", "unitgan", "--split", "test", "--max-train", "16"]
    args += ["--max-images", "10", "--budget-min", "0.001", "--calibration-steps", "2", "--inception", str(net_path)]
    assert bench.main([*args, "--out", str(out), *tiny]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"identity/-/0", "untrained/recipe/0", "unitgan/recipe/0"}
    assert results["unitgan/recipe/0"]["steps"] == 2  # the budget allows no more than the timing run

    g, t = np.load(EMOJI_DATA / "emoji_google.npz"), np.load(EMOJI_DATA / "emoji_twitter.npz")
    names = g["names_test"][:10]
    truth = {"a2b": t["x_test"][:10] / 255.0, "b2a": g["x_test"][:10] / 255.0}
    net = load_inception(str(net_path))

    def features(x: np.ndarray) -> np.ndarray:  # [N, H, W, 3] in [0, 1] -> [N, D]
        return extract_features(net, [torch.from_numpy(x).permute(0, 3, 1, 2).float() * 2 - 1]).double().numpy()

    def mmd2(x: np.ndarray, y: np.ndarray) -> float:  # unbiased, kernel (x.y / d + 1)^3
        k = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731
        n = len(x)
        kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
        off = ~np.eye(n, dtype=bool)
        return kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean()

    for key, r in results.items():
        for d in ("a2b", "b2a"):
            folder = out / r["translations"] / d
            pred = np.stack([np.asarray(Image.open(folder / n)) for n in names]) / 255.0
            diff = pred - truth[d]
            assert r[d]["l1"] == pytest.approx(np.abs(diff).mean(), abs=1e-6), (key, d)
            mse = (diff**2).mean(axis=(1, 2, 3))
            assert r[d]["psnr"] == pytest.approx(np.mean([10 * np.log10(1 / m) if m > 0 else 100 for m in mse]))
            acc = (np.abs(diff) <= 0.1 + 1e-9).all(axis=3).mean()
            assert r[d]["pixel_accuracy"] == pytest.approx(acc, abs=1e-6)
            ssim = [
                structural_similarity(
                    truth[d][i],
                    pred[i],
                    channel_axis=2,
                    data_range=1.0,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                )
                for i in range(10)
            ]
            assert r[d]["ssim"] == pytest.approx(np.mean(ssim), abs=1e-6)
            # with a subset as large as the set, every KID subset is the whole set: KID = the full MMD
            assert r[d]["kid"] == pytest.approx(mmd2(features(truth[d]), features(pred)), rel=1e-4, abs=1e-9)
    identity = results["identity/-/0"]
    assert identity["a2b"]["l1"] == pytest.approx(identity["b2a"]["l1"])  # |A - B| both ways
    text = capsys.readouterr().out
    assert "| identity |" in text and "| unitgan |" in text
    grid = Image.open(out / "grid.png")
    assert grid.size == (150 + 12 * 64, 2 * 4 * 64)  # per direction: input, untrained, unitgan, truth
    assert (out / "runs.csv").read_text().startswith("method,variant,seed,steps,cpu_s,a2b_l1,")


def test_da_digits_authors_recipe_runs_the_preset_as_it_is(tmp_path):
    """--recipe authors leaves out the MEASURED settings: the runs take the preset's own (the CoGAN recipe's
    learning rate and feature weight, the authors' VAE-head init); --recipe preset applies them."""
    data = tmp_path / "data"
    data.mkdir()
    _digits(data / "mnist.npz", 12, 28, split=True)
    _digits(data / "usps.npz", 12, 16, split=True)
    bench = _script("da_digits")
    tiny = ["train.steps=1", "data.batch_size=4", "model.ch=4", "model.dis_ch=4", "model.n_res=1"]
    preset = load_config("da_mnist2usps")
    for recipe in ("authors", "preset"):
        out = tmp_path / recipe
        args = ["--data", str(data), "--out", str(out), "--pairs", "mnist2usps", "--methods", "UNIT-DA"]
        assert bench.main([*args, "--recipe", recipe, "--", *tiny]) == 0
        cfg = load_config(out / "mnist2usps_UNIT-DA_seed0" / "config.yaml")
        got = (cfg.optim.lr, cfg.optim.dis_lr, cfg.da.feat32_w, cfg.model.vae_head_std)
        if recipe == "authors":
            assert got == (preset.optim.lr, preset.optim.dis_lr, preset.da.feat32_w, preset.model.vae_head_std)
        else:
            assert got == (0.001, 0.001, 0.0001, 0.002)


@pytest.mark.skipif(not (EMOJI_DATA / "emoji_google.npz").is_file(), reason="needs ../shared/data/emoji_*.npz")
def test_emoji_stages_write_the_learning_curve_of_the_one_run(tmp_path):
    """--stages 2: the unitgan run is scored after each half of its budget; its last point is the run's own
    result (the same weights as the translations it saved), and curve.csv / curve.png are written."""
    bench = _script("emoji")
    out = tmp_path / "emoji"
    tiny = ["model.ch=4", "model.dis_ch=4", "model.n_res=1", "model.dis_n_layers=2", "data.batch_size=2"]
    args = ["--methods", "identity", "unitgan", "--split", "test", "--max-train", "16", "--max-images", "6"]
    args += ["--budget-min", "0.05", "--calibration-steps", "2", "--stages", "2", "--no-fid"]
    assert bench.main([*args, "--out", str(out), *tiny]) == 0
    r = json.loads((out / "results.json").read_text())["unitgan/recipe/0"]
    curve = r["curve"]
    assert len(curve) == 2 and curve[1]["steps"] == r["steps"] >= 4  # 2 calibration steps, then two parts
    assert abs((curve[1]["steps"] - 2) - 2 * (curve[0]["steps"] - 2)) <= 1  # equal parts of the budget's steps
    assert curve[0]["cpu_s"] < curve[1]["cpu_s"] == pytest.approx(r["cpu_s"])
    for d in ("a2b", "b2a"):
        assert curve[1][f"{d}_l1"] == pytest.approx(r[d]["l1"], abs=1e-6)
        assert curve[1][f"{d}_pixel_accuracy"] == pytest.approx(r[d]["pixel_accuracy"], abs=1e-6)
    rows = (out / "curve.csv").read_text().splitlines()
    assert rows[0].startswith("method,variant,seed,steps,cpu_s,a2b_l1") and len(rows) == 3
    assert Image.open(out / "curve.png").size[0] > 0


def test_run_cached_keeps_the_runs_another_invocation_saved_in_the_same_folder(tmp_path):
    """Two benchmark invocations on one --out folder (say, one training unitgan, one scoring a peer): each saves its
    results without dropping those the other saved since it started, and returns them all."""
    common = _script("common")
    path = tmp_path / "results.json"

    def run_one(name: str, seed: int, args) -> dict:
        # meanwhile, another invocation finishes a run in the same folder
        common.save_results(path, {**common.load_results(path), f"other_{name}/{seed}": {"v": f"other {name}"}})
        return {"v": name}

    args = argparse.Namespace(out=tmp_path, jobs=1, threads=1)
    results = common.run_cached("t", [("a", 0), ("b", 0)], run_one, args, lambda r: r["v"])
    on_disk = json.loads(path.read_text())
    assert set(on_disk) == set(results) == {"a/0", "b/0", "other_a/0", "other_b/0"}
    assert on_disk["other_b/0"] == {"v": "other b"} and on_disk["a/0"] == {"v": "a"}
    assert not list(tmp_path.glob(".results.json.*"))  # the temporary file of each save is renamed, not left
