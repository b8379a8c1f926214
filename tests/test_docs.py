"""The docs against the code: every flag a page gives ``modelyard serve`` exists."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from modelyard.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `modelyard serve` and what follows it on the line, up to the end of a code span.
SERVE_LINE = re.compile(r"modelyard serve(?![\w-])([^`\n]*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def serve_flags() -> set[str]:
    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    return {flag for p in command.params for flag in (*p.opts, *p.secondary_opts)}


def test_every_serve_flag_in_the_docs_exists() -> None:
    known = serve_flags()
    given = {
        (page.name, flag)
        for page in PAGES
        for line in SERVE_LINE.findall(page.read_text())
        for flag in FLAG.findall(line)
    }
    assert ("deploy.md", "--workers") in given  # the check reads the pages it should
    assert sorted(given - {(page, flag) for page, flag in given if flag in known}) == []
