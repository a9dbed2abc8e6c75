"""Real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1 for tests.

Usage::

    from tests.procs import dask_processes, make_tls_certs

    with dask_processes(n_workers=2) as procs:          # tcp://127.0.0.1:<free port>
        with procs.client() as client:                 # a distributed.Client to it
            GaussianMixture(3, client=client).fit(X)
        procs.kill_worker(0)                           # SIGKILL nanny + worker process
        procs.add_worker()                             # a replacement
        procs.kill_scheduler()                         # SIGKILL the scheduler

    certs = make_tls_certs(tmp_path)                   # CA + scheduler/worker/client certs
    with dask_processes(n_workers=1, tls=certs) as procs:
        procs.address                                  # "tls://127.0.0.1:<port>"
        procs.security                                 # a Security with the client cert

Every process is started in its own process group (session) and the whole
group is killed on exit, even when the test fails or times out, so no
nanny's worker child outlives the test. The scheduler listens on a free port
chosen by the OS (port 0) and publishes its address in a scheduler file; the
context manager returns once ``n_workers`` workers are registered. Workers
run with the repository root on ``PYTHONPATH`` so functions defined in test
modules unpickle on them.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DaskProcesses", "TLSCerts", "dask_processes", "make_tls_certs", "slow_rows"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TLSCerts:
    """PEM files of a test CA and of certificates it signed (127.0.0.1 SAN)."""

    ca_file: str
    scheduler: tuple[str, str]  # (cert, key)
    worker: tuple[str, str]
    client: tuple[str, str]

    def security(self, role: str = "client") -> Any:
        """A ``distributed.security.Security`` for ``role``, encryption required."""
        from distributed.security import Security

        cert, key = getattr(self, role)
        return Security(
            tls_ca_file=self.ca_file, tls_client_cert=cert, tls_client_key=key,
            require_encryption=True,
        )

    def cli_args(self, role: str) -> list[str]:
        """``--tls-ca-file/--tls-cert/--tls-key`` for ``dask scheduler|worker``."""
        cert, key = getattr(self, role)
        return ["--tls-ca-file", self.ca_file, "--tls-cert", cert, "--tls-key", key]


def make_tls_certs(directory: str | os.PathLike, *, ca_name: str = "dgmm test CA") -> TLSCerts:
    """Write a fresh CA and scheduler/worker/client certificates into ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))

    def write_key(key: Any, path: Path) -> str:
        path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
        return str(path)

    def write_cert(cert: Any, path: Path) -> str:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(path)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject).issuer_name(ca_subject)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = write_cert(ca_cert, directory / "ca.pem")

    def issue(role: str) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dgmm {role}")]))
            .issuer_name(ca_subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(valid[0]).not_valid_after(valid[1])
            .add_extension(
                x509.SubjectAlternativeName([
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
                ]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return write_cert(cert, directory / f"{role}.pem"), write_key(key, directory / f"{role}-key.pem")

    return TLSCerts(ca_file, issue("scheduler"), issue("worker"), issue("client"))


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    # The test process's own Dask settings (e.g. a scheduler address) must not leak in.
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    env.update(extra or {})
    return env


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group of ``proc`` (the process and its children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the group, SIGKILL it after ``grace`` seconds, reap the process."""
    if proc.poll() is None:
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # Kill the group even when the leader is gone: a nanny's worker may linger.
    _kill_group(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)


@dataclass
class DaskProcesses:
    """A running scheduler and its workers (see ``dask_processes``)."""

    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]
    scheduler_file: str
    directory: str
    tls: TLSCerts | None = None
    worker_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def security(self) -> Any:
        """The client-side ``Security`` (None without TLS)."""
        return self.tls.security("client") if self.tls else None

    def client(self, **kwargs: Any) -> Any:
        """A ``distributed.Client`` to this scheduler (use as a context manager)."""
        from distributed import Client

        kwargs.setdefault("security", self.security)
        kwargs.setdefault("timeout", 30)
        return Client(self.address, **kwargs)

    def _start_worker(self) -> subprocess.Popen:
        index = len(self.workers)
        log = open(Path(self.directory) / f"worker-{index}.log", "wb")  # noqa: SIM115 - kept open by Popen
        cmd = [
            sys.executable, "-m", "distributed.cli.dask_worker",
            "--scheduler-file", self.scheduler_file,
            "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1",
            "--no-dashboard", "--name", f"w{index}",
            "--local-directory", str(Path(self.directory) / f"worker-{index}"),
            *self.worker_args,
        ]
        if self.tls:
            cmd += self.tls.cli_args("worker")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO_ROOT,
            start_new_session=True,
        )
        log.close()
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, n_workers: int, timeout: float = 60.0) -> None:
        """Block until ``n_workers`` workers are registered with the scheduler."""
        with self.client(set_as_default=False) as client:
            client.wait_for_workers(n_workers, timeout=timeout)

    def add_worker(self, *, wait: bool = True, timeout: float = 60.0) -> subprocess.Popen:
        """Start one more worker process (e.g. to replace a killed one)."""
        alive = sum(p.poll() is None for p in self.workers)
        proc = self._start_worker()
        if wait:
            self.wait_for_workers(alive + 1, timeout)
        return proc

    def kill_worker(self, index: int = 0) -> None:
        """SIGKILL worker ``index``: its nanny and the worker process, no goodbye."""
        _kill_group(self.workers[index])
        self.workers[index].wait(10)

    def worker_index(self, client: Any, address: str) -> int:
        """Index in ``workers`` of the worker serving at ``address`` (names are ``w<index>``)."""
        # Asked now: scheduler_info()'s cache may lack per-worker details.
        name = client.sync(client.scheduler.identity, n_workers=-1)["workers"][address]["name"]
        return int(str(name).lstrip("w"))

    def kill_scheduler(self) -> None:
        """SIGKILL the scheduler process."""
        _kill_group(self.scheduler)
        self.scheduler.wait(10)

    def logs(self) -> str:
        """Everything the scheduler and workers printed (for assertion messages)."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')}"
            for p in sorted(Path(self.directory).glob("*.log"))
        )


@contextlib.contextmanager
def dask_processes(
    n_workers: int = 2,
    *,
    tls: TLSCerts | None = None,
    worker_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[DaskProcesses]:
    """Start ``dask scheduler`` + ``n_workers`` ``dask worker`` processes on 127.0.0.1.

    Parameters
    ----------
    n_workers : int
        Worker processes (one thread each, each with a nanny), started and
        registered before the body runs.
    tls : TLSCerts, optional
        Serve and connect over ``tls://`` with these certificates.
    worker_args : list of str, optional
        Extra ``dask worker`` options, e.g. ``["--memory-limit", "1GiB"]``.
    env : dict, optional
        Extra environment variables of every process.
    timeout : float
        Seconds to wait for the scheduler file and the workers.

    Yields
    ------
    procs : DaskProcesses
        ``address``, ``security``, ``client()``, ``kill_worker(i)``,
        ``add_worker()``, ``kill_scheduler()``, the ``Popen`` handles and ``logs()``.
    """
    directory = tempfile.mkdtemp(prefix="dgmm-procs-")
    scheduler_file = str(Path(directory) / "scheduler.json")
    full_env = _env(env)
    cmd = [
        sys.executable, "-m", "distributed.cli.dask_scheduler",
        "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
        "--scheduler-file", scheduler_file,
    ]
    if tls:
        cmd += ["--protocol", "tls", *tls.cli_args("scheduler")]
    log = open(Path(directory) / "scheduler.log", "wb")  # noqa: SIM115 - kept open by Popen
    scheduler = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO_ROOT,
        start_new_session=True,
    )
    log.close()
    procs = DaskProcesses(
        address="", scheduler=scheduler, workers=[], scheduler_file=scheduler_file,
        directory=directory, tls=tls, worker_args=list(worker_args or []), env=full_env,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                procs.address = json.loads(Path(scheduler_file).read_text())["address"]
                break
            if scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start:\n{procs.logs()}")
            time.sleep(0.1)
        for _ in range(n_workers):
            procs._start_worker()
        if n_workers:
            try:
                procs.wait_for_workers(n_workers, timeout)
            except Exception as exc:
                raise RuntimeError(f"dask workers did not register ({exc}):\n{procs.logs()}") from exc
        yield procs
    finally:
        for proc in procs.workers:
            _stop(proc)
        _stop(scheduler)
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def slow_rows(block: Any, seconds: float = 0.05) -> Any:
    """``block`` unchanged after ``seconds``: stretches a pass so a fault lands inside it."""
    time.sleep(seconds)
    return block
