"""Smart punctuation in the issue's language: quotes, apostrophes, dashes and ellipses in
the HTML, the text part, the subject, the preheader and the web version, with code,
URLs and CJK paragraphs left as they were typed."""

from __future__ import annotations

import httpx
import pytest
from lxml import html as lxml_html

from composer.composing.load import load_issue
from composer.composing.pipeline import compose
from composer.config import load_config
from tests.conftest import CONFIG_TEXT

STRAIGHT = """\
+++
title = "Don't \\"panic\\" -- yet..."
date = 2024-05-03
preheader = "Why \\"there is never a good time\\" is the editor's favourite line"
{lang}+++

"There is never a good time," she said. We don't wait --- ever...

Code keeps its marks: `don't "quote" -- me...` and so do URLs: see
https://example.com/a--b... or [https://example.com/it's](https://example.com/it's)
or <https://example.com/--c>. An escaped \\"quote\\" stays straight.

![A "chart"](https://example.com/c.png "The 'flows' -- by country")

## The Big Story

**Lenders say "no":** Banks don't lend.

## 中文

他说"你好"...再见--好的。
"""


def _compose(write_issue, config, lang_line: str = ""):
    path = write_issue(STRAIGHT.format(lang=lang_line))
    return compose(load_issue(path), config, "paid")


def _visible(html: str) -> str:
    tree = lxml_html.fromstring(html)
    for hidden in tree.xpath("//style|//title"):
        hidden.drop_tree()
    return " ".join(tree.text_content().split())


def test_english_quotes_dashes_and_ellipses_in_every_part(write_issue, config):
    composed = _compose(write_issue, config)
    assert composed.subject == "Don’t “panic” – yet…"
    assert composed.preheader == ("Why “there is never a good time” is the editor’s favourite line")
    visible = _visible(composed.html)
    text = " ".join(composed.text.split())
    for part in (visible, text):
        assert "Don’t “panic” – yet…" in part
        assert "“There is never a good time,” she said. We don’t wait — ever…" in part
        assert "Lenders say “no”: Banks don’t lend." in part
        assert "The ‘flows’ – by country" in part
    assert 'alt="A “chart”"' in composed.html
    assert "[Image: A “chart”] (https://example.com/c.png)" in composed.text
    assert "<title>Don’t “panic” – yet…</title>" in composed.html


def test_code_urls_and_escapes_keep_their_straight_marks(write_issue, config):
    composed = _compose(write_issue, config)
    assert """don't "quote" -- me...</code>""" in composed.html
    text = " ".join(composed.text.split())
    for part in (_visible(composed.html), text):
        assert "https://example.com/a--b… or" in part
        assert "https://example.com/it's" in part
        assert "https://example.com/--c." in part
        assert 'An escaped "quote" stays straight.' in part
    assert 'don\'t "quote" -- me...' in text


def test_a_cjk_paragraph_keeps_its_own_punctuation(write_issue, config):
    composed = _compose(write_issue, config)
    assert '他说"你好"...再见--好的。' in _visible(composed.html)
    assert '他说"你好"...再见--好的。' in composed.text


def test_the_issue_lang_sets_german_quotes_and_the_html_lang(write_issue, config):
    composed = _compose(write_issue, config, 'lang = "de"\n')
    assert composed.subject == "Don’t „panic“ – yet…"
    assert "„There is never a good time,“ she said." in _visible(composed.html)
    assert "„There is never a good time,“ she said." in composed.text
    assert lxml_html.fromstring(composed.html).get("lang") == "de"


def test_the_newsletter_lang_is_the_default_and_french_quotes_keep_thin_spaces(
    write_issue, tmp_path
):
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        CONFIG_TEXT.replace("[newsletter]\n", '[newsletter]\nlang = "fr"\n'), encoding="utf-8"
    )
    composed = _compose(write_issue, load_config(config_path))
    assert composed.subject == "Don’t «\u202fpanic\u202f» – yet…"
    assert "«\u202fThere is never a good time,\u202f» she said." in composed.text
    assert lxml_html.fromstring(composed.html).get("lang") == "fr"
    # The issue's own lang wins over the newsletter's.
    german = _compose(write_issue, load_config(config_path), 'lang = "de-AT"\n')
    assert german.subject == "Don’t „panic“ – yet…"
    assert lxml_html.fromstring(german.html).get("lang") == "de-AT"


def test_web_version_archive_and_feed_are_typeset(server: httpx.Client, write_issue):
    write_issue(STRAIGHT.format(lang='lang = "de"\npublished = true\n'), "2024-05-03-typeset.md")
    page = server.get("/issues/2024-05-03-typeset").text
    assert "„There is never a good time,“ she said." in _visible(page)
    assert lxml_html.fromstring(page).get("lang") == "de"
    archive = server.get("/").text
    assert '<p lang="de"><a href="https://news.example.com/issues/2024-05-03-typeset">' in archive
    assert "Don’t „panic“ – yet…" in archive
    feed = server.get("/feed.xml").text
    assert '<entry xml:lang="de">' in feed
    assert "Don’t „panic“ – yet…" in feed


@pytest.mark.parametrize(
    ("front", "line"),
    [('lang = "english please"\n', 5), ("lang = 7\n", 5)],
)
def test_a_lang_that_is_not_a_language_tag_is_one_clear_error(write_issue, run_cli, front, line):
    path = write_issue(STRAIGHT.format(lang=front))
    result = run_cli("build", path)
    assert result.exit_code == 2
    assert f"{path}:{line}: lang must be a language tag" in result.output


def test_a_newsletter_lang_that_is_not_a_language_tag_is_a_config_problem(tmp_path, run_cli):
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        CONFIG_TEXT.replace("[newsletter]\n", '[newsletter]\nlang = "en_GB"\n'), encoding="utf-8"
    )
    result = run_cli("check", "issues/none.md")
    assert result.exit_code == 2
    assert '[newsletter] lang must be a language tag such as "en" or "de-CH"' in result.output
