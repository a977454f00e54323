#!/usr/bin/python3
"""Per-step time of PyTorch DDP training with lowrank's Python hooks against PyTorch's own hooks.

One run, W local gloo ranks (1 torch thread each), the ResNet-18 of `lowrank train --model
resnet18` (CIFAR variant, 1x28x28 Fashion-MNIST-sized input, 10 classes), SGD. Five
configurations, each its own identically initialised model wrapped in its own DDP instance:

  noop               PyTorch's debugging_hooks.noop_hook: no communication at all (the floor)
  allreduce          DDP's built-in all-reduce (no hook)
  torch_powersgd     PyTorch's powerSGD_hook, rank 4, error feedback, warm start
  lowrank_hook       lowrank.register_ddp_hook(ddp, "powersgd", rank=4): C++ hook, DDP default buckets
  lowrank_comm_hook  ddp.register_comm_hook(lowrank.HookState("powersgd", rank=4, module=model),
                     lowrank.comm_hook): the same engine through PyTorch's Python hook API

After --warmup untimed steps per configuration, --rounds rounds each run --steps timed steps of
every configuration in turn (interleaved; the starting configuration rotates from round to round),
so that slow phases of a shared machine hit all configurations alike. A step is forward, loss,
backward (DDP's communication) and the SGD step with zero_grad; its time is the slower rank's.
Reported per configuration: median step ms, overhead over noop, the lowrank / torch_powersgd
overhead ratio (target <= 0.5), bytes one rank hands to collectives per step, DDP bucket count.
A fixed CPU loop (256x256 matmuls) is timed on every rank before and after, and a warning is
printed when a rank's two timings differ by more than 20% (the machine's cores were shared).

  PYTHONPATH=build/python nice /usr/bin/python3 scripts/bench_python_ddp.py --rounds 3 --steps 10
  # over a shaped link (a network namespace whose loopback runs at RATE; needs root):
  PYTHONPATH=build/python scripts/with_slow_link.sh 1gbit -- \\
      /usr/bin/python3 scripts/bench_python_ddp.py --out /tmp/bench_python_ddp_1gbit.md

Rendezvous: MASTER_ADDR (default 127.0.0.1) and MASTER_PORT (default: a free port) are honoured;
gloo is pinned to the loopback interface (GLOO_SOCKET_IFNAME=lo unless already set), which is the
only interface inside with_slow_link.sh's namespace. If `import lowrank` fails, build/python next to
this script is tried. Needs Debian's python3-torch (1.13): hence /usr/bin/python3.

Notes. The data is synthetic (a fixed normal batch per rank and step slot): step time does not
depend on the values. DDP runs with broadcast_buffers=False (lowrank's C++ trainer does not
average BatchNorm buffers either), so noop really communicates nothing. PyTorch 1.13 needs
start_powerSGD_iter >= 2 with error feedback or warm start; its first 2 steps are plain
all-reduces and the third allocates P/Q, so torch_powersgd warms up for at least 3 steps. On gloo,
PyTorch's PowerSGD hook can issue the P/Q all-reduces of different buckets in different orders on
different ranks and then hang or abort ("op.preamble.length <= op.nbytes"), so by default
torch_powersgd runs with ONE bucket (--torch-psgd-buckets single: bucket_cap_mb=1000 and a first
bucket of the same size), which keeps its communication from overlapping backward;
--torch-psgd-buckets default tries DDP's default buckets instead. lowrank's configurations always
use DDP's default buckets (bucket_cap_mb=25, several buckets).
"""

import argparse
import datetime
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
from torch.distributed.algorithms.ddp_comm_hooks.debugging_hooks import noop_hook
from torch.nn.parallel import DistributedDataParallel as DDP

try:
    import lowrank
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "python"))
    import lowrank

CONFIGS = ("noop", "allreduce", "torch_powersgd", "lowrank_hook", "lowrank_comm_hook")
LOWRANK_CONFIGS = ("lowrank_hook", "lowrank_comm_hook")
IN_CHANNELS, IMAGE_SIZE, CLASSES = 1, 28, 10  # Fashion-MNIST, as `lowrank train --model resnet18`
LR, MOMENTUM = 0.05, 0.9
PSGD_START_ITER = 2  # torch 1.13 refuses <= 1 with error feedback or warm start
DDP_DEFAULT_BUCKET_CAP_MB = 25
SINGLE_BUCKET_CAP_MB = 1000  # > the 44.7 MB of ResNet-18 gradients
TARGET_RATIO = 0.5
CONTENTION_TOLERANCE = 0.20


# --- model: mirrors include/lowrank/models/resnet18.h, src/models/resnet18.cpp --------------

def conv(cin, cout, kernel, stride):
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv(cout, cout, 3, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stride-1 stem, no max-pool, BasicBlocks [2, 2, 2, 2], fc."""

    def __init__(self, in_channels, classes):
        super().__init__()
        self.conv1 = conv(in_channels, 64, 3, 1)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}",
                    nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width, 1)))
            cin = width
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_model(seed=0):
    """ResNet-18 initialised as lowrank's init(): Kaiming-normal (fan_out, ReLU) convolutions,
    BatchNorm (1, 0), Linear U(+-1/sqrt(fan_in)); identical for every call with the same seed."""
    model = ResNet18(IN_CHANNELS, CLASSES)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.weight.shape[0] * m.weight.shape[2] * m.weight.shape[3]
                m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.weight.shape[1] ** 0.5
                m.weight.uniform_(-bound, bound, generator=gen)
                m.bias.uniform_(-bound, bound, generator=gen)
    return model


# --- configurations ---------------------------------------------------------------------------

class Config:
    """One configuration: its model, DDP instance, hook state and optimizer."""

    def __init__(self, name, args):
        self.name = name
        self.model = make_model()
        self.single_bucket = name == "torch_powersgd" and args.torch_psgd_buckets == "single"
        cap_mb = SINGLE_BUCKET_CAP_MB if self.single_bucket else DDP_DEFAULT_BUCKET_CAP_MB
        default_first = dist._DEFAULT_FIRST_BUCKET_BYTES
        if self.single_bucket:
            # DDP puts the first 1 MiB of gradients in a bucket of its own when it rebuilds its
            # buckets after step 1, whatever bucket_cap_mb says; this module attribute is read
            # when the Reducer is made.
            dist._DEFAULT_FIRST_BUCKET_BYTES = cap_mb * 1024 * 1024
        try:
            self.ddp = DDP(self.model, bucket_cap_mb=cap_mb, broadcast_buffers=args.broadcast_buffers)
        finally:
            dist._DEFAULT_FIRST_BUCKET_BYTES = default_first
        self.cap_mb = cap_mb
        self.psgd_state = None
        self.lowrank_state = None
        if name == "noop":
            self.ddp.register_comm_hook(None, noop_hook)
        elif name == "torch_powersgd":
            self.psgd_state = psgd.PowerSGDState(
                process_group=None, matrix_approximation_rank=args.rank,
                start_powerSGD_iter=PSGD_START_ITER, min_compression_rate=2,
                use_error_feedback=True, warm_start=True)
            self.ddp.register_comm_hook(self.psgd_state, psgd.powerSGD_hook)
        elif name == "lowrank_hook":
            self.lowrank_state = lowrank.register_ddp_hook(self.ddp, "powersgd", rank=args.rank)
        elif name == "lowrank_comm_hook":
            self.lowrank_state = lowrank.HookState("powersgd", rank=args.rank, module=self.model)
            self.ddp.register_comm_hook(self.lowrank_state, lowrank.comm_hook)
        self.optimizer = torch.optim.SGD(self.ddp.parameters(), lr=LR, momentum=MOMENTUM)
        self.numel = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.steps_run = 0
        self.skipped = 0

    def step(self, xb, yb):
        F.cross_entropy(self.ddp(xb), yb).backward()
        if self.lowrank_state is not None and self.lowrank_state.last_step_skipped():
            self.skipped += 1  # a NaN/Inf somewhere: lowrank asks to skip the optimizer step
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_run += 1

    def counters(self):
        """Cumulative traffic counters, for per-step deltas over the timed steps."""
        if self.lowrank_state is not None:
            s = self.lowrank_state.stats()
            return {"bytes": s["bytes_sent"], "dense": s["dense_bytes"], "steps": s["steps"],
                    "skipped": s["skipped_steps"]}
        if self.psgd_state is not None:
            _, before, after = self.psgd_state.compression_stats()
            return {"bytes": 4 * after, "dense": 4 * before, "steps": self.psgd_state.iter,
                    "skipped": 0}
        return {"bytes": 0, "dense": 0, "steps": self.steps_run, "skipped": 0}

    def bucket_count(self):
        data = self.ddp._get_ddp_logging_data()
        sizes = data.get("rebuilt_bucket_sizes") or data.get("bucket_sizes")
        return len(str(sizes).split(",")) if sizes else None


# --- helpers ---------------------------------------------------------------------------------

def contention_probe(iters, repeats=3):
    """Seconds for `iters` 256x256 float matmuls on one thread, all ranks started together;
    the median of `repeats` such timings."""
    a = torch.randn(256, 256, generator=torch.Generator().manual_seed(1))
    b = torch.empty(256, 256)
    torch.mm(a, a, out=b)
    seconds = []
    for _ in range(repeats):
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            torch.mm(a, a, out=b)
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds)


def make_batches(rank, batch_size, slots):
    gen = torch.Generator().manual_seed(1000 + rank)
    return [(torch.randn(batch_size, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE, generator=gen),
             torch.randint(0, CLASSES, (batch_size,), generator=gen)) for _ in range(slots)]


def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def fmt_bytes(b):
    if b is None:
        return "n/a"
    if b >= 2**20:
        return f"{b / 2**20:.2f} MiB"
    if b >= 2**10:
        return f"{b / 2**10:.1f} KiB"
    return f"{b:.0f} B"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- worker ----------------------------------------------------------------------------------

def worker(rank, args, addr, port):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{addr}:{port}", rank=rank,
                            world_size=args.nproc, timeout=datetime.timedelta(seconds=args.timeout))
    say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)
    say(f"bench_python_ddp: torch {torch.__version__}, lowrank from "
        f"{os.path.dirname(lowrank.__file__)}; world size {args.nproc} (gloo via "
        f"{addr}:{port}), 1 thread per rank, batch {args.batch_size} per rank, input "
        f"{IN_CHANNELS}x{IMAGE_SIZE}x{IMAGE_SIZE}, PowerSGD rank {args.rank}")

    probe_before = contention_probe(args.probe_iters)

    configs = []
    for name in args.configs:
        configs.append(Config(name, args))
    say(f"ResNet-18 (CIFAR variant): {configs[0].numel / 1e6:.2f} M parameters in "
        f"{sum(1 for _ in configs[0].model.parameters())} tensors "
        f"({configs[0].numel * 4 / 2**20:.1f} MiB of fp32 gradients)")
    batches = make_batches(rank, args.batch_size, slots=4)

    # Warm-up, config by config (DDP rebuilds its buckets after step 1; torch's PowerSGD
    # all-reduces for PSGD_START_ITER steps and allocates P/Q on the next).
    for c in configs:
        warmup = max(args.warmup, PSGD_START_ITER + 1) if c.name == "torch_powersgd" else args.warmup
        t0 = time.perf_counter()
        for i in range(warmup):
            c.step(*batches[i % len(batches)])
        say(f"  warm-up {c.name}: {warmup} steps, {time.perf_counter() - t0:.2f} s")
    start = {c.name: c.counters() for c in configs}

    times = {c.name: [] for c in configs}          # this rank's step seconds
    round_of = {c.name: [] for c in configs}       # the round of each step
    for r in range(args.rounds):
        k = r % len(configs)
        t_round = time.perf_counter()
        for c in configs[k:] + configs[:k]:
            for i in range(args.steps):
                xb, yb = batches[i % len(batches)]
                t0 = time.perf_counter()
                c.step(xb, yb)
                times[c.name].append(time.perf_counter() - t0)
                round_of[c.name].append(r)
        say(f"  round {r + 1}/{args.rounds}: {time.perf_counter() - t_round:.2f} s")
    end = {c.name: c.counters() for c in configs}
    buckets = {c.name: c.bucket_count() for c in configs}
    lowrank_buckets = {c.name: len(c.lowrank_state.bucket_names()) for c in configs
                       if c.lowrank_state is not None}
    skipped_opt = {c.name: c.skipped for c in configs}

    probe_after = contention_probe(args.probe_iters)

    gathered = [None] * args.nproc
    dist.all_gather_object(gathered, {"times": times, "probe": (probe_before, probe_after)})
    if rank == 0:
        report(args, configs, gathered, round_of, start, end, buckets, lowrank_buckets,
               skipped_opt, addr)
    dist.barrier()
    # DDP/hook states first (lowrank's communication threads), then the process group.
    del configs
    dist.destroy_process_group()


def report(args, configs, gathered, round_of, start, end, buckets, lowrank_buckets, skipped_opt,
           addr):
    timed = args.rounds * args.steps
    lines = []
    out = lambda s="": (print(s, flush=True), lines.append(s))  # noqa: E731

    stats = {}
    for c in configs:
        # A step's time is the slower rank's (the ranks are in lockstep through DDP's collectives).
        per_step = [max(g["times"][c.name][i] for g in gathered) for i in range(timed)]
        by_round = [statistics.median(t for t, r in zip(per_step, round_of[c.name]) if r == k)
                    for k in range(args.rounds)]
        d_bytes = end[c.name]["bytes"] - start[c.name]["bytes"]
        d_dense = end[c.name]["dense"] - start[c.name]["dense"]
        if c.name == "allreduce":
            d_bytes = d_dense = 4 * c.numel * timed
        elif c.name == "noop":
            d_dense = 4 * c.numel * timed
        stats[c.name] = {
            "median_ms": statistics.median(per_step) * 1e3,
            "round_min_ms": min(by_round) * 1e3, "round_max_ms": max(by_round) * 1e3,
            "bytes_per_step": d_bytes / timed, "dense_per_step": d_dense / timed,
            "counted_steps": end[c.name]["steps"] - start[c.name]["steps"],
            "skipped": end[c.name]["skipped"] - start[c.name]["skipped"],
        }

    noop = stats.get("noop", {}).get("median_ms")
    torch_overhead = None
    if noop is not None and "torch_powersgd" in stats:
        torch_overhead = stats["torch_powersgd"]["median_ms"] - noop

    header = ["config", "DDP buckets", "median step ms", "round medians ms (min-max)",
              "overhead vs noop ms", "overhead / torch_powersgd overhead", "bytes sent / step",
              "dense / sent"]
    rows, ratios = [], {}
    for c in configs:
        s = stats[c.name]
        overhead = None if noop is None else s["median_ms"] - noop
        ratio = None
        if overhead is not None and torch_overhead is not None and c.name != "noop":
            ratio = overhead / torch_overhead if torch_overhead > 0 else None
            if c.name in LOWRANK_CONFIGS:
                ratios[c.name] = ratio
        nb = buckets[c.name]
        bucket_cell = "n/a" if nb is None else str(nb)
        if c.name == "torch_powersgd" and c.single_bucket:
            bucket_cell += " (forced single)"
        if c.name in lowrank_buckets and lowrank_buckets[c.name] != nb:
            bucket_cell += f" (lowrank saw {lowrank_buckets[c.name]})"
        sent = s["bytes_per_step"]
        rows.append([
            c.name, bucket_cell, fmt(s["median_ms"]),
            f"{fmt(s['round_min_ms'])}-{fmt(s['round_max_ms'])}",
            "0 (baseline)" if c.name == "noop" else fmt(overhead),
            "1 (reference)" if c.name == "torch_powersgd" else
            ("-" if c.name == "noop" else fmt(ratio, 2)),
            fmt_bytes(sent),
            "-" if not sent else f"{s['dense_per_step'] / sent:.1f}x",
        ])

    out()
    out(f"## bench_python_ddp: ResNet-18, W={args.nproc} gloo ranks, 1 thread/rank, "
        f"batch {args.batch_size}/rank")
    out()
    out(f"torch {torch.__version__}; MASTER_ADDR {addr}; {args.warmup} warm-up steps "
        f"(torch_powersgd >= {PSGD_START_ITER + 1}); {args.rounds} interleaved rounds x "
        f"{args.steps} timed steps per config; PowerSGD rank {args.rank}, min_compression_rate 2, "
        f"error feedback, warm start; broadcast_buffers={args.broadcast_buffers}; "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
    out()
    out(markdown_table(header, rows))
    out()
    for name, ratio in ratios.items():
        verdict = "n/a" if ratio is None else ("meets" if ratio <= TARGET_RATIO else "misses")
        if ratio is not None and ratio < 0:
            verdict += f"; {name} measured faster than noop: its overhead is within the noise"
        out(f"- {name} overhead / torch_powersgd overhead = {fmt(ratio, 2)} "
            f"(target <= {TARGET_RATIO}: {verdict})")
    if torch_overhead is not None and torch_overhead <= 0:
        out(f"- torch_powersgd is not slower than noop ({fmt(torch_overhead, 2)} ms): "
            "overhead ratios are undefined (n/a)")
    out("- bytes sent / step: what one rank hands to collectives per step; lowrank: its stats() "
        "(bytes_sent delta); torch_powersgd: 4 x PowerSGDState.total_numel_after_compression delta "
        "= sum over compressed matrices of (m+n)*rank*4 plus 4*numel of the dense tensors; "
        "allreduce: 4 x parameters; noop: nothing.")
    for c in configs:
        s = stats[c.name]
        if c.name in LOWRANK_CONFIGS or c.name == "torch_powersgd":
            if s["counted_steps"] != timed:
                out(f"- note: {c.name} counted {s['counted_steps']} steps over {timed} timed DDP "
                    "steps (bytes per step are per DDP step)")
        if s["skipped"] or skipped_opt.get(c.name):
            out(f"- WARNING: {c.name} skipped {s['skipped']} step(s) (non-finite gradients); "
                f"optimizer steps skipped: {skipped_opt.get(c.name, 0)}")
    if any(c.name == "torch_powersgd" and c.single_bucket for c in configs):
        out(f"- torch_powersgd runs with ONE DDP bucket (bucket_cap_mb={SINGLE_BUCKET_CAP_MB}, first "
            "bucket the same): on gloo PyTorch's PowerSGD hook can issue the P/Q all-reduces of "
            "different buckets in different orders on different ranks and hang or abort "
            "(op.preamble.length <= op.nbytes); with one bucket its communication cannot overlap "
            "backward. lowrank's configs use DDP's default buckets (bucket_cap_mb=25).")
    warn = False
    probe_cells = []
    for r, g in enumerate(gathered):
        before, after = g["probe"]
        change = after / before - 1
        probe_cells.append(f"rank {r}: {before * 1e3:.0f} ms before, {after * 1e3:.0f} ms after "
                           f"({change:+.0%})")
        warn |= abs(change) > CONTENTION_TOLERANCE
    out(f"- contention probe (median of 3 x {args.probe_iters} 256x256 matmuls, all ranks at "
        "once): "
        + "; ".join(probe_cells))
    if warn:
        out(f"- WARNING: a rank's CPU probe changed by more than {CONTENTION_TOLERANCE:.0%} between "
            "before and after: the cores were shared or throttled during the run; distrust the "
            "timings and rerun on a quiet machine.")
    with open(args.out, "w") as f:
        f.write("\n".join(lines).lstrip("\n") + "\n")
    print(f"wrote {args.out}", flush=True)


# --- main ------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--nproc", type=int, default=2, help="local ranks W (default 2)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size per rank (default 8)")
    p.add_argument("--rank", type=int, default=4, help="PowerSGD rank (default 4)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per config (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per config per round (default 10)")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma list, run in this order (default: {','.join(CONFIGS)})")
    p.add_argument("--torch-psgd-buckets", choices=("single", "default"), default="single",
                   help="torch_powersgd's DDP buckets: one (default; see notes) or DDP's default")
    p.add_argument("--broadcast-buffers", action="store_true",
                   help="DDP broadcast_buffers=True (default False, as lowrank's trainer)")
    p.add_argument("--probe-iters", type=int, default=200,
                   help="256x256 matmuls in the contention probe (default 200)")
    p.add_argument("--timeout", type=int, default=600, help="gloo timeout, seconds (default 600)")
    p.add_argument("--out", default="/tmp/bench_python_ddp.md",
                   help="Markdown report (default /tmp/bench_python_ddp.md)")
    args = p.parse_args()
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.configs if c not in CONFIGS]
    if bad or not args.configs or len(set(args.configs)) != len(args.configs):
        p.error(f"--configs: unknown or repeated {bad or args.configs}; valid: {', '.join(CONFIGS)}")
    for name in ("nproc", "batch_size", "rank", "rounds", "steps", "probe_iters", "timeout"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main():
    args = parse_args()
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ["MASTER_PORT"]) if "MASTER_PORT" in os.environ else free_port()
    # All ranks are local: keep gloo on loopback (inside with_slow_link.sh's namespace lo is the
    # only interface, and the host name may resolve to an address that does not exist there).
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(args, addr, port), nprocs=args.nproc, join=True)


if __name__ == "__main__":
    main()
