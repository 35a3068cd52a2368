from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Data(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class WindowUpdate(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: int
    def __init__(self, update: _Optional[int] = ...) -> None: ...

class ReadStream(_message.Message):
    __slots__ = ("stream", "media_type")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    stream: str
    media_type: str
    def __init__(self, stream: _Optional[str] = ..., media_type: _Optional[str] = ...) -> None: ...

class WriteStream(_message.Message):
    __slots__ = ("stream", "media_type")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    stream: str
    media_type: str
    def __init__(self, stream: _Optional[str] = ..., media_type: _Optional[str] = ...) -> None: ...
