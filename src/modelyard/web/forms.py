"""What the UI's forms share: fields read only once the CSRF check passed, the redirect
back with a notice, the confirmation destructive actions ask for, and what a page asks
access control before it offers a form.

A notice travels as a code in the query (``?done=promoted``) and is shown as the sentence
this module holds for it: a link cannot make a page say anything else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlencode

from jinja2 import pass_context
from jinja2.runtime import Context
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse

from modelyard.domain.access import Permission
from modelyard.domain.errors import InvalidInput
from modelyard.web.security import CSRF_FIELD, verify_csrf
from modelyard.web.session import web_caller

NOTICES: Final = {
    "promoted": "The version was promoted.",
    "request_opened": "A promotion request was opened; it waits for its reviewers.",
    "approved": "Your approval was recorded; the request waits for more approvals.",
    "executed": "Approved: the promotion was carried out.",
    "refused": "Approved, but the policy no longer passes: the request was refused.",
    "rejected": "The request was rejected.",
    "cancelled": "The request was withdrawn.",
    "rolled_back": "The stage was rolled back.",
    "archived": "The version was archived.",
    "restored": "The version was restored.",
    "deleted": "The version was deleted (kept, hidden).",
    "alias_set": "The alias was set.",
    "alias_deleted": "The alias was removed.",
    "edited": "The changes were saved.",
    "card_saved": "The model card was saved.",
    "attached": "The attachment was added.",
    "commented": "Your comment was added.",
    "created": "Created.",
    "disabled": "Disabled; its tokens no longer work.",
    "team_deleted": "The team was deleted.",
    "member_added": "The member was added.",
    "member_removed": "The member was removed.",
    "token_revoked": "The token was revoked.",
    "grant_set": "The role was granted.",
    "grant_removed": "The grant was removed.",
    "password_set": "The password was set.",
    "webhook_disabled": "The webhook was disabled: nothing is sent until it is enabled again.",
    "webhook_enabled": "The webhook was enabled: delivery resumes where it stopped.",
    "webhook_deleted": "The webhook was deleted.",
    "redelivered": "Queued: the events will be delivered again, in order.",
    "redelivered_none": "None of those events is for this webhook: nothing was queued.",
}


async def posted(request: Request) -> FormData:
    """The submitted form, once it is known to come from this registry's own page; the
    caller is then looked up off the event loop (``web_caller`` keeps it for the handler)."""
    form = await request.form()
    token = form.get(CSRF_FIELD)
    verify_csrf(request, token if isinstance(token, str) else None)
    await run_in_threadpool(web_caller, request)
    return form


def text(form: FormData, name: str, *, required: bool = False) -> str:
    """A text field, stripped; a required one may not be empty."""
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise InvalidInput(f"{name!r} must be text, not a file")
    value = (value or "").strip()
    if required and not value:
        raise InvalidInput(f"{name.replace('_', ' ')} is required")
    return value


def multiline(form: FormData, name: str) -> str:
    """A textarea's text as typed (browsers send CRLF line ends: LF is stored)."""
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise InvalidInput(f"{name!r} must be text, not a file")
    return (value or "").replace("\r\n", "\n")


def optional(form: FormData, name: str) -> str | None:
    return text(form, name) or None


def number(form: FormData, name: str) -> int:
    value = text(form, name, required=True)
    if not value.isdigit() or len(value) > 18:
        raise InvalidInput(f"{name.replace('_', ' ')} must be a whole number, not {value!r}")
    return int(value)


def moment(text: str | None, what: str) -> datetime | None:
    """A time typed in a form or pasted in a URL; without a zone it is UTC, as the pages
    show every time."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{what} {text!r} is not a time: write it as 2026-12-01T10:00 (UTC)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def require_confirmation(form: FormData, what: str) -> None:
    """Destructive actions need the form's "I confirm" box ticked (no JavaScript needed;
    the box is ``required`` in the form and checked here again)."""
    if form.get("confirm") != "yes":
        raise InvalidInput(f"tick \u201cI confirm\u201d to {what}", code="confirmation_required")


def done(path: str, notice: str, **query: str | int) -> RedirectResponse:
    """Back to ``path`` (a page of this registry) with the notice to show there."""
    assert path.startswith("/") and not path.startswith("//") and notice in NOTICES
    return RedirectResponse(f"{path}?{urlencode({'done': notice, **query})}", status_code=303)


@pass_context
def notice_for(context: Context) -> str | None:
    """The sentence of the notice a redirect carried, if it names one."""
    request: Request = context["request"]
    return NOTICES.get(request.query_params.get("done", ""))


@pass_context
def may(context: Context, permission: str, model: str | None = None) -> bool:
    """Whether the caller may do this (``may("model.promote", name)`` in a template):
    access control decides, the template only asks."""
    request: Request = context["request"]
    access = request.app.state.service.access
    allowed: bool = access.allows(web_caller(request), Permission(permission), model)
    return allowed


@pass_context
def stage_names(context: Context, model: str) -> list[str]:
    """The stages of the policy in force for ``model``: what a promote form offers."""
    request: Request = context["request"]
    policy = request.app.state.service.lifecycle.get_policy(web_caller(request), model)
    return [stage["name"] for stage in policy["stages"]]
