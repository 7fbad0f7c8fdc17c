"""S3LogStore against moto's standalone server: real HTTP, real boto3 clients, no mocks."""

from __future__ import annotations

import http.client
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import structlog.testing

import norc
from norc.config import Settings
from norc.errors import ConfigurationError, LogNotFound
from norc.status import InstanceStatus
from norc.testing import LogStoreContract, NoopTask, wait_until
from norc_s3 import InvalidLogKey, MiB, S3LogError, S3LogStore
from tests.tasks import Echo

INJECTED_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>injected by the test proxy</Message></Error>"
)


class FlakyProxy:
    """An HTTP server answering 500 to its first ``failures`` requests, then forwarding to moto.

    A real failing endpoint: the store's boto3 client talks HTTP to it exactly as it would
    to a struggling S3, and nothing inside boto3 is patched.
    """

    def __init__(self, target: str, failures: int) -> None:
        self.target = urlsplit(target)
        self.failures = failures
        self.requests = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet."""

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.requests += 1
                    fail = proxy.requests <= proxy.failures
                if fail:
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(INJECTED_ERROR)))
                    self.end_headers()
                    self.wfile.write(INJECTED_ERROR)
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("connection", "expect", "content-length")
                }
                conn = http.client.HTTPConnection(
                    proxy.target.hostname or "127.0.0.1", proxy.target.port, timeout=30
                )
                conn.request(self.command, self.path, body=data, headers=headers)
                answer = conn.getresponse()
                payload = answer.read()
                conn.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in (
                        "connection",
                        "transfer-encoding",
                        "content-length",
                        "server",
                        "date",
                    ):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def s3(moto_endpoint: str) -> Iterator[Any]:
    """A raw boto3 S3 client on the moto server."""
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh bucket on the moto server."""
    name = f"norc-logs-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    """A small finished log on local disk."""
    path = tmp_path / "a.log"
    path.write_bytes(b"[norc] started\nhello from a task\n")
    return path


def store(endpoint: str, bucket: str, log_dir: Path, **settings: Any) -> S3LogStore:
    """An S3LogStore on ``endpoint``."""
    return S3LogStore(
        settings={"bucket": bucket, "endpoint_url": endpoint, "region": "us-east-1", **settings},
        log_dir=log_dir,
    )


def s3_app(db_url: str, log_dir: Path, **store_settings: Any) -> norc.Norc:
    """A Norc handle whose finished logs go to S3."""
    return norc.Norc(
        settings=Settings.load(
            database_url=db_url,
            log_dir=log_dir,
            log_store="s3",
            log_store_settings=store_settings,
        )
    )


class TestS3LogStoreContract(LogStoreContract):
    """The shared LogStore contract, on moto's S3 over HTTP (a fresh bucket per test)."""

    @pytest.fixture
    def make_store(self, moto_endpoint: str, bucket: str) -> Callable[[Path], S3LogStore]:
        """An S3 store on the test bucket, for the log directory it is given."""
        return lambda log_dir: store(moto_endpoint, bucket, log_dir)


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "needs the setting 'bucket'"),
        ({"bucket": "Bad_Bucket"}, "'bucket'"),
        ({"bucket": "ok-bucket", "prefix": "/abs/"}, "'prefix'"),
        ({"bucket": "ok-bucket", "prefix": "a/../b/"}, "'prefix'"),
        ({"bucket": "ok-bucket", "endpoint_url": "minio:9000"}, "'endpoint_url'"),
        ({"bucket": "ok-bucket", "region": 3}, "'region'"),
        ({"bucket": "ok-bucket", "tries": 0}, "'tries'"),
        ({"bucket": "ok-bucket", "tries": "3"}, "'tries'"),
        ({"bucket": "ok-bucket", "backoff": -1}, "'backoff'"),
        ({"bucket": "ok-bucket", "multipart_threshold": 1024}, "'multipart_threshold'"),
        ({"bucket": "ok-bucket", "addressing_style": "dns"}, "'addressing_style'"),
        ({"bucket": "ok-bucket", "acl": "public-read"}, "unknown S3 log store setting(s) 'acl'"),
        ({"bucket": "ok-bucket", "aws_secret_access_key": "x"}, "looks like a credential"),
        ({"bucket": "ok-bucket", "aws_access_key_id": "x"}, "looks like a credential"),
    ],
)
def test_invalid_settings_are_refused_naming_the_key(
    settings: dict[str, Any], message: str, tmp_path: Path
) -> None:
    """Each invalid setting raises ConfigurationError whose message names the problem."""
    with pytest.raises(ConfigurationError) as info:
        S3LogStore(settings=settings, log_dir=tmp_path)
    assert message in str(info.value)


def test_valid_settings_come_back_as_given(tmp_path: Path) -> None:
    """validate_settings returns what was given, checked, and no defaults (so a default
    changed later applies to configurations written before)."""
    given = {"bucket": "ok-bucket", "prefix": "", "tries": 5, "region": "eu-west-1"}
    assert S3LogStore.validate_settings(given) == given
    assert S3LogStore.validate_settings({"bucket": "ok-bucket"}) == {"bucket": "ok-bucket"}


def test_backoff_is_accepted_but_says_it_has_no_effect(tmp_path: Path) -> None:
    """A configuration from before botocore's retries still loads; a warning names the
    setting it ignores."""
    with structlog.testing.capture_logs() as logs:
        S3LogStore(settings={"bucket": "ok-bucket", "backoff": 2}, log_dir=tmp_path)
    assert any("'backoff' is ignored" in e["event"] for e in logs)


def test_defaults_follow_the_seed(tmp_path: Path) -> None:
    """Without settings beyond the bucket, the prefix is norc_logs/ and uploads get 3 tries."""
    s = S3LogStore(settings={"bucket": "ok-bucket"}, log_dir=tmp_path)
    assert (s.prefix, s.tries) == ("norc_logs/", 3)
    assert s.object_key("tasks/T/n/n-1") == "norc_logs/tasks/T/n/n-1"


# -- save and open ---------------------------------------------------------------------


def test_save_then_open_round_trips(
    moto_endpoint: str, bucket: str, s3: Any, log_file: Path, tmp_path: Path
) -> None:
    """save() puts the log at prefix + key and returns its s3:// location; open() reads it back."""
    s = store(moto_endpoint, bucket, tmp_path, prefix="team/")
    assert s.save("tasks/T/n/n-1", log_file) == f"s3://{bucket}/team/tasks/T/n/n-1"
    body = s3.get_object(Bucket=bucket, Key="team/tasks/T/n/n-1")["Body"].read()
    assert body == log_file.read_bytes()
    assert s.open("tasks/T/n/n-1") == log_file.read_bytes()


def test_open_of_a_missing_object_is_none(moto_endpoint: str, bucket: str, tmp_path: Path) -> None:
    """A key with no object reads as None (the log is not there), not as an error."""
    assert store(moto_endpoint, bucket, tmp_path).open("tasks/T/n/n-404") is None


def test_missing_bucket_is_an_error_naming_bucket_and_key(
    moto_endpoint: str, log_file: Path, tmp_path: Path
) -> None:
    """A missing bucket is misconfiguration: S3LogError naming bucket and key, at once."""
    proxy = FlakyProxy(moto_endpoint, failures=0)
    try:
        s = store(proxy.url, "no-such-bucket-here", tmp_path)
        with pytest.raises(S3LogError, match=r"s3://no-such-bucket-here/norc_logs/k.*NoSuchBucket"):
            s.open("k")
        assert proxy.requests == 1  # not retried: it is not transient
        with pytest.raises(S3LogError, match="no-such-bucket-here"):
            s.save("k", log_file)
    finally:
        proxy.close()


def test_transient_failures_are_retried(
    moto_endpoint: str, bucket: str, s3: Any, log_file: Path, tmp_path: Path
) -> None:
    """Two 500 answers, then success: botocore's third attempt uploads (``tries`` = 3)."""
    proxy = FlakyProxy(moto_endpoint, failures=2)
    try:
        s = store(proxy.url, bucket, tmp_path, tries=3)
        location = s.save("tasks/T/n/n-2", log_file)
    finally:
        proxy.close()
    assert location == f"s3://{bucket}/norc_logs/tasks/T/n/n-2"
    assert proxy.requests == 3  # `tries` counts every attempt, the first one included
    body = s3.get_object(Bucket=bucket, Key="norc_logs/tasks/T/n/n-2")["Body"].read()
    assert body == log_file.read_bytes()


def test_upload_gives_up_after_the_last_try(
    moto_endpoint: str, bucket: str, log_file: Path, tmp_path: Path
) -> None:
    """An endpoint that keeps failing: save() raises S3LogError after exactly ``tries`` attempts."""
    proxy = FlakyProxy(moto_endpoint, failures=100)
    try:
        s = store(proxy.url, bucket, tmp_path, tries=2)
        with pytest.raises(S3LogError, match=r"after 2 tries: InternalError"):
            s.save("tasks/T/n/n-3", log_file)
    finally:
        proxy.close()
    assert proxy.requests == 2


def test_large_log_goes_up_in_parts(
    moto_endpoint: str, bucket: str, s3: Any, tmp_path: Path
) -> None:
    """A 6 MiB log with a 5 MiB threshold is a two-part upload and reads back identical."""
    big = tmp_path / "big.log"
    big.write_bytes(os.urandom(6 * MiB))
    s = store(moto_endpoint, bucket, tmp_path, multipart_threshold=5 * MiB)
    s.save("tasks/T/big/big-1", big)
    etag = s3.head_object(Bucket=bucket, Key="norc_logs/tasks/T/big/big-1")["ETag"]
    assert etag.strip('"').endswith("-2")  # S3's mark of a multipart upload of two parts
    assert s.open("tasks/T/big/big-1") == big.read_bytes()


@pytest.mark.parametrize(
    "key", ["../escape", "/etc/passwd", "tasks/../../x", "tasks/a/..", "a\\..\\b", "", "a\nb"]
)
def test_hostile_keys_are_refused(
    moto_endpoint: str, bucket: str, log_file: Path, tmp_path: Path, key: str
) -> None:
    """Keys with '..' segments, a leading '/', backslashes or control characters never reach S3."""
    proxy = FlakyProxy(moto_endpoint, failures=0)
    try:
        s = store(proxy.url, bucket, tmp_path)
        with pytest.raises(InvalidLogKey):
            s.save(key, log_file)
        with pytest.raises(InvalidLogKey):
            s.open(key)
    finally:
        proxy.close()
    assert proxy.requests == 0


# -- through Norc ----------------------------------------------------------------------


def test_finished_log_is_uploaded_and_readable_from_another_host(
    db_url: str, tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    """A finished log goes to S3, its location is recorded, and a host without the file reads it."""
    settings = {"bucket": bucket, "endpoint_url": moto_endpoint, "region": "us-east-1"}
    here = s3_app(db_url, tmp_path / "host-a", **settings)
    here.save_task(NoopTask(name="noop"))
    instance_id = here.enqueue("noop")
    with here.executor(isolation="thread"):
        wait_until(lambda: here.instance(instance_id).log_location is not None, timeout=20)
    record = here.instance(instance_id)
    assert record.status is InstanceStatus.SUCCESS
    assert record.log_key == here.log_keys.instance(NoopTask.type_name, "noop", instance_id)
    assert record.log_key.startswith(f"{here.log_keys.installation}/tasks/")
    assert record.log_location == f"s3://{bucket}/norc_logs/{record.log_key}"
    local_text = here.logs(instance_id)
    assert 'event="instance started"' in local_text

    there = s3_app(db_url, tmp_path / "host-b", **settings)  # an empty log directory
    assert not here.log_path(record).is_relative_to(tmp_path / "host-b")
    assert there.logs(instance_id) == local_text
    here.close()
    there.close()


def test_log_neither_local_nor_remote_raises_log_not_found(
    db_url: str, tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    """An instance that never ran has no log anywhere: LogNotFound with a plain message."""
    app = s3_app(db_url, tmp_path / "logs", bucket=bucket, endpoint_url=moto_endpoint)
    app.save_task(NoopTask(name="noop"))
    instance_id = app.enqueue("noop")
    with pytest.raises(LogNotFound) as info:
        app.logs(instance_id)
    message = str(info.value)
    assert message.startswith(f"no log for instance {instance_id}:")
    assert "'s3' log store" in message and "Traceback" not in message
    app.close()


def test_daemon_logs_are_kept_in_s3_when_they_end(
    db_url: str, tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    """An executor's and a scheduler's own logs go to S3 as they end, readable remotely."""
    settings = {"bucket": bucket, "endpoint_url": moto_endpoint, "region": "us-east-1"}
    app = s3_app(db_url, tmp_path / "host-a", **settings)
    with app.executor(isolation="thread") as ex, app.scheduler() as sch:
        pass
    assert ex.id is not None and sch.id is not None
    assert 'event="executor ended"' in app.daemon_logs(ex.id, remote=True)
    assert 'event="scheduler ended"' in app.daemon_logs(sch.id, remote=True)
    app.close()


def test_databases_sharing_a_bucket_keep_their_own_objects(
    db_url: str, tmp_path: Path, moto_endpoint: str, bucket: str, s3: Any
) -> None:
    """Two databases upload instance 1 and executor 1 to one bucket: the object keys start
    with each database's installation id, so neither overwrites the other's."""
    settings = {"bucket": bucket, "endpoint_url": moto_endpoint, "region": "us-east-1"}
    apps = [
        s3_app(db_url, tmp_path / "host-a", **settings),
        s3_app(f"sqlite:///{tmp_path / 'other.db'}", tmp_path / "host-b", **settings),
    ]
    try:
        for app, word in zip(apps, ("alpha", "bravo"), strict=True):
            app.save_task(Echo(name="e", message=word))
            instance_id = app.enqueue("e")
            assert instance_id == 1
            with app.executor(isolation="thread") as executor:
                wait_until(lambda a=app: a.instance(1).log_location is not None, timeout=20)
            assert executor.id == 1
            installation = app.log_keys.installation
            assert app.instance(1).log_location == (
                f"s3://{bucket}/norc_logs/{installation}/tasks/Echo/e/e-1"
            )
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
        assert len(keys) == 4  # two instance logs, two executor logs
        for app in apps:
            installation = app.log_keys.installation
            assert f"norc_logs/{installation}/executors/executor-1" in keys
        alpha, bravo = (app.logs(1, remote=True) for app in apps)
        assert "message=alpha" in alpha and "bravo" not in alpha
        assert "message=bravo" in bravo and "alpha" not in bravo
    finally:
        for app in apps:
            app.close()
