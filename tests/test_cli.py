"""The ``dgmm`` command line, end to end through ``python -m dgmm``.

Every command runs at least once as a real subprocess on stores that
``dgmm generate`` itself wrote; most of them against one ``dask scheduler`` +
``dask worker`` started for the module (``--scheduler``), ``demo`` on its own
LocalCluster. Parsing, config and exit-code cases run in-process through the
same entry point (``cli.main``) on the session's in-process cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import dgmm
from dgmm.cli import cli
from tests.procs import dask_processes, make_tls_certs

from ._helpers import invoke

REPO_ROOT = Path(__file__).resolve().parent.parent

N_SAMPLES, N_FEATURES, N_COMPONENTS = 6000, 3, 3


def run_cli(*args: object, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m dgmm ARGS`` in its own process group, killed whole on timeout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgmm", *map(str, args)], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def summary_of(proc: subprocess.CompletedProcess | object) -> dict:
    """The one JSON object a successful ``--json`` run prints on stdout."""
    code = getattr(proc, "returncode", getattr(proc, "exit_code", None))
    assert code == 0, f"exit {code}; stderr:\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def matched(true_means: np.ndarray, means: np.ndarray) -> np.ndarray:
    """``means`` reordered to match ``true_means`` (Hungarian on distances)."""
    cost = np.linalg.norm(true_means[:, None, :] - means[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    return means[cols[np.argsort(rows)]]


# -- one generated store, one fitted model, one scheduler for the module -------


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def scheduler() -> str:
    with dask_processes(n_workers=1) as procs:
        yield procs.address


@pytest.fixture(scope="module")
def store(work, scheduler) -> dict:
    proc = run_cli(
        "generate", "-n", N_SAMPLES, "-d", N_FEATURES, "-k", N_COMPONENTS, "-o", "data.zarr",
        "--labels", "labels.zarr", "--chunk-rows", 1500, "--seed", 7,
        "--scheduler", scheduler, "--json", cwd=work,
    )
    return summary_of(proc)


@pytest.fixture(scope="module")
def data(work, store) -> tuple[np.ndarray, np.ndarray]:
    import zarr

    return np.asarray(zarr.open_array(work / "data.zarr", mode="r")[:]), np.asarray(
        zarr.open_array(work / "labels.zarr", mode="r")[:]
    )


@pytest.fixture(scope="module")
def fitted(work, store, scheduler) -> dict:
    proc = run_cli(
        "fit", "data.zarr", "-k", N_COMPONENTS, "--seed", 0, "--scheduler", scheduler,
        "-o", "model", "--json", cwd=work,
    )
    return summary_of(proc)


# -- every command through the real entry point ----------------------------------


def test_generate_writes_rows_labels_and_truth(work, store, data):
    X, labels = data
    assert X.shape == (N_SAMPLES, N_FEATURES)
    assert store["n_samples"] == N_SAMPLES and store["chunks"] == 4
    assert labels.shape == (N_SAMPLES,) and set(np.unique(labels)) <= set(range(N_COMPONENTS))
    truth = dgmm.load(work / store["truth"])
    assert truth.means_.shape == (N_COMPONENTS, N_FEATURES)
    # Rows drawn from component k scatter about the true mean of k.
    for k in range(N_COMPONENTS):
        rows = X[labels == k]
        spread = np.sqrt(np.diag(truth.covariances_[k]) / len(rows))
        np.testing.assert_array_less(np.abs(rows.mean(axis=0) - truth.means_[k]), 5 * spread)


def test_fit_recovers_the_true_means(work, store, fitted):
    assert fitted["n_samples"] == N_SAMPLES and fitted["n_features"] == N_FEATURES
    assert fitted["converged"] is True and fitted["n_iter"] >= 1
    for field in ("log_likelihood", "bic", "seconds"):
        assert isinstance(fitted[field], float)
    model = dgmm.load(work / "model")
    truth = dgmm.load(work / store["truth"])
    np.testing.assert_allclose(matched(truth.means_, model.means_), truth.means_, atol=0.3)
    assert fitted["bic"] == pytest.approx(
        -2 * fitted["log_likelihood"] * N_SAMPLES + model._n_parameters() * np.log(N_SAMPLES)
    )


def test_predict_writes_the_labels(work, fitted, data, scheduler):
    import zarr

    proc = run_cli(
        "predict", "model", "data.zarr", "-o", "pred.zarr", "--scheduler", scheduler, "--json",
        cwd=work,
    )
    summary = summary_of(proc)
    assert summary["outputs"] == ["labels"] and summary["n_samples"] == N_SAMPLES
    written = np.asarray(zarr.open_group(work / "pred.zarr", mode="r")["label"][:])
    np.testing.assert_array_equal(written, dgmm.load(work / "model").predict(data[0]))


def test_score_matches_the_library(work, fitted, data, scheduler):
    summary = summary_of(
        run_cli("score", "model", "data.zarr", "--scheduler", scheduler, "--json", cwd=work)
    )
    model = dgmm.load(work / "model")
    assert summary["n_samples"] == N_SAMPLES
    assert summary["log_likelihood"] == pytest.approx(model.score(data[0]), rel=1e-10)
    assert summary["bic"] == pytest.approx(model.bic(data[0]), rel=1e-10)
    assert summary["aic"] == pytest.approx(model.aic(data[0]), rel=1e-10)


def test_info_describes_the_model(work, fitted):
    summary = summary_of(run_cli("info", "model", "--json", cwd=work))
    model = dgmm.load(work / "model")
    assert summary["n_components"] == N_COMPONENTS and summary["n_features"] == N_FEATURES
    assert summary["covariance_type"] == "full" and summary["n_iter"] == fitted["n_iter"]
    np.testing.assert_allclose(summary["weights"], model.weights_, rtol=1e-15)
    np.testing.assert_allclose(summary["means"], model.means_, rtol=1e-15)


def test_sample_draws_from_the_model(work, fitted, scheduler):
    import zarr

    summary = summary_of(
        run_cli(
            "sample", "model", "-n", 8000, "-o", "drawn.zarr", "--labels", "drawn-labels.zarr",
            "--chunk-rows", 3000, "--seed", 1, "--scheduler", scheduler, "--json", cwd=work,
        )
    )
    assert summary["n_samples"] == 8000
    X = np.asarray(zarr.open_array(work / "drawn.zarr", mode="r")[:])
    labels = np.asarray(zarr.open_array(work / "drawn-labels.zarr", mode="r")[:])
    assert X.shape == (8000, N_FEATURES)
    model = dgmm.load(work / "model")
    for k in range(N_COMPONENTS):
        rows = X[labels == k]
        spread = np.sqrt(np.diag(model.covariances_[k]) / len(rows))
        np.testing.assert_array_less(np.abs(rows.mean(axis=0) - model.means_[k]), 5 * spread)


def test_plot_writes_a_png(work, fitted, scheduler):
    import matplotlib.image

    summary = summary_of(
        run_cli(
            "plot", "model", "--data", "data.zarr", "--sample-rows", 500, "-o", "fit.png",
            "--scheduler", scheduler, "--json", cwd=work,
        )
    )
    assert summary["rows_shown"] == 500
    image = matplotlib.image.imread(work / "fit.png")
    assert image.ndim == 3 and min(image.shape[:2]) > 100


def test_score_over_tls_with_the_certificate_options(work, fitted, data, tmp_path):
    certs = make_tls_certs(tmp_path)
    with dask_processes(n_workers=1, tls=certs) as procs:
        assert procs.address.startswith("tls://")
        result = invoke(
            "score", "model", "data.zarr", "--scheduler", procs.address,
            *certs.cli_args("client"), "--json", cwd=work,
        )
    summary = summary_of(result)
    model = dgmm.load(work / "model")
    assert summary["log_likelihood"] == pytest.approx(model.score(data[0]), rel=1e-10)


def test_demo_fits_the_truth_on_a_local_cluster(tmp_path):
    summary = summary_of(
        run_cli(
            "demo", "-n", 6000, "-d", 2, "-k", 3, "--chunk-rows", 2000, "--workers", 1,
            "--output-dir", "out", "--no-progress", "--json", cwd=tmp_path,
        )
    )
    for field in ("n_iter", "log_likelihood", "bic", "seconds", "label_agreement"):
        assert field in summary
    assert summary["label_agreement"] > 0.9
    assert dgmm.load(tmp_path / "out" / "model").n_components == 3
    assert (tmp_path / "out" / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, code, fragments",
    [
        pytest.param(
            ["fit", "missing.zarr", "-k", 2, "-o", "m"], 1, ["missing.zarr"], id="missing-source"
        ),
        pytest.param(
            ["fit", "data.zarr", "-k", 0, "-o", "m"], 2, ["-k", "0"], id="zero-components"
        ),
    ],
)
def test_errors_through_the_entry_point(work, store, args, code, fragments):
    proc = run_cli(*args, cwd=work)
    assert proc.returncode == code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert proc.stdout == ""


# -- config files (in-process) ----------------------------------------------------


def test_config_file_and_flags_give_the_same_model(work, store):
    (work / "job.toml").write_text(
        '[fit]\nsource = "data.zarr"\nn-components = 3\ncovariance-type = "diag"\n'
        'seed = 3\nmax-iter = 20\noutput = "from-config"\n'
    )
    by_file = summary_of(invoke("fit", "--config", "job.toml", "--json", cwd=work))
    by_flags = summary_of(
        invoke(
            "fit", "data.zarr", "-k", 3, "--covariance-type", "diag", "--seed", 3,
            "--max-iter", 20, "-o", "from-flags", "--json", cwd=work,
        )
    )
    assert by_file["n_iter"] == by_flags["n_iter"] and by_file["covariance_type"] == "diag"
    a, b = dgmm.load(work / "from-config"), dgmm.load(work / "from-flags")
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)


def test_flags_override_the_config_file(work, store):
    (work / "override.toml").write_text(
        'n-components = 5\n[fit]\nsource = "data.zarr"\noutput = "overridden"\nmax-iter = 5\n'
    )
    summary = summary_of(
        invoke(
            "fit", "--config", "override.toml", "-k", 2, "--covariance-type", "spherical",
            "--json", cwd=work,
        )
    )
    assert summary["n_components"] == 2 and summary["covariance_type"] == "spherical"
    assert dgmm.load(work / "overridden").n_components == 2


def test_shared_top_level_keys_apply_where_they_exist(work, fitted):
    # 'n-components' is a fit option; 'info' has none and ignores the shared key.
    (work / "shared.toml").write_text('n-components = 4\n[info]\nmodel = "model"\n')
    summary = summary_of(invoke("info", "--config", "shared.toml", "--json", cwd=work))
    assert summary["n_components"] == N_COMPONENTS


# -- bad inputs: one line, the right exit code (in-process) -------------------------


FIT = ["fit", "data.zarr", "-k", 3, "-o", "m"]  # a valid fit command line, to spoil
CONFIG_OUT_OF_RANGE = "[fit]\nsource = 'data.zarr'\noutput = 'm'\nn-components = -2\n"

BAD_INPUTS = [
    # usage errors: exit 2
    pytest.param(["fit", "data.zarr", "-o", "m"], 2, ["-k"], id="missing-n-components"),
    pytest.param([*FIT, "--tol", "-1"], 2, ["--tol", "-1"], id="negative-tol"),
    pytest.param(["fit", "data.zarr", "-k", "three", "-o", "m"], 2, ["three"], id="non-integer-k"),
    pytest.param([*FIT, "--covariance-type", "round"], 2, ["round"], id="unknown-covariance-type"),
    pytest.param([*FIT, "--init", "magic"], 2, ["magic"], id="unknown-init"),
    pytest.param([*FIT, "--frobnicate"], 2, ["--frobnicate"], id="unknown-option"),
    pytest.param([*FIT, "--memory-limit", "lots"], 2, ["lots"], id="bad-memory-limit"),
    pytest.param(
        [*FIT, "--storage-options", "{anon"], 2, ["--storage-options"],
        id="storage-options-not-json",
    ),
    pytest.param(
        [*FIT, "--scheduler", "tcp://127.0.0.1:1", "--workers", 2], 2, ["--scheduler", "--workers"],
        id="scheduler-and-workers",
    ),
    pytest.param([*FIT, "--tls-cert", "c.pem"], 2, ["--tls-ca-file"], id="tls-cert-alone"),
    pytest.param(
        ["predict", "model", "data.zarr", "-o", "p.zarr", "--proba=yes"], 2, ["--proba"],
        id="flag-with-a-value",
    ),
    pytest.param(["fit", "--config", "nowhere.toml"], 2, ["nowhere.toml"], id="missing-config"),
    pytest.param(
        ["fit", "--config", ("bad.toml", "[fit\nk = 3\n")], 2, ["bad.toml", "TOML"],
        id="config-not-toml",
    ),
    pytest.param(
        ["fit", "--config", ("typo.toml", "[fit]\nn-componnets = 3\n")], 2, ["n-componnets"],
        id="config-unknown-key-in-table",
    ),
    pytest.param(
        ["fit", "--config", ("top.toml", "colour = 'red'\n")], 2, ["colour"],
        id="config-unknown-top-level-key",
    ),
    pytest.param(
        ["fit", "--config", ("range.toml", CONFIG_OUT_OF_RANGE)], 2, ["-2"],
        id="config-value-out-of-range",
    ),
    pytest.param(["frobnicate"], 2, ["frobnicate"], id="unknown-command"),
    # data and runtime errors: exit 1
    pytest.param(
        ["fit", "missing.zarr", "-k", 3, "-o", "m"], 1, ["missing.zarr"], id="missing-source"
    ),
    pytest.param(
        ["predict", "no-model", "data.zarr", "-o", "p.zarr"], 1, ["no-model"], id="missing-model"
    ),
    pytest.param(["info", ("not-a-model", None)], 1, ["not-a-model"], id="not-a-model"),
    pytest.param(
        ["predict", "model", ("four.npy", 4), "-o", "p.zarr"], 1, ["3", "4", "features"],
        id="feature-mismatch",
    ),
    pytest.param(
        ["score", "model", ("four.npy", 4)], 1, ["3", "4", "features"], id="feature-mismatch-score"
    ),
    pytest.param(
        ["fit", "data.zarr", "-k", 3, "-o", "model"], 1, ["model", "--overwrite"],
        id="existing-model",
    ),
    pytest.param(
        ["predict", "model", "data.zarr", "-o", "model"], 1, ["model", "--overwrite"],
        id="existing-prediction-target",
    ),
    pytest.param(
        ["fit", "data.zarr", "-k", 3, "-o", ("a-file/model", "")], 1, ["a-file"],
        id="unwritable-output",
    ),
    pytest.param(
        ["generate", "-n", 10, "-d", 2, "-k", 2, "-o", "data.zarr"], 1,
        ["data.zarr", "--overwrite"],
        id="generate-over-existing",
    ),
]


def _materialise(args: list, directory: Path) -> list:
    """Arguments given as (name, content) become files made in ``directory``."""
    out = []
    for arg in args:
        if isinstance(arg, tuple):
            name, content = arg
            path = directory / name
            if isinstance(content, str) and name.endswith(".toml"):
                path.write_text(content)
            elif isinstance(content, int):  # an .npy of 50 rows and `content` features
                np.save(path, np.random.default_rng(0).normal(size=(50, content)))
            elif content is None:  # a directory with a file that is no model
                path.mkdir(exist_ok=True)
                (path / "notes.txt").write_text("not a model")
            else:  # a plain file where a directory would have to be
                first = name.split("/")[0]
                (directory / first).write_text("a file")
            arg = name
        out.append(arg)
    return out


@pytest.mark.parametrize("args, code, fragments", BAD_INPUTS)
def test_bad_input_gives_one_line_and_its_exit_code(work, fitted, args, code, fragments):
    result = invoke(*_materialise(args, work), cwd=work)
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_debug_shows_the_traceback(work, store):
    result = invoke("fit", "missing.zarr", "-k", 3, "-o", "m", "--debug", cwd=work)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "missing.zarr" in result.stderr.splitlines()[-1]


def test_interrupt_exits_130_with_the_message(work, store, monkeypatch):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt("Run the same command again to resume.")

    monkeypatch.setattr(dgmm.GaussianMixture, "fit", interrupted)
    result = invoke("fit", "data.zarr", "-k", 3, "-o", "never", cwd=work)
    assert result.exit_code == 130
    assert "resume" in result.stderr
    assert not (work / "never").exists()


def test_quiet_prints_nothing_and_json_only_json(work, fitted):
    assert invoke("info", "model", "--quiet", cwd=work).stdout == ""
    human = invoke("info", "model", cwd=work).stdout
    assert "covariance_type" in human and not human.lstrip().startswith("{")


def test_predict_proba_and_log_density_to_parquet(work, fitted, data):
    import pandas as pd

    summary = summary_of(
        invoke(
            "predict", "model", "data.zarr", "-o", "scores.parquet", "--proba", "--log-density",
            "--json", cwd=work,
        )
    )
    assert summary["outputs"] == ["proba", "log_density"]
    frame = pd.read_parquet(work / "scores.parquet")
    model = dgmm.load(work / "model")
    proba = frame[[f"proba_{k}" for k in range(N_COMPONENTS)]].to_numpy()
    np.testing.assert_allclose(proba, model.predict_proba(data[0]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(frame["log_density"], model.score_samples(data[0]), rtol=1e-10)


def test_ctrl_c_exits_130_and_the_same_command_resumes(work, store, scheduler):
    """SIGINT during a checkpointed fit: exit 130, one line saying how to resume; rerun finishes."""
    args = [
        "fit", "data.zarr", "-k", N_COMPONENTS, "--init", "random", "--tol", 0, "--max-iter", 30,
        "--seed", 5, "--checkpoint", "ckpt", "-o", "resumed", "--scheduler", scheduler,
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgmm", *map(str, args), "-v"], cwd=work, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        seen = []
        for line in proc.stderr:  # wait until EM is running, then press Ctrl-C
            seen.append(line)
            if "iteration 2" in line:
                proc.send_signal(signal.SIGINT)
                break
        stdout, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    stderr = "".join(seen) + rest
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert "resume" in last and "Traceback" not in stderr
    assert not (work / "resumed").exists()

    summary = summary_of(run_cli(*args, "--json", cwd=work))
    assert summary["n_iter"] == 30 and summary["checkpoint"] == "ckpt"
    assert dgmm.load(work / "resumed").n_iter_ == 30


@pytest.mark.parametrize("command", ["fit", "predict"])
def test_the_readme_config_example_is_accepted(tmp_path, command):
    readme = (REPO_ROOT / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "job.toml").write_text(example)
    # Parsing alone checks every key, type and range, and that required values are there.
    params = cli.commands[command].make_context(
        command, ["--config", str(tmp_path / "job.toml")], parent=cli.make_context("dgmm", [command])
    ).params
    # The shared top-level keys reach both commands, the table as a dict.
    assert params["scheduler"] and isinstance(params["storage_options"], dict)


def _readme_commands() -> list[list[str]]:
    import shlex

    readme = (REPO_ROOT / "README.md").read_text()
    lines = []
    for block in readme.split("```bash\n")[1:]:
        for line in block.split("```", 1)[0].splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["dgmm"]:
                lines.append(words[1:])
            elif words[:3] == ["python", "-m", "dgmm"]:
                lines.append(words[3:])
    return lines


@pytest.mark.parametrize("args", _readme_commands(), ids=lambda a: a[0])
def test_the_readme_command_lines_parse(args):
    # Parsing checks every option's name, type and range and the required ones.
    command = cli.commands[args[0]]
    with command.make_context(args[0], list(args[1:]), parent=cli.make_context("dgmm", [args[0]])):
        pass


def test_the_script_entry_point_is_the_cli():
    import importlib
    import tomllib

    target = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]["dgmm"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is dgmm.cli.main


def test_parquet_store_and_columns(tmp_path):
    generated = summary_of(
        invoke(
            "generate", "-n", 3000, "-d", 3, "-k", 2, "-o", "rows.parquet", "--chunk-rows", 1000,
            "--seed", 2, "--json", cwd=tmp_path,
        )
    )
    assert generated["truth"] == "rows.truth"
    fitted = summary_of(
        invoke(
            "fit", "rows.parquet", "--columns", "x_0,x_2", "-k", 2, "--seed", 0, "-o", "two",
            "--json", cwd=tmp_path,
        )
    )
    assert fitted["n_features"] == 2 and dgmm.load(tmp_path / "two").n_features_in_ == 2
    scored = invoke("score", "two", "rows.parquet", "--columns", "x_0,x_2", "--json", cwd=tmp_path)
    assert np.isfinite(summary_of(scored)["log_likelihood"])
    # Without --columns the source has all 3 features: a mismatch, one line, exit 1.
    mismatch = invoke("score", "two", "rows.parquet", cwd=tmp_path)
    assert mismatch.exit_code == 1 and len(mismatch.stderr.strip().splitlines()) == 1


def test_config_tables_and_arrays_mean_the_flags_json_and_lists(tmp_path):
    (tmp_path / "job.toml").write_text(
        'storage-options = { anon = true, client_kwargs = { region_name = "eu" } }\n'
        '[fit]\nsource = "s3://b/x.parquet"\nn-components = 2\noutput = "m"\n'
        'columns = ["a", "b"]\n'
    )
    by_file = cli.commands["fit"].make_context(
        "fit", ["--config", str(tmp_path / "job.toml")], parent=cli.make_context("dgmm", ["fit"])
    ).params
    by_flags = cli.commands["fit"].make_context(
        "fit",
        [
            "s3://b/x.parquet", "-k", "2", "-o", "m", "--columns", "a,b", "--storage-options",
            '{"anon": true, "client_kwargs": {"region_name": "eu"}}',
        ],
        parent=cli.make_context("dgmm", ["fit"]),
    ).params
    assert by_file["columns"] == by_flags["columns"] == ["a", "b"]
    assert by_file["storage_options"] == by_flags["storage_options"]
    assert by_file["storage_options"]["client_kwargs"] == {"region_name": "eu"}
    assert {k: v for k, v in by_file.items() if k != "config"} == {
        k: v for k, v in by_flags.items() if k != "config"
    }
