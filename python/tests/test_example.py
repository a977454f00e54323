"""examples/python/train_ddp.py, run as a user runs it: 2 workers under torch.distributed.run.

Standard library unittest only. The lowrank module is found through PYTHONPATH (ctest sets
PYTHONPATH=build/python); LOWRANK_PYTHONPATH, when set, is put in front of it.

    PYTHONPATH=build/python /usr/bin/python3 -m unittest python/tests/test_example.py -v
"""
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "python", "train_ddp.py")
DATA_DIR = "/usr/share/datasets/fashion-mnist"
DATA_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte"]
STEPS = 60
TIMEOUT_S = 80  # the whole run; two slow cores take about 25 s

FINAL = re.compile(r"final: test_accuracy=(\S+) train_loss=(\S+) steps=(\d+) bytes_sent=(\d+) "
                   r"compression_ratio=(\S+)")
PROGRESS = re.compile(r"step (\d+)/(\d+)\s+epoch \d+/\d+\s+loss (\S+)")


def have_data():
    return all(os.path.exists(os.path.join(DATA_DIR, f + ".gz")) or os.path.exists(os.path.join(DATA_DIR, f))
               for f in DATA_FILES)


def child_env():
    env = os.environ.copy()
    paths = [p for p in (env.get("LOWRANK_PYTHONPATH"), env.get("PYTHONPATH")) if p]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, timeout):
    """(exit code, stdout+stderr); on timeout the whole process group (launcher and workers) is killed."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError("%s did not finish within %d s; output:\n%s" % (" ".join(cmd), timeout, out))
    return proc.returncode, out


class TrainDdpExample(unittest.TestCase):
    @unittest.skipUnless(have_data(), "Debian package dataset-fashion-mnist is not installed")
    def test_two_workers_under_torch_distributed_run(self):
        with tempfile.TemporaryDirectory(prefix="lowrank_example_") as logs:
            # --redirects 1 --tee 1: torch 1.13's launcher cannot parse its own defaults ("0") under
            # Python 3.11 (Debian 12); these values parse, and the workers' stdout is still printed.
            for attempt in range(2):  # a second port if the first was taken meanwhile
                cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                       "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                       "--redirects", "1", "--tee", "1", "--log_dir", os.path.join(logs, str(attempt)),
                       EXAMPLE, "--steps", str(STEPS), "--log-every", "10"]
                code, out = run(cmd, TIMEOUT_S)
                if code == 0 or "address already in use" not in out.lower():
                    break
        self.assertEqual(code, 0, "exit code %d; output:\n%s" % (code, out))

        finals = [m for m in map(FINAL.search, out.splitlines()) if m]
        self.assertEqual(len(finals), 1, "expected one final line (rank 0's); output:\n" + out)
        accuracy, train_loss, steps, bytes_sent, ratio = finals[0].groups()
        accuracy, train_loss, ratio = float(accuracy), float(train_loss), float(ratio)
        self.assertEqual(int(steps), STEPS, out)
        self.assertGreater(int(bytes_sent), 0, out)
        self.assertGreater(ratio, 5.0, "PowerSGD rank 4 should compress the CNN well beyond 5x\n" + out)

        progress = [m for m in map(PROGRESS.search, out.splitlines()) if m]
        self.assertTrue(progress, "no progress line; output:\n" + out)
        first_loss = float(progress[0].group(3))
        self.assertEqual(int(progress[0].group(1)), 1, out)
        self.assertLess(train_loss, 0.8 * first_loss, "the loss did not fall; output:\n" + out)
        self.assertGreater(accuracy, 0.5, "test accuracy not well above chance (0.1); output:\n" + out)
        self.assertIn("weights identical on all 2 ranks", out)

        # The C++ trainer's run of the same model, data, seeds and steps ends with the same weights,
        # bit for bit: the Python route is lowrank, not an approximation of it.
        binary = os.environ.get("LOWRANK_BINARY") or os.path.join(ROOT, "build", "lowrank")
        if not os.path.exists(binary):
            self.skipTest("no lowrank binary at %s to compare with" % binary)
        sha = re.search(r"weights identical on all 2 ranks \(sha256 ([0-9a-f]{64})\)", out)
        self.assertIsNotNone(sha, out)
        with tempfile.TemporaryDirectory(prefix="lowrank_cpp_") as d:
            code, cpp = run([binary, "train", "--nproc", "2", "--threads", "1", "--steps", str(STEPS), "--out",
                             os.path.join(d, "run")], TIMEOUT_S)
            self.assertEqual(code, 0, cpp)
            with open(os.path.join(d, "run", "summary.json")) as f:
                summary = json.load(f)
        self.assertEqual(summary["weights_sha256"], sha.group(1),
                         "the C++ trainer ended with other weights; its output:\n" + cpp + "\nthe example's:\n" + out)

    @unittest.skipUnless(have_data(), "Debian package dataset-fashion-mnist is not installed")
    def test_pytorch_powersgd_route_writes_metrics(self):
        """--route torch_powersgd (PyTorch's own hook, the comparison of docs/performance.md) with
        --eval-every and --metrics: a row per evaluation, time and bytes growing, PyTorch's PowerSGD
        counted as compressed after its two dense steps, and the model learning."""
        steps, every = 40, 20
        with tempfile.TemporaryDirectory(prefix="lowrank_torch_") as d:
            metrics = os.path.join(d, "metrics.csv")
            for attempt in range(2):
                cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                       "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                       "--redirects", "1", "--tee", "1", "--log_dir", os.path.join(d, str(attempt)),
                       EXAMPLE, "--route", "torch_powersgd", "--steps", str(steps), "--eval-every", str(every),
                       "--metrics", metrics]
                code, out = run(cmd, TIMEOUT_S)
                if code == 0 or "address already in use" not in out.lower():
                    break
            self.assertEqual(code, 0, "exit code %d; output:\n%s" % (code, out))
            self.assertIn("powerSGD_hook rank 4", out)
            with open(metrics) as f:
                rows = list(csv.DictReader(f))
        self.assertEqual([int(r["step"]) for r in rows], [every, steps], rows)
        elapsed = [float(r["elapsed_s"]) for r in rows]
        sent = [int(r["bytes_sent"]) for r in rows]
        self.assertTrue(0 < elapsed[0] < elapsed[1], rows)
        dense_per_step = 4 * 215370  # the CNN's fp32 gradient
        self.assertEqual(sent[0] - 2 * dense_per_step, (sent[1] - sent[0]) * (every - 2) // every, rows)
        self.assertLess(sent[1] - sent[0], every * dense_per_step / 5, "rank 4 should compress beyond 5x: %s" % rows)
        self.assertGreater(float(rows[-1]["test_accuracy"]), 0.5, rows)
        self.assertTrue(all(float(r["step_ms"]) > 0 for r in rows), rows)

    def test_pytorch_routes_refuse_lowrank_options(self):
        code, out = run([sys.executable, EXAMPLE, "--route", "torch_ddp", "--opt", "rank=2"], 60)
        self.assertEqual(code, 2, out)
        self.assertIn("--route torch_ddp takes none (got rank=2)", out)

    def test_missing_data_fails_clearly(self):
        with tempfile.TemporaryDirectory(prefix="lowrank_nodata_") as empty:
            code, out = run([sys.executable, EXAMPLE, "--data-dir", empty, "--steps", "1"], 60)
        self.assertEqual(code, 2, "exit code %d; output:\n%s" % (code, out))
        self.assertIn("dataset-fashion-mnist", out)
        self.assertIn(os.path.join(empty, "train-images-idx3-ubyte.gz"), out)
        self.assertNotIn("Traceback", out)


if __name__ == "__main__":
    unittest.main()
