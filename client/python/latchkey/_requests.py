"""Every method's arguments, checked and put in the protocol's form, once for both clients:
each function returns the method's name and its arguments."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

from ._wire import _U32_MAX, _opt_str, _opt_uint, _status, _str, _uint, _user_ref

Request = Tuple[str, Dict[str, Any]]


def health() -> Request:
    return "health", {}


def metrics() -> Request:
    return "metrics", {}


def create_user(email: str, password: str, name: str, role: Optional[str],
                locale: Optional[str], client_ip: Optional[str]) -> Request:
    user = {
        "email": _str("email", email), "name": _str("name", name),
        "password": _str("password", password), "role": _opt_str("role", role),
        "locale": _opt_str("locale", locale),
    }
    return "create_user", {"user": user, "client_ip": _opt_str("client_ip", client_ip)}


def sign_up(email: str, password: str, name: str, locale: Optional[str],
            client_ip: Optional[str]) -> Request:
    user = {
        "email": _str("email", email), "name": _str("name", name),
        "password": _str("password", password), "locale": _opt_str("locale", locale),
    }
    return "sign_up", {"user": user, "client_ip": _opt_str("client_ip", client_ip)}


def confirm_sign_up(token: str, password: str, client_ip: Optional[str]) -> Request:
    return "confirm_sign_up", {
        "token": _str("token", token), "password": _str("password", password),
        "client_ip": _opt_str("client_ip", client_ip),
    }


def get_user(id: int) -> Request:
    return "get_user", {"id": _uint("id", id)}


def find_user(email: str) -> Request:
    return "find_user", {"email": _str("email", email)}


def verify_password(email: str, password: str, client_ip: Optional[str]) -> Request:
    return "verify_password", {
        "email": _str("email", email), "password": _str("password", password),
        "client_ip": _opt_str("client_ip", client_ip),
    }


def change_password(id: int, current_password: str, new_password: str) -> Request:
    return "change_password", {
        "id": _uint("id", id),
        "current_password": _str("current_password", current_password),
        "new_password": _str("new_password", new_password),
    }


def set_status(id: int, status: str) -> Request:
    return "set_status", {"id": _uint("id", id), "status": _status(status)}


def delete_user(id: int) -> Request:
    return "delete_user", {"id": _uint("id", id)}


def page(method: str, after: int, limit: int) -> Request:
    """list_users, events, credential_changes, outbox_list, export_users."""
    return method, {"after": _uint("after", after), "limit": _uint("limit", limit, _U32_MAX)}


def set_password(id: int, new_password: str) -> Request:
    return "set_password", {
        "id": _uint("id", id), "new_password": _str("new_password", new_password),
    }


def import_users(users: List[Dict[str, Any]]) -> Request:
    if not isinstance(users, list):
        raise TypeError("users must be a list of dicts")
    return "import_users", {"users": users}


def request_password_reset(email: str, client_ip: Optional[str],
                           locale: Optional[str]) -> Request:
    return "request_password_reset", {
        "email": _str("email", email), "client_ip": _opt_str("client_ip", client_ip),
        "locale": _opt_str("locale", locale),
    }


def check_reset_token(token: str, client_ip: Optional[str]) -> Request:
    return "check_reset_token", {
        "token": _str("token", token), "client_ip": _opt_str("client_ip", client_ip),
    }


def complete_password_reset(token: str, new_password: str, confirm_password: Optional[str],
                            client_ip: Optional[str]) -> Request:
    return "complete_password_reset", {
        "token": _str("token", token), "new_password": _str("new_password", new_password),
        "confirm_password": _opt_str("confirm_password", confirm_password),
        "client_ip": _opt_str("client_ip", client_ip),
    }


def admin_reset_link(user: Union[int, str, Dict[str, Any]],
                     lifetime_secs: Optional[int]) -> Request:
    return "admin_reset_link", {
        "user": _user_ref(user), "lifetime_secs": _opt_uint("lifetime_secs", lifetime_secs),
    }


def by_id(method: str, id: int) -> Request:
    """outbox_retry, outbox_drop."""
    return method, {"id": _uint("id", id)}


def backup_read(session: Optional[int]) -> Request:
    return "backup_read", {"session": _opt_uint("session", session)}


def backup_cancel(session: int) -> Request:
    return "backup_cancel", {"session": _uint("session", session)}
