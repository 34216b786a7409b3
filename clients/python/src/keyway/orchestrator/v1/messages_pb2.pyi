from keyway.base import messagequeue_pb2 as _messagequeue_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_STATE_UNSPECIFIED: _ClassVar[RequestState]
    REQUEST_STATE_QUEUED: _ClassVar[RequestState]
    REQUEST_STATE_LANDED: _ClassVar[RequestState]
    REQUEST_STATE_ERROR: _ClassVar[RequestState]
    REQUEST_STATE_CANCELLED: _ClassVar[RequestState]

class LandStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LAND_STRATEGY_UNSET: _ClassVar[LandStrategy]
    LAND_STRATEGY_REBASE: _ClassVar[LandStrategy]
    LAND_STRATEGY_SQUASH_REBASE: _ClassVar[LandStrategy]
    LAND_STRATEGY_MERGE: _ClassVar[LandStrategy]
    LAND_STRATEGY_PROMOTE: _ClassVar[LandStrategy]

class BatchState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCH_STATE_UNSPECIFIED: _ClassVar[BatchState]
    BATCH_STATE_CREATING: _ClassVar[BatchState]
    BATCH_STATE_CREATED: _ClassVar[BatchState]
    BATCH_STATE_SPECULATING: _ClassVar[BatchState]
    BATCH_STATE_MERGING: _ClassVar[BatchState]
    BATCH_STATE_SUCCEEDED: _ClassVar[BatchState]
    BATCH_STATE_FAILED: _ClassVar[BatchState]
    BATCH_STATE_CANCELLING: _ClassVar[BatchState]
    BATCH_STATE_CANCELLED: _ClassVar[BatchState]
REQUEST_STATE_UNSPECIFIED: RequestState
REQUEST_STATE_QUEUED: RequestState
REQUEST_STATE_LANDED: RequestState
REQUEST_STATE_ERROR: RequestState
REQUEST_STATE_CANCELLED: RequestState
LAND_STRATEGY_UNSET: LandStrategy
LAND_STRATEGY_REBASE: LandStrategy
LAND_STRATEGY_SQUASH_REBASE: LandStrategy
LAND_STRATEGY_MERGE: LandStrategy
LAND_STRATEGY_PROMOTE: LandStrategy
BATCH_STATE_UNSPECIFIED: BatchState
BATCH_STATE_CREATING: BatchState
BATCH_STATE_CREATED: BatchState
BATCH_STATE_SPECULATING: BatchState
BATCH_STATE_MERGING: BatchState
BATCH_STATE_SUCCEEDED: BatchState
BATCH_STATE_FAILED: BatchState
BATCH_STATE_CANCELLING: BatchState
BATCH_STATE_CANCELLED: BatchState

class BatchRef(_message.Message):
    __slots__ = ("id", "queue", "contains")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: str
    contains: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[str] = ..., contains: _Optional[_Iterable[str]] = ...) -> None: ...

class LogEvent(_message.Message):
    __slots__ = ("request_id", "event", "batch_id", "detail")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    event: str
    batch_id: str
    detail: str
    def __init__(self, request_id: _Optional[str] = ..., event: _Optional[str] = ..., batch_id: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class Parked(_message.Message):
    __slots__ = ("topic", "message_id", "reason", "payload", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    topic: str
    message_id: str
    reason: str
    payload: bytes
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, topic: _Optional[str] = ..., message_id: _Optional[str] = ..., reason: _Optional[str] = ..., payload: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("id", "queue", "uris", "strategy", "state", "version", "revisions", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    URIS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: str
    uris: _containers.RepeatedScalarFieldContainer[str]
    strategy: LandStrategy
    state: RequestState
    version: int
    revisions: _containers.RepeatedScalarFieldContainer[str]
    error: str
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[str] = ..., uris: _Optional[_Iterable[str]] = ..., strategy: _Optional[_Union[LandStrategy, str]] = ..., state: _Optional[_Union[RequestState, str]] = ..., version: _Optional[int] = ..., revisions: _Optional[_Iterable[str]] = ..., error: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("id", "queue", "contains", "state", "version", "failure_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CONTAINS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue: str
    contains: _containers.RepeatedScalarFieldContainer[str]
    state: BatchState
    version: int
    failure_reason: str
    def __init__(self, id: _Optional[str] = ..., queue: _Optional[str] = ..., contains: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[BatchState, str]] = ..., version: _Optional[int] = ..., failure_reason: _Optional[str] = ...) -> None: ...
