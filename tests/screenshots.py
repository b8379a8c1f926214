"""``python -m tests.screenshots [DIR]``: the browser tests' churn story and webhook test on
SQLite, saving the main pages as PNGs (1280x800 viewport) in DIR, docs/screenshots/ by default: the
pictures the README shows are made by the tests that check those pages."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def main(argv: list[str]) -> int:
    target = Path(argv[0]).resolve() if argv else DOCS
    os.environ["MODELYARD_SCREENSHOTS"] = str(target)
    tests = [
        "tests/test_browser.py::test_the_churn_story_from_search_to_rollback[sqlite]",
        "tests/test_browser.py::test_an_admin_adds_a_webhook_tests_it_and_redelivers_from_its_log[sqlite]",
    ]
    code = int(pytest.main(["-q", "-p", "no:xdist", "-p", "no:cacheprovider", *tests]))
    if code == 0:
        for shot in sorted(target.glob("*.png")):
            print(
                f"{shot.relative_to(Path.cwd()) if shot.is_relative_to(Path.cwd()) else shot}"
                f"  {shot.stat().st_size // 1024} KiB"
            )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
