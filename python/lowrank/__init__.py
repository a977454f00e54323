"""lowrank: low-rank gradient compression for data-parallel PyTorch training.

A thin layer over lowrank's C++ core (docs/python.md). Three routes:

    # 1. DDP, the hook in C++ on DDP's own buckets (no GIL per bucket)
    state = lowrank.register_ddp_hook(ddp, "powersgd", rank=4)
    # 2. the same through PyTorch's own API
    state = lowrank.HookState("powersgd", rank=4, module=model)
    ddp.register_comm_hook(state, lowrank.comm_hook)
    # 3. a plain loop without DDP
    reducer = lowrank.GradientReducer(model.named_parameters(), "powersgd", rank=4)
    loss.backward()
    if reducer.reduce():
        opt.step()
"""
import torch  # noqa: F401  (loads libtorch and registers the types the extension exchanges)
import torch.distributed  # noqa: F401

from ._lowrank import GradientReducer, HookState, compressors, reducer_options

__all__ = ["GradientReducer", "HookState", "comm_hook", "compressors", "reducer_options", "register_ddp_hook"]


def _value(fut):
    return fut.value()


def comm_hook(state, bucket):
    """DDP communication hook for ddp.register_comm_hook(state, lowrank.comm_hook).

    The bucket is reduced by lowrank's C++ engine on its own thread; the returned future completes
    when the step's last bucket is done (and the ranks agreed that every gradient was finite).
    """
    # DDP's Python hook path reads the future's value as a Python object: hence the .then().
    return state._run(bucket).then(_value)


def _private_group(group):
    """A new process group of `group`'s ranks (collective: every rank of the default group calls it)."""
    from torch.distributed import distributed_c10d
    if group is None or group is distributed_c10d._get_default_group():
        return torch.distributed.new_group()
    return torch.distributed.new_group(ranks=sorted(distributed_c10d._pg_group_ranks[group].keys()))


def register_ddp_hook(ddp, compressor, process_group=None, **options):
    """Registers lowrank's C++ communication hook on `ddp` and returns its HookState.

    `process_group` defaults to a new group of DDP's ranks, private to lowrank: lowrank's thread
    issues collectives while backward() runs, and DDP's own (e.g. find_unused_parameters' map)
    on the same group could interleave with them differently on different ranks. Options: the
    compressor's (rank=4, ...) and the reducer's (lowrank.reducer_options(), except overlap);
    bucket_cap_mb defaults to DDP's own.
    """
    if not isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
        raise ValueError("register_ddp_hook: expected a torch.nn.parallel.DistributedDataParallel, got "
                         + type(ddp).__name__)
    if getattr(ddp, "_lowrank_hook_state", None) is not None:
        raise RuntimeError("register_ddp_hook: a lowrank hook is already registered on this DDP model "
                           "(DDP takes one communication hook)")
    group = _private_group(ddp.process_group) if process_group is None else process_group
    if group.size() != ddp.process_group.size():
        raise ValueError("register_ddp_hook: process_group has %d ranks but DDP's has %d"
                         % (group.size(), ddp.process_group.size()))
    options.setdefault("bucket_cap_mb", ddp.bucket_bytes_cap / (1024.0 * 1024.0))
    state = HookState(compressor, process_group=group, module=ddp.module, **options)
    state._register(ddp.reducer)
    ddp._lowrank_hook_state = state
    return state
