#!/usr/bin/python3
"""PyTorch DDP reference timings for `lowrank train --model resnet18`.

Runs the same workload as lowrank (CIFAR-style ResNet-18 on real Fashion-MNIST, SGD lr 0.05
momentum 0.9, batch 64 per rank, gloo over loopback) under PyTorch's DistributedDataParallel with
its built-in communication hooks, so that lowrank can print lowrank/PyTorch step-time ratios.

  /usr/bin/python3 scripts/bench_pytorch_ddp.py --nproc 2 --hooks allreduce,powersgd4 --json out.json
  /usr/bin/python3 scripts/bench_pytorch_ddp.py --kernel --rounds 5

Needs Debian's python3-torch (1.13) and dataset-fashion-mnist; hence /usr/bin/python3, not the
python3 first on PATH.

DDP mode (default): --nproc local processes, one gloo group; per hook a fresh identically seeded
model is wrapped in DDP, trained --warmup untimed and --steps timed steps; rank 0 reports medians.
Kernel mode (--kernel): one process, one real gradient, PyTorch's PowerSGD hook timed on it directly
against a plain all-reduce of the same flat bucket and a gradient-sized copy (the memory floor).
"""

import argparse
import datetime
import gzip
import json
import os
import socket
import statistics
import struct
import sys
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
from torch.distributed.algorithms.ddp_comm_hooks.debugging_hooks import noop_hook
from torch.nn.parallel import DistributedDataParallel as DDP

DATA_DIR = "/usr/share/datasets/fashion-mnist"
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
# Fashion-MNIST training-set mean and standard deviation of pixels scaled to [0, 1].
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530

HOOKS = ("allreduce", "noop", "fp16", "powersgd1", "powersgd4")
LR, MOMENTUM = 0.05, 0.9
# PyTorch 1.13 refuses start_powerSGD_iter <= 1 with error feedback or warm start. Steps before it
# are plain all-reduces, and the first compressed step allocates and randomises P and Q, so
# PowerSGD rows warm up for at least PSGD_START_ITER + 1 steps whatever --warmup says.
PSGD_START_ITER = 2
DDP_DEFAULT_BUCKET_CAP_MB = 25
SINGLE_BUCKET_CAP_MB = 1000  # > the 44.7 MB (42.6 MiB) of ResNet-18 gradients: one bucket
SINGLE_BUCKET_ROW = "single (serialized, see note)"
SINGLE_BUCKET_NOTE = (
    "on gloo, PyTorch's PowerSGD hook can issue the P/Q all-reduces "
    "of different buckets in different orders on different ranks and then hang or abort, so "
    "PowerSGD rows run with one DDP bucket (bucket_cap_mb=%d and first bucket of the same size); "
    "communication then cannot overlap backward." % SINGLE_BUCKET_CAP_MB
)


# --- model -----------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stride-1 stem, no max-pool, BasicBlocks [2, 2, 2, 2]."""

    def __init__(self, in_channels, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width, 1)))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_model(in_channels, classes):
    torch.manual_seed(0)  # identical on every rank (DDP broadcasts rank 0's weights anyway)
    return ResNet18(in_channels, classes)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# --- data ------------------------------------------------------------------------------------

def dataset_paths():
    paths = [os.path.join(DATA_DIR, name) for name in (TRAIN_IMAGES, TRAIN_LABELS)]
    for path in paths:
        if not os.path.isfile(path):
            sys.exit(f"error: {path} not found; it comes with the Debian package "
                     f"dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    return paths


def read_idx(path):
    """A gzip'ed IDX file of unsigned bytes as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        sys.exit(f"error: {path} is not an IDX file of unsigned bytes")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_shard(rank, world_size):
    """Rank `rank`'s contiguous 1/world_size of the training set, as (N,1,28,28) floats and labels.

    Pixels are scaled to [0, 1] and then normalised as (x - 0.2860) / 0.3530."""
    images_path, labels_path = dataset_paths()
    images, labels = read_idx(images_path), read_idx(labels_path)
    begin, end = rank * len(images) // world_size, (rank + 1) * len(images) // world_size
    x = torch.from_numpy(images[begin:end].astype(np.float32) / 255.0).unsqueeze(1)
    x = (x - PIXEL_MEAN) / PIXEL_STD
    y = torch.from_numpy(labels[begin:end].astype(np.int64))
    return x, y


def batch(x, y, step, batch_size):
    """The step-th batch of the shard, wrapping around at its end."""
    begin = step * batch_size % (len(x) - batch_size + 1)
    return x[begin:begin + batch_size], y[begin:begin + batch_size]


# --- DDP helpers -----------------------------------------------------------------------------

def wrap_ddp(model, single_bucket):
    """DDP around `model`; with single_bucket, all gradients go into one bucket.

    DDP puts the first 1 MiB of gradients in a bucket of their own when it rebuilds buckets after
    the first step, whatever bucket_cap_mb says; its source invites setting
    dist._DEFAULT_FIRST_BUCKET_BYTES to change that, which is read when the Reducer is made."""
    cap_mb = SINGLE_BUCKET_CAP_MB if single_bucket else DDP_DEFAULT_BUCKET_CAP_MB
    default_first = dist._DEFAULT_FIRST_BUCKET_BYTES
    if single_bucket:
        dist._DEFAULT_FIRST_BUCKET_BYTES = cap_mb * 1024 * 1024
    try:
        return DDP(model, bucket_cap_mb=cap_mb), cap_mb
    finally:
        dist._DEFAULT_FIRST_BUCKET_BYTES = default_first


def bucket_count(ddp):
    data = ddp._get_ddp_logging_data()
    sizes = data.get("rebuilt_bucket_sizes") or data["bucket_sizes"]
    return len(sizes.split(","))


def powersgd_state(rank):
    return psgd.PowerSGDState(process_group=None, matrix_approximation_rank=rank,
                              start_powerSGD_iter=PSGD_START_ITER)


def register_hook(ddp, hook):
    """Registers `hook` on `ddp`; returns the PowerSGD rank, or None for the other hooks."""
    if hook == "allreduce":
        return None  # DDP's built-in all-reduce
    if hook == "noop":
        ddp.register_comm_hook(None, noop_hook)
        return None
    if hook == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        return None
    rank = int(hook[len("powersgd"):])
    ddp.register_comm_hook(powersgd_state(rank), psgd.powerSGD_hook)
    return rank


def median_ms(seconds):
    return round(statistics.median(seconds) * 1e3, 3)


# --- DDP mode --------------------------------------------------------------------------------

def bench_hook(hook, x, y, args):
    powersgd = hook.startswith("powersgd")
    ddp, cap_mb = wrap_ddp(make_model(x.shape[1], 10), single_bucket=powersgd)
    psgd_rank = register_hook(ddp, hook)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=MOMENTUM)
    warmup = max(args.warmup, PSGD_START_ITER + 1) if powersgd else args.warmup
    fb, opt = [], []
    for step in range(warmup + args.steps):
        xb, yb = batch(x, y, step, args.batch_size)
        t0 = time.perf_counter()
        # Forward, loss, backward. DDP's backward returns once every bucket is reduced, so this
        # holds the part of the communication that backward did not hide.
        F.cross_entropy(ddp(xb), yb).backward()
        t1 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if step >= warmup:
            fb.append(t1 - t0)
            opt.append(t2 - t1)
    buckets = bucket_count(ddp)
    bucket_note = (SINGLE_BUCKET_ROW if powersgd else
                   f"DDP default, bucket_cap_mb={cap_mb}: {buckets} bucket{'s' * (buckets != 1)}")
    return {
        "hook": hook, "rank": psgd_rank, "world_size": args.nproc, "threads": args.threads,
        "batch_size": args.batch_size,
        "step_ms_median": median_ms([a + b for a, b in zip(fb, opt)]),
        "forward_backward_ms": median_ms(fb), "optimizer_ms": median_ms(opt),
        "steps": args.steps, "warmup": warmup, "bucket_cap_mb": cap_mb,
        "num_buckets": buckets, "buckets": bucket_note,
    }


def ddp_worker(rank, args, addr, port):
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"tcp://{addr}:{port}", rank=rank,
                            world_size=args.nproc,
                            timeout=datetime.timedelta(seconds=args.timeout))
    x, y = load_shard(rank, args.nproc)
    if rank == 0:
        print(f"ResNet-18 (CIFAR variant): {count_params(make_model(x.shape[1], 10)) / 1e6:.2f} M "
              f"parameters; world size {args.nproc}, {args.threads} thread(s) per rank, batch "
              f"{args.batch_size} per rank, {len(x)} examples per shard", flush=True)
    rows = []
    for hook in args.hooks:
        rows.append(bench_hook(hook, x, y, args))
        if rank == 0:
            print(f"  {hook}: done", flush=True)
    if rank == 0:
        print_table(rows, ["hook", "step_ms_median", "forward_backward_ms", "optimizer_ms",
                           "buckets"])
        if any(row["hook"].startswith("powersgd") for row in rows):
            print(f"note: {SINGLE_BUCKET_ROW}: {SINGLE_BUCKET_NOTE}")
        write_json(args.json, rows)
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(args):
    dataset_paths()  # fail here, with the package name, rather than in every worker
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ["MASTER_PORT"]) if "MASTER_PORT" in os.environ else free_port()
    # All workers are local: keep gloo on loopback. Otherwise gloo binds the address the host name
    # resolves to, which does not exist inside a bare network namespace (scripts/with_slow_link.sh).
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(ddp_worker, args=(args, addr, port), nprocs=args.nproc, join=True)


# --- kernel mode -----------------------------------------------------------------------------

def capture_bucket(x, y, args):
    """One real forward/backward of ResNet-18 under DDP with a single bucket.

    Returns the DDP module (it owns the bucket's storage), the GradBucket its hook was given
    (torch 1.13 cannot construct one from Python) and a copy of the gradient in it."""
    ddp, _ = wrap_ddp(make_model(x.shape[1], 10), single_bucket=True)
    captured = []

    def capture(_, bucket):
        captured.append((bucket, bucket.buffer().clone()))
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    ddp.register_comm_hook(None, capture)
    xb, yb = batch(x, y, 0, args.batch_size)
    F.cross_entropy(ddp(xb), yb).backward()
    if len(captured) != 1:
        sys.exit(f"error: expected one DDP bucket, got {len(captured)}")
    bucket, grad = captured[0]
    return ddp, bucket, grad


def run_kernel(args):
    torch.set_num_threads(args.threads)
    x, y = load_shard(0, 1)
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", store=dist.FileStore(os.path.join(tmp, "store"), 1),
                                rank=0, world_size=1)
        # ddp owns the parameter shapes that bucket.gradients() views the buffer with: keep it.
        ddp, bucket, grad = capture_bucket(x, y, args)
        flat = bucket.buffer()

        def powersgd_call(state):
            return lambda: psgd.powerSGD_hook(state, bucket).wait()

        copy_dst = torch.empty_like(flat)
        # "copy" into a buffer allocated once is the memory-bandwidth floor. "alloc_copy", the same
        # with a fresh destination each time, adds the page faults of a new 42.6 MiB allocation (the
        # CPU allocator does not cache), which PowerSGD's hook pays too: it clones the bucket and
        # allocates the new error tensor on every call.
        calls = {"none": lambda: default_hooks.allreduce_hook(None, bucket).wait(),
                 "copy": lambda: copy_dst.copy_(flat),
                 "alloc_copy": lambda: torch.empty_like(flat).copy_(flat)}
        for r in args.psgd_ranks:
            state = powersgd_state(r)
            calls[f"powersgd{r}"] = powersgd_call(state)
            # Past the plain all-reduce steps and the first compressed step (P/Q allocation), so
            # the timed calls are warm-started steady-state PowerSGD steps.
            for _ in range(PSGD_START_ITER + 1):
                flat.copy_(grad)
                calls[f"powersgd{r}"]()
        times = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                flat.copy_(grad)  # every call starts from the same real gradient
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
        dist.destroy_process_group()
    floor = statistics.median(times["copy"])
    rows = [{"hook": name, "rank": int(name[len("powersgd"):]) if name.startswith("powersgd")
             else None, "world_size": 1, "threads": args.threads, "batch_size": args.batch_size,
             "numel": flat.numel(), "ms_median": median_ms(t),
             "x_copy_floor": round(statistics.median(t) / floor, 2), "rounds": args.rounds}
            for name, t in times.items()]
    print(f"kernel: one real ResNet-18 gradient ({flat.numel() / 1e6:.2f} M floats, "
          f"{flat.numel() * 4 / 2**20:.1f} MiB) in one DDP bucket, world size 1, "
          f"{args.threads} thread(s), median of {args.rounds} interleaved rounds")
    print_table(rows, ["hook", "ms_median", "x_copy_floor"])
    print("none: DDP's all-reduce hook on the flat bucket (at world size 1: the division by the "
          "world size, no transfer); copy: dst.copy_(flat) into a buffer "
          "allocated once, the memory-bandwidth floor; alloc_copy: empty_like(flat).copy_(flat); "
          "powersgdR: PyTorch's powerSGD_hook at rank R (warm start, error feedback), waited for")
    write_json(args.json, rows)


# --- output and command line -----------------------------------------------------------------

def print_table(rows, columns):
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    for line in [columns] + cells:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    sys.stdout.flush()


def write_json(path, rows):
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=2)
            f.write("\n")
        print(f"wrote {path}")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2, help="local worker processes (default 2)")
    p.add_argument("--hooks", default=",".join(HOOKS),
                   help=f"comma list of DDP comm hooks, run in order (default: all of "
                        f"{','.join(HOOKS)})")
    p.add_argument("--threads", type=int,
                   help="torch threads per process (default: max(1, cpus / nproc); 1 with --kernel)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size per rank (default 64)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per hook (default 3)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per hook (default 10)")
    p.add_argument("--timeout", type=int, default=300,
                   help="gloo collective timeout in seconds (default 300)")
    p.add_argument("--kernel", action="store_true",
                   help="time PyTorch's PowerSGD hook alone on one real gradient (one process)")
    p.add_argument("--rounds", type=int, default=5, help="--kernel: interleaved rounds (default 5)")
    p.add_argument("--psgd-ranks", default="1,4",
                   help="--kernel: comma list of PowerSGD ranks to time (default 1,4)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as a JSON list to FILE")
    args = p.parse_args()
    args.hooks = [h.strip() for h in args.hooks.split(",") if h.strip()]
    bad = [h for h in args.hooks if h not in HOOKS]
    if bad or not args.hooks:
        p.error(f"unknown hook {', '.join(repr(h) for h in bad) or '(none given)'}; "
                f"valid: {', '.join(HOOKS)}")
    try:
        args.psgd_ranks = [int(r) for r in args.psgd_ranks.split(",")]
    except ValueError:
        p.error(f"--psgd-ranks wants a comma list of integers, got {args.psgd_ranks!r}")
    for name in ("nproc", "batch_size", "steps", "rounds", "timeout"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or min(args.psgd_ranks) < 1:
        p.error("--warmup must be >= 0 and PowerSGD ranks >= 1")
    if args.threads is None:
        args.threads = 1 if args.kernel else max(1, (os.cpu_count() or 1) // args.nproc)
    return args


def main():
    args = parse_args()
    if args.kernel:
        run_kernel(args)
    else:
        run_ddp(args)


if __name__ == "__main__":
    main()
