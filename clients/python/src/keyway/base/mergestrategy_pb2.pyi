from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEFAULT: _ClassVar[Strategy]
    REBASE: _ClassVar[Strategy]
    SQUASH_REBASE: _ClassVar[Strategy]
    MERGE: _ClassVar[Strategy]
    PROMOTE: _ClassVar[Strategy]
DEFAULT: Strategy
REBASE: Strategy
SQUASH_REBASE: Strategy
MERGE: Strategy
PROMOTE: Strategy
