import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Team(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEAM_UNSPECIFIED: _ClassVar[Team]
    TEAM_ANTHROPIC: _ClassVar[Team]
    TEAM_GOOGLE: _ClassVar[Team]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class TeamStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEAM_STATUS_UNSPECIFIED: _ClassVar[TeamStatus]
    TEAM_STATUS_IDLE: _ClassVar[TeamStatus]
    TEAM_STATUS_THINKING: _ClassVar[TeamStatus]
    TEAM_STATUS_GENERATING: _ClassVar[TeamStatus]
    TEAM_STATUS_COMPLETE: _ClassVar[TeamStatus]
    TEAM_STATUS_ERROR: _ClassVar[TeamStatus]
    TEAM_STATUS_CANCELLED: _ClassVar[TeamStatus]
TEAM_UNSPECIFIED: Team
TEAM_ANTHROPIC: Team
TEAM_GOOGLE: Team
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
TEAM_STATUS_UNSPECIFIED: TeamStatus
TEAM_STATUS_IDLE: TeamStatus
TEAM_STATUS_THINKING: TeamStatus
TEAM_STATUS_GENERATING: TeamStatus
TEAM_STATUS_COMPLETE: TeamStatus
TEAM_STATUS_ERROR: TeamStatus
TEAM_STATUS_CANCELLED: TeamStatus

class TeamRun(_message.Message):
    __slots__ = ("team", "status", "model", "thoughts", "code", "token_count", "error", "language")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    THOUGHTS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    team: Team
    status: TeamStatus
    model: str
    thoughts: _containers.RepeatedScalarFieldContainer[str]
    code: str
    token_count: int
    error: str
    language: str
    def __init__(self, team: _Optional[_Union[Team, str]] = ..., status: _Optional[_Union[TeamStatus, str]] = ..., model: _Optional[str] = ..., thoughts: _Optional[_Iterable[str]] = ..., code: _Optional[str] = ..., token_count: _Optional[int] = ..., error: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "brief", "state", "teams", "create_time", "update_time", "end_time", "last_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BRIEF_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    brief: str
    state: JobState
    teams: _containers.RepeatedCompositeFieldContainer[TeamRun]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    last_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., brief: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., teams: _Optional[_Iterable[_Union[TeamRun, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_sequence: _Optional[int] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("brief", "teams", "job_id", "request_id")
    BRIEF_FIELD_NUMBER: _ClassVar[int]
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    brief: str
    teams: _containers.RepeatedScalarFieldContainer[Team]
    job_id: str
    request_id: str
    def __init__(self, brief: _Optional[str] = ..., teams: _Optional[_Iterable[_Union[Team, str]]] = ..., job_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class StreamJobEventsRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class StreamJobEventsResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: JobEvent
    def __init__(self, event: _Optional[_Union[JobEvent, _Mapping]] = ...) -> None: ...

class StatusChange(_message.Message):
    __slots__ = ("status", "model")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    status: str
    model: str
    def __init__(self, status: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class ThoughtAdded(_message.Message):
    __slots__ = ("thought",)
    THOUGHT_FIELD_NUMBER: _ClassVar[int]
    thought: str
    def __init__(self, thought: _Optional[str] = ...) -> None: ...

class CodeGenerated(_message.Message):
    __slots__ = ("code", "language", "token_count")
    CODE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    code: str
    language: str
    token_count: int
    def __init__(self, code: _Optional[str] = ..., language: _Optional[str] = ..., token_count: _Optional[int] = ...) -> None: ...

class ErrorOccurred(_message.Message):
    __slots__ = ("error", "status")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    error: str
    status: str
    def __init__(self, error: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("sequence", "job_id", "time", "team", "status_change", "thought_added", "code_generated", "error")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    STATUS_CHANGE_FIELD_NUMBER: _ClassVar[int]
    THOUGHT_ADDED_FIELD_NUMBER: _ClassVar[int]
    CODE_GENERATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    job_id: str
    time: _timestamp_pb2.Timestamp
    team: Team
    status_change: StatusChange
    thought_added: ThoughtAdded
    code_generated: CodeGenerated
    error: ErrorOccurred
    def __init__(self, sequence: _Optional[int] = ..., job_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., team: _Optional[_Union[Team, str]] = ..., status_change: _Optional[_Union[StatusChange, _Mapping]] = ..., thought_added: _Optional[_Union[ThoughtAdded, _Mapping]] = ..., code_generated: _Optional[_Union[CodeGenerated, _Mapping]] = ..., error: _Optional[_Union[ErrorOccurred, _Mapping]] = ...) -> None: ...
