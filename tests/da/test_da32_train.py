"""The covae32 DA trainer (DA32Trainer): registry, steps, resume, evaluate and translate on its checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unitgan.checkpoint import load_checkpoint
from unitgan.config import load_config
from unitgan.errors import UnitganError
from unitgan.train.da.authors import DA32Trainer
from unitgan.train.da.common import align_distribution
from unitgan.train.da.reduced import DATrainer
from unitgan.train.loop import train
from unitgan.train.registry import trainer_class

torch.set_num_threads(1)


def _npz(path: Path, size: int, labels: bool, seed: int, n: int = 12) -> Path:
    """Grey 'digits' with a bright band at a label-specific row band (learnable), 3 classes."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "test"):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, label * size // 3 : (label + 1) * size // 3] = 250
        arrays[f"x_{split}"] = x
        if labels or split == "test":
            arrays[f"y_{split}"] = y
    np.savez(path, **arrays)
    return path


def _config(tmp_path: Path, *extra: str):
    a = _npz(tmp_path / "src.npz", 14, labels=True, seed=0)
    b = _npz(tmp_path / "tgt.npz", 8, labels=False, seed=1)  # the target has no training labels at all
    return load_config(
        "da_mnist2usps",
        [
            f"data.a={a}",
            f"data.b={b}",
            f"train.out_dir={tmp_path / 'run'}",
            "train.steps=3",
            "train.ckpt_every=2",
            "train.log_every=1",
            "data.batch_size=4",
            "model.ch=2",
            "model.dis_ch=2",
            "da.n_classes=3",
            "da.eval_every=2",
            *extra,
        ],
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)
    return {f"{s}.{k}": v for s in ("gen", "dis") for k, v in state[s].items()}


def test_covae32_da_config_picks_the_da32_trainer(tmp_path):
    cfg = _config(tmp_path)
    assert trainer_class(cfg) is DA32Trainer
    with pytest.raises(UnitganError, match="train.update_order"):  # the authors' D-then-G order only
        _config(tmp_path, "train.update_order=simultaneous")
    with pytest.raises(UnitganError, match="da.feat32_w"):
        _config(tmp_path, "da.feat32_w=-1")


def test_step_trains_both_networks_and_target_path(tmp_path):
    cfg = _config(tmp_path)
    trainer = DA32Trainer(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in trainer.state_dict().items()}
    x_a, y_a, x_b = torch.rand(4, 1, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 0]), torch.rand(4, 1, 32, 32) * 2 - 1
    terms = trainer.train_step(x_a, y_a, x_b)
    assert {"loss_d", "loss_g", "dis_cls", "dis_feat", "gen_gan", "gen_kl"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    after = trainer.state_dict()
    for key in ("gen.enc_a.0.weight", "gen.dec_b.1.weight", "dis.dis_b.0.weight", "dis.cls_head.weight"):
        assert not torch.equal(before[key], after[key]), key  # the target's first D layer learns too


def test_cls_ab_trains_the_target_path_on_translations_with_source_labels(tmp_path):
    """da.cls_ab_w (a deviation, off in the preset): the class head also reads x_ab through the target's first
    layer with the labels of x_a. The same step with other labels gives dis_b another gradient only with it on."""
    x_a, x_b = torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 1, 32, 32) * 2 - 1

    def dis_b_after_step(labels: list[int], *extra: str) -> tuple[torch.Tensor, dict]:
        torch.manual_seed(0)
        trainer = DA32Trainer(_config(tmp_path, *extra), torch.device("cpu"))
        trainer.eval()  # no dropout: the runs differ only by the labels
        terms = trainer.dis_update(x_a, torch.tensor(labels), x_b)[1]
        return trainer.dis.dis_b[0].weight.grad.clone(), terms  # (Adam's first step only keeps its signs)

    off_1, terms_off = dis_b_after_step([0, 1, 2, 0])
    off_2, _ = dis_b_after_step([2, 2, 1, 1])
    assert "cls_ab" not in terms_off and torch.equal(off_1, off_2)  # labels never reach dis_b without it
    on_1, terms_on = dis_b_after_step([0, 1, 2, 0], "da.cls_ab_w=10")
    on_2, _ = dis_b_after_step([2, 2, 1, 1], "da.cls_ab_w=10")
    assert torch.isfinite(terms_on["cls_ab"]) and not torch.equal(on_1, on_2)


def test_target_path_a_trains_one_classifier_on_x_a_and_x_ab(tmp_path):
    """da.target_path=a: x_ab's class loss goes through the SOURCE's first layer (not the target's), and target
    images are classified through it too."""
    x_a, x_b, y_a = torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 1, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 0])

    def grads(*extra: str) -> tuple[torch.Tensor, torch.Tensor, DA32Trainer]:
        torch.manual_seed(0)
        trainer = DA32Trainer(_config(tmp_path, "da.target_path=a", *extra), torch.device("cpu"))
        trainer.eval()
        trainer.dis_update(x_a, y_a, x_b)
        return trainer.dis.dis_a[0].weight.grad.clone(), trainer.dis.dis_b[0].weight.grad.clone(), trainer

    a_off, b_off, trainer = grads()
    a_on, b_on, _ = grads("da.cls_ab_w=10")
    assert torch.equal(b_off, b_on) and not torch.equal(a_off, a_on)
    assert trainer.eval_domain == "a"
    with torch.no_grad():
        trainer.dis.dis_b[0].weight.zero_()  # the target's own layer no longer matters to the classifier
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    assert torch.equal(trainer.classify(x, trainer.eval_domain), trainer.classify(x, "a"))
    with pytest.raises(UnitganError, match="da.target_path"):
        DATrainer(
            load_config("da_mnist2digits_reduced", ["da.target_path=a"]), torch.device("cpu")
        )  # the reduced design


@pytest.mark.parametrize("path", ["a", "b"])
def test_sem_ab_makes_the_generator_keep_the_source_label(tmp_path, path):
    """da.sem_ab_w (a deviation, off in the presets): in the G phase the class head reads x_ab through the first
    D layer of da.sem_path, and the generator learns to keep x_a's label. Other labels change the generator's
    gradient only with it on, and D's weights never see that term (D is frozen in the G phase)."""
    x_a, x_b = torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 1, 32, 32) * 2 - 1

    def gen_grad(labels: list[int], *extra: str) -> tuple[torch.Tensor, dict, torch.Tensor | None]:
        torch.manual_seed(0)
        trainer = DA32Trainer(_config(tmp_path, *extra), torch.device("cpu"))
        trainer.eval()  # no dropout, mean latent: the runs differ only by the labels
        terms = trainer.gen_update(x_a, torch.tensor(labels), x_b)[1]
        return trainer.gen.dec_b[1].weight.grad.clone(), terms, trainer.dis.cls_head.weight.grad

    off_1, terms_off, _ = gen_grad([0, 1, 2, 0])
    off_2, _, _ = gen_grad([2, 2, 1, 1])
    assert "gen_sem_ab" not in terms_off and torch.equal(off_1, off_2)
    on_1, terms_on, dis_grad = gen_grad([0, 1, 2, 0], "da.sem_ab_w=1", f"da.sem_path={path}")
    on_2, _, _ = gen_grad([2, 2, 1, 1], "da.sem_ab_w=1", f"da.sem_path={path}")
    assert torch.isfinite(terms_on["gen_sem_ab"]) and not torch.equal(on_1, on_2)
    assert dis_grad is None  # the class head is not trained by the generator's phase


def test_source_only_trains_only_the_source_classifier_path(tmp_path):
    cfg = _config(tmp_path, "da.source_only=true")
    trainer = DA32Trainer(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in trainer.state_dict().items()}
    trainer.train_step(torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 0]), torch.rand(4, 1, 32, 32))
    after = trainer.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "dis.dis_a.0.weight" in changed and "dis.cls_head.weight" in changed
    assert not any(k.startswith("gen.") or k.startswith("dis.dis_b") or "gan_head" in k for k in changed)
    assert trainer.eval_domain == "a"  # target images are classified through the source path


@pytest.mark.parametrize("source_only", [False, True])
def test_pseudo_labels_train_the_classifier_on_confident_target_predictions(tmp_path, source_only):
    """da.pseudo_w (a deviation, off in the presets): confident target images train the classifier's target
    path with its own predictions as labels, from step da.pseudo_start on; none below the threshold."""
    x_a, y_a = torch.rand(4, 1, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 0])
    x_b = torch.rand(4, 1, 32, 32) * 2 - 1
    flag = f"da.source_only={str(source_only).lower()}"
    layer = "dis_a" if source_only else "dis_b"  # the target's path: the source's layer when source-only

    def step(x: torch.Tensor, *extra: str) -> tuple[dict, torch.Tensor]:
        torch.manual_seed(0)
        trainer = DA32Trainer(_config(tmp_path, flag, *extra), torch.device("cpu"))
        trainer.dis.eval()  # no dropout: the runs differ only by the target images and the options
        if source_only:
            terms = trainer.train_step(x_a, y_a, x)
        else:
            trainer.gen.eval()
            terms = trainer.dis_update(x_a, y_a, x)[1]
        return terms, getattr(trainer.dis, layer)[0].weight.grad.clone()

    on = ("da.pseudo_w=1", "da.pseudo_threshold=0.3")  # 3 classes: every prediction is >= 1/3 sure
    terms_on, grad_on = step(x_b, *on)
    assert terms_on["pseudo_kept"] == 1 and torch.isfinite(terms_on["pseudo"]) and terms_on["pseudo"] > 0
    terms_off, grad_off = step(x_b)
    assert "pseudo" not in terms_off and not torch.equal(grad_on, grad_off)
    _, grad_other = step(torch.rand(4, 1, 32, 32) * 2 - 1, *on)
    assert not torch.equal(grad_on, grad_other)  # the target images themselves drive it
    terms_unsure, grad_unsure = step(x_b, "da.pseudo_w=1", "da.pseudo_threshold=1")  # nothing is that sure
    assert terms_unsure["pseudo_kept"] == 0 and torch.equal(grad_unsure, grad_off)
    terms_early, grad_early = step(x_b, *on, "da.pseudo_start=1")  # step 0 is before the start
    assert "pseudo" not in terms_early and torch.equal(grad_early, grad_off)
    with pytest.raises(UnitganError, match="da.pseudo_w"):
        DATrainer(load_config("da_mnist2digits_reduced", ["da.pseudo_w=1"]), torch.device("cpu"))  # the reduced design
    with pytest.raises(UnitganError, match="da.pseudo_threshold"):
        _config(tmp_path, "da.pseudo_threshold=0")


def test_pseudo_align_relabels_what_the_teacher_over_predicts(tmp_path, monkeypatch):
    """da.pseudo_align: the teacher's probabilities are scaled by the source's class shares over the shares it
    has been predicting, so a class it has (almost) stopped predicting wins back its images."""
    trainer = DA32Trainer(
        _config(tmp_path, "da.source_only=true", "da.pseudo_w=1", "da.pseudo_threshold=0.6", "da.pseudo_align=true"),
        torch.device("cpu"),
    )
    trainer.dis.eval()  # no dropout: the student's logits can be recomputed below
    x_b, y_a = torch.rand(4, 1, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 0])
    teacher = torch.tensor([[0.9, 0.08, 0.02]]).log().expand(4, 3)  # every image: class 0, 90% sure
    monkeypatch.setattr(trainer, "classify", lambda x, domain: teacher)
    trainer.pred_mean_b.copy_(torch.tensor([0.98, 0.01, 0.01]))  # it has been calling nearly everything 0
    terms: dict = {}
    trainer.add_pseudo_label_loss(torch.zeros(()), terms, x_b, y_a)
    student = trainer.dis.classify(x_b, "a")
    relabelled = F.cross_entropy(student, torch.ones(4, dtype=torch.long))  # aligned: class 1, 72% sure
    assert terms["pseudo_kept"] == 1 and torch.allclose(terms["pseudo"], relabelled)
    assert not torch.allclose(relabelled, F.cross_entropy(student, torch.zeros(4, dtype=torch.long)))
    assert torch.allclose(trainer.pred_mean_b, torch.tensor([0.9792, 0.0107, 0.0101]), atol=1e-4)  # updated
    assert torch.allclose(trainer.prior_a.sum(), torch.tensor(1.0)) and trainer.prior_a[0] > trainer.prior_a[1]
    assert terms["pseudo_rarest"] == pytest.approx(0.0101 * 3, abs=1e-3)

    trainer.cfg.da.pseudo_align = False
    unaligned: dict = {}
    trainer.add_pseudo_label_loss(torch.zeros(()), unaligned, x_b, y_a)
    assert torch.allclose(unaligned["pseudo"], F.cross_entropy(student, torch.zeros(4, dtype=torch.long)))
    with pytest.raises(UnitganError, match="da.pseudo_align"):
        _config(tmp_path, "da.pseudo_align=true")  # nothing to align without da.pseudo_w


def test_align_distribution():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    uniform = torch.full((3,), 1 / 3)
    assert torch.allclose(align_distribution(probs, uniform, uniform), probs)  # shares as they should be
    aligned = align_distribution(probs, torch.tensor([0.6, 0.1, 0.3]), uniform)
    assert torch.allclose(aligned.sum(dim=1), torch.ones(2))
    assert aligned[0].argmax() == 1 and aligned[1].argmax() == 2  # the over-predicted class 0 loses row 0
    assert torch.isfinite(align_distribution(probs, torch.tensor([1.0, 0.0, 0.0]), uniform)).all()


@pytest.mark.parametrize(
    "source_only, pseudo",
    [
        (False, ()),
        (True, ()),
        (False, ("da.pseudo_start=3",)),
        (True, ("da.pseudo_start=1", "da.pseudo_align=true")),
        (False, ("train.channels_last=false",)),  # the presets train NHWC; NCHW resumes exactly too
    ],
    ids=["unit-da", "source-only", "pseudo-labels", "pseudo-aligned", "nchw"],
)
def test_resume_equals_uninterrupted_run(tmp_path, source_only, pseudo):
    """With pseudo-labels from step 3 on: the resumed run (checkpoint at step 2) must start them at step 3
    too, i.e. the step count survives the resume. Aligned from step 1 on: the running class shares of steps
    1-2 must come back from the checkpoint."""
    flags = [f"da.source_only={str(source_only).lower()}"]
    if any(p.startswith("da.pseudo") for p in pseudo):
        flags += ["da.pseudo_w=1", "da.pseudo_threshold=0.3"]
    flags += pseudo
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    whole = train(_config(tmp_path / "whole", "train.steps=4", *flags), progress=False)
    part = _config(tmp_path / "parts", "train.steps=2", *flags)
    assert train(part, progress=False).step == 2
    part.train.steps = 4  # the same run, continued from the checkpoint of step 2
    resumed = train(part, progress=False)
    a, b = _weights(whole.checkpoint), _weights(resumed.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resume is not bit-exact"
    if "da.pseudo_align=true" in pseudo:  # the running class shares, moved from uniform, come back exactly
        shares_whole = load_checkpoint(whole.checkpoint)["pseudo_align"]
        shares_resumed = load_checkpoint(resumed.checkpoint)["pseudo_align"]
        assert not torch.allclose(shares_whole["prior_a"], torch.full((3,), 1 / 3))
        assert all(torch.equal(shares_whole[k], shares_resumed[k]) for k in ("pred_mean_b", "prior_a"))


@pytest.mark.parametrize("source_only", [False, True])
def test_channels_last_computes_the_nchw_step(tmp_path, source_only):
    """train.channels_last (the CPU speed-up of the DA32 presets, docs/performance.md): the networks' convolutions and
    CoDis32x32's max pools run NHWC, with the same dropout masks from the same seed, so one step gives the NCHW
    step's losses and weights to float rounding."""
    flags = [f"da.source_only={str(source_only).lower()}", "model.ch=4", "model.dis_ch=4", "data.batch_size=3"]
    steps, trainers = {}, {}
    for cl in ("false", "true"):
        (tmp_path / cl).mkdir()
        cfg = _config(tmp_path / cl, *flags, f"train.channels_last={cl}")
        torch.manual_seed(0)
        trainers[cl] = DA32Trainer(cfg, torch.device("cpu"))
    pools = []
    hook = trainers["true"].dis.dis_a[2].register_forward_hook(lambda m, i, o: pools.append(o))
    x_a, y_a, x_b = torch.rand(3, 1, 32, 32) * 2 - 1, torch.tensor([0, 1, 2]), torch.rand(3, 1, 32, 32) * 2 - 1
    for cl, trainer in trainers.items():
        torch.manual_seed(2)  # the same latent noise and dropout masks
        steps[cl] = {k: float(v) for k, v in trainer.train_step(x_a, y_a, x_b).items()}
    hook.remove()
    assert pools and all(o.is_contiguous(memory_format=torch.channels_last) and not o.is_contiguous() for o in pools)
    assert steps["true"] == pytest.approx(steps["false"], rel=1e-5, abs=1e-6)
    plain, nhwc = trainers["false"].state_dict(), trainers["true"].state_dict()
    diffs = {k: (plain[k].float() - nhwc[k].float()).abs().max().item() for k in plain if plain[k].numel()}
    # Adam's first step moves each weight by about lr x sign(gradient): a gradient within rounding of zero (the
    # bias of a conv that batch norm follows) can take either sign, so those weights may differ by up to 2 x lr
    lr = trainers["true"].cfg.optim.lr
    assert max(diffs.values()) <= 2 * lr
    assert sum(v < 1e-5 for v in diffs.values()) >= 0.9 * len(diffs), {k: v for k, v in diffs.items() if v >= 1e-5}


def test_results_file_and_learning_curve(tmp_path):
    result = train(_config(tmp_path, "train.steps=5"), progress=False)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in rows if "target_acc" in r) == [2, 4]
    final = json.loads((result.run_dir / "da_results.json").read_text())
    assert final["step"] == 5 and final["kind"] == "UNIT-DA" and final["n_target_test"] == 12


def test_evaluate_prints_target_and_source_accuracy(tmp_path, capsys):
    from unitgan.cli import main

    result = train(_config(tmp_path, "train.steps=1"), progress=False)
    assert main(["evaluate", "--checkpoint", str(result.run_dir)]) == 0  # a run folder: its newest checkpoint
    out = capsys.readouterr().out
    assert "target_acc" in out and "source_acc" in out
    saved = json.loads((result.run_dir / "da_results.json").read_text())
    printed = float(out.split("target_acc")[1].split()[0])
    assert printed == pytest.approx(saved["target_acc"], abs=1e-4)  # the same classifier, the same test set


def test_translate_checkpoint_both_directions_any_size(tmp_path):
    from PIL import Image

    from unitgan.cli import main
    from unitgan.inference import Translator

    ckpt = train(_config(tmp_path, "train.steps=1"), progress=False).checkpoint
    translator = Translator.from_checkpoint(ckpt, "cpu")
    assert translator.fixed_size == 32
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    direct = translator.gen.translate(x, "a2b")
    assert torch.allclose(translator.translate(x, "a2b"), direct)  # 32x32: no resize
    for direction, size in (("a2b", (28, 28)), ("b2a", (16, 20))):
        y = translator.translate(torch.rand(2, 1, *size) * 2 - 1, direction)
        assert y.shape == (2, 1, *size) and torch.isfinite(y).all()
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(src / "digit.png")
    for direction in ("a2b", "b2a"):
        out = tmp_path / f"out_{direction}"
        args = ["translate", str(src), "--checkpoint", str(ckpt), "--output", str(out), "--direction", direction]
        assert main(args) == 0
        assert Image.open(out / "digit.png").size == (16, 16)


@pytest.mark.parametrize("source_only", [False, True])
def test_weight_averages_resume_exactly_and_evaluation_reads_the_classifiers(tmp_path, source_only):
    flag = [f"da.source_only={str(source_only).lower()}", "train.ema=0.5"]
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    whole = train(_config(tmp_path / "whole", "train.steps=4", *flag), progress=False)
    part = _config(tmp_path / "parts", "train.steps=2", *flag)
    train(part, progress=False)
    part.train.steps = 4
    resumed = train(part, progress=False)
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["dis_ema_updates"] == b["dis_ema_updates"] == 4
    assert a["ema_updates"] == b["ema_updates"] == (0 if source_only else 4)  # source-only never steps gen
    for key in ("gen_ema", "dis_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert any(not torch.equal(a["dis"][k], a["dis_ema"][k]) for k in a["dis"])
    # the classifier that evaluation (the hook, `unitgan evaluate`) reads is the average
    cfg = _config(tmp_path / "whole", "train.steps=4", *flag)
    trainer = DA32Trainer(cfg, torch.device("cpu"))
    trainer.load_state(a, weights_only=True)
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    reference = DA32Trainer(cfg, torch.device("cpu")).dis
    reference.load_state_dict(a["dis_ema"])
    reference.eval()
    with torch.no_grad():
        assert torch.equal(trainer.classify(x, "a"), reference.classify(x, "a"))


def test_evaluate_classifies_as_the_trained_classifier_without_a_trainer(tmp_path, monkeypatch):
    """``unitgan evaluate`` builds only the discriminator, loads the weights the run's own evaluation reads (the
    average with train.ema) and keeps the run's NHWC layout: its logits are the trainer's, bit for bit."""
    import unitgan.evaluate as evaluate

    cfg = _config(tmp_path, "train.steps=2", "train.ema=0.5", "da.target_path=a")
    assert cfg.train.channels_last
    result = train(cfg, progress=False)
    trainer = DA32Trainer(cfg, torch.device("cpu"))
    trainer.load_state(load_checkpoint(result.checkpoint), weights_only=True)
    seen = {}

    def spy(classify, target_path, cfg, splits=None):
        seen["classify"], seen["target_path"] = classify, target_path
        return {}

    monkeypatch.setattr(evaluate, "da_accuracy", spy)
    evaluate.evaluate_checkpoint(result.checkpoint)
    assert seen["target_path"] == trainer.eval_domain == "a"
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    for domain in ("a", "b"):
        assert torch.equal(seen["classify"](x, domain), trainer.classify(x, domain)), domain


def test_alignment_signals_are_logged_at_log_steps_without_changing_the_run(tmp_path):
    runs = {}
    for every in (2, 3):
        (tmp_path / str(every)).mkdir()
        cfg = _config(tmp_path / str(every), "train.steps=4", f"train.log_every={every}", "da.eval_every=0")
        runs[every] = train(cfg, progress=False)
    rows = [json.loads(line) for line in (runs[2].run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss_d" in r]
    assert [r["step"] for r in logged] == [2, 4]
    for r in logged:
        assert 0.0 <= r["align_acc_ab"] <= 1.0 and r["align_acc_ab"] * 4 == round(r["align_acc_ab"] * 4)  # batch 4
        assert 0.0 < r["align_feat_gan_grad"] < float("inf")
    a, b = _weights(runs[2].checkpoint), _weights(runs[3].checkpoint)  # logging draws nothing, moves nothing
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_alignment_accuracy_is_the_class_head_on_test_time_translations_with_source_labels(tmp_path):
    trainer = DA32Trainer(_config(tmp_path, "train.log_every=1"), torch.device("cpu"))
    torch.manual_seed(0)
    x_a, y_a = torch.rand(8, 1, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    terms = trainer.train_step(x_a, y_a, torch.rand(8, 1, 32, 32) * 2 - 1)
    trainer.eval()  # by hand: z = mu, batch norm's running statistics, no dropout, the target's first D layer
    with torch.no_grad():
        x_ab = trainer.gen.decode(trainer.gen.encode(x_a, "a"), "b")
        predicted = trainer.dis.cls_head(trainer.dis.trunk(x_ab, "b", False)).flatten(1).argmax(dim=1)
    assert terms["align_acc_ab"].item() == (predicted == y_a).float().mean().item()
    # through the target's first D layer, not the source's: with varied inputs (translations stood in for by x_a
    # itself) and distinct first layers the two paths disagree, and the signal follows the target's
    trainer.gen.forward = lambda x, direction: x
    with torch.no_grad():
        for m in (trainer.dis.dis_a[0], trainer.dis.dis_b[0], trainer.dis.cls_head):
            m.weight.normal_(0, 1)
    x_a = torch.rand(32, 1, 32, 32) * 2 - 1
    with torch.no_grad():  # labels the target's path gets right (before this step's small update)
        y_a = trainer.dis.classify(x_a, "b").argmax(dim=1)
    trainer.train()
    got = trainer.train_step(x_a, y_a, torch.rand(32, 1, 32, 32) * 2 - 1)["align_acc_ab"].item()
    trainer.eval()
    with torch.no_grad():
        acc = {p: (trainer.dis.classify(x_a, p).argmax(dim=1) == y_a).float().mean().item() for p in ("a", "b")}
    assert got == acc["b"] > acc["a"]


def test_feature_gan_gradient_ratio_scales_with_the_feature_weight(tmp_path):
    ratios = []
    for w in ("0.0001", "0.0002", "0"):
        (tmp_path / w).mkdir()
        torch.manual_seed(0)
        trainer = DA32Trainer(_config(tmp_path / w, f"da.feat32_w={w}", "train.log_every=1"), torch.device("cpu"))
        torch.manual_seed(1)  # the same latent noise and dropout masks
        x_a, y_a, x_b = torch.rand(4, 1, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 0]), torch.rand(4, 1, 32, 32) * 2 - 1
        ratios.append(trainer.train_step(x_a, y_a, x_b)["align_feat_gan_grad"].item())
    assert ratios[0] > 0 and ratios[1] == pytest.approx(2 * ratios[0], rel=1e-5) and ratios[2] == 0.0


def test_svhn2mnist_preset_follows_the_authors_yaml_and_trains_on_a_stand_in(tmp_path, monkeypatch):
    """da_svhn2mnist on tiny random stand-ins of torchvision's SVHN (uint8 [N, 3, 32, 32], labels 0-9) and MNIST
    (uint8 [N, 28, 28]): the authors' svhn2mnist.yaml values, SVHN's extra split for training, inverted MNIST
    copies for training only, and two training steps at a reduced width."""
    import torchvision.datasets as tvd

    from unitgan.data import build_domain
    from unitgan.train.registry import trainer_class

    splits = []

    class StandInSVHN:
        def __init__(self, root, split, download):
            splits.append(split)
            rng = np.random.default_rng(len(splits))
            self.data = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
            self.labels = rng.integers(0, 10, 10)

    class StandInMNIST:
        def __init__(self, root, train, download):
            g = torch.Generator().manual_seed(int(train))
            self.data = torch.randint(0, 256, (10 if train else 6, 28, 28), dtype=torch.uint8, generator=g)
            self.targets = torch.randint(0, 10, (len(self.data),), generator=g)

    monkeypatch.setattr(tvd, "SVHN", StandInSVHN)
    monkeypatch.setattr(tvd, "MNIST", StandInMNIST)
    cfg = load_config("da_svhn2mnist", [f"data.cache_dir={tmp_path / 'cache'}", f"train.out_dir={tmp_path / 'run'}"])
    m, o = cfg.model, cfg.optim
    assert (m.arch, m.input_nc_a, m.input_nc_b, m.ch, m.dis_ch) == ("covae32", 3, 1, 96, 64)
    assert (o.lr, o.dis_lr, o.beta1, o.beta2, o.weight_decay, o.lr_step) == (2e-4, 2e-4, 0.5, 0.999, 5e-4, 0)
    assert (cfg.data.a, cfg.data.b, cfg.data.batch_size, cfg.train.steps) == ("svhn_extra", "mnist", 64, 200000)
    assert cfg.da.use_inversion and cfg.da.feat32_w == 1e-4 and cfg.train.update_order == "alternating"
    assert trainer_class(cfg) is DA32Trainer
    mnist_train, mnist_test = build_domain(cfg, "b", "train"), build_domain(cfg, "b", "test")
    assert len(mnist_train) == 20 and len(mnist_test) == 6  # inverted copies for training only
    assert torch.equal(mnist_train.x[10:], 255 - mnist_train.x[:10])
    assert mnist_train.x.shape[-2:] == (32, 32)  # zero-padded 28 -> 32: the digit keeps its pixels
    assert torch.equal(mnist_train.x[:10, 0, 2:30, 2:30], StandInMNIST(None, True, False).data)
    assert mnist_train.x[:10, :, :2].eq(0).all() and mnist_train.x[:10, :, :, 30:].eq(0).all()
    splits.clear()
    small = ["model.ch=2", "model.dis_ch=2", "data.batch_size=4", "train.steps=2", "train.log_every=1"]
    result = train(load_config("da_svhn2mnist", [*cfg_overrides(tmp_path), *small]), progress=False)
    assert result.step == 2 and splits == ["extra", "test"]  # train on SVHN extra, evaluate on its test split
    final = json.loads((result.run_dir / "da_results.json").read_text())
    assert final["n_target_test"] == 6 and 0.0 <= final["target_acc"] <= 1.0


def cfg_overrides(tmp_path: Path) -> list[str]:
    return [f"data.cache_dir={tmp_path / 'cache'}", f"train.out_dir={tmp_path / 'run'}", "train.threads=1"]
