"""lowrank from Python: the three routes on 2 gloo ranks (docs/python.md).

Run: PYTHONPATH=build/python /usr/bin/python3 -m unittest discover -s python/tests -v
Each test spawns 2 processes; every check runs on both ranks and a failure on either is reported
with its traceback.
"""
import math
import os
import socket
import sys
import tempfile
import traceback
import unittest

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import lowrank

WORLD = 2

# Every compressor with per-parameter state, in settings whose steps differ within a few steps
# (restarts, refreshes, the alternating mode), quantized factors, the elementwise baselines (casts,
# sparsifiers, quantizers), the dense baseline and noop.
CASES = [
    ("powersgd", {"rank": 2}),
    ("powersgd", {"rank": 2, "powersgd_mode": "alternating"}),
    ("powersgd+", {"rank": 2, "restart_period": 2}),
    ("greedylore", {"rank": 2, "refresh_period": 2, "dense_steps": 1}),
    ("galore", {"rank": 2, "refresh_period": 2}),
    ("powersgd", {"rank": 2, "factor_dtype": "int8"}),
    ("fp16", {}),
    ("bf16", {}),
    ("topk", {"density": 0.1}),
    ("randomk", {"density": 0.1, "scaled": True}),
    ("qsgd", {"levels": 3}),
    ("signsgd", {}),
    ("none", {}),
    ("noop", {}),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, name, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=WORLD)
    try:
        (globals()[name] if name in globals() else getattr(sys.modules["__main__"], name))(rank)
        status = "ok"
    except BaseException:  # noqa: B902  (reported to the parent, which fails the test)
        status = traceback.format_exc()
    with open(os.path.join(out_dir, "rank%d" % rank), "w") as f:
        f.write(status)
    try:
        dist.destroy_process_group()
    except Exception:
        pass


def run_ranks(test, name):
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(free_port(), name, d), nprocs=WORLD, join=True)
        errors = []
        for r in range(WORLD):
            path = os.path.join(d, "rank%d" % r)
            text = open(path).read() if os.path.exists(path) else "rank %d wrote no result" % r
            if text != "ok":
                errors.append("rank %d:\n%s" % (r, text))
        if errors:
            test.fail("\n".join(errors))


# ---------------------------------------------------------------------------------------------
# Helpers run inside the ranks.

def make_model(seed=0):
    # 1 MiB buckets split this model into several DDP buckets (the middle weight alone is 1 MiB).
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(96, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
                               torch.nn.Linear(512, 10))


def batch(rank, step):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(16, 96, generator=g), torch.randint(0, 10, (16,), generator=g)


def loss_of(model, rank, step):
    x, y = batch(rank, step)
    return torch.nn.functional.cross_entropy(model(x), y)


def sgd(params, lr=0.1):
    with torch.no_grad():
        for p in params:
            p.sub_(lr * p.grad)


def zero(params):
    for p in params:
        if p.grad is not None:
            p.grad.detach_()
            p.grad.zero_()


def check_same_on_all_ranks(tensors, what):
    for t in tensors:
        gathered = [torch.empty_like(t) for _ in range(WORLD)]
        dist.all_gather(gathered, t.contiguous())
        for g in gathered[1:]:
            assert torch.equal(g, gathered[0]), "%s differs between ranks" % what


def ddp_of(model, bucket_view, cap_mb=1):
    return torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=cap_mb, gradient_as_bucket_view=bucket_view)


# ---------------------------------------------------------------------------------------------
# The checks.

def routes_match_the_cpp_reducer(rank):
    """DDP + register_ddp_hook, DDP + comm_hook and lowrank.GradientReducer give the gradients of
    the C++ GradientReducer (lowrank.GradientReducer is it) bit for bit, step after step, on every
    compressor, with gradient_as_bucket_view on and off, across DDP's bucket rebuild."""
    for name, opts in CASES:
        for bucket_view in (False, True):
            what = "%s %s bucket_view=%s" % (name, opts, bucket_view)
            ref_model = make_model()
            hook_model, py_model = make_model(), make_model()
            # The reference: lowrank's own reducer, with DDP's bucket plan (1 MiB, reverse order).
            ref = lowrank.GradientReducer(ref_model.named_parameters(), name, bucket_cap_mb=1, min_compression_rate=0,
                                          **opts)
            hook_ddp = ddp_of(hook_model, bucket_view)
            state = lowrank.register_ddp_hook(hook_ddp, name, min_compression_rate=0, **opts)
            py_ddp = ddp_of(py_model, bucket_view)
            py_state = lowrank.HookState(name, module=py_model, bucket_cap_mb=1, min_compression_rate=0, **opts)
            py_ddp.register_comm_hook(py_state, lowrank.comm_hook)
            for step in range(4):
                zero(ref_model.parameters())
                loss_of(ref_model, rank, step).backward()
                assert ref.reduce(), what
                for ddp in (hook_ddp, py_ddp):
                    ddp.zero_grad(set_to_none=False)
                    loss_of(ddp, rank, step).backward()
                for (n, a), b, c in zip(ref_model.named_parameters(), hook_model.parameters(), py_model.parameters()):
                    assert torch.equal(a.grad, b.grad), "%s step %d %s: register_ddp_hook differs by %g" % (
                        what, step, n, (a.grad - b.grad).abs().max())
                    assert torch.equal(a.grad, c.grad), "%s step %d %s: comm_hook differs by %g" % (
                        what, step, n, (a.grad - c.grad).abs().max())
                if name != "noop":
                    check_same_on_all_ranks([p.grad for p in hook_model.parameters()], what + " gradient")
                for m in (ref_model, hook_model, py_model):
                    sgd(m.parameters())
            assert len(state.bucket_names()) >= 2, "%s: expected several buckets, got %s" % (
                what, state.bucket_names())
            assert state.bucket_names() == ref.bucket_names(), (state.bucket_names(), ref.bucket_names())
            s_ref, s_hook = ref.stats(), state.stats()
            assert s_hook["steps"] == 4 and s_hook["skipped_steps"] == 0, s_hook
            assert s_hook["bytes_sent"] == s_ref["bytes_sent"], (what, s_hook, s_ref)
            assert py_state.stats()["bytes_sent"] == s_ref["bytes_sent"], what


def state_dict_resumes_bit_exactly(rank):
    """state_dict() after N steps, loaded into a fresh model + DDP + state, continues exactly as
    an uninterrupted run; the dict survives torch.save/torch.load."""
    n = 3
    for name, opts in CASES[:5]:
        whole = make_model()
        whole_ddp = ddp_of(whole, True)
        lowrank.register_ddp_hook(whole_ddp, name, min_compression_rate=0, **opts)
        first = make_model()
        first_ddp = ddp_of(first, True)
        first_state = lowrank.register_ddp_hook(first_ddp, name, min_compression_rate=0, **opts)
        for step in range(2 * n):
            whole_ddp.zero_grad(set_to_none=False)
            loss_of(whole_ddp, rank, step).backward()
            sgd(whole.parameters())
            if step < n:
                first_ddp.zero_grad(set_to_none=False)
                loss_of(first_ddp, rank, step).backward()
                sgd(first.parameters())
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "ckpt.pt")
            torch.save({"model": first.state_dict(), "lowrank": first_state.state_dict()}, path)
            ckpt = torch.load(path)
        second = make_model(seed=123)  # other initial weights: everything must come from the checkpoint
        second.load_state_dict(ckpt["model"])
        second_ddp = ddp_of(second, True)
        second_state = lowrank.register_ddp_hook(second_ddp, name, min_compression_rate=0, **opts)
        second_state.load_state_dict(ckpt["lowrank"])
        assert second_state.stats()["steps"] == n, second_state.stats()
        for step in range(n, 2 * n):
            second_ddp.zero_grad(set_to_none=False)
            loss_of(second_ddp, rank, step).backward()
            sgd(second.parameters())
        for (k, a), b in zip(whole.named_parameters(), second.parameters()):
            assert torch.equal(a, b), "%s %s: resumed weights differ by %g" % (name, k, (a - b).abs().max())


def nan_on_one_rank_skips_everywhere(rank):
    """A NaN in rank 1's gradient (planted during backward) makes every rank skip the step: DDP's
    gradients are NaN everywhere, last_step_skipped() and stats() say so, no state changed, and
    afterwards the run continues exactly like one that never saw the bad step."""
    for name, opts in CASES[:5] + [("noop", {})]:
        hit, ref = make_model(), make_model()
        hit_ddp, ref_ddp = ddp_of(hit, True), ddp_of(ref, True)
        hit_state = lowrank.register_ddp_hook(hit_ddp, name, min_compression_rate=0, **opts)
        lowrank.register_ddp_hook(ref_ddp, name, min_compression_rate=0, **opts)
        weight = hit[2].weight
        for step in range(5):
            if step == 2:
                before = {k: v.clone() for k, v in hit_state.state_dict().items()}
                handle = None
                if rank == 1:
                    handle = weight.register_hook(lambda g: g.index_put((torch.tensor([3]), torch.tensor([5])),
                                                                       torch.tensor(float("nan"))))
                hit_ddp.zero_grad(set_to_none=False)
                loss_of(hit_ddp, rank, 99).backward()
                if handle is not None:
                    handle.remove()
                assert hit_state.last_step_skipped(), name
                assert hit_state.stats()["skipped_steps"] == 1, (name, hit_state.stats())
                assert all(torch.isnan(p.grad).all() for p in hit.parameters()), name + ": gradients not NaN"
                after = hit_state.state_dict()
                for k, v in before.items():
                    if k == "stats":
                        continue
                    assert torch.equal(v, after[k]), "%s: state %s changed by a skipped step" % (name, k)
                # The optimizer step is skipped, as the docs say.
            for ddp in (hit_ddp, ref_ddp):
                ddp.zero_grad(set_to_none=False)
                loss_of(ddp, rank, step).backward()
            assert not hit_state.last_step_skipped(), name
            for (k, a), b in zip(hit.named_parameters(), ref.parameters()):
                assert torch.equal(a.grad, b.grad), "%s step %d %s: differs after the skipped step" % (name, step, k)
            sgd(hit.parameters())
            sgd(ref.parameters())
        assert hit_state.stats()["steps"] == 5, hit_state.stats()


def reducer_skips_nan_and_overlaps(rank):
    """lowrank.GradientReducer: buckets start during backward with the NaN check on, and a NaN on
    one rank makes reduce() return False on both."""
    model = make_model()
    red = lowrank.GradientReducer(model.named_parameters(), "powersgd", rank=2, bucket_cap_mb=1,
                                  min_compression_rate=0)
    nbuckets = len(red.bucket_names())
    assert nbuckets >= 2, red.bucket_names()
    for step in range(3):
        zero(model.parameters())
        loss_of(model, rank, step).backward()
        assert red.reduce()
        sgd(model.parameters())
    assert red.stats()["buckets_from_backward"] == 3 * nbuckets, red.stats()
    before = {k: v.clone() for k, v in red.state_dict().items()}
    zero(model.parameters())
    handle = model[2].weight.register_hook(lambda g: g * float("inf")) if rank == 0 else None
    loss_of(model, rank, 7).backward()
    if handle is not None:
        handle.remove()
    assert red.reduce() is False
    assert red.last_nonfinite_ranks == [0], red.last_nonfinite_ranks
    assert red.stats()["skipped_steps"] == 1 and red.step == 3
    after = red.state_dict()
    for k, v in before.items():
        if k != "stats":
            assert torch.equal(v, after[k]), "state %s changed by a skipped step" % k


def ranks_are_reported(rank):
    """ranks() and mean_rank() on both objects: a fixed rank on every compressed matrix, no history;
    rank=auto replans at its spectrum steps within [rank_min, rank_max], records when, and plans the
    same on every rank; the DDP hook reports what the same reducer reports."""
    model = make_model()
    fixed = lowrank.GradientReducer(model.named_parameters(), "powersgd", rank=3, min_compression_rate=0)
    ranks = fixed.ranks()
    assert [d["name"] for d in ranks] == fixed.compressed_names(), ranks
    assert [d["shape"] for d in ranks] == [(512, 96), (512, 512), (10, 512)], ranks
    assert all(d["rank"] == 3 and d["history"] == [] for d in ranks), ranks
    assert fixed.mean_rank() == 3.0

    opts = dict(rank="auto", rank_energy=0.5, rank_max=6, rank_period=2, min_compression_rate=0)
    auto = make_model()
    red = lowrank.GradientReducer(auto.named_parameters(), "powersgd", **opts)
    hooked = make_model()
    ddp = ddp_of(hooked, True)
    state = lowrank.register_ddp_hook(ddp, "powersgd", **opts)
    # Before the first spectrum step both start at the same ranks, with no history yet.
    assert [(d["shape"], d["rank"]) for d in state.ranks()] == [(d["shape"], d["rank"]) for d in red.ranks()]
    assert all(d["history"] == [] for d in red.ranks()), red.ranks()
    for step in range(6):
        zero(auto.parameters())
        loss_of(auto, rank, step).backward()
        assert red.reduce()
        sgd(auto.parameters())
        ddp.zero_grad(set_to_none=False)
        loss_of(ddp, rank, step).backward()
        sgd(hooked.parameters())
    ranks = red.ranks()
    assert all(1 <= d["rank"] <= 6 for d in ranks), ranks
    # History is written when a plan changes a rank (from the start at rank_max); this model's matrices all change.
    assert any(d["history"] for d in ranks), ranks
    assert all(all(0 <= s < 6 and 1 <= r <= 6 for s, r in d["history"]) for d in ranks), ranks
    assert all([s for s, _ in d["history"]] == sorted({s for s, _ in d["history"]}) for d in ranks), ranks
    assert all(d["history"][-1][1] == d["rank"] for d in ranks if d["history"]), ranks
    assert math.isclose(red.mean_rank(), sum(d["rank"] for d in ranks) / len(ranks)), (red.mean_rank(), ranks)
    check_same_on_all_ranks([torch.tensor([d["rank"] for d in ranks])], "rank=auto's plan")
    # The hook's engine buckets DDP's parameters by its own plan, so its ranks are the same plan.
    assert sorted((d["name"].split(".")[-1], d["shape"], d["rank"]) for d in state.ranks()) == \
        sorted((d["name"].split(".")[-1], d["shape"], d["rank"]) for d in ranks), (state.ranks(), ranks)


def bad_input_raises(rank):
    """Bad names, values, double registration and a wrong world size raise naming the cause."""
    model = make_model()

    def raises(exc, fragment, fn):
        try:
            fn()
        except exc as e:
            assert fragment in str(e), "expected %r in: %s" % (fragment, e)
            return
        raise AssertionError("expected %s containing %r" % (exc.__name__, fragment))

    params = lambda: model.named_parameters()  # noqa: E731
    raises(ValueError, "powersgd", lambda: lowrank.GradientReducer(params(), "powersdg"))
    raises(ValueError, "rnak", lambda: lowrank.GradientReducer(params(), "powersgd", rnak=4))
    raises(ValueError, "rank", lambda: lowrank.GradientReducer(params(), "powersgd", rank=0))
    raises(ValueError, "start_iter must be an integer", lambda: lowrank.GradientReducer(params(), "powersgd",
                                                                                        start_iter="3"))
    raises(ValueError, "ef_residual", lambda: lowrank.GradientReducer(params(), "powersgd", ef_residual="both"))
    raises(ValueError, "process group", lambda: lowrank.GradientReducer(params(), "powersgd", process_group=3))
    raises(ValueError, "overlap", lambda: lowrank.HookState("powersgd", overlap=False))
    ddp = ddp_of(make_model(), True)
    lowrank.register_ddp_hook(ddp, "powersgd", rank=2)
    raises(RuntimeError, "already registered", lambda: lowrank.register_ddp_hook(ddp, "powersgd", rank=2))
    other = ddp_of(make_model(), True)
    other.register_comm_hook(None, lambda state, bucket: torch.futures.Future())
    raises(RuntimeError, "once", lambda: lowrank.register_ddp_hook(other, "powersgd"))
    # A one-rank group for a two-rank DDP model.
    solo = [dist.new_group([r]) for r in range(WORLD)][rank]
    raises(ValueError, "1 ranks but DDP's has 2",
           lambda: lowrank.register_ddp_hook(ddp_of(make_model(), True), "powersgd", process_group=solo))
    raises(ValueError, "DistributedDataParallel", lambda: lowrank.register_ddp_hook(make_model(), "powersgd"))
    # A state saved under other compressor settings is refused by name.
    a = lowrank.GradientReducer(params(), "powersgd", rank=2)
    b = lowrank.GradientReducer(make_model().named_parameters(), "powersgd", rank=3)
    raises(ValueError, "saved with settings", lambda: b.load_state_dict(a.state_dict()))
    # Ranks that disagree on the settings fail together, naming the difference (no hang).
    raises(ValueError, "ranks disagree on the reducer set-up", lambda: lowrank.GradientReducer(params(), "powersgd", rank=2 + rank))


class PythonRoutes(unittest.TestCase):
    def test_module_lists_compressors(self):
        names = lowrank.compressors()
        for n in ("galore", "greedylore", "none", "noop", "powersgd", "powersgd+"):
            self.assertIn(n, names)
        self.assertEqual(names, sorted(names))
        self.assertIn("start_iter", lowrank.reducer_options())

    def test_no_process_group_is_a_clear_error(self):
        with self.assertRaisesRegex(ValueError, "init_process_group"):
            lowrank.GradientReducer(make_model().named_parameters(), "powersgd")

    def test_routes_match_the_cpp_reducer(self):
        run_ranks(self, "routes_match_the_cpp_reducer")

    def test_state_dict_resumes_bit_exactly(self):
        run_ranks(self, "state_dict_resumes_bit_exactly")

    def test_nan_on_one_rank_skips_everywhere(self):
        run_ranks(self, "nan_on_one_rank_skips_everywhere")

    def test_reducer_skips_nan_and_overlaps(self):
        run_ranks(self, "reducer_skips_nan_and_overlaps")

    def test_ranks_are_reported(self):
        run_ranks(self, "ranks_are_reported")

    def test_bad_input_raises(self):
        run_ranks(self, "bad_input_raises")


if __name__ == "__main__":
    unittest.main()
