"""A scheduler and worker secured with TLS (certificates made by the test):
dgmm connects with the right certificates, given in code or in Dask's
config, and a client without them is refused with a clear error."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from distributed.security import Security

from dgmm import GaussianMixture
from dgmm.errors import ClusterConnectionError
from dgmm.fit import cluster
from tests.procs import dask_processes, make_tls_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_tls_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_cluster(certs):
    with dask_processes(n_workers=1, tls=certs) as procs:
        yield procs


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return np.vstack([rng.normal(-3, 1, (1000, 2)), rng.normal(3, 1, (1000, 2))])


@pytest.fixture(scope="module")
def reference(data):
    """The same fit on the test session's (plain, in-process) cluster."""
    return GaussianMixture(2, random_state=0).fit(data)


def test_scheduler_serves_only_tls(tls_cluster):
    assert tls_cluster.address.startswith("tls://127.0.0.1:")


def test_fit_over_tls_with_security_given_to_connect(tls_cluster, certs, data, reference):
    with cluster.connect(scheduler_address=tls_cluster.address, security=certs.security()) as client:
        assert client.scheduler.address == tls_cluster.address
        assert client.security.require_encryption
        gmm = GaussianMixture(2, random_state=0, client=client).fit(data)
    np.testing.assert_array_equal(gmm.means_, reference.means_)


def test_fit_over_tls_with_certificates_in_dask_config(tls_cluster, certs, data, reference):
    client_cert, client_key = certs.client
    settings = {
        "distributed.comm.tls.ca-file": certs.ca_file,
        "distributed.comm.tls.client.cert": client_cert,
        "distributed.comm.tls.client.key": client_key,
        "distributed.comm.require-encryption": True,
    }
    with dask.config.set(settings):
        gmm = GaussianMixture(2, random_state=0, scheduler_address=tls_cluster.address).fit(data)
    np.testing.assert_array_equal(gmm.means_, reference.means_)


def _other_ca(tmp_path_factory):
    return make_tls_certs(tmp_path_factory.mktemp("other-ca"), ca_name="someone else's CA").security()


@pytest.mark.parametrize(
    "security, scheme, fragments",
    [
        pytest.param(lambda certs, _: None, "tls", ["TLS", "tls_client_cert"], id="no-certificates"),
        pytest.param(
            lambda certs, _: Security(tls_ca_file=certs.ca_file, require_encryption=True),
            "tls", ["TLS", "tls_client_cert"], id="ca-but-no-client-certificate",
        ),
        pytest.param(lambda _, factory: _other_ca(factory), "tls", ["certificate"], id="certificate-of-another-ca"),
        pytest.param(lambda certs, _: None, "tcp", ["tcp", "tls://"], id="plain-tcp-to-a-tls-port"),
    ],
)
def test_client_without_the_right_certificates_is_refused(
    tls_cluster, certs, tmp_path_factory, security, scheme, fragments
):
    address = tls_cluster.address.replace("tls://", f"{scheme}://")
    with pytest.raises(ClusterConnectionError) as info:
        with cluster.connect(scheduler_address=address, security=security(certs, tmp_path_factory), timeout=5):
            pass
    message = str(info.value)
    assert address in message
    for fragment in fragments:
        assert fragment in message
    # The refusal is the scheduler's: it still serves clients that have the certificates.
    with cluster.connect(scheduler_address=tls_cluster.address, security=certs.security()) as client:
        assert client.submit(sum, [1, 2]).result() == 3
