"""Wire compatibility with the existing Go implementation.

The bytes here are built by hand from the field numbers and types in PROTOCOL.md,
not with our stubs, so a renumbered or retyped field in cluster.proto fails here.
"""

from __future__ import annotations

import struct

from cloudai.proto import pb

VARINT, FIXED64, LEN = 0, 1, 2


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def f_string(number: int, value: str) -> bytes:
    data = value.encode()
    return tag(number, LEN) + varint(len(data)) + data


def f_double(number: int, value: float) -> bytes:
    return tag(number, FIXED64) + struct.pack("<d", value)


def f_bool(number: int, value: bool) -> bytes:
    return tag(number, VARINT) + varint(int(value))


def f_message(number: int, data: bytes) -> bytes:
    return tag(number, LEN) + varint(len(data)) + data


def decode(data: bytes) -> list[tuple[int, int, object]]:
    """Minimal protobuf decoder: (field number, wire type, raw value) in order."""
    fields, i = [], 0

    def read_varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while i < len(data):
        key = read_varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            fields.append((number, wire_type, read_varint()))
        elif wire_type == FIXED64:
            fields.append((number, wire_type, struct.unpack("<d", data[i : i + 8])[0]))
            i += 8
        elif wire_type == LEN:
            length = read_varint()
            fields.append((number, wire_type, data[i : i + length]))
            i += length
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
    return fields


def go_running_task() -> bytes:
    return (
        f_string(1, "t1")
        + f_double(2, 1.5)
        + f_double(3, 0.5)
        + f_string(4, "running")
        + f_double(5, 1.0)
    )


def go_heartbeat() -> bytes:
    return (
        f_string(1, "worker-1")
        + f_double(2, 12.5)
        + f_double(3, 40.1)
        + f_double(4, 55.0)
        + f_message(5, go_running_task())
        + f_double(6, 7.0)
    )


def test_go_heartbeat_decodes() -> None:
    hb = pb.Heartbeat.FromString(go_heartbeat())
    assert hb.worker_id == "worker-1"
    assert (hb.cpu_usage, hb.memory_usage, hb.storage_usage, hb.gpu_usage) == (
        12.5,
        40.1,
        55.0,
        7.0,
    )
    (task,) = hb.running_tasks
    assert (task.task_id, task.cpu_allocated, task.memory_allocated) == ("t1", 1.5, 0.5)
    assert (task.status, task.gpu_allocated) == ("running", 1.0)


def test_go_worker_info_decodes() -> None:
    data = (
        f_string(1, "worker-1")
        + f_string(2, "10.0.0.7:50052")
        + f_double(3, 8.0)
        + f_double(4, 31.2)
        + f_double(5, 250.0)
        + f_double(6, 2.0)
    )
    info = pb.WorkerInfo.FromString(data)
    assert (info.worker_id, info.worker_ip) == ("worker-1", "10.0.0.7:50052")
    assert (info.total_cpu, info.total_memory, info.total_storage, info.total_gpu) == (
        8.0,
        31.2,
        250.0,
        2.0,
    )


def test_our_heartbeat_reads_as_go_expects() -> None:
    hb = pb.Heartbeat(
        worker_id="w9",
        cpu_usage=1.25,
        memory_usage=2.5,
        storage_usage=3.75,
        gpu_usage=4.0,
        running_tasks=[
            pb.RunningTask(
                task_id="t",
                cpu_allocated=2.0,
                memory_allocated=1.0,
                status="paused",
                gpu_allocated=0.5,
            )
        ],
    )
    fields = decode(hb.SerializeToString())
    assert fields[0] == (1, LEN, b"w9")
    assert (2, FIXED64, 1.25) in fields
    assert (3, FIXED64, 2.5) in fields
    assert (4, FIXED64, 3.75) in fields
    assert (6, FIXED64, 4.0) in fields
    (task_bytes,) = [v for n, w, v in fields if n == 5 and w == LEN]
    assert decode(task_bytes) == [  # type: ignore[arg-type]
        (1, LEN, b"t"),
        (2, FIXED64, 2.0),
        (3, FIXED64, 1.0),
        (4, LEN, b"paused"),
        (5, FIXED64, 0.5),
    ]


def test_our_worker_info_reads_as_go_expects() -> None:
    info = pb.WorkerInfo(
        worker_id="w",
        worker_ip="1.2.3.4:5",
        total_cpu=4,
        total_memory=8,
        total_storage=16,
        total_gpu=1,
    )
    assert decode(info.SerializeToString()) == [
        (1, LEN, b"w"),
        (2, LEN, b"1.2.3.4:5"),
        (3, FIXED64, 4.0),
        (4, FIXED64, 8.0),
        (5, FIXED64, 16.0),
        (6, FIXED64, 1.0),
    ]


def test_other_messages_field_numbers() -> None:
    assert decode(pb.RegisterAck(success=True, message="m").SerializeToString()) == [
        (1, VARINT, 1),
        (2, LEN, b"m"),
    ]
    assert decode(pb.MasterInfo(master_id="m", master_address="a:1").SerializeToString()) == [
        (1, LEN, b"m"),
        (2, LEN, b"a:1"),
    ]
    task = pb.Task(
        task_id="t",
        docker_image="i",
        command="c",
        req_cpu=1,
        req_memory=2,
        req_storage=3,
        req_gpu=4,
        target_worker_id="w",
    )
    assert [(n, w) for n, w, _ in decode(task.SerializeToString())] == [
        (1, LEN),
        (2, LEN),
        (3, LEN),
        (4, FIXED64),
        (5, FIXED64),
        (6, FIXED64),
        (7, FIXED64),
        (8, LEN),
    ]
    result = pb.TaskResult(
        task_id="t", worker_id="w", status="success", logs="l", result_location="r"
    )
    assert decode(result.SerializeToString()) == [
        (1, LEN, b"t"),
        (2, LEN, b"w"),
        (3, LEN, b"success"),
        (4, LEN, b"l"),
        (5, LEN, b"r"),
    ]
    assert decode(pb.TaskID(task_id="t").SerializeToString()) == [(1, LEN, b"t")]
    assert decode(pb.HeartbeatAck(success=True).SerializeToString()) == [(1, VARINT, 1)]
    go_ack = f_bool(1, True) + f_string(2, "ok")
    for cls in (pb.TaskAck, pb.Ack, pb.RegisterAck):
        ack = cls.FromString(go_ack)
        assert ack.success and ack.message == "ok"


def test_service_methods_match_the_contract() -> None:
    service = pb.DESCRIPTOR.services_by_name["MasterWorker"]
    assert service.full_name == "cluster.MasterWorker"
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert methods["RegisterWorker"] == ("WorkerInfo", "RegisterAck")
    assert methods["SendHeartbeat"] == ("Heartbeat", "HeartbeatAck")
    assert methods["ReportTaskCompletion"] == ("TaskResult", "Ack")
    assert methods["MasterRegister"] == ("MasterInfo", "RegisterAck")
    assert methods["AssignTask"] == ("Task", "TaskAck")
    assert methods["CancelTask"] == ("TaskID", "TaskAck")
