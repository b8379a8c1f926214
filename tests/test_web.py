"""The UI's foundations: Markdown sanitised by allowlist, pages with their security headers."""

from __future__ import annotations

import pytest

from modelyard.web.render import markdown

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    '<a href="javascript:alert(1)">x</a>',
    '<svg onload="alert(1)"></svg>',
    '<iframe src="https://evil.example"></iframe>',
    '<div style="background:url(javascript:alert(1))">x</div>',
    "![remote](https://evil.example/pixel.png)",
    '<img src="//evil.example/pixel.png">',
    '<form action="https://evil.example"><input name=q></form>',
]


@pytest.mark.parametrize("source", HOSTILE)
def test_markdown_keeps_no_script_handler_javascript_url_or_remote_image(source: str) -> None:
    html = str(markdown(source)).lower().replace(" ", "")
    for forbidden in ("<script", "onerror=", "onload=", "<iframe", "<form", "<svg", "style="):
        assert forbidden not in html
    for attribute in ("href=", "src=", "action="):  # text may say it; no URL may be it
        assert f'{attribute}"javascript' not in html and f'{attribute}"https://evil' not in html
        assert f'{attribute}"//evil' not in html


def test_markdown_renders_what_a_model_card_uses() -> None:
    html = str(markdown("# Churn\n\n| metric | value |\n|---|---|\n| auc | 0.91 |\n\n**bold** `x`"))
    assert "<h1>Churn</h1>" in html and "<table>" in html and "<strong>bold</strong>" in html
    link = str(markdown("[docs](https://example.com/card)"))
    assert 'href="https://example.com/card"' in link and "noopener" in link
    assert 'src="/models/churn/versions/1/attachments/roc.png"' in str(
        markdown("![roc](/models/churn/versions/1/attachments/roc.png)")
    )
