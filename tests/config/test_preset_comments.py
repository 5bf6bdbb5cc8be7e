"""Every key of every preset has a real YAML comment (a '#' inside a value is no comment)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

PRESETS = Path(__file__).resolve().parents[2] / "src" / "unitgan" / "configs"


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
