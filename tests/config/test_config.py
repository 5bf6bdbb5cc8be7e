import pytest
import yaml

from unitgan.config import PRESET_DIR, Config, load_config
from unitgan.errors import UnitganError


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_presets_load(preset):
    cfg = load_config(preset, ["data.root=somewhere"])
    assert isinstance(cfg, Config)


def test_paper_preset_matches_paper():
    cfg = load_config("unit_paper", ["data.root=x"])
    assert (cfg.loss.gan_w, cfg.loss.kl_w, cfg.loss.recon_w, cfg.loss.cyc_kl_w, cfg.loss.cyc_recon_w) == (
        10,
        0.1,
        100,
        0.1,
        100,
    )
    assert cfg.model.n_shared == 1 and cfg.data.batch_size == 1
    assert (cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.weight_decay) == (1e-4, 0.5, 0.999, 1e-4)


def test_master_preset_has_no_sharing():
    cfg = load_config("unit_master", ["data.root=x"])
    assert cfg.model.n_shared == 0 and cfg.model.n_res == 4 and cfg.model.pad_type == "reflect"
    assert cfg.model.dis_n_scales == 3 and cfg.model.gan_type == "lsgan"
    assert (cfg.loss.gan_w, cfg.loss.kl_w, cfg.loss.recon_w) == (1, 0.01, 10)


def test_every_preset_key_has_a_comment():
    for path in PRESET_DIR.glob("*.yaml"):
        for line in path.read_text().splitlines():
            if line.strip() and not line.strip().startswith("#") and not line.rstrip().endswith(":"):
                assert "#" in line, f"{path.name}: no comment on '{line.strip()}'"


def test_overrides_are_typed():
    cfg = load_config("demo", ["train.steps=12", "optim.lr=1e-3", "data.flip=false", "model.norm=layer"])
    assert cfg.train.steps == 12 and cfg.optim.lr == 1e-3 and cfg.data.flip is False and cfg.model.norm == "layer"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.n_shraed=3", "unknown config key 'model.n_shraed' (did you mean 'model.n_shared'"),
        ("modle.ch=3", "unknown config key 'modle'"),
        ("train.steps=abc", "'train.steps' must be an integer"),
        ("optim.lr=fast", "'optim.lr' must be a number"),
        ("train.steps=1.5", "'train.steps' must be an integer"),
        ("data.flip=3", "'data.flip' must be true or false"),
        ("model.norm=group", "'model.norm' must be one of instance, batch, layer, none"),
        ("optim.lr=-1", "'optim.lr' must be > 0"),
        ("model.n_shared=9", "'model.n_shared' must be <= model.n_res"),
        ("data.crop_size=30", "'data.crop_size' must be a multiple of"),
        ("train.steps", "must look like key=value"),
        ("model=3", "section 'model' must be a mapping"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(UnitganError) as e:
        load_config("demo", [override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: [1, 2\n")
    with pytest.raises(UnitganError, match="not valid YAML"):
        load_config(p)
    p.write_text(yaml.safe_dump({"model": {"ch": "wide"}}))
    with pytest.raises(UnitganError, match="'model.ch' must be an integer"):
        load_config(p)


def test_missing_config_lists_presets():
    with pytest.raises(UnitganError, match="bundled presets: .*unit_paper"):
        load_config("no_such_config")


@pytest.mark.parametrize("preset", ["da_mnist2usps", "da_usps2mnist"])
def test_mnist_usps_presets_take_the_cogan_recipe(preset):
    """The authors' MNIST <-> USPS recipe (CoGAN cogan_pytorch/exps/*_full_cogan.yaml and its trainer): feature
    matching 0.01, Adam 2e-4 (0.5, 0.999) with weight decay 5e-4 for both networks, 10k iterations; the widths
    and the batch (64 there) are the named CPU deviations."""
    cfg = load_config(preset)
    assert cfg.da.feat32_w == 0.01 and cfg.da.cls_w == 10.0
    assert (cfg.optim.lr, cfg.optim.dis_lr, cfg.optim.beta1, cfg.optim.beta2) == (2e-4, 2e-4, 0.5, 0.999)
    assert cfg.optim.weight_decay == 5e-4 and cfg.optim.lr_step == 0 and cfg.train.steps == 10000
    assert (cfg.model.ch, cfg.model.dis_ch, cfg.data.batch_size) == (8, 8, 16)  # CPU deviations (96, 64, 64)
