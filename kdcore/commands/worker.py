"""`python -m kdcore worker [--device cuda:0] [--slots 1]`: execute queued runs from the store until stopped.

Each slot is one process that claims one run at a time; with --slots N > 1 the slots are child processes
started with the `spawn` method (never fork: CUDA must not be initialised in a process that forks).
SIGTERM / Ctrl-C hands the current run back to the queue (resumed later from its checkpoint); a second one
stops at once. The log goes to KD_HOME/worker-<id>.log (and to stderr unless --quiet).

With --devices N (or --gpus 0,1,…) the worker owns N devices and runs one slot per device sharing them: a run
asking for k devices starts only when k are free (one 2-device run, or two 1-device runs, on two devices);
a multi-device run's ranks are started through PyTorch's elastic launcher."""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys

from kdcore.errors import KDError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (default), cpu, mps, cuda or cuda:N")
    p.add_argument("--slots", type=int, default=1, help="runs at once on this device, one process each (default 1)")
    p.add_argument("--db", help="database URL (default: $KD_DATABASE_URL, else KD_HOME/kdstudio.db)")
    p.add_argument("--worker-id", help="a name for this worker (default: host-random)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks at an empty queue (default 1)")
    p.add_argument("--heartbeat", type=float, help="seconds between heartbeats (default 5)")
    p.add_argument("--stale-after", type=float,
                   help="seconds without a heartbeat after which a run is taken over (default 60)")
    p.add_argument("--max-attempts", type=int, help="claims of one run before it is failed (default 3)")
    p.add_argument("--exit-when-idle", action="store_true", help="exit once no run is queued or running")
    p.add_argument("--max-runs", type=int, help="exit after this many runs")
    p.add_argument("--quiet", action="store_true", help="log only to KD_HOME/worker-<id>.log")
    p.add_argument("--devices", type=int, help="devices this worker owns: it takes runs asking for up to this many "
                   "(on a CPU, processes; default 1, or the number of --gpus)")
    p.add_argument("--gpus", help="GPU ids this worker owns, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES for its runs)")
    p.add_argument("--rdzv-host", help="runs over several machines: the address other machines reach this one at, "
                   "where it hosts the rendezvous of a run it starts as node 0 (default: its host name)")
    p.add_argument("--rdzv-port", type=int, help="runs over several machines: the first rendezvous port, one per "
                   "device from there (default: any free port)")
    p.add_argument("--node-wait", type=float, help="runs over several machines: seconds a run started here waits for "
                   "workers on its other machines before going back to the queue (default 600)")
    p.add_argument("--rank-of", help=argparse.SUPPRESS)  # one rank of a multi-device run, started by a worker


def run(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", args.device):
        raise KDError(f"--device must be auto, cpu, mps, cuda or cuda:N (got {args.device!r})")
    if args.slots < 1:
        raise KDError("--slots must be at least 1")
    if args.rank_of:
        return _run_rank(args)
    if args.gpus is not None:
        if not re.fullmatch(r"\d+(,\d+)*", args.gpus):
            raise KDError(f"--gpus must list GPU ids such as 0,1 (got {args.gpus!r})")
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpus  # the runs' cuda:0… are these GPUs
        args.devices = args.devices or len(args.gpus.split(","))
        if args.device == "auto":
            args.device = "cuda"
    if args.devices is not None and args.devices < 1:
        raise KDError("--devices must be at least 1")
    if args.slots > 1 and (args.devices or 1) > 1:
        raise KDError("a worker owning several devices runs as many runs at once as they fit: leave out --slots")
    from kdcore.jobs.worker import restrict_visible_device

    restrict_visible_device(args.device)  # before anything can initialise CUDA; children inherit it
    import multiprocessing

    multiprocessing.set_start_method("spawn", force=True)
    from kdcore.jobs.launcher import new_worker_id

    worker_id = args.worker_id or new_worker_id()
    options = {k: getattr(args, k) for k in ("device", "db", "poll", "heartbeat", "stale_after", "max_attempts",
                                             "exit_when_idle", "max_runs", "quiet", "devices", "rdzv_host",
                                             "rdzv_port", "node_wait")}
    if (args.devices or 1) > 1:  # one slot per device, sharing the devices: a run takes as many as it asks
        from kdcore.jobs.devices import DevicePool

        pool = DevicePool(args.devices, multiprocessing.get_context("spawn"))
        code = _run_slots(worker_id, args.devices, options, pool)
    else:
        code = run_slot(worker_id, options) if args.slots == 1 else _run_slots(worker_id, args.slots, options)
    _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Exit without the interpreter's module teardown (seconds with torch loaded), once logs are flushed
    and database connections closed: a stopped worker should be gone at once."""
    from kdcore.jobs.db import dispose_engines

    dispose_engines()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_slot(worker_id: str, options: dict, pool=None) -> int:
    """One worker process: claim and execute runs until stopped. Also the target of spawned slots."""
    from kdcore.jobs import store as store_module
    from kdcore.jobs.store import RunStore
    from kdcore.jobs.worker import Worker, WorkerConfig
    from kdcore.paths import kd_home
    from kdcore.train.allocator import hold_freed_memory

    _configure_logging(kd_home() / f"worker-{worker_id}.log", quiet=options["quiet"])
    hold_freed_memory()  # a run's steps reuse what they free; the worker hands it back when the run ends
    config = WorkerConfig(
        device=options["device"], poll_interval_s=options["poll"],
        heartbeat_interval_s=options["heartbeat"] or store_module.HEARTBEAT_INTERVAL_S,
        stale_after_s=options["stale_after"] or store_module.STALE_AFTER_S,
        max_attempts=options["max_attempts"] or store_module.MAX_ATTEMPTS,
        exit_when_idle=options["exit_when_idle"], max_runs=options["max_runs"],
        devices=options.get("devices") or 1, db_url=options["db"],
        rendezvous_host=options.get("rdzv_host"), rendezvous_port=options.get("rdzv_port"),
        **({"node_wait_s": options["node_wait"]} if options.get("node_wait") is not None else {}),
    )
    worker = Worker(RunStore(options["db"]), config, worker_id=worker_id, pool=pool)
    worker.install_signal_handlers()
    worker.run_forever()
    return 0


def _run_rank(args: argparse.Namespace) -> int:
    """One rank of a multi-device run (the launcher starts one per device); rank 0 reports to the store."""
    from kdcore.jobs.store import RunStore
    from kdcore.jobs.worker import Worker, WorkerConfig
    from kdcore.paths import kd_home
    from kdcore.train.allocator import hold_freed_memory
    from kdcore.train.distributed import world_from_env

    _configure_logging(kd_home() / f"worker-{args.worker_id}-rank{world_from_env().rank}.log", quiet=True)
    hold_freed_memory()  # this process lives for one run
    store = RunStore(args.db)
    worker = Worker(store, WorkerConfig(device=args.device), worker_id=args.worker_id)
    return worker.execute_rank(store.get(args.rank_of))


def _run_slots(worker_id: str, slots: int, options: dict, pool=None) -> int:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=run_slot, args=(f"{worker_id}-s{i}", options, pool), name=f"slot-{i}")
                for i in range(slots)]
    for child in children:
        child.start()

    def forward(signum, _frame):
        for child in children:
            if child.is_alive() and child.pid:
                try:
                    os.kill(child.pid, signum)
                except ProcessLookupError:
                    pass

    signal.signal(signal.SIGTERM, forward)
    # Ctrl-C already reaches every slot (same process group); forwarding it too would count twice.
    signal.signal(signal.SIGINT, lambda _s, _f: None)
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)


def _configure_logging(path, *, quiet: bool) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    if not quiet:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
