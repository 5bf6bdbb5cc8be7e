"""The OpenMP defaults the CLI sets before torch loads: idle threads sleep, and only idle cores are used."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from unitgan import cli, openmp_env
from unitgan.openmp_env import WAIT_POLICY, free_cores, set_openmp_defaults, usable_cores


def test_passive_wait_policy_is_the_default():
    env: dict[str, str] = {}
    assert set_openmp_defaults(env)["OMP_WAIT_POLICY"] == WAIT_POLICY == env["OMP_WAIT_POLICY"]
    assert WAIT_POLICY == "PASSIVE"


@pytest.mark.parametrize("user", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "100000"}])
def test_the_users_wait_setting_wins(user):
    env = dict(user)
    assert "OMP_WAIT_POLICY" not in set_openmp_defaults(env)
    assert {k: env[k] for k in user} == user


def test_free_cores_is_between_one_and_the_usable_cores():
    n = free_cores(0.05)
    assert n is None or 1 <= n <= usable_cores()


def _pretend(monkeypatch, free: int, cores: int = 2) -> None:
    monkeypatch.setattr(openmp_env, "free_cores", lambda window_s=0.2: free)
    monkeypatch.setattr(openmp_env, "usable_cores", lambda: cores)
    # as in a fresh `unitgan` process (sys.modules is restored after the test)
    monkeypatch.delitem(sys.modules, "torch", raising=False)


def test_threads_default_to_the_idle_cores(monkeypatch):
    _pretend(monkeypatch, free=1)
    env: dict[str, str] = {}
    set_openmp_defaults(env)
    assert env["OMP_NUM_THREADS"] == "1"
    _pretend(monkeypatch, free=2)
    env = {}
    set_openmp_defaults(env)
    assert "OMP_NUM_THREADS" not in env  # every core idle: torch's own default (all of them)


@pytest.mark.parametrize("user", [{"OMP_NUM_THREADS": "2"}, {"MKL_NUM_THREADS": "2"}])
def test_the_users_thread_count_wins(monkeypatch, user):
    _pretend(monkeypatch, free=1)
    env = dict(user)
    set_openmp_defaults(env)
    assert env.get("OMP_NUM_THREADS") == user.get("OMP_NUM_THREADS")  # kept, or not added beside MKL's
    assert {k: env[k] for k in user} == user


def test_cores_are_not_counted_once_torch_is_loaded(monkeypatch):
    monkeypatch.setattr(openmp_env, "free_cores", lambda window_s=0.2: 1)
    monkeypatch.setattr(openmp_env, "usable_cores", lambda: 2)
    env: dict[str, str] = {}
    set_openmp_defaults(env)  # torch is loaded in this test process: the count could not take effect
    assert "OMP_NUM_THREADS" not in env


def test_cli_main_sets_the_wait_policy(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_the_cli_sets_both_before_torch_loads():
    """libgomp reads the variables once, when torch loads: importing the CLI must not load torch, and
    ``python -m unitgan`` must start with them in place."""
    code = "import sys, unitgan.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    code = (
        "import sys; from unitgan import cli; cli.COMMANDS['demo'] = lambda a: print(__import__('os').environ"
        "['OMP_WAIT_POLICY'], __import__('torch').get_num_threads()) or 0; sys.exit(cli.main(['demo']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    policy, threads = out.stdout.split()
    assert policy == "PASSIVE" and 1 <= int(threads) <= usable_cores()
