"""SQSQueue against moto's standalone server: real HTTP, real boto3 clients, no in-process mocks."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import structlog.testing

import norc
from norc.abc import Claimant, QueueItem
from norc.errors import ConfigurationError
from norc.status import InstanceStatus
from norc.testing import NoopTask, QueueContract, free_port, wait_until
from norc_sqs import SQSError, SQSQueue, parse_body
from tests.servers import PrivatePostgres

MakeQueue = Callable[..., SQSQueue]


def claimant(n: int) -> Claimant:
    """A made-up executor identity."""
    return Claimant(executor_id=n, host="test-host", pid=4000 + n)


def unique(prefix: str = "norc-test") -> str:
    """An SQS queue name no other test (on the session-wide moto server) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sqs(moto_endpoint: str) -> Iterator[Any]:
    """A raw boto3 SQS client on the moto server, for what Norc would never send."""
    client = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def make_sqs_queue(app: norc.Norc, moto_endpoint: str) -> MakeQueue:
    """Create a Norc queue of type sqs on a fresh, uniquely named SQS queue."""

    def make(name: str, **settings: Any) -> SQSQueue:
        settings.setdefault("queue_name", unique())
        app.create_queue(
            name,
            type="sqs",
            endpoint_url=moto_endpoint,
            region="us-east-1",
            create=True,
            **settings,
        )
        queue = app.queue(name)
        assert isinstance(queue, SQSQueue)
        return queue

    return make


def sqs_url(queue: SQSQueue) -> str:
    """The SQS URL behind a Norc queue."""
    return queue._url()


def depth(sqs: Any, url: str) -> int:
    """Messages in an SQS queue, visible or in flight (moto's counts are exact)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def enqueue(app: norc.Norc, queue: str, count: int) -> list[int]:
    """Enqueue ``count`` NoopTask instances on ``queue``."""
    if not any(t.name == "noop" for t in app.tasks()):
        app.save_task(NoopTask(name="noop"))
    return app.enqueue_many("noop", count, queue=queue)


def body(instance_id: int, task_type: str = NoopTask.type_name) -> str:
    """A Norc message body, as another process's push would write it."""
    return json.dumps({"v": 1, "instance_id": instance_id, "task_type": task_type})


class TestSQSQueueContract(QueueContract):
    """The shared Queue contract, on a standard (unordered) SQS queue."""

    ordered = False

    @pytest.fixture
    def make_queue(self, make_sqs_queue: MakeQueue) -> MakeQueue:
        """Each contract queue gets its own SQS queue, created through the ``create`` setting."""
        return make_sqs_queue


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "exactly one of 'queue_url' or 'queue_name'"),
        ({"queue_name": "a", "queue_url": "http://x/1/a"}, "not both"),
        ({"queue_name": "has space"}, "'queue_name'"),
        ({"queue_url": "not-a-url"}, "'queue_url'"),
        ({"queue_name": "a", "endpoint_url": "ftp://x"}, "'endpoint_url'"),
        ({"queue_name": "a", "region": ""}, "'region'"),
        ({"queue_name": "a", "wait_time": 21}, "'wait_time'"),
        ({"queue_name": "a", "wait_time": 1.5}, "'wait_time'"),
        ({"queue_name": "a", "visibility_timeout": -1}, "'visibility_timeout'"),
        ({"queue_name": "a", "visibility_timeout": True}, "'visibility_timeout'"),
        ({"queue_name": "a", "fifo": "yes"}, "'fifo'"),
        ({"queue_name": "a", "fifo": True}, "does not end in '.fifo'"),
        ({"queue_name": "a.fifo", "fifo": False}, "ends in '.fifo'"),
        ({"queue_name": "a", "message_group": "g"}, "only applies to FIFO"),
        ({"queue_name": "a.fifo", "message_group": ""}, "'message_group'"),
        ({"queue_url": "http://x/1/a", "create": True}, "'create' needs 'queue_name'"),
        ({"queue_name": "a", "create": 1}, "'create'"),
        ({"queue_name": "a", "colour": "blue"}, "unknown SQS queue setting(s) 'colour'"),
    ],
)
def test_invalid_settings_are_refused_naming_the_key(
    settings: dict[str, Any], message: str
) -> None:
    """Each invalid setting raises ConfigurationError whose message names the problem."""
    with pytest.raises(ConfigurationError) as info:
        SQSQueue.validate_settings(settings)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "key", ["aws_secret_access_key", "aws_access_key_id", "aws_session_token", "AWS_SECRET"]
)
def test_credentials_in_settings_are_refused(sqlite_app: norc.Norc, key: str) -> None:
    """A credential-like key is refused with a pointer to boto3's credential chain."""
    with pytest.raises(ConfigurationError, match="standard chain") as info:
        sqlite_app.create_queue("q", type="sqs", queue_name="a", **{key: "x"})
    assert repr(key) in str(info.value)
    assert sqlite_app.queues() == [("default", "dbqueue", {})]  # nothing was created


def test_valid_settings_are_normalised() -> None:
    """Valid settings come back as given, with ``fifo`` derived from the queue name."""
    assert SQSQueue.validate_settings({"queue_name": "jobs"}) == {
        "queue_name": "jobs",
        "fifo": False,
    }
    assert SQSQueue.validate_settings(
        {
            "queue_url": "https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo",
            "wait_time": 0,
            "visibility_timeout": 60,
            "message_group": "g",
        }
    ) == {
        "queue_url": "https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo",
        "wait_time": 0,
        "visibility_timeout": 60,
        "fifo": True,
        "message_group": "g",
    }


def test_missing_sqs_queue_without_create_is_a_clear_error(
    app: norc.Norc, moto_endpoint: str
) -> None:
    """Without ``create``, a missing SQS queue raises SQSError naming it, not a boto3 error."""
    name = unique()
    app.create_queue("q", type="sqs", queue_name=name, endpoint_url=moto_endpoint)
    queue = app.queue("q")
    with pytest.raises(SQSError, match=f"SQS queue '{name}'.*does not exist.*create=true"):
        queue.claim(claimant(1), 1, timeout=0.1)
    with pytest.raises(SQSError, match="does not exist"):
        queue.count()


# -- sending ---------------------------------------------------------------------------


def test_push_sends_versioned_json_only_after_commit(
    app: norc.Norc, make_sqs_queue: MakeQueue, sqs: Any
) -> None:
    """Messages go out once the transaction commits, as JSON; a rollback sends nothing."""
    queue = make_sqs_queue("q")
    url = sqs_url(queue)
    with pytest.raises(RuntimeError), app.db.transaction() as tx:
        queue.push([QueueItem(instance_id=41, task_type="T")], tx)
        raise RuntimeError("roll back")
    with app.db.transaction() as tx:
        queue.push([QueueItem(instance_id=n, task_type="T") for n in range(1, 24)], tx)
        assert depth(sqs, url) == 0  # not before the commit
    assert depth(sqs, url) == 23  # three batches: 10 + 10 + 3
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"]
    assert json.loads(received[0]["Body"]) == {
        "v": 1,
        "instance_id": json.loads(received[0]["Body"])["instance_id"],
        "task_type": "T",
    }


def test_parse_body_accepts_only_norc_messages() -> None:
    """parse_body returns the instance id of a Norc body and a reason for anything else."""
    assert parse_body(body(7)) == (7, "")
    for bad in [
        "",
        "not json",
        "[1]",
        '{"v": 2, "instance_id": 1}',
        '{"v": true, "instance_id": 1}',
        '{"v": 1}',
        '{"v": 1, "instance_id": "1"}',
        '{"v": 1, "instance_id": 0}',
        '{"v": 1, "instance_id": 1.0}',
        '{"v": 1, "instance_id": 99999999999999999999}',
        None,
    ]:
        instance_id, reason = parse_body(bad)
        assert instance_id is None and reason, bad


# -- receiving -------------------------------------------------------------------------


def test_malformed_and_foreign_messages_are_dropped(
    app: norc.Norc, make_sqs_queue: MakeQueue, sqs: Any
) -> None:
    """Bodies that are not Norc's are logged and deleted; the real message among them is claimed."""
    queue = make_sqs_queue("q")
    url = sqs_url(queue)
    garbage = [
        "not json",
        "[1, 2]",
        '{"hello": "world"}',
        '{"v": 2, "instance_id": 1}',
        '{"v": 1, "instance_id": "one"}',
        "\u00e9\u00e8 binary-ish \u2603",
    ]
    for text in garbage:
        sqs.send_message(QueueUrl=url, MessageBody=text)
    [good] = enqueue(app, "q", 1)
    claimed: list[int] = []
    with structlog.testing.capture_logs() as logs:
        deadline = time.monotonic() + 10
        while depth(sqs, url) and time.monotonic() < deadline:
            claimed += queue.claim(claimant(1), 10, timeout=0.5)
    assert claimed == [good]
    assert depth(sqs, url) == 0
    dropped = [e for e in logs if e["event"] == "dropping a message that is not Norc's"]
    assert len(dropped) == len(garbage)
    assert all(e["log_level"] == "warning" and e["reason"] for e in dropped)


def test_duplicate_delivery_runs_once(app: norc.Norc, make_sqs_queue: MakeQueue, sqs: Any) -> None:
    """Three messages for one instance: one claimant wins it, every copy is deleted."""
    queue = make_sqs_queue("q")
    url = sqs_url(queue)
    [instance_id] = enqueue(app, "q", 1)
    sqs.send_message(QueueUrl=url, MessageBody=body(instance_id))
    sqs.send_message(QueueUrl=url, MessageBody=body(instance_id))
    won: dict[int, list[int]] = {1: [], 2: []}
    deadline = time.monotonic() + 10
    while depth(sqs, url) and time.monotonic() < deadline:
        for n in won:
            won[n] += queue.claim(claimant(n), 1, timeout=0.2)
    assert sorted(won[1] + won[2]) == [instance_id]
    record = app.instance(instance_id)
    assert record.status is InstanceStatus.RUNNING
    assert record.executor_id == (1 if won[1] else 2)
    assert depth(sqs, url) == 0


def test_message_for_a_missing_instance_is_dropped(
    app: norc.Norc, make_sqs_queue: MakeQueue, sqs: Any
) -> None:
    """A message naming an instance that does not exist is logged and deleted."""
    queue = make_sqs_queue("q")
    url = sqs_url(queue)
    sqs.send_message(QueueUrl=url, MessageBody=body(987654))
    with structlog.testing.capture_logs() as logs:
        assert queue.claim(claimant(1), 5, timeout=1.0) == []
    assert depth(sqs, url) == 0
    assert any(
        e["event"] == "dropping an SQS message for a missing instance" and e["instance"] == 987654
        for e in logs
    )


def test_fifo_queue_claims_and_deduplicates(
    app: norc.Norc, make_sqs_queue: MakeQueue, sqs: Any
) -> None:
    """On a FIFO queue, a second push of the same instances is deduplicated by SQS."""
    queue = make_sqs_queue("q", queue_name=unique() + ".fifo", message_group="reports")
    url = sqs_url(queue)
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["FifoQueue"])["Attributes"][
            "FifoQueue"
        ]
        == "true"
    )
    ids = enqueue(app, "q", 4)
    with app.db.transaction() as tx:  # the same instances again: same deduplication ids
        queue.push([QueueItem(instance_id=i, task_type="x") for i in ids], tx)
    assert depth(sqs, url) == 4
    claimed: list[int] = []
    deadline = time.monotonic() + 10
    while len(claimed) < 4 and time.monotonic() < deadline:
        claimed += queue.claim(claimant(1), 10, timeout=0.5)
    assert sorted(claimed) == ids
    assert depth(sqs, url) == 0


def test_wake_ends_a_waiting_claim_promptly(make_sqs_queue: MakeQueue) -> None:
    """wake() makes a claim that is short-polling an empty queue return within a poll."""
    queue = make_sqs_queue("q", wait_time=0)
    result: list[list[int]] = []
    thread = threading.Thread(
        target=lambda: result.append(queue.claim(claimant(1), 1, timeout=20.0))
    )
    thread.start()
    time.sleep(0.3)
    queue.wake()
    thread.join(10)
    assert not thread.is_alive()  # it returned long before its 20 s timeout
    assert result == [[]]


@pytest.mark.usefixtures("moto_endpoint")  # for its dummy AWS credentials
def test_unreachable_sqs_fails_loudly_on_push_and_quietly_on_claim(sqlite_app: norc.Norc) -> None:
    """With SQS unreachable, enqueue raises SQSError naming the instance; claim logs and waits."""
    app = sqlite_app
    dead = f"http://127.0.0.1:{free_port()}"
    app.create_queue("q", type="sqs", queue_url=f"{dead}/123456789012/gone", endpoint_url=dead)
    app.save_task(NoopTask(name="noop"))
    with pytest.raises(SQSError, match=r"instance\(s\) 1 are QUEUED but their messages could not"):
        app.enqueue("noop", queue="q")
    assert app.instance(1).status is InstanceStatus.QUEUED  # committed before the send
    with structlog.testing.capture_logs() as logs:
        assert app.queue("q").claim(claimant(1), 1, timeout=0.5) == []
    assert any(e["event"] == "SQS receive failed; will retry" for e in logs)


def test_peek_is_refused_and_release_is_a_no_op(app: norc.Norc, make_sqs_queue: MakeQueue) -> None:
    """peek() raises a clear SQSError (SQS cannot look without taking); release() does nothing."""
    queue = make_sqs_queue("q")
    with pytest.raises(SQSError, match="cannot show waiting messages"):
        queue.peek()
    with app.db.transaction() as tx:
        queue.release([1, 2], tx)


# -- executors in separate processes ---------------------------------------------------

EXECUTOR_SCRIPT = """
import sys, time
import norc
from norc.status import FINAL_INSTANCE_STATUSES

url, log_dir, queue, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
final = {s.value for s in FINAL_INSTANCE_STATUSES}
app = norc.Norc(url, log_dir=log_dir)
with app.executor(queue=queue, concurrency=2):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        counts = app.db.count_by_status()
        if sum(n for s, n in counts.items() if s in final) >= total:
            break
        time.sleep(0.1)
app.close()
"""


def test_executors_in_separate_processes_run_each_instance_once(
    db_url: str, log_dir: Path, moto_endpoint: str, sqs: Any
) -> None:
    """Three executor processes share an SQS queue, every message sent twice: each runs once."""
    app = norc.Norc(db_url, log_dir=log_dir)
    name = unique()
    app.create_queue(
        "shared",
        type="sqs",
        queue_name=name,
        endpoint_url=moto_endpoint,
        region="us-east-1",
        create=True,
        # A copy left hidden by a claim that failed (a database error leaves its messages
        # to come back after the visibility timeout) returns within the wait below.
        visibility_timeout=5,
    )
    queue = app.queue("shared")
    assert isinstance(queue, SQSQueue)
    url = sqs_url(queue)
    total = 30
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", EXECUTOR_SCRIPT, db_url, str(log_dir), "shared", str(total)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    try:
        ids = enqueue(app, "shared", total)
        for i in ids:  # SQS may deliver twice; make sure it does
            sqs.send_message(QueueUrl=url, MessageBody=body(i))
        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)), timeout=40)
        outputs = [p.communicate(timeout=30)[0].decode(errors="replace") for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    records = app.db.instances_by_id(ids)
    assert {r.status for r in records} == {InstanceStatus.SUCCESS}
    for record in records:
        log_text = app.logs(record.id)
        assert log_text.count('event="instance started"') == 1, log_text
    executors = {r.executor_id for r in records}
    assert executors <= {d.id for d in app.db.daemons(kind="executor")}
    # Copies nobody received before the executors ended are dropped by the next claim.
    deadline = time.monotonic() + 15
    while depth(sqs, url) and time.monotonic() < deadline:
        assert queue.claim(claimant(99), 10, timeout=0.2) == []
    assert depth(sqs, url) == 0
    app.close()


def test_concurrency_limit_defers_messages_instead_of_dropping_them(
    app: norc.Norc, make_sqs_queue: MakeQueue
) -> None:
    """Instances held back by their task's concurrency limit run later; none is lost."""
    from tests.tasks import Sleep

    make_sqs_queue("limited")
    app.save_task(Sleep(name="one-at-a-time", seconds=0.3, concurrency_limit=1))
    ids = app.enqueue_many("one-at-a-time", 3, queue="limited")
    with app.executor(queue="limited", concurrency=3):
        wait_until(lambda: all(r.status.is_final for r in app.db.instances_by_id(ids)), 60)
    records = app.db.instances_by_id(ids)
    assert {r.status for r in records} == {norc.InstanceStatus.SUCCESS}
    spans = sorted((r.started_at, r.ended_at) for r in records)
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))  # type: ignore[operator]


def test_retry_backoff_becomes_a_delivery_delay(
    app: norc.Norc, make_sqs_queue: MakeQueue, tmp_path: Any
) -> None:
    """A retried instance on SQS is delivered after its backoff, as a new attempt."""
    from tests.tasks import FlakyOnce

    make_sqs_queue("retrying")
    app.save_task(
        FlakyOnce(
            name="flaky", counter=str(tmp_path / "n"), max_retries=1, retry_delay=1, retry_jitter=0
        )
    )
    app.enqueue("flaky", queue="retrying")
    with app.executor(queue="retrying"):
        wait_until(
            lambda: any(
                r.status is norc.InstanceStatus.SUCCESS for r in app.instances(task="flaky")
            ),
            60,
        )
    first, second = sorted(app.instances(task="flaky"), key=lambda r: r.attempt)
    assert (first.status, second.attempt) == (norc.InstanceStatus.FAILURE, 2)
    assert (second.started_at - first.ended_at).total_seconds() >= 0.9  # type: ignore[operator]


def test_queue_group_mixes_sqs_and_dbqueue_in_priority_order(
    app: norc.Norc, make_sqs_queue: MakeQueue
) -> None:
    """A group of an SQS queue and a DBQueue serves the SQS queue (listed first) first."""
    make_sqs_queue("sqs-first")
    app.create_queue("db-second")
    app.create_queue_group("mixed", ["sqs-first", "db-second"])
    app.save_task(NoopTask(name="noop"))
    later = app.enqueue_many("noop", 3, queue="db-second")
    first = app.enqueue_many("noop", 3, queue="sqs-first")
    with app.executor(queue="mixed", concurrency=1):
        wait_until(
            lambda: all(r.status.is_final for r in app.db.instances_by_id(first + later)), 60
        )
    records = {r.id: r for r in app.db.instances_by_id(first + later)}
    assert {r.status for r in records.values()} == {InstanceStatus.SUCCESS}
    assert max(records[i].started_at for i in first) <= min(  # type: ignore[type-var]
        records[i].started_at
        for i in later  # type: ignore[type-var]
    )


@pytest.mark.skipif(
    not os.environ.get("NORC_TEST_POSTGRES_URL"),
    reason="needs PostgreSQL server binaries: runs where NORC_TEST_POSTGRES_URL is set",
)
def test_messages_of_a_claim_the_database_refused_come_back_within_seconds(
    private_pg: PrivatePostgres, moto_endpoint: str, tmp_path: Path
) -> None:
    """Messages received while the database is away are offered again within seconds of
    the failed claim, not after the queue's visibility timeout (two minutes here)."""
    from norc.errors import DatabaseUnreachable

    app = norc.Norc(private_pg.url, log_dir=tmp_path / "logs")
    app.create_queue(
        "outage",
        type="sqs",
        endpoint_url=moto_endpoint,
        region="us-east-1",
        create=True,
        queue_name=unique(),
        visibility_timeout=120,
        wait_time=0,
    )
    ids = enqueue(app, "outage", 3)
    queue = app.queue("outage")
    private_pg.stop()
    with pytest.raises(DatabaseUnreachable):
        queue.claim(claimant(1), 10, timeout=1)
    private_pg.start()
    got: list[int] = []

    def claimed_all() -> bool:
        got.extend(queue.claim(claimant(1), 10, timeout=0))
        return len(got) == 3

    wait_until(claimed_all, 15)
    assert sorted(got) == ids
    app.close()
