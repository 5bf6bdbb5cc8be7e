"""UNIT-DA: the discriminator with a shared trunk, the trainer, the loop, evaluation, the MNIST-M builder."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from unitgan.config import load_config
from unitgan.data.mnistm import blend
from unitgan.errors import UnitganError
from unitgan.losses import GenOutputs, unit_gen_loss
from unitgan.models import UNITGenerator
from unitgan.models.da.reduced import DADiscriminator
from unitgan.train.da.reduced import DATrainer
from unitgan.train.loop import train

torch.set_num_threads(1)


def _digits_npz(path: Path, n: int, size: int, channels: int, labels: bool, seed: int) -> Path:
    """Random 'digits' whose brightness pattern depends on the label (so a classifier can learn them)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "test"):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, size, size) + ((channels,) if channels == 3 else ())).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, label * size // 3 : (label + 1) * size // 3] = 250  # a bright band at a label-specific row
        arrays[f"x_{split}"] = x
        if labels or split == "test":
            arrays[f"y_{split}"] = y
    np.savez(path, **arrays)
    return path


def _da_config(tmp_path: Path, *extra: str):
    a = _digits_npz(tmp_path / "src.npz", 16, 12, 1, labels=True, seed=0)
    b = _digits_npz(tmp_path / "tgt.npz", 16, 12, 3, labels=False, seed=1)  # no target train labels at all
    return load_config(
        "da_mnist2mnistm_reduced",
        [
            f"data.a={a}",
            f"data.b={b}",
            f"train.out_dir={tmp_path / 'run'}",
            "train.steps=3",
            "train.ckpt_every=2",
            "train.log_every=1",
            "data.crop_size=16",
            "data.batch_size=4",
            "model.ch=4",
            "model.dis_ch=4",
            "model.n_res=1",
            "da.n_classes=3",
            *extra,
        ],
    )


def test_discriminator_shares_trunk_and_heads(tmp_path):
    cfg = _da_config(tmp_path)
    dis = DADiscriminator(cfg)
    x = torch.randn(2, 3, 16, 16)
    scores, logits, h = dis(x, "a")
    assert scores[0].shape == (2, 1, 2, 2) and logits.shape == (2, 3) and h.shape == (2, 16, 2, 2)
    # the private first layers differ, the trunk is one module: a change to it changes both domains' outputs
    assert dis.private_a[0][1].weight.data_ptr() != dis.private_b[0][1].weight.data_ptr()
    before_a, before_b = dis.classify(x, "a"), dis.classify(x, "b")
    with torch.no_grad():
        for p in dis.shared.parameters():
            p.add_(0.5)
    assert not torch.allclose(dis.classify(x, "a"), before_a)
    assert not torch.allclose(dis.classify(x, "b"), before_b)


def test_train_step_uses_source_labels_and_is_finite(tmp_path):
    cfg = _da_config(tmp_path, "da.cls_ab_w=10")
    trainer = DATrainer(cfg, torch.device("cpu"))
    x_a, y_a, x_b = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), torch.randn(4, 3, 16, 16)
    stats = trainer.train_step(x_a, y_a, x_b)
    for key in ("cls_a", "cls_ab", "dis_a", "dis_b", "gan_a", "gan_b", "recon_a", "kl_b", "feat_d"):
        assert torch.isfinite(stats[key]), key
    assert trainer.eval_domain == "b"


@pytest.mark.parametrize("feat_update", ["dis", "gen", "both"])
def test_feature_matching_trains_the_side_it_names(tmp_path, feat_update):
    """The x_aa/x_ab feature term changes the discriminator's update (authors' code), the generator's, or both."""

    def step(feat_w: float) -> DATrainer:
        cfg = _da_config(tmp_path, f"da.feat_update={feat_update}", f"da.feat_w={feat_w}", "da.cls_ab_w=0")
        torch.manual_seed(0)
        trainer = DATrainer(cfg, torch.device("cpu"))
        g = torch.Generator().manual_seed(1)
        x_a, x_b = torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 3, 16, 16, generator=g)
        torch.manual_seed(2)  # the same latent noise in both runs
        stats = trainer.train_step(x_a, torch.tensor([0, 1, 2, 0]), x_b)
        assert ("feat_d" in stats) == (feat_w > 0 and feat_update != "gen")
        assert ("feat_g" in stats) == (feat_w > 0 and feat_update != "dis")
        return trainer

    off, on = step(0.0), step(10.0)

    def grads_differ(a, b) -> bool:  # .grad holds the last backward of each side's loss after a step
        return any(not torch.allclose(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters(), strict=True))

    assert grads_differ(off.gen, on.gen) == (feat_update != "dis")
    # the generator step runs first and changes the images the discriminator then sees, so only the pure
    # discriminator-side term leaves the generator's gradients alone while changing the trunk's
    if feat_update == "dis":
        assert grads_differ(off.dis.private_b, on.dis.private_b)
        assert grads_differ(off.dis.shared, on.dis.shared)


@pytest.mark.parametrize("recon_fake, batches", [(False, [4, 4, 8, 8]), (True, [8, 8, 12, 12])])
def test_reconstructions_are_judged_only_with_recon_fake(tmp_path, recon_fake, batches):
    cfg = _da_config(tmp_path, f"da.recon_fake={str(recon_fake).lower()}", "da.feat_w=0")
    trainer = DATrainer(cfg, torch.device("cpu"))
    calls, forward = [], trainer.dis.forward
    trainer.dis.forward = lambda x, d: calls.append(x.shape[0]) or forward(x, d)
    trainer.train_step(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), torch.randn(4, 3, 16, 16))
    # G step: the fakes of each domain (translations[, reconstructions]); D step: the real batch as well
    assert calls == batches


def test_source_only_step_trains_only_the_source_path(tmp_path):
    cfg = _da_config(tmp_path, "da.source_only=true")
    trainer = DATrainer(cfg, torch.device("cpu"))
    gen_before = [p.clone() for p in trainer.gen.parameters()]
    private_b = [p.clone() for p in trainer.dis.private_b.parameters()]
    stats = trainer.train_step(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), torch.randn(4, 3, 16, 16))
    assert set(stats) == {"cls_a"}
    assert all(torch.equal(a, b) for a, b in zip(gen_before, trainer.gen.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(private_b, trainer.dis.private_b.parameters(), strict=True))
    assert trainer.eval_domain == "a"


@pytest.mark.parametrize("source_only", [False, True])
def test_train_da_end_to_end_and_resume(tmp_path, source_only):
    cfg = _da_config(tmp_path, f"da.source_only={str(source_only).lower()}")
    result = train(cfg, progress=False)
    assert result.step == 3 and result.checkpoint is not None and result.checkpoint.is_file()
    res = json.loads((result.run_dir / "da_results.json").read_text())
    assert res["n_target_test"] == 16
    # the reported accuracy is that of the checkpoint's class head on the 16 target test images
    from unitgan.checkpoint import load_checkpoint
    from unitgan.metrics.da import load_split

    trainer = DATrainer(cfg, torch.device("cpu"))
    trainer.load_state(load_checkpoint(result.checkpoint), weights_only=True)
    x_b, y_b = load_split(cfg, "b", "test")
    hits = int((trainer.classify(x_b, "a" if source_only else "b").argmax(1) == y_b).sum())
    assert res["target_acc"] == pytest.approx(hits / 16)
    cfg.train.steps = 4  # resume: one more step from the checkpoint of step 3
    assert train(cfg, progress=False).step == 4


def test_eval_every_logs_a_learning_curve(tmp_path):
    cfg = _da_config(tmp_path, "train.steps=5", "da.eval_every=2")
    result = train(cfg, progress=False)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = {r["step"]: r["target_acc"] for r in rows if "target_acc" in r}
    assert sorted(curve) == [2, 4]  # the last step is evaluated into da_results.json instead
    final = json.loads((result.run_dir / "da_results.json").read_text())
    assert final["step"] == 5 and all(v * 16 == round(v * 16) for v in curve.values())  # k of 16 images right


def test_train_dispatches_to_da(tmp_path):

    cfg = _da_config(tmp_path, "train.steps=1")
    assert train(cfg, progress=False).step == 1
    assert (tmp_path / "run" / "da_results.json").is_file()


def test_evaluate_checkpoint_reports_target_accuracy(tmp_path):
    from unitgan.cli import main

    cfg = _da_config(tmp_path, "train.steps=1")
    ckpt = train(cfg, progress=False).checkpoint
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    res = json.loads(out.read_text())["domain_adaptation"]
    trained = json.loads((tmp_path / "run" / "da_results.json").read_text())  # the same checkpoint, at step 1
    assert res["target_acc"] == trained["target_acc"] and res["n_target_test"] == 16


def test_da_config_errors(tmp_path):
    with pytest.raises(UnitganError, match="da.enabled"):
        load_config("demo", ["da.enabled=true"])
    with pytest.raises(UnitganError, match="da.dis_n_private"):
        load_config("da_mnist2mnistm_reduced", ["da.dis_n_private=3"])
    cfg = _da_config(tmp_path, "da.source_only=true", "model.input_nc_a=1")
    with pytest.raises(UnitganError, match="da.source_only"):
        train(cfg, progress=False)


def test_unlabelled_source_is_refused(tmp_path):
    cfg = _da_config(tmp_path)
    cfg.data.a = str(_digits_npz(tmp_path / "nolabels.npz", 8, 12, 1, labels=False, seed=2))
    with pytest.raises(UnitganError, match="no labels"):
        train(cfg, progress=False)


def test_mnistm_blend_is_abs_difference():
    photo = np.full((10, 10, 3), [200, 100, 0], dtype=np.uint8)
    digit = np.zeros((1, 4, 4), dtype=np.uint8)
    digit[0, 1:3, 1:3] = 255
    out = blend(digit, [photo], np.random.default_rng(0))
    assert out.shape == (1, 4, 4, 3)
    assert out[0, 0, 0].tolist() == [200, 100, 0]  # background: the photo
    assert out[0, 1, 1].tolist() == [55, 155, 255]  # stroke: |photo - 255|


def test_build_mnistm_writes_splits(tmp_path):
    pytest.importorskip("skimage")
    from unitgan.data.mnistm import build_mnistm

    src = tmp_path / "mnist.npz"
    rng = np.random.default_rng(0)
    np.savez(
        src,
        x_train=rng.integers(0, 255, (5, 28, 28), dtype=np.uint8),
        y_train=np.arange(5),
        x_test=rng.integers(0, 255, (3, 28, 28), dtype=np.uint8),
        y_test=np.arange(3),
    )
    out = build_mnistm(src, tmp_path / "m.npz", limit=4)
    with np.load(out) as z:
        assert z["x_train"].shape == (4, 28, 28, 3) and z["x_test"].shape == (3, 28, 28, 3)
        assert z["y_train"].tolist() == [0, 1, 2, 3]


def test_interrupted_run_checkpoints_and_resumes(tmp_path, monkeypatch):
    cfg = _da_config(tmp_path, "train.steps=4", "train.ckpt_every=10")
    original = DATrainer.train_step
    calls = {"n": 0}

    def stop_at_third(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(DATrainer, "train_step", stop_at_third)
    result = train(cfg, progress=False)
    assert result.interrupted and result.step == 2 and result.checkpoint.name == "ckpt_000000002.pt"
    assert not (result.run_dir / "da_results.json").exists()
    monkeypatch.setattr(DATrainer, "train_step", original)
    assert train(cfg, progress=False).step == 4  # the same command resumes


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from unitgan.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    return {f"{s}.{k}": v for s in ("gen", "dis") for k, v in state[s].items()}


@pytest.mark.parametrize("source_only", [False, True])
def test_da_resume_equals_uninterrupted_run(tmp_path, source_only):
    flag = f"da.source_only={str(source_only).lower()}"
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    whole = train(_da_config(tmp_path / "whole", "train.steps=4", flag), progress=False)
    part = _da_config(tmp_path / "parts", "train.steps=2", flag)
    assert train(part, progress=False).step == 2
    part.train.steps = 4  # the same run, continued from the checkpoint of step 2
    resumed = train(part, progress=False)
    a, b = _weights(whole.checkpoint), _weights(resumed.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resume is not bit-exact"


def test_da_resume_refuses_the_other_da_trainers_checkpoint(tmp_path):
    cfg = _da_config(tmp_path, "train.steps=1")
    train(cfg, progress=False)
    other = _da_config(tmp_path, "train.steps=2", "da.source_only=true")
    with pytest.raises(UnitganError, match=r"another config \(da.source_only differ"):
        train(other, progress=False)


def test_da_nonfinite_loss_stops_naming_the_step(tmp_path, monkeypatch):
    import unitgan.train.da.reduced as da_mod

    real = da_mod.unit_gen_loss

    def nan_loss(*args):
        total, terms = real(*args)
        return total + float("nan"), terms

    monkeypatch.setattr(da_mod, "unit_gen_loss", nan_loss)
    with pytest.raises(UnitganError, match=r"non-finite loss at step 1: loss_g=nan"):
        train(_da_config(tmp_path), progress=False)


@pytest.mark.parametrize("cycle", [False, True])
def test_generator_loss_is_unit_gen_loss_on_the_trainers_tensors(tmp_path, cycle):
    """The reduced design's E/G loss is UNIT's objective, :func:`unitgan.losses.unit_gen_loss`, on the step's own
    tensors: its GAN terms judge the fakes (x_ba then x_aa for A, with da.recon_fake), and the cycle terms are there
    only with their weights on (the cycle is not computed otherwise)."""
    weights = ["loss.cyc_kl_w=0.1", "loss.cyc_recon_w=10"] if cycle else ["loss.cyc_kl_w=0", "loss.cyc_recon_w=0"]
    cfg = _da_config(tmp_path, "da.feat_w=0", *weights)
    torch.manual_seed(0)
    trainer = DATrainer(cfg, torch.device("cpu"))
    gen, dis = copy.deepcopy(trainer.gen), copy.deepcopy(trainer.dis)  # the weights the step starts from
    g = torch.Generator().manual_seed(1)
    x_a, x_b = torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 3, 16, 16, generator=g)
    torch.manual_seed(2)
    stats = trainer.train_step(x_a, torch.tensor([0, 1, 2, 0]), x_b)

    torch.manual_seed(2)  # the same latent noise, drawn in the step's order
    mu_a, mu_b = gen.encode(x_a, "a"), gen.encode(x_b, "b")
    z = UNITGenerator.sample(torch.cat([mu_a, mu_b]))
    (x_aa, x_ba), (x_ab, x_bb) = gen.decode(z, "a").split(4), gen.decode(z, "b").split(4)
    d_a, d_b = dis(torch.cat([x_ba, x_aa]), "a")[0], dis(torch.cat([x_ab, x_bb]), "b")[0]
    mu_ab = mu_ba = x_aba = x_bab = None
    if cycle:
        mu_ba, mu_ab = gen.encode(x_ba, "a"), gen.encode(x_ab, "b")
        x_aba, x_bab = gen.decode(UNITGenerator.sample(mu_ab), "a"), gen.decode(UNITGenerator.sample(mu_ba), "b")
    out = GenOutputs(x_a, x_b, mu_a, mu_b, x_aa, x_bb, x_ab, x_ba, mu_ab, mu_ba, x_aba, x_bab)
    total, terms = unit_gen_loss(out, d_b, d_a, cfg.loss, cfg.model.gan_type)
    assert ("cyc_recon_a" in stats) == cycle and set(terms) <= set(stats)
    assert torch.equal(stats["loss_g"], total.detach())
    assert all(torch.equal(stats[k], v) for k, v in terms.items())
