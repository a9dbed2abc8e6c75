"""Mixtures of factor analysers (``covariance_type="lowrank"``): speed, memory, real images.

Sections, all in one run so the ratios compare like with like (issue 12, item 5
and the real-image check of item 4):

1. **Reference rates.** numpy float32 matmul (SGEMM) of the kernel's two
   shapes, ``(rows x D)(D x K(l+1))`` and ``(D x rows)(rows x K(l+1))``, on
   1 and 2 BLAS threads (threadpoolctl); and dgmm's chunk kernel
   (:func:`dgmm.core.lowrank.chunk_stats`) in this process on one thread.
2. **Fits on the default LocalCluster** (one worker process per core, one
   thread each, as dgmm starts for stored data), on image-like float32 data
   drawn from a known MFA (smooth means and factors, per-pixel noise), for
   each configuration: seconds per EM iteration (median of
   ``history_[i]["seconds"]``, iterations 2..), the GFLOP/s of the pass (the
   GEMMs the kernel does, per row ``4 K (D+1)(l+1) + 4 K D``, over the
   iteration's seconds less the client's M-step), peak worker RSS, and the
   held-out mean log-likelihood against the true parameters'. Beside it, in
   the same run, scikit-learn's ``GaussianMixture(covariance_type="diag")``
   on the same rows (time, held-out log-likelihood), and the memory
   ``full`` would need (``K D^2`` float64).
3. **Projection** to the motivating case (n=200,000, D=12,288, K=1,000,
   l=10) on 2 cores and on 64 from the measured per-core pass rate;
   ``--big-check`` also runs the kernel at K=1,000, D=12,288 on one chunk in
   a subprocess and reports its rate and peak memory.
4. **Real images** (needs scikit-image): faces (``skimage.data.lfw_subset``,
   25 x 25) and 8 x 8 patches of the bundled photographs, train/test split;
   MFA against ``diag`` with the same number of free parameters, held-out
   mean log-likelihood; writes the ``dgmm plot --image-shape 25,25`` figure.

Nothing here asserts: it is a report. ``python benchmarks/bench_lowrank.py
--help`` for the options; numbers in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

MIB = 1 << 20
GIB = 1 << 30
RANK = 10
# n : H,W,C : K. Rows so one pass takes several seconds on 2 cores.
DEFAULT_CONFIGS = "60000:32x32x3:100,24000:64x64x3:32"
MOTIVATING = {"n_samples": 200_000, "n_features": 12_288, "n_components": 1_000, "rank": 10}


def pass_flops(n_features: int, n_components: int, rank: int) -> int:
    """GEMM flops per row of one E-step + statistics pass (the kernel's four GEMMs)."""
    proj = 2 * (n_features + 1) * n_components * (rank + 1)  # [1, x-c0] (D+1 x K(l+1))
    quad = 2 * n_features * n_components  # (x-c0)^2 (D x K)
    return 2 * proj + 2 * quad  # the same two shapes again for the moments


# -- data: a known, image-like MFA ---------------------------------------------

def _smooth_patterns(rng: np.random.Generator, count: int, shape: tuple[int, ...], freqs: int) -> np.ndarray:
    """``count`` smooth images (count, prod(shape)): low-frequency cosines, unit pixel variance."""
    h, w = shape[:2]
    c = shape[2] if len(shape) == 3 else 1
    by = np.cos(np.pi * np.arange(freqs)[:, None] * (np.arange(h) + 0.5) / h)
    bx = np.cos(np.pi * np.arange(freqs)[:, None] * (np.arange(w) + 0.5) / w)
    coef = rng.standard_normal((count, freqs, freqs, c))
    images = np.einsum("ay,nabc,bx->nyxc", by, coef, bx) / (freqs / 2.0)
    return images.reshape(count, -1)


def true_mfa(shape: tuple[int, ...], n_components: int, rank: int, seed: int = 0) -> Any:
    """An MFA whose means and factors look like images (pixel values around 0.5)."""
    from dgmm.core.lowrank import LowRankParams

    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    means = 0.5 + 0.15 * _smooth_patterns(rng, n_components, shape, 4)
    factors = 0.05 * _smooth_patterns(rng, n_components * rank, shape, 6)
    factors = factors.reshape(n_components, rank, d).transpose(0, 2, 1)
    noise = (0.02 * rng.uniform(0.5, 1.5, size=(n_components, d))) ** 2
    weights = rng.uniform(0.5, 1.5, size=n_components)
    return LowRankParams(weights / weights.sum(), means, factors, noise)


def draw(params: Any, n_samples: int, seed: int, dtype: str = "float32") -> np.ndarray:
    """Rows of ``params`` in random component order, generated in pieces (no n x D float64)."""
    from dgmm.core.lowrank import sample_component

    rng = np.random.default_rng(seed)
    labels = rng.choice(params.n_components, size=n_samples, p=params.weights)
    X = np.empty((n_samples, params.n_features), dtype=dtype)
    step = 4096
    for start in range(0, n_samples, step):
        lab = labels[start : start + step]
        out = X[start : start + step]
        for k in np.unique(lab):
            idx = np.flatnonzero(lab == k)
            out[idx] = sample_component(params, int(k), idx.size, rng)
    return X


# -- reference rates -------------------------------------------------------------

def _median_seconds(fn: Any, repeat: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def sgemm_rates(rows: int, n_features: int, cols: int) -> dict[str, float]:
    """GFLOP/s of float32 matmul on the kernel's two shapes, 1 and 2 threads."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, n_features), dtype=np.float32)
    b = rng.standard_normal((n_features, cols), dtype=np.float32)
    r = rng.standard_normal((rows, cols), dtype=np.float32)
    flops = 2.0 * rows * n_features * cols
    out: dict[str, float] = {}
    for threads in (1, 2):
        with threadpool_limits(threads):
            out[f"xw_{threads}t"] = flops / _median_seconds(lambda: a @ b) / 1e9
            out[f"xtr_{threads}t"] = flops / _median_seconds(lambda: a.T @ r) / 1e9
    return out


def kernel_rate(params: Any, X: np.ndarray, rows: int = 4096, repeat: int = 3) -> dict[str, float]:
    """dgmm's chunk kernel on one thread in this process: rows/s, GFLOP/s, and its
    ratio to SGEMM of the kernel's shapes timed just before each repetition (on
    shared, loaded cores the pair sees the same load; the median ratio is reported)."""
    from threadpoolctl import threadpool_limits

    from dgmm.core import lowrank as lr

    x = np.ascontiguousarray(X[:rows])
    flops = pass_flops(params.n_features, params.n_components, params.rank) * x.shape[0]
    with threadpool_limits(1):
        prepared = lr.prepare(params, x.dtype)
        block = min(rows, lr.block_rows_for(prepared))
        cols = params.n_components * (params.rank + 1)
        rng = np.random.default_rng(0)
        a = rng.standard_normal((block, params.n_features), dtype=np.float32)
        b = rng.standard_normal((params.n_features, cols), dtype=np.float32)
        r = rng.standard_normal((block, cols), dtype=np.float32)
        gemm_flops = 4.0 * block * params.n_features * cols
        lr.chunk_stats(x, prepared)
        seconds, ratios = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            a @ b
            a.T @ r
            sgemm = gemm_flops / (time.perf_counter() - start)
            start = time.perf_counter()
            lr.chunk_stats(x, prepared)
            seconds.append(time.perf_counter() - start)
            ratios.append(flops / seconds[-1] / sgemm)
        prepare_seconds = _median_seconds(lambda: lr.prepare(params, x.dtype), repeat=1)
    seconds_median = float(np.median(seconds))
    return {"rows": x.shape[0], "seconds": seconds_median, "rows_per_s": x.shape[0] / seconds_median,
            "gflops": flops / seconds_median / 1e9, "vs_sgemm_interleaved": float(np.median(ratios)),
            "prepare_seconds": prepare_seconds, "block_rows": lr.block_rows_for(prepared)}


def m_step_seconds(params: Any, X: np.ndarray) -> float:
    """The client's M-step (and re-seed policy) alone, from one chunk's statistics."""
    from dgmm.core import lowrank as lr

    stats = lr.chunk_stats(X[:512], lr.prepare(params, X.dtype))
    return _median_seconds(lambda: lr.m_step(stats, params, dtype=X.dtype), repeat=2)


# -- memory ------------------------------------------------------------------------

def _worker_reset(dask_worker: Any = None) -> int:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _rss("VmRSS")


def _worker_peak(dask_worker: Any = None) -> int:
    return _rss("VmHWM")


def _rss(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- fits -----------------------------------------------------------------------

def fit_dgmm(client: Any, X: np.ndarray, X_test: np.ndarray, n_components: int, iters: int,
             chunks: int | None) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning

    import dgmm

    gmm = dgmm.GaussianMixture(n_components, covariance_type="lowrank", rank=RANK, tol=0.0,
                               max_iter=iters, random_state=0, chunks=chunks)
    base = client.run(_worker_reset)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(X)
    total = time.perf_counter() - start
    peak = client.run(_worker_peak)
    seconds = [h["seconds"] for h in gmm.history_]
    return {
        "fit_seconds": total,
        "iteration_seconds": seconds,
        "seconds_per_iter": float(np.median(seconds[1:] if len(seconds) > 1 else seconds)),
        "worker_peak_rss": max(peak.values()),
        "worker_peak_rise": max(peak[w] - base[w] for w in peak),
        "heldout_loglik": float(gmm.score(X_test)),
        "n_iter": int(gmm.n_iter_),
    }


def fit_sklearn_diag(X: np.ndarray, X_test: np.ndarray, n_components: int, iters: int) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(n_components, covariance_type="diag", max_iter=iters, tol=0.0, random_state=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    total = time.perf_counter() - start
    return {"fit_seconds": total, "n_iter": int(gm.n_iter_), "heldout_loglik": float(gm.score(X_test))}


def run_config(client: Any, text: str, args: argparse.Namespace, n_workers: int) -> dict[str, Any]:
    from dgmm.core import lowrank as lr

    n_text, shape_text, k_text = text.split(":")
    shape = tuple(int(s) for s in shape_text.split("x"))
    n, k = int(float(n_text)), int(k_text)
    if args.quick:
        n //= 5
    d = int(np.prod(shape))
    truth = true_mfa(shape, k, RANK, seed=0)
    X = draw(truth, n, seed=1)
    X_test = draw(truth, args.n_test, seed=2)
    cols = k * (RANK + 1)
    prepared = lr.prepare(truth, np.float32)
    block = min(n, lr.block_rows_for(prepared))
    out: dict[str, Any] = {
        "config": f"n={n} d={d} ({'x'.join(map(str, shape))}) K={k} l={RANK}",
        "n_samples": n, "n_features": d, "n_components": k, "data_mib": X.nbytes / MIB,
        "flops_per_row": pass_flops(d, k, RANK),
        "sgemm": sgemm_rates(block, d, cols),
        "kernel": kernel_rate(truth, X),
        "m_step_seconds": m_step_seconds(truth, X),
        "true_heldout_loglik": float(np.mean(lr.score_samples(X_test.astype(np.float64), truth))),
        "full_bytes": 8 * k * d * d,
    }
    print(f"[{out['config']}] kernel {out['kernel']['gflops']:.0f} GFLOP/s on 1 thread; fitting dgmm ...",
          flush=True)
    dg = fit_dgmm(client, X, X_test, k, args.iters, args.chunks)
    pass_seconds = max(dg["seconds_per_iter"] - out["m_step_seconds"], 1e-9)
    dg["pass_gflops"] = out["flops_per_row"] * n / pass_seconds / 1e9
    out["dgmm"] = dg
    sg = out["sgemm"]
    sgemm_2 = min(sg["xw_2t"], sg["xtr_2t"])
    sgemm_sum_1 = n_workers * min(sg["xw_1t"], sg["xtr_1t"])
    out["pass_vs_sgemm_2t"] = dg["pass_gflops"] / sgemm_2
    out["pass_vs_workers_x_sgemm_1t"] = dg["pass_gflops"] / sgemm_sum_1
    out["kernel_vs_sgemm_1t"] = out["kernel"]["gflops"] / min(sg["xw_1t"], sg["xtr_1t"])
    if not args.skip_sklearn:
        print(f"[{out['config']}] fitting scikit-learn diag ...", flush=True)
        out["sklearn_diag"] = fit_sklearn_diag(X, X_test, k, args.iters)
    return out


# -- projection and the big-shape check ---------------------------------------

def projection(per_core_gflops: float, per_core_kernel_gflops: float) -> dict[str, Any]:
    from dgmm.core.lowrank import LowRankStats

    m = MOTIVATING
    flops = pass_flops(m["n_features"], m["n_components"], m["rank"]) * m["n_samples"]
    return {
        "flops_per_iter": flops,
        "per_core_gflops_pass": per_core_gflops,
        "per_core_gflops_kernel": per_core_kernel_gflops,
        "s_per_iter_2_cores": flops / (2 * per_core_gflops * 1e9),
        "s_per_iter_64_cores": flops / (64 * per_core_gflops * 1e9),
        "s_per_iter_2_cores_kernel_rate": flops / (2 * per_core_kernel_gflops * 1e9),
        "s_per_iter_64_cores_kernel_rate": flops / (64 * per_core_kernel_gflops * 1e9),
        "stats_bytes_per_chunk": LowRankStats.nbytes(m["n_components"], m["n_features"], m["rank"]),
        "full_bytes": 8 * m["n_components"] * m["n_features"] ** 2,
    }


_BIG_CHILD = r"""
import json, resource, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
from dgmm.core import lowrank as lr
k, d, l, rows = (int(a) for a in sys.argv[1:5])
rng = np.random.default_rng(0)
params = lr.LowRankParams(np.full(k, 1.0 / k), 0.5 + 0.1 * rng.standard_normal((k, d)),
                          0.05 * rng.standard_normal((k, d, l)), np.full((k, d), 4e-4))
x = (0.5 + 0.1 * rng.standard_normal((rows, d))).astype(np.float32)
params_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with threadpool_limits(1):
    t = time.perf_counter(); prepared = lr.prepare(params, np.float32); t_prep = time.perf_counter() - t
    prep_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter(); stats = lr.chunk_stats(x, prepared); t_chunk = time.perf_counter() - t
print(json.dumps({"K": k, "D": d, "rank": l, "rows": rows, "block_rows": lr.block_rows_for(prepared),
                  "params_bytes": params.factors.nbytes, "peak_after_params": params_rss,
                  "prepare_seconds": t_prep, "peak_after_prepare": prep_rss,
                  "chunk_seconds": t_chunk, "rows_per_s": rows / t_chunk,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def big_check(rows: int) -> dict[str, Any]:
    """The kernel at K=1000, D=12288, l=10 on one chunk of ``rows`` rows, in a subprocess."""
    m = MOTIVATING
    proc = subprocess.run(
        [sys.executable, "-c", _BIG_CHILD, str(m["n_components"]), str(m["n_features"]), str(m["rank"]),
         str(rows)], capture_output=True, text=True, check=False,
    )
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else f"rc {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["gflops"] = pass_flops(m["n_features"], m["n_components"], m["rank"]) * rows / out["chunk_seconds"] / 1e9
    return out


# -- real images ------------------------------------------------------------------

def _equal_parameter_diag(n_components: int, n_features: int, rank: int) -> int:
    """Components of a ``diag`` mixture with (about) the MFA's number of free parameters."""
    from dgmm.core.lowrank import n_parameters

    p = n_parameters(n_components, n_features, rank, "diag")
    return max(1, round((p + 1) / (2 * n_features + 1)))


def _photo_patches(size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random ``size x size`` grey patches of scikit-image's bundled photographs."""
    from skimage import color, data, util

    images = []
    for name in ("camera", "astronaut", "coffee", "chelsea", "coins", "moon", "page", "rocket"):
        try:
            image = getattr(data, name)()
        except Exception:  # a photograph that needs a download: skip it
            continue
        image = util.img_as_float(color.rgb2gray(image) if image.ndim == 3 else image)
        images.append(image)
    per = count // len(images)
    patches = []
    for image in images:
        h, w = image.shape
        ys = rng.integers(0, h - size, per)
        xs = rng.integers(0, w - size, per)
        patches.append(np.stack([image[y : y + size, x : x + size].ravel() for y, x in zip(ys, xs)]))
    return np.concatenate(patches)


def _compare(name: str, X: np.ndarray, k_mfa: int, rank: int, reg_covar: float, seed: int,
             figure: Path | None = None, image_shape: str | None = None) -> dict[str, Any]:
    import dgmm
    from dgmm.core.lowrank import n_parameters

    rng = np.random.default_rng(seed)
    order = rng.permutation(X.shape[0])
    n_train = int(0.75 * X.shape[0])
    train, test = X[order[:n_train]], X[order[n_train:]]
    k_diag = _equal_parameter_diag(k_mfa, X.shape[1], rank)
    common = {"reg_covar": reg_covar, "random_state": seed, "n_init": 3, "max_iter": 200}
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # A small training set: a fit may use all max_iter; the comparison stands either way.
        warnings.simplefilter("ignore", ConvergenceWarning)
        mfa = dgmm.GaussianMixture(k_mfa, covariance_type="lowrank", rank=rank, **common).fit(train)
        diag = dgmm.GaussianMixture(k_diag, covariance_type="diag", **common).fit(train)
    out = {
        "data": name, "n_train": train.shape[0], "n_test": test.shape[0], "n_features": X.shape[1],
        "mfa": {"n_components": k_mfa, "rank": rank, "n_parameters": n_parameters(k_mfa, X.shape[1], rank, "diag"),
                "train_loglik": float(mfa.score(train)), "heldout_loglik": float(mfa.score(test))},
        "diag": {"n_components": k_diag, "n_parameters": int(k_diag * 2 * X.shape[1] + k_diag - 1),
                 "train_loglik": float(diag.score(train)), "heldout_loglik": float(diag.score(test))},
    }
    out["mfa_beats_diag"] = out["mfa"]["heldout_loglik"] > out["diag"]["heldout_loglik"]
    if figure is not None and image_shape is not None:
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "model"
            mfa.save(model)
            cmd = [sys.executable, "-m", "dgmm", "plot", str(model), "--image-shape", image_shape,
                   "-o", str(figure)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            out["figure"] = str(figure) if proc.returncode == 0 else f"failed: {proc.stderr.strip()}"
            out["plot_command"] = "dgmm plot MODEL --image-shape " + image_shape + f" -o {figure.name}"
    return out


def real_images(figure_dir: Path) -> list[dict[str, Any]]:
    try:
        from skimage import data
    except ImportError:
        print("scikit-image is not installed (pip install 'dgmm[bench]'): real-image section skipped")
        return []
    faces = data.lfw_subset()[:100].reshape(100, -1)  # the first 100 of lfw_subset are faces
    figure_dir.mkdir(parents=True, exist_ok=True)
    results = [
        _compare("lfw_subset faces 25x25", faces, 2, 4, 1e-4, 0, figure_dir / "lowrank_faces.png", "25,25"),
        _compare("photo patches 8x8", _photo_patches(8, 16000, np.random.default_rng(0)), 8, 4, 1e-5, 0),
    ]
    return results


# -- report ---------------------------------------------------------------------------

def report(results: list[dict[str, Any]], proj: dict[str, Any], big: dict[str, Any] | None,
           images: list[dict[str, Any]]) -> str:
    lines = [
        "| config | data MiB | dgmm s/iter | pass GFLOP/s | SGEMM 1t / 2t | pass / SGEMM 2t | pass / (workers x SGEMM 1t) "
        "| kernel 1t GFLOP/s (/SGEMM 1t, interleaved) | M-step s | worker peak RSS MiB (rise) | dgmm fit s (iters) "
        "| held-out LL dgmm / truth | sklearn diag fit s (iters) | sklearn diag held-out LL | full needs GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        dg, sg, kr = r["dgmm"], r["sgemm"], r["kernel"]
        sk = r.get("sklearn_diag")
        lines.append(
            f"| {r['config']} | {r['data_mib']:.0f} | {dg['seconds_per_iter']:.2f} | {dg['pass_gflops']:.0f} "
            f"| {min(sg['xw_1t'], sg['xtr_1t']):.0f} / {min(sg['xw_2t'], sg['xtr_2t']):.0f} "
            f"| {r['pass_vs_sgemm_2t']:.0%} | {r['pass_vs_workers_x_sgemm_1t']:.0%} "
            f"| {kr['gflops']:.0f} ({kr['vs_sgemm_interleaved']:.0%}) | {r['m_step_seconds']:.2f} "
            f"| {dg['worker_peak_rss'] / MIB:.0f} ({dg['worker_peak_rise'] / MIB:.0f}) "
            f"| {dg['fit_seconds']:.1f} ({dg['n_iter']}) | {dg['heldout_loglik']:.1f} / {r['true_heldout_loglik']:.1f} "
            + (f"| {sk['fit_seconds']:.1f} ({sk['n_iter']}) | {sk['heldout_loglik']:.1f} " if sk else "| - | - ")
            + f"| {r['full_bytes'] / GIB:.1f} |"
        )
    lines += [
        "",
        f"Projection, n=200,000 D=12,288 K=1,000 l=10: {proj['flops_per_iter'] / 1e12:.0f} TFLOP per pass; "
        f"at the measured pass rate per core ({proj['per_core_gflops_pass']:.0f} GFLOP/s) "
        f"{proj['s_per_iter_2_cores']:.0f} s/iter on 2 cores, {proj['s_per_iter_64_cores']:.1f} s/iter on 64; "
        f"at the one-thread kernel rate ({proj['per_core_gflops_kernel']:.0f} GFLOP/s) "
        f"{proj['s_per_iter_2_cores_kernel_rate']:.0f} / {proj['s_per_iter_64_cores_kernel_rate']:.1f} s. "
        f"Statistics per chunk: {proj['stats_bytes_per_chunk'] / GIB:.2f} GiB float64; "
        f"`full` would need {proj['full_bytes'] / 2**40:.2f} TiB of covariances.",
    ]
    if big is not None:
        if "error" in big:
            lines.append(f"Kernel at K=1000, D=12288: failed: {big['error']}")
        else:
            lines.append(
                f"Kernel at K=1000, D=12288, l=10, one chunk of {big['rows']} rows (block {big['block_rows']}), "
                f"1 thread: prepare {big['prepare_seconds']:.1f} s, chunk {big['chunk_seconds']:.1f} s "
                f"({big['rows_per_s']:.0f} rows/s, {big['gflops']:.0f} GFLOP/s); peak RSS "
                f"{big['peak_rss'] / GIB:.2f} GiB (parameters {big['params_bytes'] / GIB:.2f} GiB of factors, "
                f"{big['peak_after_params'] / GIB:.2f} GiB after building them, "
                f"{big['peak_after_prepare'] / GIB:.2f} GiB after prepare)."
            )
    if images:
        lines += ["", "| data | n train / test | MFA K, l (params) | diag K (params) | held-out LL MFA | held-out LL diag "
                  "| MFA beats diag |", "|---|---|---|---|---:|---:|:-:|"]
        for im in images:
            m, g = im["mfa"], im["diag"]
            lines.append(
                f"| {im['data']} | {im['n_train']} / {im['n_test']} | {m['n_components']}, {m['rank']} "
                f"({m['n_parameters']}) | {g['n_components']} ({g['n_parameters']}) | {m['heldout_loglik']:.1f} "
                f"| {g['heldout_loglik']:.1f} | {'yes' if im['mfa_beats_diag'] else 'no'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="comma-separated n:HxWxC:K items, rank 10 (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="n / 5: a fast check (passes under a second)")
    parser.add_argument("--iters", type=int, default=5, help="EM iterations of each fit (default 5)")
    parser.add_argument("--n-test", type=int, default=4000, help="held-out rows (default 4000)")
    parser.add_argument("--chunks", type=int, default=None, help="rows per chunk (default: dgmm's ~64 MiB)")
    parser.add_argument("--skip-sklearn", action="store_true", help="no scikit-learn diag fits")
    parser.add_argument("--skip-fits", action="store_true", help="no cluster fits (images and --big-check only)")
    parser.add_argument("--big-check", type=int, default=0, metavar="ROWS",
                        help="also run the kernel at K=1000, D=12288 on one chunk of ROWS rows (~5 GiB)")
    parser.add_argument("--no-images", action="store_true", help="skip the scikit-image section")
    parser.add_argument("--figure-dir", type=Path, default=Path("."), help="where the faces figure goes")
    parser.add_argument("--output", type=Path, default=None, help="write all results as JSON here")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    n_workers = os.cpu_count() or 1
    results = []
    if not args.skip_fits:
        # dgmm's default LocalCluster: one process per core, one thread each.
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            client.wait_for_workers(n_workers)
            for text in args.configs.split(","):
                if text:
                    results.append(run_config(client, text, args, n_workers))
    per_core = (
        float(np.median([r["dgmm"]["pass_gflops"] for r in results])) / n_workers if results else float("nan")
    )
    per_core_kernel = float(np.median([r["kernel"]["gflops"] for r in results])) if results else float("nan")
    proj = projection(per_core, per_core_kernel)
    big = big_check(args.big_check) if args.big_check else None
    images = [] if args.no_images else real_images(args.figure_dir)
    print(report(results, proj, big, images))
    if args.output:
        args.output.write_text(json.dumps({"configs": results, "projection": proj, "big_check": big,
                                           "images": images, "cpu_count": n_workers,
                                           "load_average": os.getloadavg()}, indent=1, default=float))


if __name__ == "__main__":
    main()
