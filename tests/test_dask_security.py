"""The local dask cluster (issue 14): only ctslice's own client can connect to it (dask TLS with temporary
credentials), and it prints nothing about an HTTP server."""

import os
import socket
import warnings

import pytest

from ctslice.preprocess.parallel import dask_client, local_cluster_options

pytest.importorskip("cryptography", reason="a ctslice dependency (TLS credentials of the local cluster)")


def probe(address, security=None):
    """What another local user can try: connect to the scheduler, with no credentials or credentials of their own,
    and run code in it. Returns what went wrong (None if the probe got in)."""
    from dask.distributed import Client

    try:
        with Client(address, security=security, timeout="5s") as client:
            client.run_on_scheduler(os.getpid)
    except Exception as e:  # noqa: BLE001  (refused, in whatever form dask reports it)
        return e
    return None


def test_the_local_cluster_admits_only_its_own_client(tmp_path):
    from distributed.security import Security

    with dask_client(2, None) as client:
        host_port = client.scheduler.address.split("://", 1)[1]
        assert probe(f"tcp://{host_port}") is not None  # plain, no credentials
        assert probe(f"tls://{host_port}", Security.temporary()) is not None  # a stranger's own TLS credentials
        assert client.submit(os.getpid).result() != os.getpid()  # our own client runs work on the workers
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
    assert local_cluster_options(2)["security"] is True

def test_no_http_server_notice_even_when_its_default_port_is_taken():
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", 8787))  # dask's default port: taken, as by another cluster
        busy.listen()
    except OSError:
        pass  # already taken by someone else: the same situation
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with dask_client(2, None) as client:
                assert client.submit(sum, [1, 2]).result() == 3
    finally:
        busy.close()
    assert not [w for w in seen if "HTTP server" in str(w.message)], [str(w.message) for w in seen]
