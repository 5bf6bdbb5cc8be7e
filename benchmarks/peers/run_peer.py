"""Train and run a peer method from its authors' published code under a CPU budget.

Usage::

    python benchmarks/peers/run_peer.py NAME --checkout /path/to/peer/checkout \
        --data /path/to/folders_test --budget-min 5 --out runs/bench_emoji

NAME is one of ``cyclegan``, ``cut``, ``fastcut`` (checkout of
taesungp/contrastive-unpaired-translation), ``munit`` (NVlabs/MUNIT) or
``unit`` (mingyuliutw/UNIT).  ``--data`` holds ``trainA``, ``trainB``, ``testA``
and ``testB`` (64x64 PNGs, same file names in testA/testB).

The peer's code is never copied here: this script applies the small patch that
sits beside it (``NAME.patch``, CPU-only changes; none for CUT/FastCUT), trains
the peer with its own ``train.py`` on one thread, stops it once the child process
tree has used the CPU budget (the peer is killed and its newest complete
checkpoint is used; checkpoints are written every ``--save-every`` steps), then
translates testA and testB with the peer's own test script and writes

    <out>/peers/NAME/a2b/<file name>.png   (testA translated to B)
    <out>/peers/NAME/b2a/<file name>.png   (testB translated to A)
    <out>/peers/NAME/run.json

One-directional peers (CUT, FastCUT) train one model per direction, each with the
full budget; their ``cpu_s`` is the sum.  See README.md for the details.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent

PEERS = {
    "cut": {"family": "cut", "mode": "CUT", "patch": "contrastive-unpaired-translation.patch"},
    "fastcut": {"family": "cut", "mode": "FastCUT", "patch": "contrastive-unpaired-translation.patch"},
    "cyclegan": {"family": "cyclegan", "patch": "contrastive-unpaired-translation.patch"},
    "munit": {
        "family": "munit",
        "trainer": "MUNIT",
        "config": "configs/summer2winter_yosemite256_folder.yaml",
        "patch": "munit.patch",
    },
    "unit": {
        "family": "munit",
        "trainer": "UNIT",
        "config": "configs/unit_summer2winter_yosemite256_folder.yaml",
        "patch": "unit.patch",
    },
}

SIZE = 64
N_TEST = 495


def one_thread_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    ):
        env[key] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU only
    env["PYTHONUNBUFFERED"] = "1"
    return env


def apply_patch(checkout: Path, patch: str | None) -> None:
    if patch is None:
        return
    path = HERE / patch
    base = ["patch", "-p1", "-s", "-f", "-i", str(path)]
    applied = subprocess.run([*base, "-R", "--dry-run"], cwd=checkout, capture_output=True)
    if applied.returncode == 0:
        print(f"[run_peer] {patch} already applied")
        return
    subprocess.run([*base, "--dry-run"], cwd=checkout, check=True)
    subprocess.run(base, cwd=checkout, check=True)
    print(f"[run_peer] applied {patch}")


def tree_cpu(proc: psutil.Process) -> float:
    """User+system CPU seconds of a process and its live descendants."""
    total = 0.0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def children_rusage_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def train_with_budget(
    cmd: list[str],
    cwd: Path,
    budget_s: float,
    log_path: Path,
    step_pattern: str,
    list_ckpts,
    ckpt_ok,
    keep: int = 2,
) -> dict:
    """Run ``cmd`` until its process tree used ``budget_s`` CPU seconds.

    ``step_pattern`` is a regex over the child's output whose group 1 is the step
    count just reached; the CPU time at each step is recorded so that the CPU used
    up to the checkpoint finally picked is known.  ``list_ckpts()`` returns
    ``{step: [files]}``; ``ckpt_ok(files)`` says whether a checkpoint is complete.
    """
    print("[run_peer] $", " ".join(cmd), flush=True)
    rus0 = children_rusage_cpu()
    wall0 = time.time()
    log = open(log_path, "w", buffering=1)
    popen = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=one_thread_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    proc = psutil.Process(popen.pid)
    step_cpu: dict[int, float] = {}
    regex = re.compile(step_pattern)
    last_cpu = [0.0]

    def reader():
        for line in popen.stdout:
            log.write(line)
            m = regex.search(line)
            if m:
                step_cpu[int(m.group(1))] = last_cpu[0] = max(last_cpu[0], tree_cpu(proc))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    killed = False
    while popen.poll() is None:
        cpu = tree_cpu(proc)
        last_cpu[0] = max(last_cpu[0], cpu)
        if cpu >= budget_s:
            os.killpg(popen.pid, signal.SIGKILL)
            killed = True
            break
        # keep only the newest checkpoints to bound disk use
        ckpts = list_ckpts()
        for step in sorted(ckpts)[:-keep]:
            for f in ckpts[step]:
                Path(f).unlink(missing_ok=True)
        time.sleep(0.25)
    popen.wait()
    thread.join(timeout=10)
    log.close()
    wall = time.time() - wall0
    spent = children_rusage_cpu() - rus0
    if not killed:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"peer exited (rc={popen.returncode}) before the budget:\n{tail}")
    ckpts = list_ckpts()
    for step in sorted(ckpts, reverse=True):
        if ckpt_ok(ckpts[step]):
            break
    else:
        raise RuntimeError("no complete checkpoint was written within the budget")
    for other, files in ckpts.items():  # keep only the checkpoint used
        if other != step:
            for f in files:
                Path(f).unlink(missing_ok=True)
    cpu_at = step_cpu.get(step)
    return {
        "step": step,
        "cpu_s": cpu_at if cpu_at is not None else spent,
        "cpu_s_spent": spent,
        "wall_s": wall,
        "files": ckpts[step],
    }


def loads(files) -> bool:
    import torch

    try:
        for f in files:
            torch.load(f, map_location="cpu", weights_only=True)
        return True
    except Exception:
        return False


def run_test(cmd: list[str], checkout: Path, log_path: Path) -> None:
    """Run a peer's test script on one thread in its checkout, its output to ``log_path``."""
    print("[run_peer] $", " ".join(cmd), flush=True)
    with open(log_path, "w") as log:
        subprocess.run(cmd, cwd=checkout, env=one_thread_env(), stdout=log, stderr=subprocess.STDOUT, check=True)


def copy_pngs(src: Path, dst: Path, names: list[str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    missing = [n for n in names if not (src / n).exists()]
    if missing:
        raise RuntimeError(f"{len(missing)} outputs missing in {src}, e.g. {missing[:3]}")
    for n in names:
        shutil.copyfile(src / n, dst / n)


# ----------------------------------------------------------------- CUT repo
def cut_common_args(script, name, data, work, mode, direction, model):
    """The options the CUT repo's train.py and test.py share: data, size, direction, CPU, checkpoint folder."""
    cmd = [sys.executable, script, "--dataroot", str(data), "--name", name, "--model", model, "--gpu_ids", "-1"]
    cmd += ["--load_size", str(SIZE), "--crop_size", str(SIZE), "--direction", direction]
    cmd += ["--checkpoints_dir", str(work / "checkpoints")]
    if model == "cut":
        cmd += ["--CUT_mode", mode]
    return cmd


def cut_train_cmd(name, data, work, mode, direction, save_every, model="cut"):
    cmd = cut_common_args("train.py", name, data, work, mode, direction, model)
    cmd += ["--display_id", "0", "--no_html", "--num_threads", "0"]
    return cmd + ["--save_latest_freq", str(save_every), "--save_by_iter", "--print_freq", str(save_every)]


def cut_test_cmd(name, data, work, mode, direction, epoch, model="cut"):
    cmd = cut_common_args("test.py", name, data, work, mode, direction, model)
    cmd += ["--results_dir", str(work / "results"), "--phase", "test", "--num_test", str(N_TEST)]
    return cmd + ["--epoch", epoch]


def cut_ckpt_lister(ckpt_dir: Path):
    def list_ckpts():
        out: dict[int, list[str]] = {}
        for f in ckpt_dir.glob("iter_*_net_*.pth"):
            step = int(f.name.split("_")[1])
            out.setdefault(step, []).append(str(f))
        return out

    return list_ckpts


def run_cut_family(args, spec, out: Path, work: Path, names: list[str]) -> dict:
    family = spec["family"]
    model = "cut" if family == "cut" else "cycle_gan"
    mode = spec.get("mode", "CUT")
    runs = []
    # CUT/FastCUT: one model per direction; CycleGAN: one model, both directions
    directions = ["AtoB", "BtoA"] if family == "cut" else ["AtoB"]
    # networks written per checkpoint: G, F, D (CUT) or G_A, G_B, D_A, D_B
    n_nets = 3 if family == "cut" else 4
    commands = []
    for direction in directions:
        name = f"{args.name}_{direction}"
        ckpt_dir = work / "checkpoints" / name
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        train_cmd = cut_train_cmd(name, args.data, work, mode, direction, args.save_every, model)
        res = train_with_budget(
            train_cmd,
            args.checkout,
            args.budget_min * 60,
            work / f"train_{direction}.log",
            r"saving the latest model \(epoch \d+, total_iters (\d+)\)",
            cut_ckpt_lister(ckpt_dir),
            lambda files: len(files) == n_nets and loads(files),
        )
        epoch = f"iter_{res['step']}"
        test_cmd = cut_test_cmd(name, args.data, work, mode, direction, epoch, model)
        run_test(test_cmd, args.checkout, work / f"test_{direction}.log")
        images = work / "results" / name / f"test_{epoch}" / "images"
        if family == "cut":
            sub = "a2b" if direction == "AtoB" else "b2a"
            copy_pngs(images / "fake_B", out / sub, names)
        else:
            # test.py names every visual after the A path; with serial batches
            # and identical sorted file lists in testA/testB, fake_A of row i
            # is the translation of testB/<same name>.
            copy_pngs(images / "fake_B", out / "a2b", names)
            copy_pngs(images / "fake_A", out / "b2a", names)
        res["direction"] = direction
        runs.append(res)
        commands += [" ".join(train_cmd), " ".join(test_cmd)]
    return {
        "cpu_s": sum(r["cpu_s"] for r in runs),
        "cpu_s_spent": sum(r["cpu_s_spent"] for r in runs),
        "wall_s": sum(r["wall_s"] for r in runs),
        "steps": sum(r["step"] for r in runs) if family == "cut" else runs[0]["step"],
        "per_model": [{k: r[k] for k in ("direction", "step", "cpu_s", "cpu_s_spent", "wall_s")} for r in runs],
        "command": commands,
    }


# ------------------------------------------------------------ MUNIT / UNIT
def write_munit_config(checkout: Path, spec, data: Path, dst: Path, save_every: int):
    import yaml

    cfg = yaml.safe_load((checkout / spec["config"]).read_text())
    cfg.pop("new_size", None)
    cfg.update(
        {
            "new_size_a": SIZE,  # test_batch.py reads new_size_a
            "new_size_b": SIZE,
            "crop_image_height": SIZE,
            "crop_image_width": SIZE,
            "data_root": str(data),
            "num_workers": 0,  # data loading in the timed process
            "snapshot_save_iter": save_every,
            "log_iter": 1,
            "image_save_iter": 10**9,  # no sample sheets during the run
            "image_display_iter": 10**9,
        }
    )
    dst.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def run_munit_family(args, spec, out: Path, work: Path, names: list[str]) -> dict:
    cfg_path = work / "emoji64.yaml"
    write_munit_config(args.checkout, spec, args.data, cfg_path, args.save_every)
    trainer = spec["trainer"]
    ckpt_dir = work / "outputs" / "emoji64" / "checkpoints"

    def list_ckpts():
        out_: dict[int, list[str]] = {}
        for f in ckpt_dir.glob("gen_*.pt"):
            step = int(f.stem.split("_")[1])
            out_[step] = [str(f)]
        for f in ckpt_dir.glob("dis_*.pt"):
            step = int(f.stem.split("_")[1])
            if step in out_:
                out_[step].append(str(f))
        return out_

    train_cmd = [
        sys.executable,
        "train.py",
        "--config",
        str(cfg_path),
        "--output_path",
        str(work),
        "--trainer",
        trainer,
    ]
    res = train_with_budget(
        train_cmd,
        args.checkout,
        args.budget_min * 60,
        work / "train.log",
        r"Iteration: (\d+)/",
        list_ckpts,
        # gen_ is written first, then dis_: both must be there and load
        lambda files: len(files) == 2 and loads(files),
    )
    gen = next(f for f in res["files"] if Path(f).name.startswith("gen_"))
    commands = [" ".join(train_cmd)]
    for a2b, sub, folder in ((1, "a2b", "testA"), (0, "b2a", "testB")):
        dst = work / f"test_{sub}"
        test_cmd = [
            sys.executable,
            "test_batch.py",
            "--config",
            str(cfg_path),
            "--input_folder",
            str(args.data / folder),
            "--output_folder",
            str(dst),
            "--checkpoint",
            gen,
            "--a2b",
            str(a2b),
            "--trainer",
            trainer,
            "--output_only",
            "--output_path",
            str(work),
        ]
        if trainer == "MUNIT":
            # one random style per image (the script's default sampling), fixed seed
            test_cmd += ["--num_style", "1", "--seed", str(args.seed)]
        run_test(test_cmd, args.checkout, work / f"test_{sub}.log")
        src = Path(str(dst) + "_00") if trainer == "MUNIT" else dst
        copy_pngs(src, out / sub, names)
        commands.append(" ".join(test_cmd))
    return {
        "cpu_s": res["cpu_s"],
        "cpu_s_spent": res["cpu_s_spent"],
        "wall_s": res["wall_s"],
        "steps": res["step"],
        "command": commands,
    }


def checkout_commit(checkout: Path) -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=checkout,
            capture_output=True,
            text=True,
            check=True,
        )
        return r.stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", choices=sorted(PEERS))
    ap.add_argument("--checkout", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--budget-min", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_emoji"))
    ap.add_argument(
        "--save-every",
        type=int,
        default=10,
        help="checkpoint every N training steps (images for CUT/CycleGAN)",
    )
    ap.add_argument("--seed", type=int, default=1, help="MUNIT test style seed")
    ap.add_argument(
        "--commit",
        default=None,
        help="upstream commit of the checkout (default: git rev-parse HEAD)",
    )
    args = ap.parse_args(argv)
    args.checkout = args.checkout.resolve()
    args.data = args.data.resolve()
    spec = PEERS[args.name]

    names = sorted(p.name for p in (args.data / "testA").glob("*.png"))
    names_b = sorted(p.name for p in (args.data / "testB").glob("*.png"))
    if names != names_b:
        raise SystemExit("testA and testB must hold the same file names")

    out = args.out.resolve() / "peers" / args.name
    work = out / "work"
    for sub in ("a2b", "b2a", "work"):
        shutil.rmtree(out / sub, ignore_errors=True)
    work.mkdir(parents=True)

    apply_patch(args.checkout, spec["patch"])
    if spec["family"] == "munit":
        res = run_munit_family(args, spec, out, work, names)
    else:
        res = run_cut_family(args, spec, out, work, names)

    # keep only the checkpoint that was used (the test outputs are in a2b/b2a)
    for d in (work / "results",):
        shutil.rmtree(d, ignore_errors=True)
    run = {
        "name": args.name,
        "cpu_s": round(res["cpu_s"], 1),
        "cpu_s_spent": round(res["cpu_s_spent"], 1),
        "budget_cpu_s_per_model": args.budget_min * 60,
        "wall_s": round(res["wall_s"], 1),
        "steps": res["steps"],
        "commit": args.commit or checkout_commit(args.checkout),
        "patch": spec["patch"],
        "command": res["command"],
        "threads": 1,
        "size": SIZE,
        "n_test": len(names),
    }
    if "per_model" in res:
        run["per_model"] = res["per_model"]
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    print(json.dumps(run, indent=2))


if __name__ == "__main__":
    main()
