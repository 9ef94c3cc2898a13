from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "worker_ip", "total_cpu", "total_memory", "total_storage", "total_gpu", "task_limits")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_IP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CPU_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STORAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_GPU_FIELD_NUMBER: _ClassVar[int]
    TASK_LIMITS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    worker_ip: str
    total_cpu: float
    total_memory: float
    total_storage: float
    total_gpu: float
    task_limits: str
    def __init__(self, worker_id: _Optional[str] = ..., worker_ip: _Optional[str] = ..., total_cpu: _Optional[float] = ..., total_memory: _Optional[float] = ..., total_storage: _Optional[float] = ..., total_gpu: _Optional[float] = ..., task_limits: _Optional[str] = ...) -> None: ...

class MasterInfo(_message.Message):
    __slots__ = ("master_id", "master_address")
    MASTER_ID_FIELD_NUMBER: _ClassVar[int]
    MASTER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    master_id: str
    master_address: str
    def __init__(self, master_id: _Optional[str] = ..., master_address: _Optional[str] = ...) -> None: ...

class RegisterAck(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("worker_id", "cpu_usage", "memory_usage", "storage_usage", "running_tasks", "gpu_usage", "net_rx_bytes_per_sec", "net_tx_bytes_per_sec", "disk_read_bytes_per_sec", "disk_write_bytes_per_sec", "load_avg_1m", "load_avg_5m", "load_avg_15m", "memory_used_bytes", "memory_total_bytes", "storage_used_bytes", "storage_total_bytes", "gpu_memory_used_bytes", "gpu_memory_total_bytes", "gpus")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    STORAGE_USAGE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    NET_RX_BYTES_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    NET_TX_BYTES_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    DISK_READ_BYTES_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    DISK_WRITE_BYTES_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVG_1M_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVG_5M_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVG_15M_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    cpu_usage: float
    memory_usage: float
    storage_usage: float
    running_tasks: _containers.RepeatedCompositeFieldContainer[RunningTask]
    gpu_usage: float
    net_rx_bytes_per_sec: float
    net_tx_bytes_per_sec: float
    disk_read_bytes_per_sec: float
    disk_write_bytes_per_sec: float
    load_avg_1m: float
    load_avg_5m: float
    load_avg_15m: float
    memory_used_bytes: int
    memory_total_bytes: int
    storage_used_bytes: int
    storage_total_bytes: int
    gpu_memory_used_bytes: int
    gpu_memory_total_bytes: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuDevice]
    def __init__(self, worker_id: _Optional[str] = ..., cpu_usage: _Optional[float] = ..., memory_usage: _Optional[float] = ..., storage_usage: _Optional[float] = ..., running_tasks: _Optional[_Iterable[_Union[RunningTask, _Mapping]]] = ..., gpu_usage: _Optional[float] = ..., net_rx_bytes_per_sec: _Optional[float] = ..., net_tx_bytes_per_sec: _Optional[float] = ..., disk_read_bytes_per_sec: _Optional[float] = ..., disk_write_bytes_per_sec: _Optional[float] = ..., load_avg_1m: _Optional[float] = ..., load_avg_5m: _Optional[float] = ..., load_avg_15m: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., storage_used_bytes: _Optional[int] = ..., storage_total_bytes: _Optional[int] = ..., gpu_memory_used_bytes: _Optional[int] = ..., gpu_memory_total_bytes: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuDevice, _Mapping]]] = ...) -> None: ...

class GpuDevice(_message.Message):
    __slots__ = ("index", "name", "uuid", "utilization", "memory_used_bytes", "memory_total_bytes", "temperature_c", "power_watts")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    uuid: str
    utilization: float
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float
    power_watts: float
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., uuid: _Optional[str] = ..., utilization: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., temperature_c: _Optional[float] = ..., power_watts: _Optional[float] = ...) -> None: ...

class RunningTask(_message.Message):
    __slots__ = ("task_id", "cpu_allocated", "memory_allocated", "status", "gpu_allocated", "cpu_usage", "memory_used_bytes")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GPU_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    cpu_allocated: float
    memory_allocated: float
    status: str
    gpu_allocated: float
    cpu_usage: float
    memory_used_bytes: int
    def __init__(self, task_id: _Optional[str] = ..., cpu_allocated: _Optional[float] = ..., memory_allocated: _Optional[float] = ..., status: _Optional[str] = ..., gpu_allocated: _Optional[float] = ..., cpu_usage: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("success",)
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    def __init__(self, success: _Optional[bool] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "docker_image", "command", "req_cpu", "req_memory", "req_storage", "req_gpu", "target_worker_id", "time_limit_seconds", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DOCKER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    REQ_CPU_FIELD_NUMBER: _ClassVar[int]
    REQ_MEMORY_FIELD_NUMBER: _ClassVar[int]
    REQ_STORAGE_FIELD_NUMBER: _ClassVar[int]
    REQ_GPU_FIELD_NUMBER: _ClassVar[int]
    TARGET_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    docker_image: str
    command: str
    req_cpu: float
    req_memory: float
    req_storage: float
    req_gpu: float
    target_worker_id: str
    time_limit_seconds: float
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., docker_image: _Optional[str] = ..., command: _Optional[str] = ..., req_cpu: _Optional[float] = ..., req_memory: _Optional[float] = ..., req_storage: _Optional[float] = ..., req_gpu: _Optional[float] = ..., target_worker_id: _Optional[str] = ..., time_limit_seconds: _Optional[float] = ..., attempt: _Optional[int] = ...) -> None: ...

class TaskAck(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "worker_id", "status", "logs", "result_location", "exit_code", "logs_truncated", "reason", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    RESULT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    LOGS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    worker_id: str
    status: str
    logs: str
    result_location: str
    exit_code: int
    logs_truncated: bool
    reason: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., status: _Optional[str] = ..., logs: _Optional[str] = ..., result_location: _Optional[str] = ..., exit_code: _Optional[int] = ..., logs_truncated: _Optional[bool] = ..., reason: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskID(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class TaskOutput(_message.Message):
    __slots__ = ("task_id", "worker_id", "attempt", "offset", "data", "final")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    worker_id: str
    attempt: int
    offset: int
    data: bytes
    final: bool
    def __init__(self, task_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., attempt: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., final: _Optional[bool] = ...) -> None: ...

class TaskOutputAck(_message.Message):
    __slots__ = ("success", "message", "next_offset")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    next_offset: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., next_offset: _Optional[int] = ...) -> None: ...
