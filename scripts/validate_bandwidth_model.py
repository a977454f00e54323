#!/usr/bin/python3
"""Checks lowrank's bandwidth model (docs/reports.md, "Predicted step time by link") against shaped links.

One `lowrank compare` on plain loopback predicts every config's step time at each link of --links
(OUT/loopback/predicted.csv); then the same compare runs once per link inside
scripts/with_slow_link.sh, and the table compares each prediction with the step time measured there.
The shaped loopback carries every worker's bytes through one queue, so the predictions use
--shared-link. Needs root (network namespaces and tc); prints why and exits 77 otherwise.

  scripts/validate_bandwidth_model.py --out runs/bwmodel
  scripts/validate_bandwidth_model.py --out runs/bwmodel --model resnet18 --steps 10 --links "1gbit 100mbit" \
      --train-flags "--eval-examples 200"

Writes OUT/validation.md (and prints it): per config and link, the predicted and measured median step
time and their error, the measured mean step (from metrics.csv) and the error against it, and the
predicted and measured time in collectives. A second prediction takes
the compute, compression and optimizer times from the shaped run itself (its own predicted.csv at its
own link) and only the link's cost from the model: on a machine whose compute time moves between runs
(shared cores) it separates the link model's error from that noise.
"""
import argparse
import csv
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, log):
    print("+", " ".join(cmd), f"> {log}", flush=True)
    with open(log, "w") as f:
        return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def run_comparisons(out, links, base, shared):
    """The loopback comparison, then the same one inside with_slow_link.sh at each link."""
    rc = run(base + ["--out", os.path.join(out, "loopback")] + shared, os.path.join(out, "loopback.log"))
    if rc != 0:
        sys.exit(f"error: the loopback comparison failed (exit {rc}); see {out}/loopback.log")
    for link in links:
        rc = run([os.path.join(ROOT, "scripts", "with_slow_link.sh"), link, "--"] + base +
                 ["--out", os.path.join(out, link)] + shared, os.path.join(out, link + ".log"))
        if rc == 77:
            print(f"skipped: with_slow_link.sh could not shape a link here (see {out}/{link}.log)")
            sys.exit(77)
        if rc != 0:
            sys.exit(f"error: the comparison at {link} failed (exit {rc}); see {out}/{link}.log")


def mean_step_ms(metrics_csv):
    """The mean step of a run from its metrics.csv rows (each row's step_ms is the mean of the steps
    since the row before). The model predicts from mean bytes per step, so where steps differ (rank=auto's
    spectrum steps) this, not the median, is what it predicts; the first step's warm-up is in it too."""
    total, steps, last, last_skipped = 0.0, 0, 0, 0
    with open(metrics_csv) as f:
        for r in csv.DictReader(f):
            skipped = int(r.get("skipped_steps") or 0)
            n = int(r["step"]) - last - (skipped - last_skipped)  # step_ms is over the applied steps
            last, last_skipped = int(r["step"]), skipped
            if n > 0 and r["step_ms"]:
                total += n * float(r["step_ms"])
                steps += n
    return total / steps if steps else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory for the comparisons and validation.md")
    ap.add_argument("--configs", default="none; powersgd --rank 4", help="lowrank compare --configs")
    ap.add_argument("--links", default="1gbit 100mbit 20mbit", help="tc rates, as with_slow_link.sh takes them")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--lowrank", default=os.path.join(ROOT, "build", "lowrank"))
    ap.add_argument("--train-flags", default="", help="more train flags shared by every run, e.g. \"--eval-examples 200\"")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: write validation.md from the runs an earlier call left in --out")
    a = ap.parse_args()
    if a.nproc < 2 or a.steps < 1:
        sys.exit(f"error: --nproc must be >= 2 and --steps >= 1, got {a.nproc} and {a.steps}")
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    links = a.links.split()
    shared = ["--", "--nproc", str(a.nproc), "--steps", str(a.steps), "--model", a.model] + a.train_flags.split()
    base = [a.lowrank, "compare", "--configs", a.configs, "--shared-link", "--links", a.links, "--overwrite"]

    if not a.report_only:
        run_comparisons(out, links, base, shared)

    with open(os.path.join(out, "loopback", "predicted.csv")) as f:
        predicted = list(csv.DictReader(f))
    rates = {link: float(r["bits_per_second"]) for link, r in zip(links, predicted)}  # same order as --links
    own = {}
    for link in links:
        with open(os.path.join(out, link, "predicted.csv")) as f:
            for r in csv.DictReader(f):
                if float(r["bits_per_second"]) == rates[link]:
                    own[(r["label"], link)] = float(r["predicted_step_ms"])
    rows = ["| config | link | predicted step ms | measured median ms | error | measured mean ms | error | "
            "predicted with the run's own compute | error (median) | predicted collectives ms | "
            "measured collectives ms |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    err = lambda pred, meas: f"{100 * (pred - meas) / meas:+.0f} %"  # noqa: E731
    for p in predicted:
        link = next(l for l, b in rates.items() if b == float(p["bits_per_second"]))
        with open(os.path.join(out, link, p["label"], "summary.json")) as f:
            s = json.load(f)
        mean = mean_step_ms(os.path.join(out, link, p["label"], "metrics.csv"))
        pred, meas, mine = float(p["predicted_step_ms"]), s["step_ms_median"], own[(p["label"], link)]
        rows.append(f"| {p['label']} | {link} | {pred:.1f} | {meas:.1f} | {err(pred, meas)} | {mean:.1f} | "
                    f"{err(pred, mean)} | {mine:.1f} | {err(mine, meas)} | "
                    f"{float(p['predicted_communication_ms']):.1f} | {s['collective_ms']:.1f} |")
    text = (f"Predicted from the loopback run ({out}/loopback), measured under scripts/with_slow_link.sh; "
            f"{a.model}, {a.nproc} workers, {a.steps} steps, configs \"{a.configs}\".\n\n" + "\n".join(rows) + "\n")
    with open(os.path.join(out, "validation.md"), "w") as f:
        f.write(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
