#!/usr/bin/env bash
# Start a Dask scheduler and workers on this machine, run `dgmm fit` against
# them, then stop them (also on failure or Ctrl-C).
#
#   deploy/local/fit-local.sh SOURCE MODEL [more `dgmm fit` options]
#   deploy/local/fit-local.sh data.zarr model -k 8 --covariance-type diag --seed 0
#
# Environment (all optional):
#   N_WORKERS           worker processes              (default: number of cores)
#   THREADS_PER_WORKER  threads per worker process    (default: 1; one BLAS thread each)
#   MEMORY_LIMIT        memory limit per worker       (default: auto = RAM / N_WORKERS)
#   WORK_DIR            scheduler file, logs          (default: a fresh temporary directory)
#   DGMM                the dgmm command              (default: dgmm; e.g. "python -m dgmm")
#   STARTUP_TIMEOUT     seconds to wait for workers   (default: 120)
#
# Exit status: that of `dgmm fit` (0 ok, 1 data/runtime failure, 2 usage
# error, 130 interrupted), or 3 if the cluster did not start.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 SOURCE MODEL [dgmm fit options, e.g. -k 8 --seed 0]" >&2
    exit 2
fi
SOURCE=$1
MODEL=$2
shift 2

N_WORKERS=${N_WORKERS:-$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)}
THREADS_PER_WORKER=${THREADS_PER_WORKER:-1}
MEMORY_LIMIT=${MEMORY_LIMIT:-auto}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-120}
read -r -a DGMM_CMD <<< "${DGMM:-dgmm}"
PYTHON=${PYTHON:-python}
if [[ -z ${WORK_DIR:-} ]]; then
    WORK_DIR=$(mktemp -d -t dgmm-local-XXXXXX)
fi
mkdir -p "$WORK_DIR"
SCHEDULER_FILE=$WORK_DIR/scheduler.json
rm -f "$SCHEDULER_FILE"

PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # SIGTERM lets each worker's nanny stop its worker process; then the scheduler.
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    echo "fit-local: cluster stopped (logs in $WORK_DIR)" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Port 0: any free port (the address is read back from the scheduler file);
# 127.0.0.1: nothing outside this machine can reach the cluster.
dask scheduler --host 127.0.0.1 --port 0 --dashboard-address 127.0.0.1:0 \
    --scheduler-file "$SCHEDULER_FILE" >"$WORK_DIR/scheduler.log" 2>&1 &
PIDS+=($!)
echo "$!" >"$WORK_DIR/pids"

for _ in $(seq 1 $((STARTUP_TIMEOUT * 10))); do
    [[ -s $SCHEDULER_FILE ]] && break
    sleep 0.1
done
if [[ ! -s $SCHEDULER_FILE ]]; then
    echo "fit-local: the scheduler did not start in ${STARTUP_TIMEOUT}s; see $WORK_DIR/scheduler.log" >&2
    exit 3
fi

dask worker --scheduler-file "$SCHEDULER_FILE" --host 127.0.0.1 \
    --nworkers "$N_WORKERS" --nthreads "$THREADS_PER_WORKER" \
    --memory-limit "$MEMORY_LIMIT" --dashboard-address 127.0.0.1:0 \
    --local-directory "$WORK_DIR" >"$WORK_DIR/workers.log" 2>&1 &
PIDS+=($!)
echo "$!" >>"$WORK_DIR/pids"

ADDRESS=$("$PYTHON" - "$SCHEDULER_FILE" "$N_WORKERS" "$STARTUP_TIMEOUT" <<'PY'
import json, sys
from distributed import Client

scheduler_file, n_workers, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with Client(scheduler_file=scheduler_file, timeout=timeout) as client:
    client.wait_for_workers(n_workers, timeout=timeout)
print(json.load(open(scheduler_file))["address"])
PY
) || {
    echo "fit-local: $N_WORKERS worker(s) did not join in ${STARTUP_TIMEOUT}s; see $WORK_DIR/workers.log" >&2
    exit 3
}
echo "fit-local: scheduler $ADDRESS with $N_WORKERS worker(s) x $THREADS_PER_WORKER thread(s)" >&2

status=0
"${DGMM_CMD[@]}" fit "$SOURCE" --scheduler "$ADDRESS" --output "$MODEL" "$@" || status=$?
exit "$status"
