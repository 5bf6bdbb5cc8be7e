"""What the two DA designs share (``unitgan.train.da.common``): the one rule refusing the ``da.*`` keys a design
never reads."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unitgan.config import DAConfig, load_config
from unitgan.errors import UnitganError
from unitgan.train.da.authors import DA32Trainer
from unitgan.train.da.common import IGNORED_DA_KEYS
from unitgan.train.da.reduced import DATrainer

torch.set_num_threads(1)

# a valid value other than the default for every key a design ignores
NOT_DEFAULT = {
    "target_path": "a",
    "sem_ab_w": 1.0,
    "sem_path": "b",
    "pseudo_w": 1.0,
    "pseudo_threshold": 0.5,
    "pseudo_start": 3,
    "pseudo_align": True,
    "feat32_w": 0.01,
    "dis_n_private": 2,
    "dropout": 0.5,
    "cls_w": 5.0,
    "feat_w": 0.5,
    "feat_update": "gen",
    "recon_fake": False,
}
DESIGNS = {"reduced": ("da_mnist2mnistm_reduced", DATrainer), "authors": ("da_mnist2usps", DA32Trainer)}
TINY = ["model.ch=4", "model.dis_ch=4", "model.n_res=1"]


def test_every_ignored_key_is_a_da_key_read_by_the_other_design():
    fields = {f.name for f in dataclasses.fields(DAConfig)}
    reduced, authors = set(IGNORED_DA_KEYS["reduced"]), set(IGNORED_DA_KEYS["authors"])
    assert reduced <= fields and authors <= fields
    assert not reduced & authors  # a key no design reads would be dead
    assert set(NOT_DEFAULT) == reduced | authors
    assert all(NOT_DEFAULT[k] != getattr(DAConfig(), k) for k in NOT_DEFAULT)


@pytest.mark.parametrize(("design", "key"), [(design, key) for design, keys in IGNORED_DA_KEYS.items() for key in keys])
def test_a_design_refuses_a_key_it_ignores_naming_it(design, key):
    """Set on the validated config (so that no cross-field check of the config answers first): the trainer of
    that design refuses the key, whichever design it is."""
    preset, trainer = DESIGNS[design]
    cfg = load_config(preset, TINY)
    setattr(cfg.da, key, NOT_DEFAULT[key])
    with pytest.raises(UnitganError, match=rf"^config key 'da\.{key}' is only read by .*ignores it\)$"):
        trainer(cfg, torch.device("cpu"))


@pytest.mark.parametrize("design", ["reduced", "authors"])
def test_a_design_takes_the_keys_the_other_design_ignores(design):
    """The keys the OTHER design ignores are this design's own: set to other values, they are accepted."""
    preset, trainer = DESIGNS[design]
    cfg = load_config(preset, TINY)
    other = "authors" if design == "reduced" else "reduced"
    for key in IGNORED_DA_KEYS[other]:
        if key in ("pseudo_align", "pseudo_threshold", "pseudo_start", "sem_path"):
            continue  # read only together with pseudo_w / sem_ab_w, set below
        setattr(cfg.da, key, NOT_DEFAULT[key])
    if design == "authors":
        cfg.da.pseudo_align, cfg.da.pseudo_threshold, cfg.da.pseudo_start, cfg.da.sem_path = True, 0.5, 3, "b"
    trainer(cfg, torch.device("cpu"))
