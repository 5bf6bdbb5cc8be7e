"""Checkpoint files, for training, inference, evaluation and the command line alike: write to a temp file,
fsync, rename; keep the last K; list, validate and load safely; find a run folder's newest checkpoint that loads.

A checkpoint is a plain dict of tensors and Python primitives, read with ``torch.load(weights_only=True)``
so a crafted file cannot run code. Files are named ``ckpt_<step>.pt`` in a run folder's ``checkpoints/``;
the step itself is read from inside.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import time
import warnings
from pathlib import Path
from typing import IO, Any

import torch

from unitgan.errors import UnitganError
from unitgan.runtime import atomic_write

log = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")
FORMAT_VERSION = 1


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def atomic_save(obj: Any, path: str | Path) -> None:
    """Save so that ``path`` is either the old file or the complete new one, never a partial file.

    The data goes to a temp file in the same folder (``.<name>.<random>.tmp``, never matched as a
    checkpoint), is fsynced, then renamed over ``path`` (:func:`unitgan.runtime.atomic_write`). A full disk
    or an unwritable folder raises :class:`UnitganError` and leaves every existing file as it was.
    """
    path = Path(path)

    def write(f) -> None:
        _test_pause("UNITGAN_TEST_SAVE_PAUSE")
        writer = ErrorRecordingWriter(f)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is not None:  # torch's zip writer reports a failed write as "unexpected pos"
                raise writer.error from None
            raise
        _test_pause("UNITGAN_TEST_SAVE_PAUSE")

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError as e:
        raise UnitganError(
            f"could not write checkpoint '{path}': {e.strerror or e} (the previous checkpoint is intact)"
        ) from None


class ErrorRecordingWriter:
    """A binary file's ``write`` and ``flush`` that remember the first ``OSError`` (a full disk): torch's zip
    writer turns it into ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``, which says
    nothing about the disk; the caller raises the recorded error instead."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def _test_pause(var: str) -> None:
    """Tests only: sleep for ``$var`` seconds to widen a window a kill should land in (unset: nothing)."""
    seconds = os.environ.get(var)
    if seconds:
        time.sleep(float(seconds))


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint files, oldest first (temp files of interrupted writes are not listed)."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, keep_last: int) -> Path:
    step = int(state["step"])
    path = checkpoint_dir(run_dir) / f"ckpt_{step:09d}.pt"
    atomic_save({**state, "format_version": FORMAT_VERSION}, path)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        try:
            old.unlink()
        except OSError as e:
            log.warning("could not remove old checkpoint %s: %s", old, e)
    for tmp in checkpoint_dir(run_dir).glob(".ckpt_*.tmp"):  # leftovers of writes killed mid-way
        try:
            tmp.unlink()
        except OSError:
            pass
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint safely (no code execution); raise UnitganError naming the file on failure."""
    path = Path(path)
    if path.is_dir():
        raise UnitganError(f"checkpoint '{path}' is a folder, not a checkpoint file")
    if not path.exists():
        raise UnitganError(f"checkpoint '{path}' does not exist")
    if not path.is_file():
        raise UnitganError(f"checkpoint '{path}' is not a regular file (a device, pipe or socket)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "pickle protocol 4": the verdict below is what matters
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # a reference to a function or class: what code-running pickles use
            raise UnitganError(
                f"checkpoint '{path}' was refused: it holds objects other than tensors and plain values, "
                f"and loading them could run code"
            ) from None
        raise UnitganError(f"checkpoint '{path}' cannot be loaded (not a checkpoint, truncated or corrupt)") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise UnitganError(f"checkpoint '{path}' cannot be loaded (truncated or corrupt): {_first_line(e)}") from None
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("config"), dict)
        or not isinstance(state.get("gen"), dict)
    ):
        raise UnitganError(f"checkpoint '{path}' is not a unitgan checkpoint")
    version = state.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise UnitganError(
            f"checkpoint '{path}' has format_version {str(version)[:20]}; this unitgan reads {FORMAT_VERSION} "
            f"(written by a newer unitgan, or tampered with)"
        )
    return state


def state_dict_problem(module: torch.nn.Module, weights: dict[str, Any], prefixes: tuple[str, ...] = ()) -> str | None:
    """Why ``weights`` cannot load into ``module``: the first missing, unexpected or mis-shaped key (with both
    shapes), or the first tensor holding NaN or infinity; None when they load. ``prefixes``: only the module's
    keys starting with one of them are expected (the parts of a generator that an export holds)."""
    if not isinstance(weights, dict):
        return "the weights are not a state dict"
    own = {k: v for k, v in module.state_dict().items() if not prefixes or k.startswith(prefixes)}
    for key, ref in own.items():
        if key not in weights:
            return f"missing key '{key}' (shape {tuple(ref.shape)})"
        got = weights[key]
        if not isinstance(got, torch.Tensor):
            return f"key '{key}' is not a tensor"
        if got.shape != ref.shape:
            return f"key '{key}' has shape {tuple(got.shape)}, the config's model needs {tuple(ref.shape)}"
    extra = [k for k in weights if k not in own]
    if extra:
        return f"unexpected key '{extra[0]}'"
    for key, t in weights.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"tensor '{key}' holds NaN or infinite values"
    return None


def averaged_key(state: dict[str, Any], name: str) -> str:
    """The checkpoint key of network ``name``'s weights for use: ``name + '_ema'``, the run's weight average, when
    the checkpoint holds one (``train.ema``), else ``name``, the trained weights."""
    return f"{name}_ema" if isinstance(state.get(f"{name}_ema"), dict) else name


def load_weights(module: torch.nn.Module, state: dict[str, Any], name: str, path: str | Path, nan_effect: str) -> None:
    """Load network ``name`` of the checkpoint ``state`` (read from ``path``) into ``module``: its weight average
    when it has one (:func:`averaged_key`). Weights that do not fit the module raise UnitganError naming the file
    and the first problem (:func:`state_dict_problem`); weights holding NaN or infinity are refused, saying what
    they would do (``nan_effect``, e.g. 'it would translate to blank images')."""
    problem = state_dict_problem(module, state.get(averaged_key(state, name)))
    if problem and "NaN" in problem:
        raise UnitganError(f"checkpoint '{path}' is refused: {problem} ({nan_effect})")
    if problem:
        raise UnitganError(f"checkpoint '{path}' does not match its config: {problem}")
    module.load_state_dict(state[averaged_key(state, name)])


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(e).__name__


def newest_loadable(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest checkpoint of the run folder ``run_dir`` that loads, with its file under ``"_path"``; None when
    none loads (or there is none). Damaged newer files are reported and passed over, and the one used says which
    were skipped and why."""
    skipped: list[str] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            state = load_checkpoint(path, map_location)
        except UnitganError as e:
            log.warning("%s; trying an older one", e)
            skipped.append(str(e))
            continue
        if skipped:
            log.warning("using %s, the newest checkpoint that loads; skipped: %s", path, "; ".join(skipped))
        state["_path"] = str(path)
        return state
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file that ``path`` names: the file itself, or a run folder's (or its ``checkpoints/``
    folder's) newest checkpoint that loads. Raises UnitganError naming the path when there is none."""
    p = Path(path).expanduser()
    if p.is_dir():
        run_dir = p.parent if p.name == "checkpoints" else p
        found = list_checkpoints(run_dir)
        if not found:
            raise UnitganError(f"run folder '{p}' holds no checkpoints")
        state = newest_loadable(run_dir)
        if state is None:
            raise UnitganError(f"run folder '{p}' holds no checkpoint that loads ({len(found)} damaged)")
        return Path(state["_path"])
    if not p.exists():
        raise UnitganError(f"checkpoint '{p}' does not exist")
    if not p.is_file():
        raise UnitganError(f"checkpoint '{p}' is not a regular file (a device, pipe or socket)")
    return p
