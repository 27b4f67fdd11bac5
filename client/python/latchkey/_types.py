"""The results, as TypedDicts: plain dicts at run time (``user["id"]``), typed for mypy."""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, TypedDict

__all__ = [
    "User", "Health", "SignUpOutcome", "PasswordChanged", "TokenCheck", "ResetLink", "Event",
    "CredentialChange", "CredentialChanges", "OutboxMessage", "ExportedUser", "BackupChunk",
    "ImportOutcome",
]


class User(TypedDict):
    id: int
    email: str
    name: str
    role: str
    status: Literal["active", "disabled"]
    locale: Optional[str]
    created_at: int
    updated_at: int
    password_changed_at: int
    #: Bumped on every password change and when disabled: end sessions from older epochs.
    credential_epoch: int


class _Health(TypedDict):
    status: str
    version: str
    uptime_secs: int
    caller_role: str  # "app", "admin" or "monitor"
    store: str


class Health(_Health, total=False):
    protocol: int  # absent before protocol 2
    methods: List[str]


class _SignUpOutcome(TypedDict):
    outcome: str  # "created" or "confirmation_sent"


class SignUpOutcome(_SignUpOutcome, total=False):
    user: User


class PasswordChanged(TypedDict):
    user_id: int
    credential_epoch: int


class TokenCheck(TypedDict):
    state: str  # "valid", "expired", "used", "invalid"; treat others as "invalid"
    expires_at: Optional[int]


class ResetLink(TypedDict):
    user_id: int
    link: str
    expires_at: int


class Event(TypedDict):
    seq: int
    at: int
    kind: str
    user_id: Optional[int]
    client_ip: Optional[str]


class CredentialChange(TypedDict):
    seq: int
    at: int
    kind: str
    user_id: int


class CredentialChanges(TypedDict):
    changes: List[CredentialChange]
    next: int
    caught_up: bool


class OutboxMessage(TypedDict):
    id: int
    kind: str
    to: str
    state: str
    attempts: int
    created_at: int
    next_attempt_at: Optional[int]
    last_error: Optional[str]


class ExportedUser(TypedDict):
    id: int
    email: str
    name: str
    role: Optional[str]
    status: Optional[str]
    password_hash: str
    locale: Optional[str]
    created_at: Optional[int]


class BackupChunk(TypedDict):
    session: int
    data: str
    last: bool


#: One imported account: ``{"Ok": new_id}`` or ``{"Err": <ApiError as on the wire>}``.
ImportOutcome = Dict[str, Any]
