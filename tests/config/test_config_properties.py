"""Property tests over config values and overrides: every invalid input is a one-line UnitganError naming
the key; nothing else escapes, nothing falls back to a default; valid values round-trip."""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from typing import Any, Literal, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from unitgan.config import Config, apply_overrides, config_from_dict, load_config, save_config
from unitgan.errors import UnitganError

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# every leaf key of the config with its type: ("model.ch", int), ("model.norm", Literal[...]), ...
LEAVES: list[tuple[str, Any]] = [
    (f"{section}.{f}", tp)
    for section, cls in typing.get_type_hints(Config).items()
    for f, tp in typing.get_type_hints(cls).items()
]
BASE = load_config("demo").to_dict()  # a valid starting point (synthetic data: no folders needed)


def _with(key: str, value: Any) -> dict:
    section, name = key.split(".")
    data = copy.deepcopy(BASE)
    data[section][name] = value
    return data


def _load(overrides: list[str]) -> Config:
    """``load_config("demo", overrides)`` without reading the file again for every example."""
    return config_from_dict(apply_overrides(copy.deepcopy(BASE), overrides))


def _assert_one_line_naming(e: UnitganError, key: str) -> None:
    msg = str(e)
    assert "\n" not in msg and "\r" not in msg and msg.strip() == msg and msg, repr(msg)
    assert f"'{key}'" in msg, (key, msg)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
containers = st.one_of(st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=3))


def _invalid_for(tp: Any) -> st.SearchStrategy:
    """Values of the wrong type (or out of the domain of the type) for ``tp``."""
    if get_origin(tp) is Literal:
        choices = get_args(tp)
        return st.one_of(scalars, containers).filter(lambda v: v not in choices or not isinstance(v, str))
    if tp is bool:
        return st.one_of(scalars, containers).filter(lambda v: not isinstance(v, bool))
    if tp is int:

        def not_int(v):
            if isinstance(v, bool) or isinstance(v, (str, list, dict)) or v is None:
                return True
            if isinstance(v, float):
                return not (math.isfinite(v) and v.is_integer() and abs(v) < 2**63)
            return abs(v) >= 2**63

        return st.one_of(scalars, containers).filter(not_int)
    if tp is float:

        def not_float(v):
            if isinstance(v, bool) or isinstance(v, (list, dict)) or v is None:
                return True
            if isinstance(v, str):
                try:
                    return not math.isfinite(float(v))
                except ValueError:
                    return True
            try:
                return not math.isfinite(float(v))
            except OverflowError:
                return True

        return st.one_of(scalars, containers).filter(not_float)
    if tp is str:
        return st.one_of(scalars, containers).filter(lambda v: not isinstance(v, str))
    raise AssertionError(tp)


@settings(SETTINGS, max_examples=300)
@given(data=st.data())
def test_a_value_of_the_wrong_type_names_the_key(data):
    key, tp = data.draw(st.sampled_from(LEAVES))
    value = data.draw(_invalid_for(tp))
    with pytest.raises(UnitganError) as e:
        config_from_dict(_with(key, value))
    _assert_one_line_naming(e.value, key)


@settings(SETTINGS, max_examples=600)
@given(leaf=st.sampled_from(LEAVES), text=st.text(max_size=30))
def test_any_override_text_loads_or_names_the_key(leaf, text):
    """Whatever follows ``key=``: a Config holding exactly that value, or one line naming the key."""
    key, tp = leaf
    try:
        cfg = _load([f"{key}={text}"])
    except UnitganError as e:
        msg = str(e)
        assert "\n" not in msg and msg, repr(msg)
        assert key in msg, (key, text, msg)  # a cross-field check names this key alongside its partner
        return
    section, name = key.split(".")
    got = getattr(getattr(cfg, section), name)
    if tp is str:
        assert got == text  # string keys take the text as typed, never a default
    else:
        expected = yaml.safe_load(text) if text.strip() else ""
        assert got == expected or (tp is float and float(expected) == got), (text, got)


@SETTINGS
@given(text=st.text(max_size=40))
def test_any_override_string_is_a_config_or_one_line(text):
    try:
        _load([text])
    except UnitganError as e:
        assert "\n" not in str(e) and str(e)


yaml_values = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), kids, max_size=4)
    ),
    max_leaves=12,
)
section_names = st.sampled_from([f.name for f in dataclasses.fields(Config)] + ["extra", ""])
leaf_names = st.sampled_from(sorted({k.split(".")[1] for k, _ in LEAVES}) + ["nope"])


@SETTINGS
@given(
    doc=st.one_of(
        yaml_values,
        st.dictionaries(section_names, st.one_of(yaml_values, st.dictionaries(leaf_names, yaml_values)), max_size=4),
    )
)
def test_any_yaml_document_is_a_config_or_one_line(doc):
    try:
        config_from_dict(doc)
    except UnitganError as e:
        assert "\n" not in str(e) and str(e)


def _valid_for(key: str, tp: Any) -> st.SearchStrategy:
    if get_origin(tp) is Literal:
        return st.sampled_from(get_args(tp))
    if tp is bool:
        return st.booleans()
    if tp is str:
        return st.text(max_size=30).filter(lambda s: s.strip()) if key == "train.out_dir" else st.text(max_size=30)
    if tp is float:
        return st.floats(min_value=0.0, max_value=0.99, exclude_max=False)
    if tp is int:
        return st.integers(min_value=1, max_value=8)
    raise AssertionError(tp)


@SETTINGS
@given(data=st.data())
def test_valid_values_round_trip_through_dict_yaml_and_overrides(data, tmp_path_factory):
    """Set a few keys to valid values; the config survives to_dict, a YAML file, and key=value overrides."""
    keys = data.draw(st.lists(st.sampled_from(LEAVES), min_size=1, max_size=6, unique_by=lambda kv: kv[0]))
    values = {key: data.draw(_valid_for(key, tp)) for key, tp in keys}
    doc = copy.deepcopy(BASE)
    for key, value in values.items():
        section, name = key.split(".")
        doc[section][name] = value
    try:
        cfg = config_from_dict(doc)
    except UnitganError as e:  # a cross-field rule (e.g. crop size vs n_down) may reject a combination
        assert any(key in str(e) for key in values), str(e)
        assume(False)
    assert config_from_dict(cfg.to_dict()) == cfg
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    overrides = []
    for key, value in values.items():
        _, tp = next(kv for kv in LEAVES if kv[0] == key)
        text = value if tp is str else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...")
        overrides.append(f"{key}={text.strip() if tp is not str else text}")
    assert _load(overrides) == cfg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.ch.x=3", "config key 'model.ch' is a value, not a section"),
        ("model=null", "section 'model' must be a mapping"),
        ("model=", "section 'model' must be a mapping"),
        ("optim.beta1=1.5", "'optim.beta1' must be in [0, 1)"),
        ("optim.dis_lr=-1", "'optim.dis_lr' must be >= 0"),
        ("optim.weight_decay=-0.1", "'optim.weight_decay' must be >= 0"),
        ("train.seed=-1", "'train.seed' must be in [0, 2**63)"),
        ("train.seed=99999999999999999999", "'train.seed' must be an integer that fits in 64 bits"),
        ("optim.lr=1e999", "'optim.lr' must be a finite number"),
        ("train.device=gpu", "'train.device' must be auto, cpu, cuda, cuda:N or mps"),
        ("model.input_nc_a=2", "'model.input_nc_a' must be 1 (grey) or 3 (colour)"),
        ("model.ch=100000", "'model.ch' must be <= 1024"),
        ("train.image_rows=0", "'train.image_rows' must be >= 1"),
        ("train.out_dir=", "'train.out_dir' must name a folder"),
        ("train.nonfinite=ignore", "'train.nonfinite' must be one of error, skip"),
        ("data.bad_images=warn", "'data.bad_images' must be one of error, skip"),
        ("model.c\nh=3", "unknown config key 'model.c\\nh'"),
    ],
)
def test_more_invalid_overrides_name_the_key(override, fragment):
    with pytest.raises(UnitganError) as e:
        load_config("demo", [override])
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_strings_and_sections_from_overrides():
    cfg = load_config("demo", ["data.root=2024", "train.out_dir=runs/010", "model={ch: 8, norm: layer}"])
    assert cfg.data.root == "2024" and cfg.train.out_dir == "runs/010"
    assert cfg.model.ch == 8 and cfg.model.norm == "layer" and cfg.model.n_res == load_config("demo").model.n_res
