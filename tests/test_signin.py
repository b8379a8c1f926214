"""Signing in to the web UI, on SQLite and on PostgreSQL: passwords (Argon2id), server-side
sessions behind a signed cookie, CSRF on the forms, and what an attacker can and cannot do.

The HTTP tests mount one probe page (``/_probe``, a PageRoute that shows ``web_caller``):
a page that needs someone signed in, whatever pages the UI has.
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from starlette.requests import Request
from starlette.responses import HTMLResponse
from typer.testing import CliRunner

from modelyard.api import create_app
from modelyard.cli.main import app
from modelyard.config import Settings, open_service
from modelyard.domain.access import Caller, PrincipalKind, Reach, Role
from modelyard.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    TooManyRequests,
    Unauthorized,
)
from modelyard.domain.keys import ServerKey
from modelyard.domain.models import Event, to_us
from modelyard.service import RegistryService
from modelyard.service.sessions import HOUR_US, MINUTE_US
from modelyard.storage.db.tables import metadata, passwords
from modelyard.web.routing import page_router
from modelyard.web.session import SESSION_COOKIE, web_caller
from tests.conftest import LiveServer
from tests.test_cli import assert_user_error, invoke

PASSWORD = "correct horse battery staple"
OTHER = "tr0ub4dor&3 is not enough"

# Argon2id with small parameters: the same code at a fraction of the cost (the defaults
# take ~0.3 s a hash on the shared 2-core machine, and these tests hash a hundred times).
CHEAP = PasswordHasher(time_cost=1, memory_cost=2048, parallelism=1)

probe = page_router()


@pytest.fixture
def service(service: RegistryService) -> RegistryService:
    service.identity.passwords = CHEAP
    return service


@probe.get("/_probe")
def _probe_page(request: Request) -> HTMLResponse:
    caller = web_caller(request)
    limits = f" scope={caller.scope_model} read_only={caller.read_only}"
    return HTMLResponse(f"caller={caller.name} token={caller.token_id}{limits}")


def admin_of(service: RegistryService, name: str = "alice") -> tuple[Caller, str]:
    made = service.identity.bootstrap_admin(name, operator="test")
    return service.access.authenticate(made.token), made.token


def user(service: RegistryService, admin: Caller, name: str, password: str | None) -> None:
    service.identity.create_principal(admin, name, PrincipalKind.USER)
    if password is not None:
        service.identity.set_password(admin, name, password)


# -- passwords ----------------------------------------------------------------------------------


def test_a_password_signs_in_and_only_its_argon2id_hash_is_kept(service: RegistryService) -> None:
    admin, _ = admin_of(service)
    user(service, admin, "bob", PASSWORD)
    bob = service.identity.verify_password("bob", PASSWORD)
    assert (bob.name, bob.token_id, bob.local) == ("bob", None, False)
    with service.db.engine.connect() as conn:
        stored = conn.execute(select(passwords.c.hash)).scalars().all()
    assert len(stored) == 1 and stored[0].startswith("$argon2id$")
    assert PASSWORD not in everything_stored(service)
    password_set = events(service, admin, "user.password_set")
    assert [(e.subject, e.actor, e.payload) for e in password_set] == [
        ("bob", "alice", {"sessions_ended": 0})
    ]


def test_every_wrong_sign_in_gets_the_same_answer(service: RegistryService) -> None:
    admin, _ = admin_of(service)
    user(service, admin, "bob", PASSWORD)
    user(service, admin, "nopass", None)
    user(service, admin, "gone", PASSWORD)
    service.identity.disable_principal(admin, "gone", PrincipalKind.USER)
    service.identity.create_principal(admin, "risk", PrincipalKind.TEAM)
    answers = set()
    for name, password in [
        ("bob", OTHER),  # wrong password
        ("nobody", PASSWORD),  # no such user
        ("nopass", PASSWORD),  # no password set
        ("gone", PASSWORD),  # disabled
        ("risk", PASSWORD),  # a team
        ("bob", ""),
        ("x" * 500, PASSWORD),
    ]:
        with pytest.raises(Unauthorized) as refused:
            service.identity.verify_password(name, password)
        answers.add((refused.value.code, refused.value.message, refused.value.status))
    assert answers == {("signin_failed", "wrong user name or password", 401)}


def test_an_unknown_user_costs_what_a_wrong_password_costs(service: RegistryService) -> None:
    """Timing does not tell whether a user exists: both verify one Argon2id hash."""
    service.identity.passwords = PasswordHasher(time_cost=2, memory_cost=16384, parallelism=1)
    admin, _ = admin_of(service)
    user(service, admin, "bob", PASSWORD)

    def cost(name: str) -> float:
        """CPU time of this thread (parallelism 1: Argon2 runs here), which other
        processes on the machine do not inflate as they do wall time."""
        times = []
        for _ in range(5):
            start = time.thread_time()
            with pytest.raises(Unauthorized):
                service.identity.verify_password(name, OTHER)
            times.append(time.thread_time() - start)
        return statistics.median(times)

    cost("nobody")  # the dummy hash is made once, at first use
    known, unknown = cost("bob"), cost("nobody")
    assert 0.5 < unknown / known < 2, (known, unknown)


def test_who_may_set_a_password_and_what_it_must_be(service: RegistryService) -> None:
    admin, _ = admin_of(service)
    user(service, admin, "bob", None)
    user(service, admin, "carol", None)
    bob = service.access.authenticate(service.identity.create_token(admin, principal="bob").token)
    service.identity.set_password(bob, "bob", PASSWORD)  # their own
    with pytest.raises(Forbidden):
        service.identity.set_password(bob, "carol", PASSWORD)  # someone else's
    for limits in ({"read_only": True}, {"model": "churn"}):
        limited = service.identity.create_token(admin, principal="bob", **limits)
        with pytest.raises(Forbidden):
            service.identity.set_password(service.access.authenticate(limited.token), "bob", OTHER)
    short = "tiny pass"
    with pytest.raises(InvalidInput) as too_short:
        service.identity.set_password(admin, "carol", short)
    assert too_short.value.code == "password_too_short" and short not in str(too_short.value)
    with pytest.raises(InvalidInput, match="at most"):
        service.identity.set_password(admin, "carol", "x" * 1025)
    service.identity.create_principal(admin, "ci", PrincipalKind.SERVICE_ACCOUNT)
    with pytest.raises(InvalidInput, match="not a user"):
        service.identity.set_password(admin, "ci", PASSWORD)
    service.identity.disable_principal(admin, "carol", PrincipalKind.USER)
    with pytest.raises(Conflict, match="disabled"):
        service.identity.set_password(admin, "carol", PASSWORD)
    assert service.identity.verify_password("bob", PASSWORD).name == "bob"


def test_a_hash_with_old_parameters_is_rehashed_at_sign_in(service: RegistryService) -> None:
    admin, _ = admin_of(service)
    user(service, admin, "bob", PASSWORD)
    old = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1).hash(PASSWORD)
    with service.db.engine.begin() as conn:  # as a registry of an older release stored it
        conn.execute(update(passwords).values(hash=old))
    service.sessions.start_session("bob", PASSWORD)
    with service.db.engine.connect() as conn:
        stored = conn.execute(select(passwords.c.hash)).scalar_one()
    assert stored != old and not CHEAP.check_needs_rehash(stored)
    assert service.identity.verify_password("bob", PASSWORD).name == "bob"


# -- sessions -----------------------------------------------------------------------------------


def test_a_session_stands_until_sign_out_on_every_replica(
    service: RegistryService, settings: Settings
) -> None:
    admin, _ = admin_of(service)
    user(service, admin, "bob", PASSWORD)
    cookie, caller = service.sessions.start_session("bob", PASSWORD, client="192.0.2.7")
    replica = open_service(settings)
    try:
        assert (
            replica.sessions.session_caller(cookie)
            == caller
            == service.sessions.session_caller(cookie)
        )
        service.sessions.end_session(cookie)
        with pytest.raises(Unauthorized, match=r"ended|not valid"):
            replica.sessions.session_caller(cookie)  # its cache saw the sign-out at once
        with pytest.raises(Unauthorized):
            service.sessions.session_caller(cookie)
        service.sessions.end_session(cookie)  # twice: nothing more happens
    finally:
        replica.close()
    kinds = [(e.kind, e.subject) for e in service.events(caller=admin, limit=100)]
    assert kinds[-2:] == [("session.started", "bob"), ("session.ended", "bob")]
    started = events(service, admin, "session.started")[0]
    assert started.payload["client"] == "192.0.2.7" and started.payload["method"] == "password"
    assert cookie.split(".")[1] not in everything_stored(service)  # the secret: only its hash


def test_a_session_expires(service: RegistryService) -> None:
    admin, _ = admin_of(service)
    user(service, admin, "bob", PASSWORD)
    cookie, _ = service.sessions.start_session("bob", PASSWORD)
    start = service.access.clock()
    service.access.clock = lambda: start + 12 * HOUR_US - 1_000_000
    assert service.sessions.session_caller(cookie).name == "bob"
    service.access.clock = lambda: start + 12 * HOUR_US + 1
    with pytest.raises(Unauthorized) as refused:
        service.sessions.session_caller(cookie)
    assert refused.value.code == "session_expired"


def test_forged_cookies_are_refused(service: RegistryService) -> None:
    admin, _ = admin_of(service)
    user(service, admin, "bob", PASSWORD)
    cookie, _ = service.sessions.start_session("bob", PASSWORD)
    session_id, secret, mac = cookie.split(".")
    other_key = RegistryService(service.db, service.blobs, ServerKey.random())
    forged = [
        f"{session_id}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}.{mac}",  # secret changed
        f"{session_id}.{secret}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # signature changed
        other_key.sessions.start_session("bob", PASSWORD)[0],  # signed by another registry
        "",
        "garbage",
        cookie + "x",
    ]
    for value in forged:
        with pytest.raises(Unauthorized):
            service.sessions.session_caller(value)
    assert service.sessions.session_caller(cookie).name == "bob"


def test_a_token_session_keeps_its_limits_and_dies_with_the_token(
    service: RegistryService,
) -> None:
    admin, _ = admin_of(service)
    user(service, admin, "bob", None)
    service.identity.set_grant(admin, "bob", Role.MAINTAINER)
    soon = datetime.now(UTC) + timedelta(hours=1)
    made = service.identity.create_token(
        admin, principal="bob", model="churn", read_only=True, expires_at=soon
    )
    cookie, caller = service.sessions.start_session_with_token(made.token)
    found = service.sessions.session_caller(cookie)
    assert found == caller
    assert (found.name, found.token_id, found.scope_model, found.read_only) == (
        "bob",
        made.info.id,
        "churn",
        True,
    )
    assert service.access.role(found, "churn") is Role.READER
    assert service.access.role(found, "other") is None
    started = events(service, admin, "session.started")
    assert started[-1].token_id == made.info.id and started[-1].payload["method"] == "token"
    service.access.clock = lambda: to_us(soon)  # the token's expiry, before the session's
    with pytest.raises(Unauthorized, match="expired"):
        service.sessions.session_caller(cookie)
    service.access.clock = lambda: to_us(soon) - MINUTE_US
    assert service.sessions.session_caller(cookie).name == "bob"
    service.identity.revoke_token(admin, made.info.id)
    with pytest.raises(Unauthorized, match="ended"):
        service.sessions.session_caller(cookie)
    with pytest.raises(Unauthorized) as refused:
        service.sessions.start_session_with_token(made.token)
    assert refused.value.code == "signin_failed"


def test_a_new_password_or_disabling_the_user_ends_their_sessions(
    service: RegistryService,
) -> None:
    admin, _ = admin_of(service)
    user(service, admin, "bob", PASSWORD)
    first, _ = service.sessions.start_session("bob", PASSWORD)
    second, _ = service.sessions.start_session("bob", PASSWORD)
    service.identity.set_password(admin, "bob", OTHER)
    for cookie in (first, second):
        with pytest.raises(Unauthorized):
            service.sessions.session_caller(cookie)
    changed = events(service, admin, "user.password_set")
    assert changed[-1].payload == {"sessions_ended": 2}
    with pytest.raises(Unauthorized):
        service.sessions.start_session("bob", PASSWORD)
    third, _ = service.sessions.start_session("bob", OTHER)
    service.identity.disable_principal(admin, "bob", PrincipalKind.USER)
    with pytest.raises(Unauthorized, match="ended"):
        service.sessions.session_caller(third)


def test_failed_sign_ins_are_throttled_per_user_and_per_address(
    service: RegistryService,
) -> None:
    admin, _ = admin_of(service)
    user(service, admin, "bob", PASSWORD)
    sessions = service.sessions
    start = service.access.clock()
    sessions.per_user.limit = 3  # the defaults (10 and 30) only take longer to reach
    sessions.per_client.limit = 5
    for _ in range(3):
        with pytest.raises(Unauthorized):
            sessions.start_session("bob", OTHER, client="203.0.113.9")
    with pytest.raises(TooManyRequests) as throttled:
        sessions.start_session("bob", PASSWORD, client="198.51.100.1")  # even the right one
    assert throttled.value.status == 429 and throttled.value.details["retry_after"] > 0
    # A name that does not exist is throttled alike: the refusal tells nothing.
    for _ in range(3):
        with pytest.raises(Unauthorized):
            sessions.start_session("nobody", OTHER, client="198.51.100.2")
    with pytest.raises(TooManyRequests):
        sessions.start_session("nobody", OTHER, client="198.51.100.3")
    # One address guessing across names, tokens included.
    for guess in ("carol", "dave"):
        with pytest.raises(Unauthorized):
            sessions.start_session(guess, OTHER, client="203.0.113.9")
    with pytest.raises(TooManyRequests):
        sessions.start_session_with_token("myd_" + "0" * 16 + "_" + "A" * 43, client="203.0.113.9")
    service.access.clock = lambda: start + 16 * MINUTE_US
    cookie, _ = sessions.start_session("bob", PASSWORD, client="203.0.113.9")
    assert sessions.session_caller(cookie).name == "bob"


# -- the pages ----------------------------------------------------------------------------------


@dataclass
class Site:
    service: RegistryService
    client: TestClient
    admin: Caller
    admin_token: str


@pytest.fixture
def site(service: RegistryService) -> Iterator[Site]:
    admin, token = admin_of(service)
    service.identity.set_password(admin, "alice", PASSWORD)
    app = create_app(service, reach=Reach.NETWORK)
    app.include_router(probe)
    with TestClient(app) as client:
        yield Site(service, client, admin, token)


def csrf_of(client: TestClient, url: str = "/signin") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(url).text)
    assert found, url
    return found.group(1)


def sign_in(client: TestClient, **form: str) -> httpx.Response:
    form.setdefault("csrf", csrf_of(client))
    answer: httpx.Response = client.post("/signin", data=form, follow_redirects=False)
    return answer


def cookie_header(response: httpx.Response, name: str) -> str:
    found = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    assert len(found) == 1, response.headers.get_list("set-cookie")
    return found[0]


def test_signing_in_with_a_password_sets_a_safe_cookie(site: Site) -> None:
    client = site.client
    assert client.get("/_probe", follow_redirects=False).headers["location"] == (
        "/signin?next=%2F_probe"
    )
    page = client.get("/signin?next=/_probe")
    assert page.status_code == 200 and 'name="password"' in page.text
    assert 'name="next" value="/_probe"' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    signed = sign_in(client, user="alice", password=PASSWORD, next="/_probe")
    assert signed.status_code == 303 and signed.headers["location"] == "/_probe"
    flags = cookie_header(signed, SESSION_COOKIE).lower()
    assert "httponly" in flags and "samesite=lax" in flags and "max-age=43200" in flags
    assert "secure" not in flags  # plain http: a Secure cookie would never come back
    assert client.get("/_probe").text == "caller=alice token=None scope=None read_only=False"
    assert "You are signed in as <strong>alice</strong>" in client.get("/signin").text


def test_over_https_the_cookies_are_secure(service: RegistryService) -> None:
    admin, _ = admin_of(service)
    service.identity.set_password(admin, "alice", PASSWORD)
    app = create_app(service, reach=Reach.NETWORK)
    app.include_router(probe)
    with TestClient(app, base_url="https://testserver") as client:
        page = client.get("/signin")
        assert "secure" in cookie_header(page, "myd_csrf").lower()
        signed = sign_in(client, user="alice", password=PASSWORD)
        for name in (SESSION_COOKIE, "myd_csrf"):
            assert "; secure" in cookie_header(signed, name).lower()
        assert client.get("/_probe").text.startswith("caller=alice")


def test_a_wrong_password_and_an_unknown_user_look_the_same(site: Site) -> None:
    answers = []
    for name in ("alice", "mallory"):
        refused = sign_in(site.client, user=name, password=OTHER)
        assert refused.status_code == 401
        assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
        assert "wrong user name or password" in refused.text
        answers.append(refused.text.replace(name, "NAME"))
    assert answers[0] == answers[1]
    assert "caller=" not in site.client.get("/_probe").text


def test_signing_in_with_a_token(site: Site) -> None:
    service = site.service
    service.identity.create_principal(site.admin, "bob", PrincipalKind.USER)
    made = service.identity.create_token(site.admin, principal="bob", model="churn", read_only=True)
    signed = sign_in(site.client, token=made.token, next="/_probe")
    assert signed.status_code == 303
    assert site.client.get("/_probe").text == (
        f"caller=bob token={made.info.id} scope=churn read_only=True"
    )
    service.identity.revoke_token(site.admin, made.info.id)
    replay = site.client.get("/_probe", follow_redirects=False)
    assert replay.status_code == 303 and replay.headers["location"].startswith("/signin")
    refused = sign_in(site.client, token=made.token)
    assert refused.status_code == 401 and "not valid" in refused.text
    assert made.token not in refused.text


def test_a_bearer_token_also_opens_pages(site: Site) -> None:
    answer = site.client.get("/_probe", headers={"Authorization": f"Bearer {site.admin_token}"})
    assert answer.text.startswith("caller=alice token=")
    stale = site.client.get(
        "/_probe", headers={"Authorization": "Bearer nonsense"}, follow_redirects=False
    )
    assert stale.status_code == 303


def test_sign_out_ends_the_session_server_side(site: Site) -> None:
    client = site.client
    sign_in(client, user="alice", password=PASSWORD)
    cookie = client.cookies[SESSION_COOKIE]
    out = client.post("/signout", data={"csrf": csrf_of(client)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert "max-age=0" in cookie_header(out, SESSION_COOKIE).lower()
    client.cookies.set(SESSION_COOKIE, cookie)  # replayed, as a thief who copied it would
    replay = client.get("/_probe", follow_redirects=False)
    assert replay.status_code == 303 and replay.headers["location"] == "/signin?next=%2F_probe"


def test_signing_in_again_ends_the_session_the_browser_had(site: Site) -> None:
    site.service.identity.create_principal(site.admin, "bob", PrincipalKind.USER)
    site.service.identity.set_password(site.admin, "bob", OTHER)
    sign_in(site.client, user="alice", password=PASSWORD)
    alices = site.client.cookies[SESSION_COOKIE]
    sign_in(site.client, user="bob", password=OTHER)
    assert site.client.get("/_probe").text.startswith("caller=bob ")
    with pytest.raises(Unauthorized):
        site.service.sessions.session_caller(alices)


def test_an_expired_session_sends_the_browser_to_sign_in(site: Site) -> None:
    sign_in(site.client, user="alice", password=PASSWORD)
    assert site.client.get("/_probe").text.startswith("caller=alice")
    later = site.service.access.clock() + 13 * HOUR_US
    site.service.access.clock = lambda: later
    assert site.client.get("/_probe", follow_redirects=False).status_code == 303


def test_sign_in_and_sign_out_need_the_forms_csrf_token(site: Site) -> None:
    client = site.client
    csrf = csrf_of(client)
    form = {"user": "alice", "password": PASSWORD}
    for data, headers in [
        (form, {}),  # no token
        ({**form, "csrf": "forged"}, {}),
        ({**form, "csrf": csrf}, {"Origin": "https://evil.example"}),
        ({**form, "csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
    ]:
        refused = client.post("/signin", data=data, headers=headers, follow_redirects=False)
        assert refused.status_code == 403, (data, headers)
        assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
    assert sign_in(client, user="alice", password=PASSWORD).status_code == 303
    for data, headers in [
        ({}, {}),
        ({"csrf": csrf_of(client)}, {"Origin": "https://evil.example"}),
    ]:
        refused = client.post("/signout", data=data, headers=headers, follow_redirects=False)
        assert refused.status_code == 403
    assert client.get("/_probe").text.startswith("caller=alice")  # still signed in


def test_signing_in_rotates_the_csrf_seed_and_binds_tokens_to_the_session(site: Site) -> None:
    """Session fixation: nothing from before the sign-in (a seed, a form's token) carries
    over, and an attacker's own valid token does not work in someone else's session."""
    client = site.client
    before = csrf_of(client)
    seed = client.cookies["myd_csrf"]
    signed = sign_in(client, user="alice", password=PASSWORD, csrf=before)
    assert client.cookies["myd_csrf"] != seed and cookie_header(signed, "myd_csrf")
    stale = client.post("/signout", data={"csrf": before}, follow_redirects=False)
    assert stale.status_code == 403
    # The attacker signs in on their own browser, and plants their seed and token in ours.
    with TestClient(client.app) as attacker:
        sign_in(attacker, user="alice", password=PASSWORD)
        planted_seed, planted_token = attacker.cookies["myd_csrf"], csrf_of(attacker)
    client.cookies.set("myd_csrf", planted_seed)
    planted = client.post("/signout", data={"csrf": planted_token}, follow_redirects=False)
    assert planted.status_code == 403


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example/",
        "http:evil.example",
        "/\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "evil.example",
        "",
    ],
)
def test_next_never_leaves_the_registry(site: Site, target: str) -> None:
    page = site.client.get("/signin", params={"next": target})
    assert 'name="next" value="/"' in page.text
    signed = sign_in(site.client, user="alice", password=PASSWORD, next=target)
    assert signed.headers["location"] == "/"


def test_next_keeps_a_path_with_its_query(site: Site) -> None:
    signed = sign_in(site.client, user="alice", password=PASSWORD, next="/models?filter=a%3D1")
    assert signed.headers["location"] == "/models?filter=a%3D1"


def test_throttled_sign_ins_get_429_with_retry_after(site: Site) -> None:
    site.service.sessions.per_user.limit = 2
    for _ in range(2):
        assert sign_in(site.client, user="alice", password=OTHER).status_code == 401
    throttled = sign_in(site.client, user="alice", password=PASSWORD)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
    assert "too many failed sign-ins" in throttled.text


def test_passwords_appear_in_no_journal_log_or_response(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = site.client
    answers = [sign_in(client, user="alice", password=OTHER)]
    answers.append(sign_in(client, user="alice", password=PASSWORD))
    answers.append(client.get("/signin"))
    body = {"password": "a new long password"}
    answers.append(
        client.put(
            "/api/v1/users/alice/password",
            json=body,
            headers={"Authorization": f"Bearer {site.admin_token}"},
        )
    )
    short = client.put(
        "/api/v1/users/alice/password",
        json={"password": "short pw"},
        headers={"Authorization": f"Bearer {site.admin_token}"},
    )
    assert short.status_code == 400 and short.json()["code"] == "password_too_short"
    answers.append(short)
    for secret in (PASSWORD, OTHER, body["password"], "short pw"):
        for answer in answers:
            assert secret not in answer.text and secret not in str(answer.headers)
        assert secret not in caplog.text
        assert secret not in everything_stored(site.service)
        journal = site.service.events(caller=site.admin, limit=1000)
        assert secret not in repr([(e.subject, e.payload) for e in journal])


def test_in_local_mode_no_sign_in_is_needed(service: RegistryService) -> None:
    with TestClient(create_app(service, reach=Reach.LOOPBACK, local_user="tester")) as client:
        page = client.get("/signin")
        assert "No sign-in needed" in page.text and 'name="password"' not in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is None  # no form here; base.html's sign-out form is not shown either


# -- over a real socket -------------------------------------------------------------------------


def test_a_browser_signs_in_and_out_of_a_running_server(
    tmp_path: Path, database_url: str | None
) -> None:
    server = LiveServer(tmp_path / "server-data", database_url)
    prepared = open_service(Settings(data_dir=server.data_dir, database_url=database_url))
    prepared.identity.passwords = CHEAP  # the server rehashes it with its own parameters
    try:
        admin, _ = admin_of(prepared)
        prepared.identity.set_password(admin, "alice", PASSWORD)
    finally:
        prepared.close()
    server.start()
    try:
        with httpx.Client(base_url=server.url) as browser:
            page = browser.get("/signin")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert page.status_code == 200 and csrf
            form = {"csrf": csrf.group(1), "user": "alice", "password": PASSWORD, "next": "/x"}
            signed = browser.post("/signin", data=form)
            assert signed.status_code == 303 and signed.headers["location"] == "/x"
            assert "httponly" in cookie_header(signed, SESSION_COOKIE).lower()
            cookie = browser.cookies[SESSION_COOKIE]
            page = browser.get("/signin")
            assert "You are signed in as <strong>alice</strong>" in page.text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf
            assert browser.post("/signout", data={"csrf": csrf.group(1)}).status_code == 303
            browser.cookies.set(SESSION_COOKIE, cookie)
            assert "You are signed in" not in browser.get("/signin").text
    finally:
        server.stop()


# -- the CLI ------------------------------------------------------------------------------------


def test_passwords_from_the_cli(tmp_path: Path, database_url: str | None) -> None:
    """`admin create --password-stdin`, `users create --password-stdin`, `users passwd`
    (prompted twice, or from stdin), against a real server; then the UI takes them."""
    data = tmp_path / "cli-data"
    db = ["--data-dir", str(data)] + (["--database-url", database_url] if database_url else [])
    made = invoke(
        "admin", "create", "alice", *db, "--password-stdin", url=None, cwd=tmp_path, env={},
        stdin=PASSWORD + "\n",
    ).ok()  # fmt: skip
    token = made.stdout.strip()
    server = LiveServer(data, database_url)
    server.start()
    try:
        url, env = server.url, {"MODELYARD_TOKEN": token}
        created = invoke(
            "users", "create", "bob", "--password-stdin", "--json", url=url, cwd=tmp_path,
            env=env, stdin=OTHER + "\n",
        ).ok()  # fmt: skip
        assert json.loads(created.stdout)["password_set"] is True
        short = invoke(
            "users", "passwd", "bob", "--password-stdin", url=url, cwd=tmp_path, env=env,
            stdin="tiny-pw\n",
        )  # fmt: skip
        assert_user_error(short, contains="at least 12 characters")
        assert "tiny-pw" not in short.output
        changed = invoke(
            "users", "passwd", "bob", "--password-stdin", "--json", url=url, cwd=tmp_path,
            env=env, stdin="a brand new passphrase\n",
        ).ok()  # fmt: skip
        assert json.loads(changed.stdout) == {"name": "bob", "password_set": True}
        prompted = CliRunner().invoke(
            app,
            ["users", "passwd", "bob", "--url", url],
            input="the prompted passphrase\nthe prompted passphrase\n",
            env={**env, "MODELYARD_CONFIG": os.devnull},
        )
        assert prompted.exit_code == 0, prompted.output
        assert "password set for bob" in prompted.output
        assert "the prompted passphrase" not in prompted.output  # hidden as typed

        def signs_in(name: str, password: str) -> bool:
            with httpx.Client(base_url=url) as browser:
                page = browser.get("/signin")
                csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
                assert csrf
                form = {"csrf": csrf.group(1), "user": name, "password": password}
                return browser.post("/signin", data=form).status_code == 303

        assert signs_in("alice", PASSWORD)
        assert signs_in("bob", "the prompted passphrase")
        assert not signs_in("bob", "a brand new passphrase")
    finally:
        server.stop()
    assert server.process and server.process.stderr
    logged = server.process.stderr.read().decode()
    for secret in (PASSWORD, OTHER, "a brand new passphrase", "the prompted passphrase"):
        assert secret not in logged


# -- helpers ------------------------------------------------------------------------------------


def everything_stored(service: RegistryService) -> str:
    """Every row of every table, as text: what someone holding the database would read."""
    dumped = []
    with service.db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = conn.execute(text(f"SELECT * FROM {table.name}"))
            dumped += [repr(tuple(row)) for row in rows]
    return "\n".join(dumped)


def events(service: RegistryService, admin: Caller, kind: str) -> list[Event]:
    return [e for e in service.events(caller=admin, limit=1000) if e.kind == kind]
