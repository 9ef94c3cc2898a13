"""The attacker's suite: a real secure master, a real joined worker ``w1``, and a client
that tries to act on them with (a) no credentials, (b) a stolen ``read`` API token,
(c) the certificate of another worker (``w2``, joined the legitimate way) and (d) a
certificate from another CA (claiming to be the master, or ``w1``).

Every attack must be refused, and the real worker's tasks, heartbeats and results must
go on as if nothing happened. The cluster is started once for the module; the tests run
in file order and ``test_w1_came_through_unharmed`` checks that ``w1`` came through all
of them. Tests marked xfail document product bugs (their reason says where); the last
one starts a cluster of its own, since it leaves tracebacks in that cluster's logs.
"""

from __future__ import annotations

import asyncio
import http.client
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest

from cloudai.api.models import JoinRequest, TaskWithLogs, Worker
from cloudai.cli.api_client import ApiClient, ApiError, client_ssl_context
from cloudai.proto import pb, rpc
from cloudai.security import pki
from cloudai.security.tokens import Scope
from tests.harness import (
    Process,
    admin_client,
    async_wait_until,
    start_master,
    start_worker,
    wait_until,
)

SERVICE = "/cluster.MasterWorker"
CALL_TIMEOUT = 5.0
HANDSHAKE_REFUSED = grpc.StatusCode.UNAVAILABLE
"""What a client sees when the server refuses its TLS handshake (no certificate, or one
the server's CA did not sign), or when it speaks plaintext to a TLS port."""
GARBAGE = b"\x0a\xff\xff\xff\xff\xff"  # field 1, length-delimited, length varint cut short
FORGED_CPU = 99.9
FORGED_GPU = 77.7  # w1 has no GPU (it reports 0): a figure only the forgery carries


# -- the cluster and the attacker's credentials -------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A client certificate (or none) and the CA the client checks the server against."""

    name: str
    key_pem: bytes | None
    cert_pem: bytes | None
    plaintext: bool = False


@dataclass
class Cluster:
    tmp: Path
    master: Process
    w1: Process
    api: ApiClient
    ca_pem: bytes
    read_token: str
    w2: Credentials
    w1_own: Credentials  # the real worker's own key and certificate, read from its disk
    evil_master: Credentials  # another CA's certificate claiming the master's identity
    evil_w1: Credentials  # another CA's certificate claiming w1's identity
    no_cert: Credentials
    plaintext: Credentials
    sentinel: Path
    first_task: TaskWithLogs
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def w1_address(self) -> str:
        return str(self.w1.extra["address"])

    @property
    def w1_dir(self) -> Path:
        return self.tmp / "work-w1"


def join_as(master: Process, worker_id: str) -> Credentials:
    """Join ``master`` as ``worker_id`` the legitimate way (a join token and a CSR
    through ``POST /api/join``): that worker's key and certificate."""
    token = admin_client(master).create_join_token(uses=1, worker_id=worker_id)
    key = pki.new_key()
    anonymous = ApiClient(master.extra["http"], None, ca_file=Path(master.extra["ca_file"]))
    answer = anonymous.join(
        JoinRequest(
            token=token.token,
            worker_id=worker_id,
            csr_pem=pki.create_csr(key, worker_id).decode(),
        )
    )
    return Credentials(
        f"{worker_id}'s certificate", pki.key_pem(key), answer.certificate_pem.encode()
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("attacks")
    master = start_master(tmp, secure=True)
    w1: Process | None = None
    try:
        api = admin_client(master)
        joined = api.create_join_token(uses=1, worker_id="w1", description="the real w1")
        w1 = start_worker(
            tmp, "w1", "--interval", "0.2", master=master.extra["grpc"], join=joined.token
        )
        ca_pem = Path(master.extra["ca_file"]).read_bytes()

        # w2 joins the legitimate way; the attacker has stolen its key and certificate.
        w2 = join_as(master, "w2")

        # Another CA: it can mint any identity, but nobody in this cluster trusts it.
        evil_ca = pki.create_ca("evil")
        evil_master_cert = pki.issue_master(evil_ca, ["127.0.0.1", "localhost"])
        evil_w1_key = pki.new_key()
        evil_w1_cert = pki.sign_worker_csr(evil_ca, pki.create_csr(evil_w1_key, "w1"), "w1")

        tls = tmp / "work-w1" / "tls"
        w1_own = Credentials(
            "w1's own certificate",
            (tls / "worker.key").read_bytes(),
            (tls / "worker.pem").read_bytes(),
        )
        read_token = api.create_api_token(Scope.READ, name="stolen dashboard token").token
        wait_heartbeat_after(api, "w1", 0.0)
        first = run_task(api, "echo ready")
        assert first.status == "success", first
        yield Cluster(
            tmp=tmp,
            master=master,
            w1=w1,
            api=api,
            ca_pem=ca_pem,
            read_token=read_token,
            w2=w2,
            w1_own=w1_own,
            evil_master=Credentials(
                "another CA's master certificate",
                evil_master_cert.key_pem,
                evil_master_cert.cert_pem,
            ),
            evil_w1=Credentials(
                "another CA's certificate for w1",
                pki.key_pem(evil_w1_key),
                pki.cert_pem(evil_w1_cert),
            ),
            no_cert=Credentials("TLS without a client certificate", None, None),
            plaintext=Credentials("plaintext", None, None, plaintext=True),
            sentinel=tmp / "pwned",
            first_task=first,
        )
    finally:
        if w1 is not None:
            w1.close()
        master.close()


# -- helpers ------------------------------------------------------------------------------


def channel(cluster: Cluster, target: str, server_name: str, who: Credentials) -> grpc.Channel:
    """A channel from the attacker to ``target``. TLS channels trust the cluster CA (it is
    public: ``GET /api/ca``) and check the server's name, so that what fails is the
    server refusing the attacker, never the attacker refusing the server."""
    if who.plaintext:
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=cluster.ca_pem,
        private_key=who.key_pem,
        certificate_chain=who.cert_pem,
    )
    return grpc.secure_channel(
        target, credentials, options=[("grpc.ssl_target_name_override", server_name)]
    )


def to_w1(cluster: Cluster, who: Credentials) -> grpc.Channel:
    return channel(cluster, cluster.w1_address, pki.worker_dns_name("w1"), who)


def to_master(cluster: Cluster, who: Credentials) -> grpc.Channel:
    return channel(cluster, cluster.master.extra["grpc"], pki.MASTER_DNS, who)


def refused(method: Callable[..., object], request: object) -> grpc.RpcError:
    """The error ``method(request)`` fails with; fails the test if it is accepted."""
    try:
        answer = method(request, timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"the call was accepted: {answer!r}")


def code(exc: grpc.RpcError) -> grpc.StatusCode:
    return exc.code()


def details(exc: grpc.RpcError) -> str:
    return str(exc.details())


def expected_code(who: Credentials, cluster: Cluster) -> grpc.StatusCode:
    """w2's certificate passes the handshake (same CA) and is refused by the handler;
    anything else never gets past TLS."""
    return grpc.StatusCode.PERMISSION_DENIED if who == cluster.w2 else HANDSHAKE_REFUSED


def worker_view(api: ApiClient, worker_id: str) -> Worker:
    return api.worker(worker_id)


def wait_heartbeat_after(
    api: ApiClient, worker_id: str, after: float, timeout: float = 20
) -> Worker:
    """Wait until the master shows a heartbeat of ``worker_id`` newer than ``after``."""

    def fresh() -> Worker | None:
        view = worker_view(api, worker_id)
        ok = view.is_active and view.last_update is not None and view.last_update > after
        return view if ok and view.memory_usage > 0 else None

    result: Worker = wait_until(fresh, timeout, f"a heartbeat from {worker_id} after {after}")
    return result


def heartbeat_advances(cluster: Cluster) -> Worker:
    """w1 is still heartbeating to its real master: its last_update moves on from now."""
    now = worker_view(cluster.api, "w1").last_update or 0.0
    return wait_heartbeat_after(cluster.api, "w1", now)


def wait_task(
    api: ApiClient, task_id: str, statuses: set[str], timeout: float = 20
) -> TaskWithLogs:
    def reached() -> TaskWithLogs | None:
        task = api.task(task_id)
        return task if task.status in statuses else None

    result: TaskWithLogs = wait_until(reached, timeout, f"task {task_id} in {statuses}")
    return result


def run_task(api: ApiClient, command: str) -> TaskWithLogs:
    """A real task through the real master, until it finishes."""
    task = api.submit("w1", command=command)
    return wait_task(api, task.task_id, {"success", "failure", "cancelled", "rejected"})


def spool_files(cluster: Cluster) -> list[Path]:
    """w1's results waiting for delivery (``results/rejected`` aside)."""
    return sorted((cluster.w1_dir / "results").glob("*.result"))


def rejected_files(cluster: Cluster) -> list[str]:
    rejected = cluster.w1_dir / "results" / "rejected"
    return sorted(p.name for p in rejected.glob("*")) if rejected.exists() else []


def log_lines(process: Process) -> list[str]:
    return process.log().splitlines()


# -- 1. AssignTask straight to the worker ---------------------------------------------------


def test_assign_task_to_the_worker_from_an_attacker_runs_nothing(cluster: Cluster) -> None:
    attackers = [
        cluster.plaintext,
        cluster.no_cert,
        cluster.w2,
        cluster.evil_master,
        cluster.evil_w1,
    ]
    for number, who in enumerate(attackers):
        task = pb.Task(
            task_id=f"pwn-{number}",
            command=f"touch {cluster.sentinel}",
            target_worker_id="w1",
        )
        with to_w1(cluster, who) as ch:
            exc = refused(rpc.MasterWorkerStub(ch).AssignTask, task)
        assert code(exc) == expected_code(who, cluster), (who.name, code(exc), details(exc))
        if who == cluster.w2:
            assert "only from this worker's master" in details(exc)

    # The worker has had every chance to act: a real task submitted afterwards, through
    # the master, runs and reports back; the attacker's command never ran.
    real = run_task(cluster.api, "echo after-the-attacks")
    assert real.status == "success" and "after-the-attacks" in real.logs
    assert not cluster.sentinel.exists()
    ran = {p.name for p in (cluster.w1_dir / "tasks").iterdir()}
    assert not any(name.startswith("pwn-") for name in ran), ran
    assert not [t for t in cluster.api.tasks() if t.task_id.startswith("pwn-")]


# -- 2. MasterRegister: the attacker posing as w1's master --------------------------------


def test_master_register_from_an_attacker_is_refused(cluster: Cluster) -> None:
    info = pb.MasterInfo(master_id="evil-master", master_address="127.0.0.1:9")
    for who in [cluster.w2, cluster.no_cert, cluster.plaintext, cluster.evil_master]:
        with to_w1(cluster, who) as ch:
            exc = refused(rpc.MasterWorkerStub(ch).MasterRegister, info)
        assert code(exc) == expected_code(who, cluster), (who.name, code(exc), details(exc))

    # w1 keeps its real master: heartbeats still reach it, and it never heard of ours.
    heartbeat_advances(cluster)
    heartbeat_advances(cluster)
    assert "127.0.0.1:9" not in cluster.w1.log()
    assert "evil-master" not in cluster.w1.log()


# -- 3. CancelTask of a running real task ---------------------------------------------------


def test_cancel_task_from_an_attacker_leaves_the_task_running(cluster: Cluster) -> None:
    api = cluster.api
    task = api.submit("w1", command="sleep 30")
    wait_task(api, task.task_id, {"running"})
    try:
        for who in [cluster.w2, cluster.no_cert, cluster.evil_master]:
            with to_w1(cluster, who) as ch:
                exc = refused(rpc.MasterWorkerStub(ch).CancelTask, pb.TaskID(task_id=task.task_id))
            assert code(exc) == expected_code(who, cluster), (who.name, code(exc), details(exc))

        # Still running: the master says so, and w1's heartbeats after the attack list it.
        after = time.time()
        view = wait_heartbeat_after(api, "w1", after)
        assert task.task_id in {t.task_id for t in view.running_tasks}
        assert api.task(task.task_id).status == "running"
    finally:
        api.cancel(task.task_id)  # through the real master: the worker obeys it
    done = wait_task(api, task.task_id, {"cancelled", "success", "failure"})
    assert done.status == "cancelled", done


# -- 4. RegisterWorker claiming w1 ----------------------------------------------------------


def test_register_worker_claiming_w1_is_refused(cluster: Cluster) -> None:
    before = worker_view(cluster.api, "w1")
    info = pb.WorkerInfo(worker_id="w1", worker_ip="127.0.0.1:6666", total_cpu=64, total_memory=512)
    for who in [cluster.w2, cluster.evil_w1, cluster.no_cert, cluster.plaintext]:
        with to_master(cluster, who) as ch:
            exc = refused(rpc.MasterWorkerStub(ch).RegisterWorker, info)
        assert code(exc) == expected_code(who, cluster), (who.name, code(exc), details(exc))
        if who == cluster.w2:
            assert "cannot act for worker 'w1'" in details(exc)

    after = heartbeat_advances(cluster)
    assert after.address == cluster.w1_address == before.address
    assert (after.total_cpu, after.total_memory) == (before.total_cpu, before.total_memory)
    assert after.registered


# -- 5. Heartbeats for w1 -------------------------------------------------------------------


def forged(state: dict[str, Any]) -> bool:
    return state.get("gpu_usage") == FORGED_GPU or (
        state.get("cpu_usage") == FORGED_CPU and state.get("memory_usage") == 11.1
    )


async def test_forged_heartbeats_for_w1_never_show(cluster: Cluster) -> None:
    seen: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {cluster.master.extra['admin_token']}"}
    url = f"{cluster.master.extra['ws']}/ws/telemetry/w1"
    tls = client_ssl_context(Path(cluster.master.extra["ca_file"]))
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers=headers, ssl=tls) as ws,
    ):

        async def read() -> None:
            async for message in ws:
                state = orjson.loads(message.data).get("w1")
                if state:
                    seen.append(state)

        reader = asyncio.ensure_future(read())
        try:
            await asyncio.to_thread(forge_heartbeats, cluster)
            attacked_at = time.time()

            def fresh_updates() -> bool:
                return sum(1 for s in seen if (s.get("last_update") or 0) > attacked_at) >= 3

            await async_wait_until(fresh_updates, 20, "three w1 updates after the attack")
        finally:
            reader.cancel()
    assert seen and not [s for s in seen if forged(s)], [s for s in seen if forged(s)]
    view = worker_view(cluster.api, "w1")
    assert not forged(view.model_dump())  # (not 99.9 alone: a busy machine may show it)


def forge_heartbeats(cluster: Cluster) -> None:
    beat = pb.Heartbeat(
        worker_id="w1", cpu_usage=FORGED_CPU, memory_usage=11.1, gpu_usage=FORGED_GPU
    )
    for who in [cluster.w2, cluster.evil_w1, cluster.no_cert]:
        with to_master(cluster, who) as ch:
            stub = rpc.MasterWorkerStub(ch)
            exc = refused(stub.SendHeartbeat, beat)
            assert code(exc) == expected_code(who, cluster), (who.name, code(exc), details(exc))
            exc = refused(stub.StreamHeartbeats, iter([beat] * 5))
            assert code(exc) == expected_code(who, cluster), (who.name, code(exc), details(exc))


# -- 6. A forged result for a real task of w1 ---------------------------------------------


def test_forged_result_is_refused_and_the_real_one_recorded(cluster: Cluster) -> None:
    api = cluster.api
    go = cluster.tmp / "go-6"
    task = api.submit("w1", command=f"while [ ! -e {go} ]; do sleep 0.05; done; echo real-output")
    wait_task(api, task.task_id, {"running"})
    forged_result = pb.TaskResult(
        task_id=task.task_id, worker_id="w1", status="success", logs="forged-output", exit_code=0
    )
    with to_master(cluster, cluster.w2) as ch:
        stub = rpc.MasterWorkerStub(ch)
        exc = refused(stub.ReportTaskCompletion, forged_result)
        assert code(exc) == grpc.StatusCode.PERMISSION_DENIED, details(exc)
        as_w2 = pb.TaskResult()
        as_w2.CopyFrom(forged_result)
        as_w2.worker_id = "w2"
        ack = stub.ReportTaskCompletion(as_w2, timeout=CALL_TIMEOUT)
        assert not ack.success and "assigned to worker 'w1'" in ack.message, ack
    for who in [cluster.evil_w1, cluster.no_cert]:
        with to_master(cluster, who) as ch:
            exc = refused(rpc.MasterWorkerStub(ch).ReportTaskCompletion, forged_result)
        assert code(exc) == HANDSHAKE_REFUSED, (who.name, details(exc))
    assert api.task(task.task_id).status == "running"

    go.touch()
    done = wait_task(api, task.task_id, {"success", "failure", "cancelled"})
    assert done.status == "success" and done.exit_code == 0, done
    assert "real-output" in done.logs and "forged" not in done.logs
    assert done.message == "reported by w1"
    wait_until(lambda: not spool_files(cluster), 10, "w1's result spool to empty")
    cluster.notes["finished"] = done


# -- 7. A task is finished once; results only for tasks the master issued ----------------


def test_a_task_is_finished_once_and_only_issued_tasks_take_results(cluster: Cluster) -> None:
    done: TaskWithLogs = cluster.notes.get("finished") or cluster.first_task
    api = cluster.api
    again = pb.TaskResult(
        task_id=done.task_id,
        worker_id="w1",
        status=str(done.status),
        logs=done.logs,
        exit_code=done.exit_code or 0,
    )
    other = pb.TaskResult(task_id=done.task_id, worker_id="w1", status="failure", logs="rewritten")
    never = pb.TaskResult(task_id="never-issued-7", worker_id="w1", status="success", logs="x")
    with to_master(cluster, cluster.w1_own) as ch:  # the real worker's own certificate
        stub = rpc.MasterWorkerStub(ch)
        ack = stub.ReportTaskCompletion(again, timeout=CALL_TIMEOUT)
        assert ack.success, ack  # a repeated delivery is acknowledged: the worker may retry
        ack = stub.ReportTaskCompletion(other, timeout=CALL_TIMEOUT)
        assert "already recorded" in ack.message, ack
        ack = stub.ReportTaskCompletion(never, timeout=CALL_TIMEOUT)
        assert not ack.success and "never assigned" in ack.message, ack
    with to_master(cluster, cluster.w2) as ch:
        as_w2 = pb.TaskResult(task_id="never-issued-7b", worker_id="w2", status="success")
        ack = rpc.MasterWorkerStub(ch).ReportTaskCompletion(as_w2, timeout=CALL_TIMEOUT)
        assert not ack.success and "never assigned" in ack.message, ack

    now = api.task(done.task_id)
    assert (now.status, now.logs, now.exit_code) == (done.status, done.logs, done.exit_code)
    assert now.finished_at == done.finished_at
    for task_id in ("never-issued-7", "never-issued-7b"):
        with pytest.raises(ApiError) as missing:
            api.task(task_id)
        assert missing.value.status == 404


def test_a_result_the_master_never_issued_is_set_aside_by_the_real_worker(
    cluster: Cluster,
) -> None:
    """A result w1 holds for a task this master never issued (say, left over from another
    cluster) is refused when w1 delivers it: w1 sets it aside in ``results/rejected``
    instead of retrying for ever, and its real results still go through."""
    stale = pb.TaskResult(task_id="stale-7c", worker_id="w1", status="success", logs="old")
    (cluster.w1_dir / "results" / "stale-7c.result").write_bytes(stale.SerializeToString())
    real = run_task(cluster.api, "echo delivered-alongside")  # wakes w1's delivery
    assert real.status == "success" and "delivered-alongside" in real.logs
    wait_until(lambda: not spool_files(cluster), 10, "w1's result spool to empty")
    assert "stale-7c.result" in rejected_files(cluster)
    with pytest.raises(ApiError) as missing:
        cluster.api.task("stale-7c")
    assert missing.value.status == 404


def test_w2_registered_at_w1s_address_gets_nothing_from_w1(cluster: Cluster) -> None:
    """With w2's certificate the attacker may register w2 (that is w2's right), even at
    w1's address; but the master checks the name in the certificate of the worker it
    calls, so a task for w2 never reaches w1's port."""
    info = pb.WorkerInfo(worker_id="w2", worker_ip=cluster.w1_address, total_cpu=1)
    with to_master(cluster, cluster.w2) as ch:
        ack = rpc.MasterWorkerStub(ch).RegisterWorker(info, timeout=CALL_TIMEOUT)
    assert ack.success, ack
    with pytest.raises(ApiError) as refusal:
        cluster.api.submit("w2", command=f"touch {cluster.sentinel}", task_id="pwn-via-w2")
    assert refusal.value.status in (422, 503), refusal.value.message
    assert cluster.api.task("pwn-via-w2").status == "rejected"
    assert not (cluster.w1_dir / "tasks" / "pwn-via-w2").exists()
    assert not cluster.sentinel.exists()
    view = heartbeat_advances(cluster)
    assert view.address == cluster.w1_address


# -- 8. Duplicate identity ------------------------------------------------------------------


def test_joining_as_a_live_worker_is_refused_naming_its_address(cluster: Cluster) -> None:
    api = cluster.api
    token = api.create_join_token(uses=1, description="duplicate")
    anonymous = ApiClient(
        cluster.master.extra["http"], None, ca_file=Path(cluster.master.extra["ca_file"])
    )
    with pytest.raises(ApiError) as refusal:
        anonymous.join(
            JoinRequest(
                token=token.token,
                worker_id="w1",
                csr_pem=pki.create_csr(pki.new_key(), "w1").decode(),
            )
        )
    assert refusal.value.status == 409
    assert cluster.w1_address in refusal.value.message, refusal.value.message
    # Nothing was spent or changed: the token is unused, w1's certificate still works.
    info = next(t for t in api.join_tokens() if t.token_id == token.info.token_id)
    assert (info.uses, info.state) == (0, "active")
    heartbeat_advances(cluster)


# -- 9. HTTP: tokens and scopes -------------------------------------------------------------


def https(
    cluster: Cluster,
    method: str,
    path: str,
    token: str | None = None,
    body: bytes | None = None,
    source: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One HTTPS call (a fresh connection, optionally from another loopback address)."""
    port = int(cluster.master.ready["http_port"])
    context = ssl.create_default_context(cadata=cluster.ca_pem.decode())
    conn = http.client.HTTPSConnection(
        "127.0.0.1",
        port,
        context=context,
        timeout=CALL_TIMEOUT,
        source_address=(source, 0) if source else None,
    )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        raw = answer.read()
        parsed = orjson.loads(raw) if raw else None
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, parsed
    finally:
        conn.close()


async def ws_status(cluster: Cluster, path: str, token: str | None = None) -> int:
    """The status of a WebSocket handshake (101 when it opened); on success, the first
    message (the snapshot) is read too."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    tls = client_ssl_context(Path(cluster.master.extra["ca_file"]))
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(
                f"{cluster.master.extra['ws']}{path}", headers=headers, ssl=tls
            ) as ws:
                message = await asyncio.wait_for(ws.receive(), 10)
                assert message.type == aiohttp.WSMsgType.TEXT, message
                assert isinstance(orjson.loads(message.data), dict)
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_http_without_a_token_only_the_open_calls_answer(cluster: Cluster) -> None:
    task_id = cluster.first_task.task_id
    closed = [
        ("GET", "/api/workers"),
        ("GET", "/api/workers/w1"),
        ("GET", "/api/status"),
        ("GET", f"/api/tasks/{task_id}/logs"),
        ("GET", "/api/openapi.json"),
        ("GET", "/api/join-tokens"),
        ("POST", "/api/tasks"),
        ("POST", "/api/join-tokens"),
        ("DELETE", "/api/workers/w1"),
    ]
    for method, path in closed:
        status, headers, body = await asyncio.to_thread(https, cluster, method, path)
        assert status == 401, (method, path, status, body)
        assert headers.get("www-authenticate") == "Bearer"
        assert set(body) == {"error"}
    assert await ws_status(cluster, "/ws/telemetry") == 401
    assert await ws_status(cluster, "/ws/telemetry/w1") == 401

    status, _, body = await asyncio.to_thread(https, cluster, "GET", "/health")
    assert status == 200 and body["status"] == "healthy"
    status, _, body = await asyncio.to_thread(https, cluster, "GET", "/api/ca")
    assert status == 200 and body["ca_pem"].encode() == cluster.ca_pem
    bogus = orjson.dumps({"token": "nope", "worker_id": "w9", "csr_pem": "nope"})
    status, _, body = await asyncio.to_thread(https, cluster, "POST", "/api/join", None, bogus)
    assert status in (400, 403), (status, body)  # refused on its merits, not for a missing token


async def test_http_with_a_stolen_read_token_reads_but_changes_nothing(cluster: Cluster) -> None:
    read = cluster.read_token
    task_id = cluster.first_task.task_id
    for path in [
        "/api/workers",
        "/api/workers/w1",
        f"/api/tasks/{task_id}/logs",
        "/api/openapi.json",
    ]:
        status, _, body = await asyncio.to_thread(https, cluster, "GET", path, read)
        assert status == 200, (path, body)
    assert await ws_status(cluster, "/ws/telemetry", read) == 101

    tasks_before = len(cluster.api.tasks())
    tokens_before = len(cluster.api.join_tokens())
    attempts = [
        ("POST", "/api/tasks", {"worker_id": "w1", "command": f"touch {cluster.sentinel}"}),
        ("POST", "/api/join-tokens", {}),
        ("POST", "/api/tokens", {"scope": "admin"}),
        ("DELETE", "/api/workers/w1", None),
    ]
    for method, path, payload in attempts:
        raw = orjson.dumps(payload) if payload is not None else None
        status, _, body = await asyncio.to_thread(https, cluster, method, path, read, raw)
        assert status == 403, (method, path, status, body)
        assert "scope admin" in body["error"]
    assert len(cluster.api.tasks()) == tasks_before
    assert len(cluster.api.join_tokens()) == tokens_before
    assert worker_view(cluster.api, "w1").registered


async def test_http_tokens_are_taken_only_where_documented(cluster: Cluster) -> None:
    """The API takes the token from the Authorization header only; a WebSocket also from
    the ``token`` query parameter (for browsers), and a wrong one is never logged."""
    read = cluster.read_token
    status, _, _ = await asyncio.to_thread(https, cluster, "GET", f"/api/workers?token={read}")
    assert status == 401
    port = int(cluster.master.ready["http_port"])
    context = ssl.create_default_context(cadata=cluster.ca_pem.decode())
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=CALL_TIMEOUT)
    try:
        conn.request("GET", "/api/workers", headers={"Cookie": f"cloudai_token={read}"})
        assert conn.getresponse().status == 401
    finally:
        conn.close()
    assert await ws_status(cluster, f"/ws/telemetry?token={read}") == 101
    secret = "d3Jvbmctd2Vic29ja2V0LXNlY3JldA"
    assert await ws_status(cluster, f"/ws/telemetry?token=cloudai.0123456789ab.{secret}") == 401
    assert secret not in cluster.master.log()
    cluster.api.status()  # a good token from this address clears its failure count


def test_http_repeated_wrong_tokens_get_429(cluster: Cluster) -> None:
    # From another loopback address, so that the block does not reach this module's
    # admin client (127.0.0.1): the limit is per address.
    source = "127.0.0.2"
    secret = "Zm9yZ2VkLXNlY3JldC1vZi10aGUtYXR0YWNrZXI"
    wrong = f"cloudai.0123456789ab.{secret}"
    try:
        status, _, _ = https(cluster, "GET", "/api/workers", wrong, source=source)
    except OSError as exc:  # a system without 127.0.0.0/8 on its loopback interface
        pytest.skip(f"cannot connect from {source}: {exc}")
    statuses = [status]
    for _ in range(20):
        status, headers, body = https(cluster, "GET", "/api/workers", wrong, source=source)
        statuses.append(status)
        if status == 429:
            break
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    assert int(headers["retry-after"]) >= 1
    assert "too many" in body["error"]
    # Blocked whatever it sends now, a good token included; others are not blocked.
    admin = cluster.master.extra["admin_token"]
    assert https(cluster, "GET", "/api/workers", admin, source=source)[0] == 429
    assert https(cluster, "GET", "/api/workers", admin)[0] == 200
    assert secret not in cluster.master.log()


# -- 10. Undecodable gRPC messages ----------------------------------------------------------


def test_undecodable_messages_are_refused_quietly(cluster: Cluster) -> None:
    lines_before = len(log_lines(cluster.master))
    with to_master(cluster, cluster.w2) as ch:
        raw = ch.unary_unary(
            f"{SERVICE}/SendHeartbeat",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for _ in range(200):
            exc = refused(raw, GARBAGE)
            assert code(exc) == grpc.StatusCode.INVALID_ARGUMENT, details(exc)
        stream = ch.stream_unary(
            f"{SERVICE}/StreamHeartbeats",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        exc = refused(stream, iter([GARBAGE]))
        assert code(exc) == grpc.StatusCode.INVALID_ARGUMENT, details(exc)
    new = log_lines(cluster.master)[lines_before:]
    assert len(new) <= 2, new
    assert "Traceback" not in cluster.master.log()

    # The worker's port answers garbage the same way (refused before anything runs).
    worker_before = len(log_lines(cluster.w1))
    with to_w1(cluster, cluster.w2) as ch:
        raw = ch.unary_unary(
            f"{SERVICE}/AssignTask",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for _ in range(50):
            exc = refused(raw, GARBAGE)
            assert code(exc) in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.PERMISSION_DENIED,
            ), details(exc)
    new = log_lines(cluster.w1)[worker_before:]
    assert len(new) <= 2, new
    assert "Traceback" not in cluster.w1.log()
    heartbeat_advances(cluster)


# -- another worker's heartbeats and w1's tasks ----------------------------------------------


def test_another_workers_heartbeat_cannot_mark_w1s_task_running(cluster: Cluster) -> None:
    """w2 heartbeats as itself (its right) but lists a task of w1 as running: the state
    of w1's task must not change. w1 is paused (SIGSTOP) right after accepting the task,
    so that only w2's heartbeat could mark it running."""
    api = cluster.api
    with to_master(cluster, cluster.w2) as ch:
        stub = rpc.MasterWorkerStub(ch)
        ack = stub.RegisterWorker(pb.WorkerInfo(worker_id="w2", total_cpu=1), timeout=CALL_TIMEOUT)
        assert ack.success, ack
        for attempt in range(5):
            task = api.submit("w1", command="sleep 30", task_id=f"victim-{attempt}")
            cluster.w1.send_signal(signal.SIGSTOP)
            try:
                w1_beat = worker_view(api, "w1").last_update
                if api.task(task.task_id).status != "assigned":
                    continue  # w1's own heartbeat came first: try again
                running = pb.RunningTask(task_id=task.task_id, status="running", cpu_allocated=1)
                beat = pb.Heartbeat(worker_id="w2", cpu_usage=1.0, running_tasks=[running])
                stub.SendHeartbeat(beat, timeout=CALL_TIMEOUT)
                stub.SendHeartbeat(beat, timeout=CALL_TIMEOUT)
                status = api.task(task.task_id).status
                if worker_view(api, "w1").last_update != w1_beat:
                    continue  # a heartbeat of w1 was still in flight: not conclusive
                assert status == "assigned"
                return
            finally:
                cluster.w1.send_signal(signal.SIGCONT)
                api.cancel(task.task_id)
                wait_task(api, task.task_id, {"cancelled", "success", "failure"})
    pytest.skip("w1 always reported the task running before it could be paused")


# -- after all of it ------------------------------------------------------------------------


def test_w1_came_through_unharmed(cluster: Cluster) -> None:
    view = heartbeat_advances(cluster)
    assert view.address == cluster.w1_address and view.registered
    assert view.gpu_usage != FORGED_GPU
    real = run_task(cluster.api, "echo still-mine")
    assert real.status == "success" and real.logs.startswith("still-mine"), real
    assert real.message == "reported by w1"
    wait_until(lambda: not spool_files(cluster), 10, "w1's result spool to empty")
    assert not cluster.sentinel.exists()
    assert cluster.w1.proc.poll() is None
    for process in (cluster.master, cluster.w1):
        assert "Traceback" not in process.log()


# -- the other role's RPCs ------------------------------------------------------------------


@pytest.fixture
def small_cluster(tmp_path: Path) -> Iterator[tuple[Process, Process, Credentials]]:
    """A master, a joined worker v1 and the stolen certificate of v2 (for the tests that
    leave the logs of their cluster in a state the module's cluster must not share)."""
    master = start_master(tmp_path, secure=True)
    worker: Process | None = None
    try:
        token = admin_client(master).create_join_token(uses=1, worker_id="v1")
        worker = start_worker(tmp_path, "v1", master=master.extra["grpc"], join=token.token)
        yield master, worker, join_as(master, "v2")
    finally:
        if worker is not None:
            worker.close()
        master.close()


def test_the_other_roles_rpcs_are_refused_quietly(
    small_cluster: tuple[Process, Process, Credentials],
) -> None:
    master, worker, v2 = small_cluster
    ca_pem = Path(master.extra["ca_file"]).read_bytes()
    credentials = grpc.ssl_channel_credentials(ca_pem, v2.key_pem, v2.cert_pem)
    to_worker: list[tuple[str, Any]] = [  # what only a master calls: sent to the master
        ("MasterRegister", pb.MasterInfo(master_address="127.0.0.1:9")),
        ("AssignTask", pb.Task(task_id="x", command="true")),
        ("CancelTask", pb.TaskID(task_id="x")),
    ]
    to_master: list[tuple[str, Any]] = [  # what only a worker calls: sent to a worker
        ("RegisterWorker", pb.WorkerInfo(worker_id="v2")),
        ("SendHeartbeat", pb.Heartbeat(worker_id="v2")),
        ("ReportTaskCompletion", pb.TaskResult(task_id="x", worker_id="v2")),
    ]
    targets = [
        (master, master.extra["grpc"], pki.MASTER_DNS, to_worker),
        (worker, worker.extra["address"], pki.worker_dns_name("v1"), to_master),
    ]
    for process, address, name, calls in targets:
        before = len(log_lines(process))
        options = [("grpc.ssl_target_name_override", name)]
        with grpc.secure_channel(address, credentials, options) as ch:
            for method, request in calls:
                call: grpc.UnaryUnaryMultiCallable[Any, bytes] = ch.unary_unary(
                    f"{SERVICE}/{method}",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=lambda b: b,
                )
                for _ in range(20):
                    exc = refused(call, request)
                    assert code(exc) in (
                        grpc.StatusCode.UNIMPLEMENTED,
                        grpc.StatusCode.PERMISSION_DENIED,
                    ), (method, details(exc))
        new = log_lines(process)[before:]
        assert "Traceback" not in process.log(), "\n".join(new[:20])
        assert len(new) <= 4, "\n".join(new[:20])
