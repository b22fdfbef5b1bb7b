"""An S3-compatible server for the tests: moto's server mode on 127.0.0.1 (a free port), started once per test
process, and a fresh bucket per test. Nothing is mocked in Python: ctslice talks HTTP to it through obstore."""

from __future__ import annotations

import logging
import uuid

import pytest

SECRET = "sekrit-0f9e8d7c6b5a"
"""The secret access key the tests use: it must never show up in an output, a file or an error."""


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_url(s3_endpoint, tmp_path, monkeypatch) -> str:
    """s3://<fresh bucket>/cache, with credentials and endpoint in the environment (as a user would set them) and
    the local mirrors under tmp_path."""
    bucket = f"ctslice-test-{uuid.uuid4().hex[:12]}"
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL":
                        s3_endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
                        "XDG_CACHE_HOME": str(tmp_path / "xdg")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    boto(s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/cache"


def boto(endpoint: str):
    """A plain boto3 client, for what the test does behind ctslice's back (corrupting an object)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key=SECRET,
                        region_name="us-east-1")
