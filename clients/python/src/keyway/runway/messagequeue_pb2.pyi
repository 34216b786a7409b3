from keyway.base import change_pb2 as _change_pb2
from keyway.base import mergestrategy_pb2 as _mergestrategy_pb2
from keyway.base import messagequeue_pb2 as _messagequeue_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    SUCCEEDED: _ClassVar[Outcome]
    FAILED: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
SUCCEEDED: Outcome
FAILED: Outcome

class MergeStep(_message.Message):
    __slots__ = ("step_id", "change", "strategy")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    change: _change_pb2.Change
    strategy: _mergestrategy_pb2.Strategy
    def __init__(self, step_id: _Optional[str] = ..., change: _Optional[_Union[_change_pb2.Change, _Mapping]] = ..., strategy: _Optional[_Union[_mergestrategy_pb2.Strategy, str]] = ...) -> None: ...

class MergeRequest(_message.Message):
    __slots__ = ("id", "queue_name", "steps")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    id: str
    queue_name: str
    steps: _containers.RepeatedCompositeFieldContainer[MergeStep]
    def __init__(self, id: _Optional[str] = ..., queue_name: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[MergeStep, _Mapping]]] = ...) -> None: ...

class StepOutput(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class StepResult(_message.Message):
    __slots__ = ("step_id", "outputs", "reason")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    outputs: _containers.RepeatedCompositeFieldContainer[StepOutput]
    reason: str
    def __init__(self, step_id: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[StepOutput, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class MergeResult(_message.Message):
    __slots__ = ("id", "outcome", "reason", "steps", "queue_name")
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    outcome: Outcome
    reason: str
    steps: _containers.RepeatedCompositeFieldContainer[StepResult]
    queue_name: str
    def __init__(self, id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., reason: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[StepResult, _Mapping]]] = ..., queue_name: _Optional[str] = ...) -> None: ...
