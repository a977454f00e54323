#!/usr/bin/env python3
"""Runs PyTorch's own `powerSGD_hook` on pinned inputs and writes the expected values into
tests/compressors/powersgd_reference.h, the differential test's reference (docs/algorithms.md §2.2).

    /usr/bin/python3 tools/gen_powersgd_reference.py [--out PATH]

Needs Debian's python3-torch (torch 1.13); the `python3` on PATH may be a Python without torch,
so call /usr/bin/python3. The C++ test (tests/compressors/powersgd_pytorch_test.cpp) needs no
Python: it replays the recorded inputs through GradientReducer + PowerSgd over 2 gloo ranks.

What runs: W = 2 gloo processes (torch.multiprocessing, FileStore rendezvous), one DDP bucket
holding every gradient, PowerSGDState(rank 2, start_powerSGD_iter 2, min_compression_rate 2,
error feedback on, warm start on, orthogonalization_epsilon 0, random_seed 0), 2 dense warm-up
steps then 4 compressed steps, once with batch_tensors_with_same_shape False (PyTorch's default)
and once with True.

The hook is called directly, without DDP. torch 1.13's GradBucket has no Python constructor,
so `_Bucket` below supplies the four methods the hook calls (buffer, gradients, index, is_last)
with the semantics of c10d::GradBucket: one flat buffer, gradients() = views into it, a single
bucket that is also the last one (so the hook's `iter` advances once per call).

The initial Q. On its first compressed step the hook seeds torch with
np.random.RandomState(random_seed).randint(1_000_000_000) and fills each Q view, in shape-group
order, with randn on CPU, then orthogonalizes it; the warm-start state is overwritten by the end
of the step. The script records the drawn Q by wrapping the module's `_orthogonalize` (the first
calls of the first compressed step receive the freshly drawn Qs) and checks it bit for bit
against an independent replay of that draw. The header stores the drawn (not yet
orthogonalized) Q per compressed tensor; the C++ side loads it as warm-start state, and PowerSgd
orthogonalizes a stored Q at the start of a step, as the hook does.
"""
import argparse
import os
import sys
import tempfile
from collections import OrderedDict

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd

WORLD_SIZE = 2
START_ITER = 2          # start_powerSGD_iter: PyTorch requires > 1 with EF or warm start
COMPRESSED_STEPS = 4
STEPS = START_ITER + COMPRESSED_STEPS
RANK = 2                # matrix_approximation_rank
MIN_COMPRESSION_RATE = 2
RANDOM_SEED = 0
INPUT_SEED = 20240611   # generator of the pinned inputs
QUANTUM = 1.0 / 64      # inputs are multiples of this: exact in fp32 and short to print

# Parameters in bucket order. a/b share a shape (a shape group of 2), c has another shape and sits
# between them (so PyTorch's shape-group order differs from bucket order), c is a 4-D conv kernel
# viewed as [8, 12], `small` is a matrix that fails the size test, `bias` is a vector.
TENSORS = [
    ("a.weight", (12, 10)),
    ("bias", (12,)),
    ("c.weight", (8, 3, 2, 2)),
    ("b.weight", (12, 10)),
    ("small", (3, 4)),
]
SCENARIOS = [("Unbatched", False), ("Batched", True)]


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def matrix_dims(shape):
    """[m, n] of the matrix view (§1.2), k, and whether the hook compresses it."""
    m = shape[0]
    n = numel(shape) // m
    k = min(m, n, RANK)
    return m, n, k, (m + n) * k * MIN_COMPRESSION_RATE < m * n


BUCKET_NUMEL = sum(numel(s) for _, s in TENSORS)
COMPRESSED = [name for name, s in TENSORS if len(s) >= 2 and matrix_dims(s)[3]]


def make_inputs():
    """inputs[rank][step]: flat fp32 bucket. Each matrix is a shared rank-2 part (changing per
    step) plus per-rank noise, so ranks differ and rank-2 compression is meaningful but lossy."""
    g = torch.Generator().manual_seed(INPUT_SEED)
    out = torch.empty(WORLD_SIZE, STEPS, BUCKET_NUMEL)
    for s in range(STEPS):
        shared = {}
        for name, shape in TENSORS:
            m = shape[0]
            n = numel(shape) // m
            shared[name] = torch.randn(m, 2, generator=g) @ torch.randn(2, n, generator=g)
        for r in range(WORLD_SIZE):
            parts = []
            for name, shape in TENSORS:
                x = shared[name] + 0.5 * torch.randn(shared[name].shape, generator=g)
                parts.append(torch.round(x / QUANTUM).mul(QUANTUM).reshape(-1))
            out[r, s] = torch.cat(parts)
    return out


class _Bucket:
    """The part of c10d::GradBucket that powerSGD_hook uses."""

    def __init__(self, buffer):
        self._buffer = buffer
        self._views = []
        off = 0
        for _, shape in TENSORS:
            self._views.append(buffer[off:off + numel(shape)].view(shape))
            off += numel(shape)

    def buffer(self):
        return self._buffer

    def gradients(self):
        return self._views

    def index(self):
        return 0

    def is_last(self):
        return True


def pytorch_q_order(batched):
    """Compressed tensor names in the hook's Q order (shape groups by first appearance) and the
    shape of each Q view: [b, n, k] per group when batched, [1, n, k] per tensor otherwise."""
    groups = OrderedDict()
    for name, shape in TENSORS:
        if name in COMPRESSED:
            m, n, k, _ = matrix_dims(shape)
            groups.setdefault((m, n), []).append(name)
    views = []
    for (m, n), names in groups.items():
        k = min(m, n, RANK)
        if batched:
            views.append((names, (len(names), n, k)))
        else:
            views.extend(([nm], (1, n, k)) for nm in names)
    return views


def replay_initial_q(batched):
    """Independent replay of the hook's first draw (used to check the instrumented capture)."""
    seed = np.random.RandomState(RANDOM_SEED).randint(1_000_000_000)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [torch.randn(*shape, device="cpu", dtype=torch.float32) for _, shape in pytorch_q_order(batched)]


def worker(rank, init_file, batched, inputs, result_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=WORLD_SIZE)
    captured = []
    original = psgd._orthogonalize

    def recording_orthogonalize(matrices, epsilon=0):
        captured.append(matrices.clone())
        return original(matrices, epsilon)

    psgd._orthogonalize = recording_orthogonalize
    state = psgd.PowerSGDState(
        process_group=None, matrix_approximation_rank=RANK, start_powerSGD_iter=START_ITER,
        min_compression_rate=MIN_COMPRESSION_RATE, use_error_feedback=True, warm_start=True,
        orthogonalization_epsilon=0, random_seed=RANDOM_SEED, batch_tensors_with_same_shape=batched)
    outputs = []
    initial_q = None
    for step in range(STEPS):
        captured.clear()
        bucket = _Bucket(inputs[rank, step].clone())
        out = psgd.powerSGD_hook(state, bucket).wait()
        outputs.append(out.clone())
        if step == START_ITER:
            initial_q = captured[:len(pytorch_q_order(batched))]
    psgd._orthogonalize = original
    assert state.iter == STEPS, state.iter
    torch.save({"outputs": torch.stack(outputs), "initial_q": initial_q,
                "final_q": state.q_memory_dict[0].clone(), "final_error": state.error_dict[0].clone()},
               os.path.join(result_dir, "rank%d.pt" % rank))
    dist.barrier()
    dist.destroy_process_group()


def run_scenario(batched, inputs):
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "store")
        mp.spawn(worker, args=(init_file, batched, inputs, tmp), nprocs=WORLD_SIZE, join=True)
        results = [torch.load(os.path.join(tmp, "rank%d.pt" % r)) for r in range(WORLD_SIZE)]
    replay = replay_initial_q(batched)
    for r, res in enumerate(results):
        assert len(res["initial_q"]) == len(replay), "rank %d captured %d Qs" % (r, len(res["initial_q"]))
        for got, want in zip(res["initial_q"], replay):
            assert torch.equal(got, want), "captured initial Q differs from the replayed draw"
        assert torch.equal(res["outputs"], results[0]["outputs"]), "hook outputs differ across ranks"
    return results


def per_tensor_q(flat_q_list_or_buffer, batched):
    """Maps the hook's Q views (a list of [b, n, k] tensors or the flat q_memory buffer) to a
    dict name -> [n, k]."""
    order = pytorch_q_order(batched)
    out = {}
    if isinstance(flat_q_list_or_buffer, list):
        views = flat_q_list_or_buffer
    else:
        views, off = [], 0
        for _, shape in order:
            views.append(flat_q_list_or_buffer[off:off + numel(shape)].view(shape))
            off += numel(shape)
    for (names, _), v in zip(order, views):
        for j, nm in enumerate(names):
            out[nm] = v[j]
    return out


def fmt_floats(values, indent, per_line=8):
    assert all(np.isfinite(v) for v in values), "non-finite reference value"
    vals = ["%.9gf" % float(v) for v in values]  # 9 significant digits round-trip fp32 exactly
    vals = [v if ("." in v or "e" in v) else v[:-1] + ".f" for v in vals]
    lines = []
    for i in range(0, len(vals), per_line):
        lines.append(" " * indent + ", ".join(vals[i:i + per_line]) + ",")
    return "\n".join(lines)


def q_numel():
    total = 0
    for name, shape in TENSORS:
        if name in COMPRESSED:
            _, n, k, _ = matrix_dims(shape)
            total += n * k
    return total


def flat_q(qdict):
    return torch.cat([qdict[name].reshape(-1) for name, _ in TENSORS if name in COMPRESSED])


def write_header(path, inputs, scenario_results):
    L = []
    L.append("#pragma once")
    L.append("// GENERATED by tools/gen_powersgd_reference.py from PyTorch %s's powerSGD_hook; do not edit." % torch.__version__)
    L.append("// Regenerate (needs Debian python3-torch):  /usr/bin/python3 tools/gen_powersgd_reference.py")
    L.append("//")
    L.append("// W = %d gloo ranks, one bucket holding every tensor below in order, %d dense warm-up steps, then"
             % (WORLD_SIZE, START_ITER))
    L.append("// %d PowerSGD steps: matrix_approximation_rank %d, min_compression_rate %d, error feedback and"
             % (COMPRESSED_STEPS, RANK, MIN_COMPRESSION_RATE))
    L.append("// warm start on, orthogonalization_epsilon 0, random_seed %d. Flat buffers list the tensors in" % RANDOM_SEED)
    L.append("// kTensors order, each row-major. Q buffers list each compressed tensor's Q [n, k] in kTensors order.")
    L.append("#include <cstdint>")
    L.append("")
    L.append("namespace lowrank {")
    L.append("namespace testing {")
    L.append("namespace powersgd_reference {")
    L.append("")
    L.append("constexpr int kWorldSize = %d;" % WORLD_SIZE)
    L.append("constexpr int kSteps = %d;" % STEPS)
    L.append("constexpr int kStartIter = %d;" % START_ITER)
    L.append("constexpr int kRank = %d;" % RANK)
    L.append("constexpr double kMinCompressionRate = %d;" % MIN_COMPRESSION_RATE)
    L.append("constexpr int kBucketNumel = %d;" % BUCKET_NUMEL)
    L.append("constexpr int kQNumel = %d;" % q_numel())
    L.append("constexpr int kNumTensors = %d;" % len(TENSORS))
    L.append("")
    L.append("struct TensorSpec {")
    L.append("  const char* name;")
    L.append("  int ndim;")
    L.append("  int64_t sizes[4];")
    L.append("  bool compressed;  // whether the hook compressed it")
    L.append("};")
    L.append("inline const TensorSpec kTensors[kNumTensors] = {")
    for name, shape in TENSORS:
        sizes = list(shape) + [0] * (4 - len(shape))
        L.append('    {"%s", %d, {%s}, %s},' % (name, len(shape), ", ".join(map(str, sizes)),
                                             "true" if name in COMPRESSED else "false"))
    L.append("};")
    L.append("")
    L.append("// Gradients handed to the hook: kInput[rank][step][flat bucket index].")
    L.append("inline const float kInput[kWorldSize][kSteps][kBucketNumel] = {")
    for r in range(WORLD_SIZE):
        L.append("  {")
        for s in range(STEPS):
            L.append("    {  // rank %d, step %d" % (r, s))
            L.append(fmt_floats(inputs[r, s].tolist(), 6))
            L.append("    },")
        L.append("  },")
    L.append("};")
    for label, batched, results in scenario_results:
        L.append("")
        L.append("// ---- batch_tensors_with_same_shape = %s ----" % ("True" if batched else "False"))
        L.append("// The Q the hook drew at its first compressed step, before orthogonalization (same on all ranks).")
        L.append("inline const float kInitialQ%s[kQNumel] = {" % label)
        L.append(fmt_floats(flat_q(per_tensor_q(results[0]["initial_q"], batched)).tolist(), 2))
        L.append("};")
        L.append("// The hook's output (the averaged gradient): kOutput[rank][step][flat bucket index].")
        L.append("inline const float kOutput%s[kWorldSize][kSteps][kBucketNumel] = {" % label)
        for r in range(WORLD_SIZE):
            L.append("  {")
            for s in range(STEPS):
                L.append("    {  // rank %d, step %d" % (r, s))
                L.append(fmt_floats(results[r]["outputs"][s].tolist(), 6))
                L.append("    },")
            L.append("  },")
        L.append("};")
        L.append("// After the last step: the warm-start Q (all-reduced, divided by W, not orthogonalized) per rank.")
        L.append("inline const float kFinalQ%s[kWorldSize][kQNumel] = {" % label)
        for r in range(WORLD_SIZE):
            L.append("  {")
            L.append(fmt_floats(flat_q(per_tensor_q(results[r]["final_q"], batched)).tolist(), 4))
            L.append("  },")
        L.append("};")
        L.append("// After the last step: the hook's error buffer (global residual, whole bucket) per rank.")
        L.append("inline const float kFinalError%s[kWorldSize][kBucketNumel] = {" % label)
        for r in range(WORLD_SIZE):
            L.append("  {")
            L.append(fmt_floats(results[r]["final_error"].tolist(), 4))
            L.append("  },")
        L.append("};")
    L.append("")
    L.append("}  // namespace powersgd_reference")
    L.append("}  // namespace testing")
    L.append("}  // namespace lowrank")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(root, "tests", "compressors", "powersgd_reference.h"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # deterministic CPU kernels; the inputs are tiny anyway
    inputs = make_inputs()
    scenario_results = []
    for label, batched in SCENARIOS:
        results = run_scenario(batched, inputs)
        scenario_results.append((label, batched, results))
        print("%s: compressed %s; |output| max %.4g" % (label, COMPRESSED, results[0]["outputs"].abs().max()))
    write_header(args.out, inputs, scenario_results)
    print("wrote", args.out)


if __name__ == "__main__":
    sys.exit(main())
