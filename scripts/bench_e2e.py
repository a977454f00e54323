#!/usr/bin/env python3
"""End-to-end step time of `lowrank train`, every compressor side by side, with ratios to noop.

Runs `lowrank train --nproc W` once per configuration and round, configurations interleaved
within each round (so a slower or contended machine slows all alike), and reads each run's
summary.json: median step time split into forward+backward, waiting for the reducer (what overlap
did not hide), optimizer, and the reducer's own compute and collective time. With --pytorch it
also runs scripts/bench_pytorch_ddp.py (PyTorch DDP on the same model, batch, threads and link)
and prints lowrank / PyTorch ratios for the matching pairs.

    scripts/bench_e2e.py --nproc 2 --model resnet18 --steps 12 --rounds 2 --pytorch
    scripts/with_slow_link.sh 100mbit -- scripts/bench_e2e.py --link 100mbit ...

Contention check: the spread of noop's step time over rounds is printed; above 10 % the table is
flagged as not to be trusted (this machine's 2 vCPUs sometimes deliver one core's worth).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_CONFIGS = [
    "noop", "none", "powersgd", "powersgd:rank=1", "powersgd:powersgd_mode=alternating",
    "powersgd+:restart_period=100", "greedylore", "galore",
]
# lowrank configuration -> PyTorch hook measured on the same workload
PAIRS = {"noop": "noop", "none": "allreduce", "fp16": "fp16", "powersgd": "powersgd4", "powersgd:rank=1": "powersgd1"}


def parse_config(text, rank):
    name, _, opts = text.partition(":")
    args = ["--compressor", name, "--rank", str(rank)]
    for kv in filter(None, opts.split(",")):
        key, eq, value = kv.partition("=")
        if not eq:
            sys.exit(f"bench_e2e: '{kv}' in '{text}' is not KEY=VALUE")
        if key == "rank":
            args[3] = value
        else:
            args += ["--opt", f"{key}={value}"]
    return args


def run_lowrank(binary, config, a, out_dir):
    cmd = [binary, "train", "--nproc", str(a.nproc), "--model", a.model, "--steps", str(a.steps),
           "--batch-size", str(a.batch_size), "--threads", str(a.threads), "--log-every", "1000",
           "--eval-examples", str(a.eval_examples),
           "--out", out_dir] + parse_config(config, a.rank) + a.extra
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_e2e: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    with open(os.path.join(out_dir, "summary.json")) as f:
        return json.load(f)


def run_pytorch(a, out_json):
    hooks = sorted(set(PAIRS.values()) | {"fp16"})
    cmd = ["/usr/bin/python3", os.path.join(ROOT, "scripts", "bench_pytorch_ddp.py"), "--nproc", str(a.nproc),
           "--hooks", ",".join(hooks), "--steps", str(a.steps), "--batch-size", str(a.batch_size),
           "--threads", str(a.threads), "--json", out_json]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_e2e: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    with open(out_json) as f:
        return {row["hook"]: row for row in json.load(f)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "lowrank"))
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--steps", type=int, default=12, help="steps per run (the first is left out of the medians)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per worker")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--eval-examples", type=int, default=100,
                   help="test examples evaluated at the end (timing runs: a few; the step medians exclude it)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--configs", default=";".join(DEFAULT_CONFIGS),
                   help="';'-separated NAME[:KEY=VALUE,...] (default: %(default)s)")
    p.add_argument("--pytorch", action="store_true", help="also run PyTorch DDP with its hooks, each round")
    p.add_argument("--link", default="loopback", help="label of the link, for the table")
    p.add_argument("--json", help="write the table as JSON to this file")
    p.add_argument("extra", nargs="*", help="more `lowrank train` flags after --")
    a = p.parse_args()
    if not os.path.exists(a.binary):
        sys.exit(f"bench_e2e: no lowrank binary at {a.binary} (build it: bash scripts/build.sh)")
    configs = [c for c in a.configs.split(";") if c]
    if "noop" not in configs:
        configs.insert(0, "noop")

    runs = {c: [] for c in configs}
    torch_runs = []
    with tempfile.TemporaryDirectory(prefix="lowrank-bench-") as tmp:
        for r in range(a.rounds):
            for i, c in enumerate(configs):
                out = os.path.join(tmp, f"r{r}-{i}")
                s = run_lowrank(a.binary, c, a, out)
                runs[c].append(s)
                print(f"[round {r + 1}/{a.rounds}] {c:40s} {s['step_ms_median']:9.1f} ms/step", flush=True)
            if a.pytorch:
                rows = run_pytorch(a, os.path.join(tmp, f"torch-{r}.json"))
                torch_runs.append(rows)
                for h, row in sorted(rows.items()):
                    print(f"[round {r + 1}/{a.rounds}] pytorch {h:32s} {row['step_ms_median']:9.1f} ms/step", flush=True)

    def med(c, key):
        return statistics.median(s[key] for s in runs[c])

    noop = med("noop", "step_ms_median")
    noop_rounds = [s["step_ms_median"] for s in runs["noop"]]
    spread = (max(noop_rounds) - min(noop_rounds)) / min(noop_rounds) if len(noop_rounds) > 1 else 0.0
    first = runs[configs[0]][0]
    print(f"\n{a.model}, W={a.nproc}, batch {a.batch_size}/worker, {a.threads} thread(s)/worker, link {a.link}, "
          f"{a.steps} steps x {a.rounds} rounds (medians), BLAS {first['config'].get('blas', '?')}")
    hdr = (f"{'configuration':38s} {'step ms':>8s} {'fwd+bwd':>8s} {'wait':>7s} {'optim':>6s} {'compute':>8s} "
           f"{'collect':>8s} {'MB/step':>8s} {'x noop':>7s}")
    print(hdr)
    table = []
    for c in configs:
        step = med(c, "step_ms_median")
        mb = statistics.median(s["bytes_sent_per_worker"] / max(s["steps"], 1) for s in runs[c]) / 1e6
        row = {"config": c, "step_ms": step, "forward_backward_ms": med(c, "forward_backward_ms"),
               "communicate_ms": med(c, "communicate_ms"), "optimizer_ms": med(c, "optimizer_ms"),
               "compress_ms": med(c, "compress_ms"), "collective_ms": med(c, "collective_ms"),
               "mb_per_step": mb, "x_noop": step / noop}
        table.append(row)
        print(f"{c:38s} {step:8.1f} {row['forward_backward_ms']:8.1f} {row['communicate_ms']:7.1f} "
              f"{row['optimizer_ms']:6.1f} {row['compress_ms']:8.1f} {row['collective_ms']:8.1f} {mb:8.3f} "
              f"{row['x_noop']:7.3f}")
    torch_table = []
    if torch_runs:
        print(f"\nPyTorch DDP (scripts/bench_pytorch_ddp.py), same model, batch, threads and link:")
        print(f"{'hook':38s} {'step ms':>8s} {'x noop':>7s} {'lowrank / PyTorch':>18s}  buckets")
        tnoop = statistics.median(t["noop"]["step_ms_median"] for t in torch_runs)
        for h in sorted(torch_runs[0]):
            tstep = statistics.median(t[h]["step_ms_median"] for t in torch_runs)
            mine = next((c for c, hh in PAIRS.items() if hh == h and c in runs), None)
            ratio = med(mine, "step_ms_median") / tstep if mine else None
            torch_table.append({"hook": h, "step_ms": tstep, "x_noop": tstep / tnoop, "lowrank_config": mine,
                                "lowrank_over_pytorch": ratio, "buckets": torch_runs[0][h].get("buckets")})
            rtxt = f"{ratio:8.3f} ({mine})" if ratio else "-"
            print(f"{h:38s} {tstep:8.1f} {tstep / tnoop:7.3f} {rtxt:>18s}  {torch_runs[0][h].get('buckets', '')}")
    verdict = "ok" if spread <= 0.10 else "CONTENDED: do not trust these ratios"
    print(f"\ncontention check: noop step time over rounds {[round(x, 1) for x in noop_rounds]} ms, "
          f"spread {100 * spread:.1f} % ({verdict})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"link": a.link, "model": a.model, "nproc": a.nproc, "batch_size": a.batch_size,
                       "threads": a.threads, "steps": a.steps, "rounds": a.rounds, "noop_spread": spread,
                       "lowrank": table, "pytorch": torch_table}, f, indent=2)


if __name__ == "__main__":
    main()
