"""Loader worker processes end with the run, however it ends.

The workers ignore SIGTERM (a signal to the process group must not kill them before the main process has
checkpointed). A run that left them alive made the process hang at exit: ``multiprocessing`` sends its
SIGTERM, which they ignore, then waits for ever. That is how a whole CI run once timed out after the default
suite had printed "passed". The loop closes the loaders (``unitgan.train.base.EndlessBatches.close``).
"""

from __future__ import annotations

import multiprocessing

import pytest
from conftest import folder_overrides

from unitgan.config import load_config
from unitgan.errors import UnitganError
from unitgan.train.loop import train


def test_workers_stop_when_the_run_finishes_and_when_it_fails(image_root, tmp_path):
    overrides = folder_overrides(image_root, tmp_path / "run", **{"data.num_workers": 1, "train.steps": 2})
    result = train(load_config("demo", overrides), progress=False)
    assert result.step == 2
    assert multiprocessing.active_children() == []  # no garbage collection needed: closed by the loop

    good_png = next((image_root / "trainB").rglob("*.png")).read_bytes()
    (image_root / "trainB" / "bad.png").write_bytes(good_png[:120])  # a whole header: found when a worker decodes it
    overrides = folder_overrides(image_root, tmp_path / "run2", **{"data.num_workers": 1, "train.steps": 50})
    with pytest.raises(UnitganError, match="bad.png") as error:
        train(load_config("demo", overrides), progress=False)
    # the error's traceback (kept here, as a caller or a log handler may keep it) still holds the loop's frames,
    # so the loaders are not garbage: only an explicit close stops their workers
    assert error.tb is not None and multiprocessing.active_children() == []
