"""Fit on SLURM with dask-jobqueue: workers are submitted as batch jobs.

Run it where ``sbatch`` works (a login node, or inside a small batch job);
it starts a Dask scheduler here, submits ``--jobs`` worker jobs, waits for
the first workers, runs ``dgmm fit`` against the scheduler, and cancels the
worker jobs at the end::

    pip install dgmm dask-jobqueue
    python deploy/slurm/fit_jobqueue.py /scratch/$USER/embeddings.zarr /scratch/$USER/models/k32 \\
        --jobs 4 --cores 16 --memory 64GiB --walltime 04:00:00 --queue compute \\
        -- -k 32 --covariance-type diag --seed 0 --checkpoint /scratch/$USER/models/k32.checkpoint

Everything after ``--`` goes to ``dgmm fit`` unchanged. The exit status is
dgmm's (0 ok, 1 data/runtime failure, 2 usage error, 130 interrupted).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence

__all__ = ["build_fit_command", "main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """``(this script's options, the options passed on to dgmm fit)``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="Zarr/Parquet path or URL every worker can read.")
    parser.add_argument("model", help="Model directory or URL to write.")
    parser.add_argument("--jobs", type=int, default=4, help="Worker jobs to submit.")
    parser.add_argument("--cores", type=int, default=16, help="Cores per job.")
    parser.add_argument("--memory", default="64GiB", help="Memory per job.")
    parser.add_argument("--walltime", default="04:00:00", help="Walltime per worker job.")
    parser.add_argument("--queue", default=None, help="SLURM partition.")
    parser.add_argument("--account", default=None, help="SLURM account.")
    parser.add_argument("--interface", default=None, help="Network interface (e.g. ib0).")
    parser.add_argument("--dgmm", default="dgmm", help="The dgmm command.")
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="Seconds to wait for the first worker (queue time).")
    argv = list(sys.argv[1:] if argv is None else argv)
    passed = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    return parser.parse_args(own), passed


def build_fit_command(
    dgmm: str, source: str, model: str, scheduler_address: str, fit_args: Sequence[str]
) -> list[str]:
    """The ``dgmm fit`` command line run against the jobqueue scheduler."""
    return [*shlex.split(dgmm), "fit", source, "--scheduler", scheduler_address,
            "--output", model, *fit_args]


def main(argv: Sequence[str] | None = None) -> int:
    args, fit_args = parse_args(argv)
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    # processes == cores: single-threaded worker processes (one BLAS thread each).
    with SLURMCluster(
        cores=args.cores,
        processes=args.cores,
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        interface=args.interface,
    ) as cluster:
        cluster.scale(jobs=args.jobs)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=args.startup_timeout)
        command = build_fit_command(args.dgmm, args.source, args.model,
                                    cluster.scheduler_address, fit_args)
        print("running:", shlex.join(command), file=sys.stderr, flush=True)
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
