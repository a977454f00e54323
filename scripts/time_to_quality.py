#!/usr/bin/python3
"""Time to quality on a slow link: wall time until each configuration first reaches a target metric.

Each configuration is one `lowrank train` inside scripts/with_slow_link.sh at --rate, evaluated every
--eval-every steps, one run at a time (nothing else should run beside them: the wall times are the
result). From each run's metrics.csv (elapsed_s against test_accuracy, or val_perplexity for a language
model) it reports when the target was first reached, and draws the metric against wall time.

  scripts/time_to_quality.py --out runs/ttq                      # CNN, 100 Mbit/s, target accuracy 0.88
  scripts/time_to_quality.py --out runs/ttq-lm --model llama --target 90 --epochs 1

A configuration whose flags begin with `python:` runs examples/python/train_ddp.py (the same CNN, data,
seeds and optimizer in PyTorch) under `python3 -m torch.distributed.run` instead, with the lowrank
module from build/python; that is how PyTorch's own DDP and its powerSGD_hook enter the table:

  scripts/time_to_quality.py --out runs/ttq-py --configs "pytorch-ddp: python: --route torch_ddp; \
      pytorch-powersgd-r4: python: --route torch_powersgd --rank 4; lowrank-hook-r4: python: --rank 4"

Writes OUT/time_to_quality.md (and prints it), OUT/time_to_quality.csv and OUT/metric_vs_time.png
(gnuplot). Needs root (network namespaces and tc); exits 77 otherwise, as with_slow_link.sh does.
"""
import argparse
import csv
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"  # Debian's python3-torch is this interpreter's
DEFAULT_CONFIGS = ("none: --compressor none; powersgd-r4: --compressor powersgd --rank 4; "
                   "rank-auto: --compressor powersgd --rank auto --opt rank_budget=37656; "
                   "compressor-auto: --compressor auto")


def parse_configs(text):
    out = []
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        label, sep, flags = item.partition(":")
        if not sep or not label.strip():
            sys.exit(f"time_to_quality: config '{item}' is not LABEL: FLAGS")
        flags = flags.split()
        python = bool(flags) and flags[0] == "python:"
        out.append((label.strip(), python, flags[1:] if python else flags))
    return out


def python_run(metrics_csv):
    """(last row, median of the rows' mean step ms) of examples/python/train_ddp.py's --metrics file,
    which has metrics.csv's elapsed_s and test_accuracy columns and no summary.json beside it."""
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{metrics_csv} has no rows")
    ms = sorted(float(r["step_ms"]) for r in rows)
    return rows[-1], ms[len(ms) // 2]


def series(metrics_csv, lm):
    """(elapsed_s, metric) of every row that evaluated."""
    key = "val_perplexity" if lm else "test_accuracy"
    points = []
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            if row.get(key):
                points.append((float(row["elapsed_s"]), float(row[key])))
    return points


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory for the runs and the report")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="'LABEL: train flags; ...'")
    ap.add_argument("--rate", default="100mbit", help="link rate, as with_slow_link.sh takes it")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--target", type=float, default=None,
                    help="accuracy to reach (default 0.88), or perplexity for llama (default 90)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--train-flags", default="", help="more lowrank train flags for every C++ run (python: runs take theirs in their config)")
    a = ap.parse_args()
    lm = a.model == "llama"
    target = a.target if a.target is not None else (90.0 if lm else 0.88)
    if (not lm and not 0 < target <= 1) or (lm and target <= 1):
        sys.exit(f"time_to_quality: --target {target} is not a {'perplexity > 1' if lm else 'accuracy in (0, 1]'}")
    os.makedirs(a.out, exist_ok=True)
    binary = os.path.join(ROOT, "build", "lowrank")
    rows = []
    configs = parse_configs(a.configs)
    if a.model != "cnn" and any(python for _, python, _ in configs):
        sys.exit(f"time_to_quality: python: configurations train the CNN only (examples/python/train_ddp.py), "
                 f"not --model {a.model}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(ROOT, "build", "python"), env.get("PYTHONPATH"))
                                        if p)
    for label, python, flags in configs:
        out = os.path.join(a.out, label)
        shaped = [os.path.join(ROOT, "scripts", "with_slow_link.sh"), a.rate, "--"]
        if python:
            os.makedirs(out, exist_ok=True)
            # --redirects 1 --tee 1: torch 1.13's launcher cannot parse its own defaults under Python 3.11
            # (Debian 12); with these the workers' output still reaches the log.
            cmd = shaped + [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", str(a.nproc),
                            "--master_addr", "127.0.0.1", "--master_port", "29500", "--redirects", "1", "--tee", "1",
                            "--log_dir", os.path.join(out, "launcher"),
                            os.path.join(ROOT, "examples", "python", "train_ddp.py"), "--epochs", str(a.epochs),
                            "--eval-every", str(a.eval_every), "--metrics", os.path.join(out, "metrics.csv")] + flags
        else:
            cmd = shaped + [binary, "train", "--nproc", str(a.nproc), "--model", a.model, "--epochs", str(a.epochs),
                            "--eval-every", str(a.eval_every), "--out", out, "--overwrite"] + a.train_flags.split() + flags
        log = out + ".log"
        print("+", " ".join(cmd), f"> {log}", flush=True)
        with open(log, "w") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        if rc == 77:
            sys.exit(77)
        if rc != 0:
            rows.append({"label": label, "failed": f"exit {rc}, see {log}"})
            continue
        points = series(os.path.join(out, "metrics.csv"), lm)
        reached = [t for t, m in points if (m <= target if lm else m >= target)]
        if python:
            last, step_ms = python_run(os.path.join(out, "metrics.csv"))
            route = flags[flags.index("--route") + 1] if "--route" in flags else "ddp_hook"
            rows.append({"label": label, "chosen": f"train_ddp.py --route {route}",
                         "time": reached[0] if reached else None, "final": points[-1][1], "wall": points[-1][0],
                         "step_ms": step_ms, "mb": float(last["bytes_sent"]) / 1e6, "points": points})
            continue
        summary = json.load(open(os.path.join(out, "summary.json")))
        final = summary["val_perplexity"] if lm else summary["test_accuracy"]
        chosen = summary["compressor"] + (f" rank {summary['rank']}" if summary.get("rank") is not None else "")
        rows.append({"label": label, "chosen": chosen, "time": reached[0] if reached else None, "final": final,
                     "wall": summary["wall_seconds"], "step_ms": summary["step_ms_median"],
                     "mb": summary["bytes_sent_per_worker"] / 1e6, "points": points})
    metric = "val perplexity" if lm else "test accuracy"
    md = [f"# Time to {metric} {'<=' if lm else '>='} {target:g} at {a.rate}, {a.nproc} workers, {a.model}", "",
          f"`scripts/time_to_quality.py --out {a.out} --rate {a.rate} --model {a.model} --epochs {a.epochs} "
          f"--eval-every {a.eval_every}`", "",
          f"| config | runs as | seconds to target | final {metric} | wall s | median step ms | MB / worker |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "failed" in r:
            md.append(f"| {r['label']} | failed: {r['failed']} | | | | | |")
            continue
        t = f"{r['time']:.1f}" if r["time"] is not None else f"not reached in {a.epochs} epochs"
        md.append(f"| {r['label']} | {r['chosen']} | {t} | {r['final']:.4f} | {r['wall']:.1f} | {r['step_ms']:.1f} | "
                  f"{r['mb']:.1f} |")
    text = "\n".join(md) + "\n"
    open(os.path.join(a.out, "time_to_quality.md"), "w").write(text)
    with open(os.path.join(a.out, "time_to_quality.csv"), "w") as f:
        f.write("label,runs_as,seconds_to_target,final,wall_s,step_ms,mb_per_worker\n")
        for r in rows:
            if "failed" not in r:
                f.write(f"{r['label']},{r['chosen']},{'' if r['time'] is None else r['time']},{r['final']},"
                        f"{r['wall']},{r['step_ms']},{r['mb']}\n")
    plot(a.out, rows, metric, target, a.rate)
    print(text)


def plot(out, rows, metric, target, rate):
    ok = [r for r in rows if "failed" not in r and r["points"]]
    if not ok:
        return
    for r in ok:
        with open(os.path.join(out, r["label"] + ".dat"), "w") as f:
            f.writelines(f"{t} {m}\n" for t, m in r["points"])
    plots = ", ".join(f"'{os.path.join(out, r['label'] + '.dat')}' using 1:2 with linespoints title '{r['label']}'"
                      for r in ok)
    script = (f"set terminal pngcairo size 900,560\nset output '{os.path.join(out, 'metric_vs_time.png')}'\n"
              f"set xlabel 'wall time (s)'\nset ylabel '{metric}'\nset grid\nset key bottom right\n"
              f"set title '{metric} against wall time at {rate}'\n"
              f"plot {plots}, {target} with lines dashtype 2 title 'target'\n")
    subprocess.run(["gnuplot"], input=script.encode(), check=False)


if __name__ == "__main__":
    main()
