"""Training and translation throughput of unitgan, measured against this machine's convolution peak.

    python benchmarks/speed.py                 # the performance table (slow on a CPU)
    python benchmarks/speed.py --quick         # tiny sizes: checks that the script works
    python benchmarks/speed.py --precisions fp32 --modes eager --rows unit_master:256:1
    python benchmarks/speed.py --precisions fp32 --modes eager optim.fused=false --rows demo:32:4

Positional ``key=value`` arguments override the config of every unitgan row, after ``optim.fused=true``
(fused Adam, the rows' base setting); ``--rows`` takes its own per-row overrides. The table is printed as the
rows finish and kept in ``<out>/table.md``; ``<out>/results.json`` holds the machine, the conv peaks and
every row.

Every row runs in a fresh subprocess, so its peak memory is its own. A row reports:

- ``step_s``: median wall time of one training step (one E/G update + one D update) after warm-up;
  batches are random tensors already in memory (the data pipeline is not timed);
- ``cpu_s``: CPU seconds the row's process spent per step, all threads together (with one thread, a
  figure that other jobs on the machine disturb much less than the wall time);
- ``img_s``: training images per second (both domains: 2 x batch per step);
- ``tr_img_s``: translation images per second (``Translator.translate``, inference mode, same precision);
- ``tflop``: FLOPs of one training step, counted by ``torch.utils.flop_counter.FlopCounterMode``
  (convolutions and matmuls, forward and backward of both updates);
- ``util``: achieved FLOP/s as a fraction of the peak of a large 3x3 convolution (256 channels, 64x64,
  batch 1, forward) measured by this script in the same run and the same precision (best of NCHW/NHWC);
- ``util CPU``: the same ratio with CPU seconds in place of wall seconds (step and peak alike), which
  other jobs on a shared machine disturb less;
- ``--conv-bound`` (CPU): after the timed steps, a few more steps under ``torch.profiler`` give the time
  spent inside convolution operators (forward and backward, self time of every operator named ``*conv*``):
  ``conv_s`` per step, its share of the time inside all operators, and ``conv-bound util`` = FLOPs / ``conv_s`` / peak,
  the util the step would reach if everything but its convolutions took no time (the profiler adds a few
  microseconds per call, so it is slightly low). A target above it needs faster convolution kernels, not a
  leaner step;
- ``peak_mib``: on CPU the peak resident set of the row's process (``VmHWM`` from /proc/self/status, which
  ``ru_maxrss`` agrees with), Python and torch included; on CUDA ``torch.cuda.max_memory_allocated``.

- ``busy``: busy single-threaded processes (``while True: pass``) the script ran beside the row
  (``--compete 0 1``: the loaded-machine row next to the plain one); the conv peak is measured without them;
- ``OMP wait``: ``unitgan`` = ``OMP_WAIT_POLICY=PASSIVE``, what the ``unitgan`` command sets before torch
  loads; ``spin`` = libgomp's default, where idle OpenMP threads busy-wait (``--omp-wait unitgan spin``).

The default rows include the ``demo`` step (32x32, batch 4) and the UNIT-DA digits step
(``da_mnist2mnistm_reduced``, 32x32, batch 32, random images and labels).

``--authors`` adds rows that EMULATE the authors' (master branch) iteration with this project's networks:
D update first, re-running the generators with autograd on; real and fake judged in separate passes;
G update with one decoder call per output and the discriminators' weight gradients computed too; fp32.
It is an emulation for comparing on this machine, not the authors' code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_output_args, export  # noqa: E402

from unitgan.openmp_env import set_openmp_defaults  # noqa: E402

ROWS = ["unit_master:256:1", "unit_paper:256:1", "small:64:8", "demo:32:4", "da_mnist2mnistm_reduced:32:32"]
QUICK_ROWS = ["small:16:2"]


# ---------------------------------------------------------------------------------------------------------
# Measurements (run inside a child process)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mib(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"peak_mib": torch.cuda.max_memory_allocated(device) / 2**20, "peak_kind": "cuda_max_allocated"}
    hwm = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"peak_mib": hwm if hwm is not None else maxrss, "maxrss_mib": maxrss, "peak_kind": "VmHWM"}


def conv_peak(device: torch.device, precision: str, reps: int, budget_s: float = 20.0) -> dict[str, float]:
    """GFLOP/s of a large 3x3 convolution (256 -> 256 channels, 64x64, batch 1, forward), best layout.

    Stops a layout early once ``budget_s`` is spent (emulated bf16 on a CPU takes tens of seconds per call)."""
    from unitgan.runtime import autocast

    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device)
    x = torch.randn(1, 256, 64, 64, device=device)
    flop = 2 * 256 * 256 * 9 * 64 * 64
    best, best_cpu = {}, {}
    for layout in ("nchw", "nhwc"):
        fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
        c, xi = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        times: list[float] = []
        cpu: list[float] = []
        t_layout = time.perf_counter()
        with torch.inference_mode(), autocast(device, precision):
            for i in range(reps + 1):
                _sync(device)
                t, t_cpu = time.perf_counter(), time.process_time()
                c(xi)
                _sync(device)
                if i:  # the first call is warm-up
                    times.append(time.perf_counter() - t)
                    cpu.append(time.process_time() - t_cpu)
                if time.perf_counter() - t_layout > budget_s and times:
                    break
        best[layout] = flop / min(times) / 1e9
        best_cpu[layout] = flop / min(cpu) / 1e9
    return {
        "peak_gflops": max(best.values()),
        "peak_cpu_gflops": max(best_cpu.values()),  # per CPU second (all threads together)
        **{f"peak_{k}_gflops": v for k, v in best.items()},
    }


def convolution_seconds(step, n: int) -> dict[str, float]:
    """Run ``step()`` ``n`` times under ``torch.profiler`` (CPU activity). Per step: seconds inside convolution
    operators (``conv_s``: the self time of every operator whose name contains "conv", forward and backward,
    oneDNN's kernels and torch's own), seconds inside all operators (``ops_s``: every operator's self time,
    so the Python between operators is not in it), and aten operator calls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    events = prof.key_averages()
    conv_us = sum(e.self_cpu_time_total for e in events if "conv" in e.key.lower())
    ops_us = sum(e.self_cpu_time_total for e in events)
    calls = sum(e.count for e in events if e.key.startswith("aten::"))
    return {"conv_s": conv_us / 1e6 / n, "ops_s": ops_us / 1e6 / n, "aten_calls": calls / n}


def _batch(cfg, device: torch.device, seed: int) -> tuple[torch.Tensor, ...]:
    """A training step's batch: ``(x_a, x_b)``, or ``(x_a, y_a, x_b)`` for UNIT-DA (random source labels)."""
    g = torch.Generator().manual_seed(seed)
    n, s, m = cfg.data.batch_size, cfg.data.crop_size, cfg.model
    x_a = (torch.rand(n, m.input_nc_a, s, s, generator=g) * 2 - 1).to(device)
    x_b = (torch.rand(n, m.input_nc_b, s, s, generator=g) * 2 - 1).to(device)
    if cfg.da.enabled:
        return x_a, torch.randint(0, cfg.da.n_classes, (n,), generator=g).to(device), x_b
    return x_a, x_b


def authors_step(trainer, x_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
    """EMULATION of the authors' iteration (see the module docstring); fp32 only."""
    from unitgan.losses import GenOutputs, gan_d_loss, unit_gen_loss
    from unitgan.runtime import set_requires_grad

    cfg, g, n = trainer.cfg, trainer.gen, x_a.shape[0]
    gt = cfg.model.gan_type
    x_a, x_b = trainer.prepare(x_a), trainer.prepare(x_b)
    trainer.train()
    # D update: the generators run again, with autograd on (their graph is built, then detached)
    set_requires_grad(trainer.dis_a, True)
    set_requires_grad(trainer.dis_b, True)
    mu_a, mu_b = g.encode(x_a, "a"), g.encode(x_b, "b")
    x_ba = g.decode(g.sample(mu_b), "a")
    x_ab = g.decode(g.sample(mu_a), "b")
    loss_d_a = gan_d_loss(trainer.dis_a(x_a), trainer.dis_a(x_ba.detach()), gt)
    loss_d_b = gan_d_loss(trainer.dis_b(x_b), trainer.dis_b(x_ab.detach()), gt)
    loss_d = cfg.loss.gan_w * (loss_d_a + loss_d_b)
    trainer.opt_dis.zero_grad(set_to_none=True)
    loss_d.backward()
    trainer.opt_dis.step()
    # G update: one decoder call per output; discriminator weight gradients are computed and thrown away
    mu_a, mu_b = g.encode(x_a, "a"), g.encode(x_b, "b")
    z_a, z_b = g.sample(mu_a), g.sample(mu_b)
    x_aa, x_bb = g.decode(z_a, "a"), g.decode(z_b, "b")
    x_ba, x_ab = g.decode(z_b, "a"), g.decode(z_a, "b")
    mu_ba, mu_ab = g.encode(x_ba, "a"), g.encode(x_ab, "b")
    x_aba, x_bab = g.decode(g.sample(mu_ab), "a"), g.decode(g.sample(mu_ba), "b")
    out = GenOutputs(x_a, x_b, mu_a, mu_b, x_aa, x_bb, x_ab, x_ba, mu_ab, mu_ba, x_aba, x_bab)
    loss_g, terms = unit_gen_loss(out, trainer.dis_b(x_ab), trainer.dis_a(x_ba), cfg.loss, gt)
    trainer.opt_gen.zero_grad(set_to_none=True)
    loss_g.backward()
    trainer.opt_gen.step()
    trainer.sched_gen.step()
    trainer.sched_dis.step()
    del n
    return {"loss_g": loss_g.detach(), "loss_d": loss_d.detach(), **terms}


def _build_cfg(spec: dict):
    from unitgan.config import load_config, load_yaml

    size, batch = spec["size"], spec["batch"]
    # UNIT-DA presets keep their labelled-array source (never read here: the batches are random tensors)
    da = load_yaml(spec["config"]).get("da", {}).get("enabled", False)
    source = [] if da else ["data.source=synthetic", "data.load_size=0"]
    overrides = [
        *source,
        f"data.crop_size={size}",
        f"data.batch_size={batch}",
        f"train.precision={spec['precision']}",
        f"train.channels_last={str(spec['channels_last']).lower()}",
        f"train.compile={str(spec['compile']).lower()}",
        f"train.device={spec['device']}",
        *spec.get("overrides", []),
    ]
    if spec.get("tiny"):
        overrides += ["model.ch=8", "model.dis_ch=8", "model.dis_n_layers=2", "model.n_res=2"]
    return load_config(spec["config"], overrides)


def count_flops(spec: dict) -> float:
    """FLOPs of one training step (fp32 eager: the count does not depend on precision or compilation)."""
    from torch.utils.flop_counter import FlopCounterMode

    from unitgan.train.registry import trainer_class

    # shapes only, no compute: the networks live on the meta device (the config itself names a real device)
    spec = {**spec, "precision": "fp32", "compile": False, "device": "cpu", "channels_last": False}
    # the model's work: nearest x2 + conv 5x5 counted as computed directly, whichever route a row takes
    spec["overrides"] = [*spec.get("overrides", []), "train.upsample_impl=direct"]
    cfg = _build_cfg(spec)
    device = torch.device("meta")
    trainer = trainer_class(cfg)(cfg, device)
    batch = tuple(x.to(device) for x in _batch(cfg, torch.device("cpu"), 0))
    step = (lambda: authors_step(trainer, *batch)) if spec["authors"] else (lambda: trainer.train_step(*batch))
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def run_row(spec: dict) -> dict:
    from unitgan.inference import Translator
    from unitgan.runtime import configure_backends
    from unitgan.train.registry import trainer_class

    device = torch.device(spec["device"])
    start_mib = _peak_memory_mib(device)["peak_mib"] if device.type == "cpu" else 0.0  # torch + unitgan loaded
    cfg = _build_cfg(spec)
    configure_backends(device, cfg.train.deterministic)
    torch.manual_seed(0)
    trainer = trainer_class(cfg)(cfg, device)
    batch = _batch(cfg, device, 1)
    step = (lambda: authors_step(trainer, *batch)) if spec["authors"] else (lambda: trainer.train_step(*batch))
    times, cpu_times = [], []
    t_first = None
    for i in range(spec["warmup"] + spec["steps"]):
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        stats = step()
        _sync(device)
        dt = time.perf_counter() - t
        if i == 0:
            t_first = dt
        if i >= spec["warmup"]:
            times.append(dt)
            cpu_times.append(time.process_time() - c)
    finite = all(bool(torch.isfinite(v).all()) for v in stats.values())
    bound = convolution_seconds(step, spec["steps"]) if spec.get("conv_bound") else {}

    # translation throughput: batched, inference mode, same precision (and the same compiled modules)
    tb = spec["translate_batch"]
    translator = Translator(trainer.gen, cfg, device, cfg.train.precision)
    x = _batch(cfg, device, 2)[0][:1].expand(tb, -1, -1, -1).contiguous()
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    tr_times = []
    for i in range(spec["translate_reps"] + 1):
        _sync(device)
        t = time.perf_counter()
        translator.translate(x, "a2b")
        _sync(device)
        if i:
            tr_times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    return {
        "step_s": step_s,
        "step_min_s": min(times),
        "cpu_s": statistics.median(cpu_times),  # CPU seconds of this process per step (all its threads)
        "first_step_s": t_first,
        "img_s": 2 * cfg.data.batch_size / step_s,
        "tr_img_s": tb / statistics.median(tr_times),
        "finite": finite,
        "start_mib": start_mib,
        **bound,
        **_peak_memory_mib(device),
    }


def _child(args: argparse.Namespace) -> None:
    spec = json.loads(args.child)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if spec["job"] == "peak":
        out = conv_peak(device, spec["precision"], spec["reps"])
    elif spec["job"] == "flops":
        out = {"flop": count_flops(spec)}
    else:
        out = run_row(spec)
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------------------
# The parent: one subprocess per measurement, a table at the end


def _spawn(spec: dict, timeout: float, env: dict[str, str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}


@contextlib.contextmanager
def competing(n: int):
    """``n`` busy single-threaded processes (``while True: pass``) running while the block runs: the
    loaded-machine rows (another user's job on the same cores)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def child_env(wait: str) -> dict[str, str]:
    """The rows' environment: ``unitgan`` = the OpenMP wait policy the CLI sets (PASSIVE unless the user set
    one); ``spin`` = libgomp's own default (idle threads spin before sleeping)."""
    env = dict(os.environ)
    if wait == "spin":
        env.pop("OMP_WAIT_POLICY", None)
        env.pop("GOMP_SPINCOUNT", None)
    else:
        set_openmp_defaults(env)
    return env


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [
        f"CPU {cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"oneDNN bf16 {'yes' if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'no (emulated, slow)'}"
    ]
    if device.type == "cuda":
        parts.append(f"GPU {torch.cuda.get_device_name(device)}")
    return "; ".join(parts)


def step_label(job: dict) -> str:
    """What a row times: unitgan's step with the row's own overrides, or the emulated authors' step."""
    return "authors' step (emulated)" if job["authors"] else " ".join(["unitgan", *job["row_set"]])


def print_conv_bound(results: list[dict], threads: int, say=print) -> None:
    """The ``--conv-bound`` table: per row, the time inside convolutions and the util it allows."""
    say("\n| config | size | batch | step | threads | NHWC | busy | s/step | s/step in operators (profiled) "
          "| conv s/step | conv share | aten calls/step | util | conv-bound util |")  # fmt: skip
    say("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "conv_s" not in r:
            continue
        say(
            f"| {r['config']} | {r['size']} | {r['batch']} | {step_label(r)} | {threads} "
            f"| {'yes' if r['channels_last'] else 'no'} | {r['compete']} | {r['step_s']:.4f} | {r['ops_s']:.4f} | {r['conv_s']:.4f} "
            f"| {r['conv_s'] / r['ops_s']:.0%} | {r['aten_calls']:.0f} | {r['util']:.0%} | {r['conv_bound_util']:.0%} |",
            flush=True,
        )


def _load() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rows",
        nargs="+",
        default=None,
        help="config:size:batch[:KEY=VALUE,...] (default: the README table); the overrides apply to that row only",
    )
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    p.add_argument("--channels-last", choices=["auto", "on", "off", "both"], default="auto",
                   help="auto: channels_last for bf16/fp16 and on CUDA, NCHW for fp32 on a CPU")  # fmt: skip
    p.add_argument("--authors", action="store_true", help="add the emulated authors' step (fp32, eager)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per row (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--translate-batch", type=int, default=8)
    p.add_argument("--translate-reps", type=int, default=3)
    p.add_argument("--peak-reps", type=int, default=5)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per row before it is abandoned")
    p.add_argument("--compete", type=int, nargs="+", default=[0],
                   help="busy single-threaded processes beside a row; several values: each row once per value")  # fmt: skip
    p.add_argument("--omp-wait", nargs="+", choices=["unitgan", "spin"], default=["unitgan"],
                   help="unitgan: OMP_WAIT_POLICY=PASSIVE as the CLI sets it; spin: libgomp's default (idle "
                   "threads spin); several values: each row once per value")  # fmt: skip
    p.add_argument(
        "--conv-bound",
        action="store_true",
        help="CPU: also profile each row's convolutions (time inside them, and the util they bound)",
    )
    p.add_argument("--quick", action="store_true", help="tiny networks and sizes: check that the script works")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    add_output_args(p, "speed", "config overrides of the unitgan rows (after optim.fused=true)")
    args = p.parse_args(argv)
    args.set = ["optim.fused=true", *args.overrides]
    if args.child is not None:
        _child(args)
        return

    from unitgan.runtime import resolve_device

    device = resolve_device(args.device)
    rows = args.rows or (QUICK_ROWS if args.quick else ROWS)
    if args.quick:
        args.steps, args.warmup, args.translate_reps, args.peak_reps = 2, 1, 1, 1
    if args.conv_bound and device.type != "cpu":
        p.error("--conv-bound profiles CPU operators: run it with --device cpu")
    base = {"device": str(device), "threads": args.threads, "tiny": args.quick, "conv_bound": args.conv_bound}
    lines: list[str] = []

    def say(text: str = "", **kwargs) -> None:  # the screen, and table.md
        print(text, **kwargs)
        if kwargs.get("file") is None:
            lines.append(text)

    say(f"# machine: {machine_description(device)}; threads {args.threads or torch.get_num_threads()}")
    say(f"# unitgan rows use: {' '.join(args.set) or 'the presets as they are'}; batches are random tensors")

    peaks = {}
    for prec in args.precisions:
        spec = {**base, "job": "peak", "precision": prec, "reps": args.peak_reps}
        peaks[prec] = _spawn(spec, args.timeout, child_env(args.omp_wait[0]))
        pk = peaks[prec]
        say(f"# conv peak {prec}: " + (pk.get("error") or f"{pk['peak_gflops']:.1f} GFLOP/s "
              f"(NCHW {pk['peak_nchw_gflops']:.1f}, NHWC {pk['peak_nhwc_gflops']:.1f}); "
              f"{pk['peak_cpu_gflops']:.1f} GFLOP per CPU second; load {_load()}"), flush=True)  # fmt: skip

    def layouts(prec: str) -> list[bool]:
        if args.channels_last == "both":
            return [False, True]
        if args.channels_last in ("on", "off"):
            return [args.channels_last == "on"]
        return [prec != "fp32" or device.type == "cuda"]

    jobs = []
    for row in rows:
        config, size, batch, *extra = row.split(":")
        row_set = extra[0].split(",") if extra else []
        r = {"config": config, "size": int(size), "batch": int(batch)}
        if args.authors:  # the authors' code upsamples, pads and convolves: the direct route
            jobs.append({**r, "precision": "fp32", "compile": False, "channels_last": False, "authors": True,
                         "overrides": ["train.upsample_impl=direct"], "row_set": []})  # fmt: skip
        for prec in args.precisions:
            for mode in args.modes:
                for cl in layouts(prec):
                    jobs.append({**r, "precision": prec, "compile": mode == "compiled", "channels_last": cl,
                                 "authors": False, "overrides": [*args.set, *row_set], "row_set": row_set})  # fmt: skip
    # the loaded-machine and wait-policy variants of every row, next to each other
    jobs = [{**j, "compete": c, "omp_wait": w} for j in jobs for c in args.compete for w in args.omp_wait]
    flops: dict[tuple, float] = {}
    header = (
        f"| {'config':<12}| {'size':>4} | {'batch':>5} | {'step':<24}| {'prec':<4} | {'mode':<8} | {'NHWC':<4} "
        f"| {'s/step':>7} | {'CPU s':>7} | {'img/s':>6} | {'transl. img/s':>13} | {'GFLOP/step':>10} | {'util':>5} | {'util CPU':>8} "
        f"| {'peak MiB':>8} | {'start MiB':>9} | {'busy':>4} | {'OMP wait':<8} | {'load avg':<14} |"
    )
    say(header)
    say("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|", flush=True)
    results = []
    for job in jobs:
        # a row's own overrides can change the network (model.ch=8): its FLOPs are counted with them
        key = (job["config"], job["size"], job["batch"], job["authors"], tuple(job["row_set"]))
        if key not in flops:
            fl = _spawn({**base, **job, "job": "flops"}, args.timeout, dict(os.environ))
            if "error" in fl:
                say(f"# FLOP count failed for {key}: {fl['error']}", file=sys.stderr, flush=True)
            flops[key] = fl.get("flop", float("nan"))
        spec = {
            **base,
            **job,
            "job": "row",
            "steps": args.steps,
            "warmup": args.warmup,
            "translate_batch": args.translate_batch,
            "translate_reps": args.translate_reps,
        }
        load_before = _load()
        with competing(job["compete"]):
            res = _spawn(spec, args.timeout, child_env(job["omp_wait"]))
        res.update(job, flop=flops[key], load=load_before)
        results.append(res)
        step_kind = step_label(job)
        mode = "compiled" if job["compile"] else "eager"
        lead = (
            f"| {job['config']:<12}| {job['size']:>4} | {job['batch']:>5} | {step_kind:<24}| {job['precision']:<4} "
            f"| {mode:<8} | {'yes' if job['channels_last'] else 'no':<4} "
        )
        if "error" in res:
            say(lead + f"| error: {res['error']} |", flush=True)
            continue
        pk = peaks.get(job["precision"], {}).get("peak_gflops", float("nan"))
        util = res["flop"] / res["step_s"] / 1e9 / pk
        pk_cpu = peaks.get(job["precision"], {}).get("peak_cpu_gflops", float("nan"))
        res["util"], res["util_cpu"] = util, res["flop"] / res["cpu_s"] / 1e9 / pk_cpu
        if "conv_s" in res:  # --conv-bound: the util if everything but the convolutions took no time
            res["conv_bound_util"] = res["flop"] / res["conv_s"] / 1e9 / pk
        say(
            lead + f"| {res['step_s']:>7.2f} | {res['cpu_s']:>7.2f} | {res['img_s']:>6.2f} | {res['tr_img_s']:>13.2f} "
            f"| {res['flop'] / 1e9:>10.1f} | {util:>5.0%} | {res['util_cpu']:>8.0%} | {res['peak_mib']:>8.0f} | {res['start_mib']:>9.0f} "
            f"| {job['compete']:>4} | {job['omp_wait']:<8} | {load_before:<14} |"
            + ("" if res["finite"] else " NON-FINITE LOSS"),
            flush=True,
        )
    if args.conv_bound:
        print_conv_bound(results, args.threads or torch.get_num_threads(), say)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"machine": machine_description(device), "peaks": peaks, "rows": results}, indent=2)
    )
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    export(args.out, args.export, ["results.json", "table.md"])


if __name__ == "__main__":
    main()
