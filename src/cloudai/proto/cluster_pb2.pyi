from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "worker_ip", "total_cpu", "total_memory", "total_storage", "total_gpu")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_IP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CPU_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STORAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_GPU_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    worker_ip: str
    total_cpu: float
    total_memory: float
    total_storage: float
    total_gpu: float
    def __init__(self, worker_id: _Optional[str] = ..., worker_ip: _Optional[str] = ..., total_cpu: _Optional[float] = ..., total_memory: _Optional[float] = ..., total_storage: _Optional[float] = ..., total_gpu: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("worker_id", "cpu_usage", "memory_usage", "storage_usage", "running_tasks", "gpu_usage")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    STORAGE_USAGE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    GPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    cpu_usage: float
    memory_usage: float
    storage_usage: float
    running_tasks: _containers.RepeatedCompositeFieldContainer[RunningTask]
    gpu_usage: float
    def __init__(self, worker_id: _Optional[str] = ..., cpu_usage: _Optional[float] = ..., memory_usage: _Optional[float] = ..., storage_usage: _Optional[float] = ..., running_tasks: _Optional[_Iterable[_Union[RunningTask, _Mapping]]] = ..., gpu_usage: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("task_id", "docker_image", "command", "req_cpu", "req_memory", "req_storage", "req_gpu", "target_worker_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DOCKER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    REQ_CPU_FIELD_NUMBER: _ClassVar[int]
    REQ_MEMORY_FIELD_NUMBER: _ClassVar[int]
    REQ_STORAGE_FIELD_NUMBER: _ClassVar[int]
    REQ_GPU_FIELD_NUMBER: _ClassVar[int]
    TARGET_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    docker_image: str
    command: str
    req_cpu: float
    req_memory: float
    req_storage: float
    req_gpu: float
    target_worker_id: str
    def __init__(self, task_id: _Optional[str] = ..., docker_image: _Optional[str] = ..., command: _Optional[str] = ..., req_cpu: _Optional[float] = ..., req_memory: _Optional[float] = ..., req_storage: _Optional[float] = ..., req_gpu: _Optional[float] = ..., target_worker_id: _Optional[str] = ...) -> None: ...

class TaskAck(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "worker_id", "status", "logs", "result_location", "exit_code", "logs_truncated")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    RESULT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    LOGS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    worker_id: str
    status: str
    logs: str
    result_location: str
    exit_code: int
    logs_truncated: bool
    def __init__(self, task_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., status: _Optional[str] = ..., logs: _Optional[str] = ..., result_location: _Optional[str] = ..., exit_code: _Optional[int] = ..., logs_truncated: _Optional[bool] = ...) -> None: ...

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
