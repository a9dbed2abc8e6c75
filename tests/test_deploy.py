"""deploy/: the local recipe runs end to end; the rest is checked as far as this machine can.

Docker, Kubernetes and SLURM cannot run here. What can be checked is: every
file parses, every ``dgmm ...`` command line in them is a valid invocation of
the real CLI (parsed by click against ``dgmm.cli``, config files included),
the image installs what pyproject.toml defines, the manifests agree with each
other (one image everywhere, credentials on the workers too), and the shell
scripts pass ``bash -n``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


# -- helpers: find dgmm command lines and parse them with the real CLI -----------


def _expand(word: str) -> str:
    """A shell/Kubernetes word with its variables replaced by example values."""
    word = re.sub(r"\$\(date[^)]*\)", "2026-11-22", word)  # $(date -u +%F)
    word = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", word)  # ${VAR:-default}
    word = re.sub(r"\$\(\w+\)", "value", word)  # Kubernetes $(VAR)
    return re.sub(r"\$\{?\w+\}?", "value", word)  # $VAR, ${VAR}


def _shell_commands(script: str) -> list[list[str]]:
    """Every ``dgmm ...`` command in a shell script (continuation lines joined)."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        while words and words[0] in ("exec", "command"):
            words = words[1:]
        if words and words[0] == "dgmm":
            if words[-1] == "&":
                words = words[:-1]
            commands.append([_expand(w) for w in words])
    return commands


def _yaml_commands(node: Any) -> list[list[str]]:
    """Every ``dgmm ...`` command in a YAML document: argv lists and ``sh -c`` scripts."""
    found = []
    if isinstance(node, dict):
        for value in node.values():
            found += _yaml_commands(value)
    elif isinstance(node, list):
        if node and node[0] == "dgmm":
            found.append([_expand(str(w)) for w in node])
        elif len(node) == 3 and node[0] in ("sh", "bash") and node[1] == "-c":
            found += _shell_commands(node[2])
        else:
            for value in node:
                found += _yaml_commands(value)
    return found


def parse_invocation(argv: list[str], config_files: dict[str, str] | None = None) -> dict[str, Any]:
    """Parse ``dgmm ARGS`` with click against dgmm.cli, as the real entry point would.

    ``config_files`` maps a path used in the command (``/etc/dgmm/job.toml``)
    to the file's content, written to a temporary file for the parse.
    Raises click's usage errors for anything the CLI would reject.
    """
    from dgmm.cli import cli

    assert argv[0] == "dgmm", argv
    name, rest = argv[1], list(argv[2:])
    assert name in cli.commands, f"{name!r} is not a dgmm command"
    for path, content in (config_files or {}).items():
        if path in rest:
            tmp = Path(os.environ["DGMM_DEPLOY_TMP"]) / Path(path).name
            tmp.write_text(content)
            rest[rest.index(path)] = str(tmp)
    parent = cli.make_context("dgmm", [name])
    with parent:
        ctx = cli.commands[name].make_context(name, rest, parent=parent)
    return ctx.params


@pytest.fixture(autouse=True)
def _deploy_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("DGMM_DEPLOY_TMP", str(tmp_path))


def test_the_parser_rejects_bad_invocations():
    """The checks below can fail: bad values, unknown and missing options are caught."""
    good = ["dgmm", "fit", "data.zarr", "-k", "3", "--output", "m"]
    assert parse_invocation(good)["n_components"] == 3
    for bad in (
        ["dgmm", "fit", "data.zarr", "-k", "0", "--output", "m"],
        ["dgmm", "fit", "data.zarr", "--output", "m"],
        ["dgmm", "fit", "data.zarr", "-k", "3", "--output", "m", "--no-such-option"],
        ["dgmm", "fit", "data.zarr", "-k", "3", "--output", "m", "--covariance-type", "banded"],
    ):
        with pytest.raises(click.UsageError):
            parse_invocation(bad)
    assert _shell_commands('exec dgmm fit "$SOURCE" -k "${K:-8}" \\\n  --output x &') == [
        ["dgmm", "fit", "value", "-k", "8", "--output", "x"]
    ]


# -- every directory ---------------------------------------------------------------


@pytest.mark.parametrize("directory", ["", "local", "docker", "kubernetes", "slurm"])
def test_every_directory_has_a_readme_saying_what_was_exercised(directory):
    text = (DEPLOY / directory / "README.md").read_text()
    assert "## What was exercised" in text


@pytest.mark.parametrize(
    "script", ["local/fit-local.sh", "slurm/fit.sbatch"], ids=["local", "sbatch"]
)
def test_shell_scripts_pass_bash_n(script):
    result = subprocess.run(["bash", "-n", str(DEPLOY / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- docker ----------------------------------------------------------------------


def _dockerfile() -> list[str]:
    text = (DEPLOY / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_installs_the_package_as_pyproject_defines_it():
    from packaging.specifiers import SpecifierSet

    lines = _dockerfile()
    base = next(line.split()[1] for line in lines if line.startswith("FROM "))
    python = re.match(r"python:(\d+\.\d+)", base)
    assert python, f"base image {base} is not an official python image"
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(python.group(1) + ".0")

    copied = {w.rstrip("/").removeprefix("./") for line in lines if line.startswith("COPY ")
              for w in line.split()[1:-1]}
    assert "pyproject.toml" in copied
    assert PYPROJECT["project"]["readme"] in copied  # setuptools reads it at build time
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied

    installs = [line for line in lines if line.startswith("RUN ") and "pip install" in line]
    assert len(installs) == 1, installs
    targets = re.findall(r"""["']?\.(?:\[([\w,\- ]*)\])?["']?(?=\s|$)""", installs[0].split("pip install", 1)[1])
    assert targets, f"the image must install the package from its source: {installs[0]}"
    extras = {e.strip() for group in targets for e in group.split(",") if e.strip()}
    defined = set(PYPROJECT["project"]["optional-dependencies"])
    assert extras <= defined, f"extras {extras - defined} are not in pyproject.toml"
    assert "test" not in extras and "s3" in extras  # the image reads s3:// URLs


def test_compose_file():
    compose = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"scheduler", "worker", "fit"} <= set(services)
    images = {s["image"] for s in services.values()}
    assert len(images) == 1, f"every service must run the same image, got {images}"
    build = services["fit"]["build"]
    context = (DEPLOY / "docker" / build["context"]).resolve()
    assert context == REPO_ROOT and (context / build["dockerfile"]).is_file()
    # The one-shot fit reads what the workers read, and does not restart.
    assert services["fit"]["restart"] == "no"
    assert services["fit"]["volumes"] == services["worker"]["volumes"]
    commands = _yaml_commands(compose)
    fits = [c for c in commands if c[1] == "fit"]
    assert len(fits) == 1
    params = parse_invocation(fits[0])
    assert params["scheduler"] == "tcp://scheduler:8786"
    assert params["source"].startswith("/data/") and params["output"].startswith("/data/")
    for command in commands:
        parse_invocation(command)
    scheduler = services["scheduler"]["command"]
    assert scheduler[:2] == ["dask", "scheduler"] and "8786" in scheduler


# -- kubernetes ------------------------------------------------------------------


def _manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [d for d in yaml.safe_load_all(path.read_text()) if d]
        for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
    }


def _containers(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "containers":
                found += value
            else:
                found += _containers(value)
    elif isinstance(node, list):
        for value in node:
            found += _containers(value)
    return found


def test_kubernetes_manifests_parse_and_agree():
    manifests = _manifests()
    kinds = {d["kind"]: d for docs in manifests.values() for d in docs}
    assert {"DaskJob", "DaskCluster", "CronJob", "ConfigMap", "Secret"} <= set(kinds)
    for kind in ("DaskJob", "DaskCluster"):
        assert kinds[kind]["apiVersion"] == "kubernetes.dask.org/v1"
    assert kinds["CronJob"]["apiVersion"] == "batch/v1"
    containers = [c for docs in manifests.values() for d in docs for c in _containers(d)]
    images = {c["image"] for c in containers}
    assert len(images) == 1, f"scheduler, workers and jobs must run one image, got {images}"
    secret = kinds["Secret"]["metadata"]["name"]
    for c in containers:
        if c["name"] in ("worker", "job", "fit"):  # whoever reads s3:// needs credentials
            assert {"secretRef": {"name": secret}} in c.get("envFrom", []), c["name"]
    for kind in ("DaskJob", "DaskCluster"):
        spec = kinds[kind]["spec"]
        cluster = spec["cluster"]["spec"] if kind == "DaskJob" else spec
        selector = cluster["scheduler"]["service"]["selector"]
        assert selector["dask.org/cluster-name"] == kinds[kind]["metadata"]["name"]
        assert isinstance(cluster["worker"]["replicas"], int)


def test_daskjob_runs_a_valid_fit_on_s3():
    job = next(d for d in _manifests()["daskjob.yaml"] if d["kind"] == "DaskJob")
    (command,) = _yaml_commands(job["spec"]["job"])
    params = parse_invocation(command)
    # No --scheduler: the operator sets DASK_SCHEDULER_ADDRESS in the job pod.
    assert params["scheduler"] is None
    assert params["source"].startswith("s3://") and params["output"].startswith("s3://")


def test_cronjob_runs_a_valid_fit_with_its_config_file():
    docs = {d["kind"]: d for d in _manifests()["cronjob.yaml"]}
    cron, config_map = docs["CronJob"], docs["ConfigMap"]
    assert len(cron["spec"]["schedule"].split()) == 5
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (command,) = _yaml_commands(container)
    # The --config path is where the ConfigMap is mounted.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["configMap"]["name"] == config_map["metadata"]["name"])
    config_path = command[command.index("--config") + 1]
    (key,) = config_map["data"]
    assert config_path == f"{mounts[volume['name']]}/{key}"
    params = parse_invocation(command, {config_path: config_map["data"][key]})
    assert params["source"].startswith("s3://") and params["n_components"] == 32
    assert params["output"].startswith("s3://") and "2026-11-22" in params["output"]
    assert params["scheduler"].startswith("tcp://dgmm-scheduler.")
    # A usage error fails the Job instead of being retried; that needs restartPolicy Never.
    rule = cron["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["onExitCodes"]["containerName"] == container["name"] and 2 in rule["onExitCodes"]["values"]
    assert pod["restartPolicy"] == "Never"


# -- slurm -------------------------------------------------------------------------


def test_sbatch_script_runs_a_valid_fit():
    script = (DEPLOY / "slurm" / "fit.sbatch").read_text()
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert any("--signal=B:INT" in d for d in directives)  # checkpoint before the walltime
    (command,) = _shell_commands(script)
    params = parse_invocation(command)
    assert params["checkpoint"] and params["scheduler"]


def test_jobqueue_recipe_builds_a_valid_fit():
    spec = importlib.util.spec_from_file_location("fit_jobqueue", DEPLOY / "slurm" / "fit_jobqueue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # dask_jobqueue is imported only when it runs
    args, fit_args = module.parse_args(
        ["s3://b/data.zarr", "s3://b/model", "--jobs", "2", "--", "-k", "4", "--seed", "1"]
    )
    assert args.jobs == 2 and fit_args == ["-k", "4", "--seed", "1"]
    command = module.build_fit_command(args.dgmm, args.source, args.model, "tcp://10.0.0.1:8786", fit_args)
    params = parse_invocation(command)
    assert params["scheduler"] == "tcp://10.0.0.1:8786" and params["n_components"] == 4
    assert params["source"] == "s3://b/data.zarr" and params["output"] == "s3://b/model"


# -- local: run it for real ---------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["DGMM"] = f"{shlex.quote(sys.executable)} -m dgmm"
    env["PYTHON"] = sys.executable
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _port_open(address: str) -> bool:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, int(port))) == 0


def _run_local(tmp_path: Path, source: str, model: Path, *fit_args: str, n_workers: int = 2):
    work = tmp_path / "work"
    env = _env() | {"N_WORKERS": str(n_workers), "WORK_DIR": str(work), "STARTUP_TIMEOUT": "120"}
    proc = subprocess.Popen(
        ["bash", str(DEPLOY / "local" / "fit-local.sh"), source, str(model), *fit_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # the test failed: stop everything the script started
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    pids = [int(p) for p in (work / "pids").read_text().split()] if (work / "pids").exists() else []
    # The scheduler deletes its file when it stops; the script logs the address.
    found = re.search(r"scheduler (tcp://\S+)", stderr)
    address = found.group(1) if found else None
    return proc.returncode, stdout, stderr, pids, address


def _assert_stopped(pids: list[int], address: str | None) -> None:
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)], "scheduler/worker processes left running"
    if address:
        assert not _port_open(address), f"the scheduler still listens on {address}"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A small Zarr store from a known 3-component mixture."""
    import zarr

    from ._helpers import make_mixture

    path = tmp_path_factory.mktemp("deploy") / "data.zarr"
    data = make_mixture(np.random.default_rng(11), n_samples=3000, n_features=3, n_components=3)
    array = zarr.create_array(str(path), shape=data.X.shape, chunks=(1000, 3), dtype="float64")
    array[:] = data.X
    return str(path), data


@pytest.mark.slow
def test_local_recipe_fits_on_its_own_cluster_and_stops_it(tmp_path, store):
    import dgmm

    source, data = store
    model = tmp_path / "model"
    rc, stdout, stderr, pids, address = _run_local(
        tmp_path, source, model, "-k", "3", "--seed", "0", "--init", "k-means++", "--max-iter", "50", "--json"
    )
    assert rc == 0, stderr
    assert len(pids) == 2 and address and address.startswith("tcp://127.0.0.1:")
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["n_components"] == 3 and summary["n_samples"] == 3000
    gmm = dgmm.load(model)
    assert gmm.n_components == 3 and gmm.n_iter_ == summary["n_iter"]
    # The fit found the known clusters (up to label permutation).
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(data.labels, gmm.predict(data.X)) > 0.9
    _assert_stopped(pids, address)


@pytest.mark.slow
def test_local_recipe_reports_a_failed_fit_and_still_stops_the_cluster(tmp_path):
    rc, stdout, stderr, pids, address = _run_local(
        tmp_path, str(tmp_path / "missing.zarr"), tmp_path / "model", "-k", "2", n_workers=1
    )
    assert rc == 1, stderr  # dgmm's exit status for a data error, passed through
    assert "missing.zarr" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "model").exists()
    _assert_stopped(pids, address)


def test_local_recipe_usage():
    result = subprocess.run(["bash", str(DEPLOY / "local" / "fit-local.sh")], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr
