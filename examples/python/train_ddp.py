#!/usr/bin/env python3
"""Data-parallel training of lowrank's example CNN on Fashion-MNIST with PyTorch, gradients averaged
by lowrank (docs/python.md).

The same run as `build/lowrank train --nproc 2` (the C++ trainer), written in PyTorch: the same
network (lowrank's `cnn` model), the same initial weights and per-epoch shards (drawn from the same
seeds), the same data normalization, SGD with momentum 0.9 at lr 0.05 under a cosine schedule, 64
examples per worker per step. Three ways to put lowrank into the loop (--route):

  ddp_hook   DistributedDataParallel with lowrank's hook registered in C++ (lowrank.register_ddp_hook)
  comm_hook  DistributedDataParallel with ddp.register_comm_hook(lowrank.HookState(...), lowrank.comm_hook)
  reducer    no DDP: lowrank.GradientReducer between backward() and optimizer.step()

and, to compare against PyTorch's own (no lowrank in the loop; --compressor is ignored):

  torch_ddp       DistributedDataParallel with its dense all-reduce
  torch_powersgd  DistributedDataParallel with PyTorch's powerSGD_hook at --rank (error feedback, warm
                  start, compressing from the 3rd step, min_compression_rate 2)

--eval-every N evaluates the test set every N steps, at the end of every epoch and at the end (as
`lowrank train --eval-every N` does), and --metrics FILE writes
one CSV row per evaluation (step, elapsed_s, train_loss, test_accuracy, bytes_sent, step_ms), elapsed_s
counted from the first step as the C++ trainer's metrics.csv counts it (evaluations included).

Launch (the module from the build tree; Debian's torch is /usr/bin/python3's):

  PYTHONPATH=build/python /usr/bin/python3 -m torch.distributed.run --nproc_per_node 2 \\
      examples/python/train_ddp.py --steps 100

Without a launcher it runs as a single worker. The data are the gzip IDX files of Debian's package
dataset-fashion-mnist, under /usr/share/datasets/fashion-mnist (--data-dir to read them elsewhere).
"""
import argparse
import datetime
import gzip
import hashlib
import math
import os
import re
import socket
import struct
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

try:
    import lowrank
except ImportError as e:  # pragma: no cover - depends on the environment
    sys.exit("train_ddp.py: cannot import the lowrank module (%s). Build it (bash scripts/build.sh) and set "
             "PYTHONPATH=build/python, or install it (cmake --install build); see docs/python.md" % e)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
# Mean and standard deviation of pixel/255 over the 60 000 training images (as lowrank's C++ loader).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
CLASSES = 10
SIDE = 28

# Seed domains of lowrank's trainer (src/train/trainer.cpp): the weights and the per-epoch shuffle
# draw from unrelated streams of one seed.
INIT_DOMAIN = 0x1001
SHUFFLE_DOMAIN = 0x2002
EVAL_BATCH = 1000
ROUTES = ["ddp_hook", "comm_hook", "reducer", "torch_ddp", "torch_powersgd"]
MASK64 = (1 << 64) - 1


class DataError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# Data: Fashion-MNIST from gzip IDX files, as src/data/idx_reader.cpp and fashion_mnist.cpp read them.

def fashion_mnist_path(data_dir, split, what):
    """The images or labels file of split 'train' or 't10k': the .gz Debian ships, else an uncompressed copy."""
    base = os.path.join(data_dir, "%s-%s-idx%d-ubyte" % (split, what, 3 if what == "images" else 1))
    if not os.path.exists(base + ".gz") and os.path.exists(base):
        return base
    return base + ".gz"


def read_idx(path):
    """An IDX file of unsigned bytes (gzip or plain) as a uint8 tensor of its dimensions."""
    hint = (" (Fashion-MNIST is provided by the Debian package %s: apt-get install %s; or pass --data-dir "
            "DIR holding the four IDX files)" % (FASHION_MNIST_PACKAGE, FASHION_MNIST_PACKAGE))
    if not os.path.isfile(path):
        raise DataError("cannot read %s: no such file%s" % (path, hint))
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError("cannot read %s: %s%s" % (path, e, hint))
    if len(raw) < 4:
        raise DataError("corrupt IDX file %s: %d bytes, too short for the 4-byte magic%s" % (path, len(raw), hint))
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or not 1 <= ndim <= 8:
        raise DataError("corrupt IDX file %s: bad magic number%s" % (path, hint))
    if dtype != 0x08:
        raise DataError("unsupported IDX file %s: element type 0x%02x; only unsigned byte (0x08)%s"
                        % (path, dtype, hint))
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError("corrupt IDX file %s: truncated header%s" % (path, hint))
    dims = struct.unpack(">%dI" % ndim, raw[4:header])
    count = 1
    for d in dims:
        count *= d
    if len(raw) - header != count:
        raise DataError("corrupt IDX file %s: the header promises %d data bytes, found %d%s"
                        % (path, count, len(raw) - header, hint))
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).view(*dims)


def load_fashion_mnist(data_dir, split):
    """(images [N, 1, 28, 28] uint8, labels [N] int64) of split 'train' or 't10k'."""
    images = read_idx(fashion_mnist_path(data_dir, split, "images"))
    labels = read_idx(fashion_mnist_path(data_dir, split, "labels"))
    if images.dim() != 3 or tuple(images.shape[1:]) != (SIDE, SIDE) or labels.dim() != 1 \
            or images.shape[0] != labels.shape[0]:
        raise DataError("corrupt Fashion-MNIST split '%s' under %s: images %s, labels %s"
                        % (split, data_dir, tuple(images.shape), tuple(labels.shape)))
    return images.view(-1, 1, SIDE, SIDE), labels.long()


def batch_images(images, index):
    """Rows `index` as fp32, normalized to (pixel/255 - mean) / std (Dataset::batch_images)."""
    return images.index_select(0, index).float().div_(255.0).sub_(FASHION_MNIST_MEAN).div_(FASHION_MNIST_STD)


# ---------------------------------------------------------------------------------------------------
# Model: lowrank's `cnn` (include/lowrank/models/cnn.h), its initialization and the trainer's seeds.

class Cnn(nn.Module):
    """conv1 (C->16, 5x5, same) ReLU maxpool 2, conv2 (16->32, 5x5, same) ReLU maxpool 2,
    fc1 (32*7*7 -> 128) ReLU, fc2 (128 -> 10): 215 370 parameters on Fashion-MNIST."""

    def __init__(self, in_channels=1, height=SIDE, width=SIDE, classes=CLASSES, conv1_channels=16,
                 conv2_channels=32, kernel=5, hidden=128):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, conv1_channels, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(conv1_channels, conv2_channels, kernel, padding=kernel // 2)
        self.fc1 = nn.Linear(conv2_channels * (height // 2 // 2) * (width // 2 // 2), hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def init_parameters(model, seed):
    """models::init_parameters: U(-b, b) with b = 1/sqrt(fan_in) of the last matrix seen, in order."""
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                bound = 1.0 / math.sqrt(p.numel() // p.size(0))
            p.uniform_(-bound, bound, generator=gen)


def shard(n, seed, epoch, rank, world):
    """Trainer::shard: this rank's contiguous slice of a per-epoch permutation shared by all ranks."""
    per_rank = n // world
    if per_rank < 1:
        raise DataError("the training set has %d examples, fewer than the %d workers" % (n, world))
    gen = torch.Generator().manual_seed(splitmix64(splitmix64(splitmix64(seed) ^ SHUFFLE_DOMAIN) ^ epoch))
    perm = torch.randperm(n, generator=gen, dtype=torch.long)
    return perm[rank * per_rank:(rank + 1) * per_rank].clone()


def scheduled_lr(schedule, base, step, total):
    if schedule == "constant":
        return base
    return base * 0.5 * (1.0 + math.cos(math.pi * step / total))


# ---------------------------------------------------------------------------------------------------
# Command line.

def parse_value(text):
    """An --opt value: true/false as bool, then int, then float, else the string."""
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_opts(items):
    opts = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise SystemExit("train_ddp.py: --opt expects key=value, got '%s'" % item)
        if key == "uncompressed_names":
            opts[key] = [v for v in value.split(",") if v]
        else:
            opts[key] = parse_value(value)
    return opts


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Data-parallel training of lowrank's example CNN on Fashion-MNIST, gradients averaged by "
                    "lowrank (docs/python.md). Launch with python3 -m torch.distributed.run --nproc_per_node N.")
    p.add_argument("--compressor", default="powersgd", help="one of lowrank.compressors() (default powersgd)")
    p.add_argument("--rank", type=int, default=4,
                   help="compressor rank; ignored by compressors without one (none, noop). Default 4")
    p.add_argument("--route", choices=ROUTES, default="ddp_hook",
                   help="ddp_hook: lowrank.register_ddp_hook; comm_hook: ddp.register_comm_hook with "
                        "lowrank.comm_hook; reducer: lowrank.GradientReducer without DDP; torch_ddp and "
                        "torch_powersgd: PyTorch's dense all-reduce and its powerSGD_hook, for comparison "
                        "(default ddp_hook)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the training set (default 1)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps in total (default: no cap)")
    p.add_argument("--batch-size", type=int, default=64, help="examples per worker per step (default 64)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning-rate schedule over the run (default cosine)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weights, the shuffle and the compressor's shared random streams (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per worker (default 1)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="compressor or reducer option, repeatable (e.g. powersgd_mode=alternating, start_iter=10, "
                        "uncompressed_names=fc2,conv1); see docs/python.md")
    p.add_argument("--data-dir", default=FASHION_MNIST_DIR,
                   help="directory of the four Fashion-MNIST IDX files (default %s)" % FASHION_MNIST_DIR)
    p.add_argument("--log-every", type=int, default=20, help="steps between progress lines (default 20)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="evaluate the test set every N steps and at every epoch's end, as well as at the end "
                        "(default 0: at the end only)")
    p.add_argument("--metrics", default="", metavar="FILE",
                   help="write a CSV row per evaluation: step, elapsed_s, train_loss, test_accuracy, bytes_sent, "
                        "step_ms")
    p.add_argument("--max-skipped-steps", type=int, default=10,
                   help="stop after this many steps skipped for a NaN/Inf gradient; -1 = no limit (default 10)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "threads", "log_every"):
        if getattr(args, name) < 1:
            p.error("--%s must be >= 1" % name.replace("_", "-"))
    if args.steps < 0 or args.rank < 1 or args.seed < 0 or args.eval_every < 0:
        p.error("--steps must be >= 0, --rank >= 1, --seed >= 0 and --eval-every >= 0, got %d, %d, %d and %d"
                % (args.steps, args.rank, args.seed, args.eval_every))
    if args.route.startswith("torch_") and args.opt:
        p.error("--opt applies to lowrank's routes; --route %s takes none (got %s)" % (args.route, " ".join(args.opt)))
    if not (args.lr > 0 and math.isfinite(args.lr)) or not 0 <= args.momentum < 1:
        p.error("--lr must be a finite number > 0 and --momentum in [0, 1)")
    args.options = parse_opts(args.opt)
    return args


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------
# lowrank.

def lowrank_options(args):
    """Keyword options for lowrank: --opt's, the seed as `lowrank train` passes it (reducer seed =
    --seed), stats every 10 steps as its metrics rows, and rank=--rank unless --opt gave one."""
    opts = dict(args.options)
    opts.setdefault("seed", args.seed)
    opts.setdefault("stats_every", 10)
    implicit_rank = "rank" not in opts
    if implicit_rank:
        opts["rank"] = args.rank
    return opts, implicit_rank


def make_lowrank(make, args):
    """make(**opts), without `rank` when the compressor has none (as `lowrank train --rank` does).
    Option errors are raised before any collective, identically on every rank."""
    opts, implicit_rank = lowrank_options(args)
    try:
        return make(**opts)
    except ValueError as e:
        if implicit_rank and re.search(r"\brank=%d\b.* do not apply to compressor" % args.rank, str(e)):
            del opts["rank"]
            return make(**opts)
        raise


def torch_route(model, args, steps):
    """PyTorch's own DDP (torch_ddp) or DDP with its powerSGD_hook (torch_powersgd), for comparison:
    (ddp, stats, description). steps() is the number of steps reduced so far. Bytes are what one rank
    hands to all-reduces: the dense gradient per step, or for powerSGD_hook its first
    start_powerSGD_iter steps dense and then PowerSGDState's element counter (P and Q of the matrices
    it compresses, every other tensor whole)."""
    ddp = nn.parallel.DistributedDataParallel(model)
    params = [p for p in model.parameters() if p.requires_grad]
    numel = sum(p.numel() for p in params)
    if args.route == "torch_ddp":
        def stats():
            return {"bytes_sent": 4 * numel * steps(), "compression_ratio": 1.0}
        return ddp, stats, "PyTorch DDP, its dense all-reduce (no hook)"

    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
    ps = psgd.PowerSGDState(process_group=None, matrix_approximation_rank=args.rank, start_powerSGD_iter=2,
                            min_compression_rate=2, use_error_feedback=True, warm_start=True, random_seed=args.seed)
    ddp.register_comm_hook(ps, psgd.powerSGD_hook)

    def stats():
        dense_steps = min(steps(), ps.start_powerSGD_iter)
        sent = 4 * (numel * dense_steps + ps.total_numel_after_compression)
        return {"bytes_sent": sent, "compression_ratio": 4 * numel * steps() / sent if sent else 1.0}
    return ddp, stats, ("PyTorch DDP, powerSGD_hook rank %d (error feedback, warm start, compressing from step %d)"
                        % (args.rank, ps.start_powerSGD_iter + 1))


def evaluate(model, test_x, test_y, rank, world, aux):
    """Test accuracy and loss: each rank its contiguous slice of the test set, totals summed
    (Trainer::evaluate). Leaves the model in eval mode."""
    model.eval()
    n_test = test_x.shape[0]
    lo, hi = n_test * rank // world, n_test * (rank + 1) // world
    correct, loss_sum = 0.0, 0.0
    with torch.no_grad():
        for start in range(lo, hi, EVAL_BATCH):
            idx = torch.arange(start, min(hi, start + EVAL_BATCH))
            logits = model(batch_images(test_x, idx))
            target = test_y.index_select(0, idx)
            loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
            correct += logits.argmax(-1).eq(target).sum().item()
    totals = torch.tensor([correct, loss_sum, float(hi - lo)], dtype=torch.float64)
    dist.all_reduce(totals, group=aux)
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


def write_metrics(f, step, elapsed, row, accuracy, st):
    """One row: steps so far, seconds since the first step, then over the applied steps since the
    previous row (as lowrank train's metrics.csv) the mean loss, test accuracy, bytes sent so far, and
    the mean ms of those steps. `row` is [loss sum, ms sum, steps]."""
    loss = row[0] / row[2] if row[2] else float("nan")
    ms = row[1] / row[2] if row[2] else float("nan")
    f.write("%d,%.3f,%.6f,%.6f,%d,%.3f\n" % (step, elapsed, loss, accuracy, st["bytes_sent"], ms))
    f.flush()


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    # Without a launcher: one worker on this machine.
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))

    # The data first: a missing file fails every worker at once, before any rendezvous.
    try:
        train_x, train_y = load_fashion_mnist(args.data_dir, "train")
        test_x, test_y = load_fashion_mnist(args.data_dir, "t10k")
    except DataError as e:
        print("train_ddp.py: error: %s" % e, file=sys.stderr)
        return 2

    metrics = None
    if args.metrics and int(os.environ["RANK"]) == 0:
        try:
            metrics = open(args.metrics, "w")
        except OSError as e:
            print("train_ddp.py: error: --metrics %s: %s" % (args.metrics, e.strerror), file=sys.stderr)
            return 2
        metrics.write("step,elapsed_s,train_loss,test_accuracy,bytes_sent,step_ms\n")

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))  # RANK, WORLD_SIZE, MASTER_* from env
    rank, world = dist.get_rank(), dist.get_world_size()
    # The loop's own collectives (loss, evaluation, weight check) on a group of their own, never
    # interleaved with lowrank's on the default group.
    aux = dist.new_group(backend="gloo")
    log = rank == 0

    model = Cnn()
    init_parameters(model, splitmix64(splitmix64(args.seed) ^ INIT_DOMAIN))
    with torch.no_grad():
        for p in model.parameters():
            dist.broadcast(p, 0, group=aux)

    ddp, state, reducer = None, None, None
    if args.route.startswith("torch_"):
        ddp, stats, description = torch_route(model, args, lambda: step)  # `step`, as it is when called
        skipped_now = lambda: False  # noqa: E731  (PyTorch's hooks never skip a step)
        net = ddp
    elif args.route == "reducer":
        reducer = make_lowrank(lambda **o: lowrank.GradientReducer(model.named_parameters(), args.compressor, **o),
                               args)
        stats = reducer.stats
        description = reducer.describe()
        net = model
    else:
        # bucket_cap_mb is DDP's under a hook.
        ddp_kwargs = {}
        if "bucket_cap_mb" in args.options:
            ddp_kwargs["bucket_cap_mb"] = args.options.pop("bucket_cap_mb")
        ddp = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
        if args.route == "ddp_hook":
            state = make_lowrank(lambda **o: lowrank.register_ddp_hook(ddp, args.compressor, **o), args)
        else:
            state = make_lowrank(lambda **o: lowrank.HookState(args.compressor, module=model, **o), args)
            ddp.register_comm_hook(state, lowrank.comm_hook)
        stats = state.stats
        description = state.describe()
        net = ddp
    if state is not None:
        skipped_now = state.last_step_skipped
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)

    n_train = train_x.shape[0]
    per_rank = n_train // world
    steps_per_epoch = (per_rank + args.batch_size - 1) // args.batch_size
    total = args.epochs * steps_per_epoch
    if args.steps > 0:
        total = min(total, args.steps)
    if log:
        print("train_ddp.py: %d worker%s, route %s, %s" % (world, "s" if world > 1 else "", args.route,
                                                          description if args.route.startswith("torch_")
                                                          else "%s; %s" % (args.compressor, description)))
        print("data: fashion-mnist/train %d examples (%d per worker, batch %d, %d steps per epoch, %d steps in "
              "all), fashion-mnist/test %d examples; model: cnn, %d parameters; torch %s, %d thread(s)"
              % (n_train, per_rank, args.batch_size, steps_per_epoch, total, test_x.shape[0],
                 sum(p.numel() for p in model.parameters()), torch.__version__, torch.get_num_threads()),
              flush=True)

    step, skipped, applied_steps = 0, 0, 0
    recent = []                       # the last 10 applied steps' mean loss (the C++ trainer's final loss)
    log_loss, log_n, log_ms = 0.0, 0, 0.0
    row = [0.0, 0.0, 0]               # applied steps since the last metrics row: loss sum, ms sum, count
    last_skipped = False
    t_start = time.time()
    for epoch in range(args.epochs):
        if step >= total:
            break
        rows = shard(n_train, args.seed, epoch, rank, world)
        for b in range(steps_per_epoch):
            if step >= total:
                break
            t0 = time.time()
            idx = rows[b * args.batch_size:(b + 1) * args.batch_size]
            x, y = batch_images(train_x, idx), train_y.index_select(0, idx)
            lr = scheduled_lr(args.lr_schedule, args.lr, step, total)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=False)  # in place: with route reducer, grads are views into its buckets
            loss = F.cross_entropy(net(x), y)
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss, group=aux)
            mean_loss = mean_loss.item() / world
            loss.backward()               # under DDP, lowrank's hook reduces each bucket from here on
            if reducer is not None:
                applied = reducer.reduce()
            else:
                applied = not skipped_now()
            if applied:
                opt.step()
            step += 1
            ms = 1e3 * (time.time() - t0)
            last_skipped = not applied
            if applied:
                applied_steps += 1
                recent = (recent + [mean_loss])[-10:]
                log_loss += mean_loss
                log_n += 1
                log_ms += ms
                row[0] += mean_loss
                row[1] += ms
                row[2] += 1
            else:
                skipped += 1
                if log:
                    print("step %d skipped: non-finite gradient (%d skipped so far)" % (step, skipped), flush=True)
                if 0 <= args.max_skipped_steps < skipped:
                    if log:
                        print("train_ddp.py: error: %d steps skipped, more than --max-skipped-steps %d (lower --lr)"
                              % (skipped, args.max_skipped_steps), file=sys.stderr)
                    dist.destroy_process_group()
                    return 1
            if log and log_n > 0 and (step == 1 or step % args.log_every == 0 or step == total):
                st = stats()
                print("step %d/%d  epoch %d/%d  loss %.4f  %.1f ms/step  sent %.2f MB (%d bytes)  ratio %.1fx%s"
                      % (step, total, epoch + 1, args.epochs, log_loss / log_n, log_ms / log_n,
                         st["bytes_sent"] / 1e6, st["bytes_sent"], st["compression_ratio"],
                         "  skipped %d" % skipped if skipped else ""), flush=True)
                log_loss, log_n, log_ms = 0.0, 0, 0.0
            epoch_end = b + 1 == steps_per_epoch
            if args.eval_every > 0 and (step % args.eval_every == 0 or epoch_end) and step < total:
                accuracy, test_loss = evaluate(model, test_x, test_y, rank, world, aux)
                model.train()
                if metrics is not None:
                    write_metrics(metrics, step, time.time() - t_start, row, accuracy, stats())
                row = [0.0, 0.0, 0]
                if log:
                    print("eval: step %d  test accuracy %.4f  test loss %.4f  elapsed %.1f s"
                          % (step, accuracy, test_loss, time.time() - t_start), flush=True)

    accuracy, test_loss = evaluate(model, test_x, test_y, rank, world, aux)
    if metrics is not None:
        write_metrics(metrics, step, time.time() - t_start, row, accuracy, stats())
        metrics.close()

    # Whether the ranks hold the same weights (they should, except with noop, which never communicates).
    # The same digest as the C++ trainer's weights_sha256 (summary.json) for the same weights.
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(("p:" + name).encode())
        h.update(p.detach().contiguous().numpy().tobytes())
    for name, b in model.named_buffers():
        h.update(("b:" + name).encode())
        h.update(b.detach().contiguous().numpy().tobytes())
    digests = [None] * world
    dist.all_gather_object(digests, h.hexdigest(), group=aux)

    st = stats()
    train_loss = float("nan") if last_skipped or not recent else sum(recent) / len(recent)
    if log:
        if world == 1:
            weights = "sha256 %s" % digests[0]
        elif len(set(digests)) == 1:
            weights = "identical on all %d ranks (sha256 %s)" % (world, digests[0])
        else:
            weights = "differ between ranks" + (" (noop never communicates)" if args.compressor == "noop" else "")
        owner = state if state is not None else reducer
        n = len(owner.bucket_names()) if owner is not None else 0
        buckets = "%d lowrank bucket%s; " % (n, "s" if n != 1 else "") if owner is not None else ""
        print("done: %d steps in %.1f s; test accuracy %.4f, test loss %.4f; %sweights %s"
              % (step, time.time() - t_start, accuracy, test_loss, buckets, weights))
        print("final: test_accuracy=%.4f train_loss=%.4f steps=%d bytes_sent=%d compression_ratio=%.2f "
              "skipped_steps=%d" % (accuracy, train_loss, step, st["bytes_sent"], st["compression_ratio"], skipped),
              flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
