"""The memory page's HTML under its own CSP: the nonce on its one script and style, nothing the policy would block.

tests/live/test_browser.py opens the page in real headless Chromium."""

from __future__ import annotations

import re

import pytest

from fitflix.web.page import render_memory_page


def test_page_carries_the_nonce_and_nothing_csp_would_block():
    page = render_memory_page("bm9uY2U_-1")
    assert page.count('nonce="bm9uY2U_-1"') == 2
    assert page.count("<script") == page.count("<style") == 1
    assert not re.search(r"\sstyle=|\son[a-z]+=|javascript:|https?://(?!www\.w3\.org/2000/svg)", page)
    assert len(page.encode()) < 16_000


@pytest.mark.parametrize("nonce", ["", 'a"><script>', "a b"])
def test_a_nonce_that_could_break_the_attribute_is_refused(nonce):
    with pytest.raises(ValueError, match="nonce"):
        render_memory_page(nonce)
