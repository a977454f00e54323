#!/usr/bin/env python3
"""The reducer's cost per step on ResNet-18's gradients, lowrank next to PyTorch's own hook.

Alternates, --rounds times, `lowrank bench` (every configuration, against the memory-bandwidth
floor measured in its own process) and `bench_pytorch_ddp.py --kernel` (PyTorch's powerSGD_hook
and all-reduce hook on the same model's real gradient, against the floor measured in its process),
then prints medians over rounds and the ratios that compare the two: each side's time as a
multiple of its own floor, and PyTorch's hook time / lowrank's time for PowerSGD ranks 1 and 4.
One thread each (--threads); this machine's 2 vCPUs sometimes deliver one core's worth, so the
spread of the floors over rounds is printed as the contention check.

    scripts/bench_kernels.py --rounds 3
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_kernels: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return proc.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "lowrank"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--configs", default="none powersgd powersgd:rank=1 powersgd+:restart_period=100 "
                   "powersgd+:restart_period=100,restart=rsvd greedylore greedylore:scores=probe galore")
    p.add_argument("--json", help="write the medians as JSON to this file")
    a = p.parse_args()
    mine, theirs = [], []
    with tempfile.TemporaryDirectory(prefix="lowrank-kernels-") as tmp:
        for r in range(a.rounds):
            out = os.path.join(tmp, f"lowrank-{r}.json")
            run([a.binary, "bench", "--rounds", "20", "--steps", "10", "--threads", str(a.threads),
                 "--json", out, "--configs"] + a.configs.split())
            with open(out) as f:
                mine.append(json.load(f))
            out = os.path.join(tmp, f"torch-{r}.json")
            run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "bench_pytorch_ddp.py"), "--kernel",
                 "--rounds", "20", "--threads", str(a.threads), "--json", out])
            with open(out) as f:
                theirs.append({row["hook"]: row for row in json.load(f)})
            print(f"round {r + 1}/{a.rounds}: lowrank floor {mine[-1]['floor_ms']:.2f} ms, "
                  f"powersgd {next(x['mean_ms'] for x in mine[-1]['rows'] if x['config'] == 'powersgd'):.2f} ms; "
                  f"PyTorch copy {theirs[-1]['copy']['ms_median']:.2f} ms, "
                  f"powerSGD_hook {theirs[-1]['powersgd4']['ms_median']:.2f} ms", flush=True)

    floor = statistics.median(m["floor_ms"] for m in mine)
    torch_copy = statistics.median(t["copy"]["ms_median"] for t in theirs)
    print(f"\nResNet-18 gradients ({mine[0]['numel']} floats), world size 1, {a.threads} thread(s), "
          f"BLAS {mine[0]['blas']}; medians of {a.rounds} alternating rounds")
    print(f"lowrank floor (2 copies) {floor:.2f} ms; PyTorch floor (2 copies) {2 * torch_copy:.2f} ms")
    print(f"{'configuration':44s} {'ms/step':>8s} {'x floor':>8s} {'x powersgd':>11s}")
    table = {"floor_ms": floor, "torch_floor_ms": 2 * torch_copy, "lowrank": [], "pytorch": [], "ratios": []}
    psgd = statistics.median(next(x["mean_ms"] for x in m["rows"] if x["config"] == "powersgd") for m in mine)
    for config in a.configs.split():
        ms = statistics.median(next(x["mean_ms"] for x in m["rows"] if x["config"] == config) for m in mine)
        table["lowrank"].append({"config": config, "ms": ms, "x_floor": ms / floor, "x_powersgd": ms / psgd})
        print(f"{config:44s} {ms:8.2f} {ms / floor:8.2f} {ms / psgd:11.2f}")
    print(f"\nPyTorch 1.13 hooks on the same gradient (one DDP bucket):")
    for hook in ("none", "powersgd1", "powersgd4"):
        ms = statistics.median(t[hook]["ms_median"] for t in theirs)
        table["pytorch"].append({"hook": hook, "ms": ms, "x_floor": ms / (2 * torch_copy)})
        print(f"{'PyTorch ' + hook:44s} {ms:8.2f} {ms / (2 * torch_copy):8.2f}")
    print("\nPyTorch / lowrank, same gradient, same rank:")
    for hook, config in (("powersgd4", "powersgd"), ("powersgd1", "powersgd:rank=1")):
        t_ms = statistics.median(t[hook]["ms_median"] for t in theirs)
        l_ms = next(x["ms"] for x in table["lowrank"] if x["config"] == config)
        table["ratios"].append({"pytorch": hook, "lowrank": config, "pytorch_over_lowrank": t_ms / l_ms})
        print(f"  {hook} / {config}: {t_ms:.2f} / {l_ms:.2f} ms = {t_ms / l_ms:.2f}x")
    floors = [m["floor_ms"] for m in mine]
    spread = (max(floors) - min(floors)) / min(floors)
    print(f"\ncontention check: lowrank floor over rounds {[round(f, 2) for f in floors]} ms, spread "
          f"{100 * spread:.1f} % ({'ok' if spread <= 0.15 else 'CONTENDED: do not trust these ratios'})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(table, f, indent=2)


if __name__ == "__main__":
    main()
