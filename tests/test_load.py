"""Loading issue files: both formats, block kinds, story items, the paywall."""

from __future__ import annotations

import datetime as dt

from composer.composing.load import load_issue
from tests.conftest import EXAMPLE_MD, EXAMPLE_TOML


def test_markdown_and_toml_twins_load_to_equal_models():
    assert load_issue(EXAMPLE_MD) == load_issue(EXAMPLE_TOML)


def test_front_matter_fills_the_issue():
    issue = load_issue(EXAMPLE_MD)
    assert issue.title == "The data pipeline behind the apps everyone uses"
    assert issue.date == dt.date(2024, 5, 3)
    assert issue.author == "Morgan Lee"
    assert issue.slug == "2024-05-03-example"
    assert issue.preheader.startswith("Who moves the data")


def test_block_kinds_come_from_heading_words_or_an_attribute():
    kinds = [(block.kind, block.heading) for block in load_issue(EXAMPLE_MD).blocks]
    assert kinds == [
        ("what-happened", "What happened"),
        ("why-it-matters", "Why it matters"),
        ("news", "This Week's News"),
        ("big-story", "The Big Story in China Business"),
        ("section", "The week ahead"),
    ]


def test_a_heading_ending_in_news_makes_a_news_block_in_both_formats(write_issue):
    markdown = write_issue(
        '+++\ntitle = "t"\ndate = 2024-05-03\n+++\n\n'
        "## This Week's China News\n\n- [A](https://example.com/a)\n\n"
        "## Good news:\n\nText.\n\n"
        "## Newsroom notes\n\nText.\n\n"
        "## More news {.section}\n\nText.\n\n"
        "## Spaced { .news }\n\n- [B](https://example.com/b)\n"
    )
    assert [block.kind for block in load_issue(markdown).blocks] == [
        "news",
        "news",
        "section",
        "section",
        "news",
    ]
    assert load_issue(markdown).blocks[-1].heading == "Spaced"
    toml = write_issue(
        'title = "t"\ndate = 2024-05-03\n\n[[blocks]]\nheading = "Other  NEWS"\nbody = "x"\n',
        "issue.toml",
    )
    assert load_issue(toml).blocks[0].kind == "news"


def test_lang_comes_from_either_format_and_is_empty_when_not_given(write_issue):
    markdown = write_issue('+++\ntitle = "t"\ndate = 2024-05-03\nlang = "de-CH"\n+++\n')
    toml = write_issue('title = "t"\ndate = 2024-05-03\nlang = "de-CH"\n', "issue.toml")
    assert load_issue(markdown).lang == load_issue(toml).lang == "de-CH"
    assert load_issue(EXAMPLE_MD).lang == ""


def test_big_story_paragraphs_with_bold_leads_become_items(write_issue):
    path = write_issue(
        """
        +++
        title = "T"
        date = 2024-05-03
        +++

        ## The Big Story in Trade

        An introduction.

        **FIRST LEAD:** Its story
        runs on.

        A second paragraph of the first story.

        **Second lead**: Another story.
        """
    )
    block = load_issue(path).blocks[0]
    assert block.kind == "big-story"
    assert block.body.text == "An introduction."
    assert [item.lead for item in block.items] == ["FIRST LEAD", "Second lead"]
    assert block.items[0].body.text == (
        "Its story\nruns on.\n\nA second paragraph of the first story."
    )
    assert block.items[1].body.text == "Another story."
    assert [item.line for item in block.items] == [10, 15]


def test_paywall_marker_cuts_free_readers_off_at_that_block(write_issue):
    path = write_issue(
        """
        +++
        title = "T"
        date = 2024-05-03
        +++

        ## One

        Free.

        <!-- paywall -->

        ## Two

        Paid.
        """
    )
    issue = load_issue(path)
    assert issue.paywall == 1
    assert [b.heading for b in issue.blocks_for("free")] == ["One"]
    assert [b.heading for b in issue.blocks_for("paid")] == ["One", "Two"]
    assert issue.is_cut_for("free") and not issue.is_cut_for("paid")


def test_preheader_defaults_to_subtitle(write_issue):
    path = write_issue(
        """
        +++
        title = "T"
        date = 2024-05-03
        subtitle = "The subtitle"
        +++
        """
    )
    assert load_issue(path).preheader == "The subtitle"


def test_line_breaks_in_header_values_are_folded_to_spaces(write_issue):
    path = write_issue(
        'title = "Two\\r\\nBcc: victim@example.com"\ndate = 2024-05-03\n', name="i.toml"
    )
    assert load_issue(path).title == "Two Bcc: victim@example.com"


def test_utf8_text_passes_through_intact(write_issue):
    path = write_issue(
        """
        +++
        title = "“Quotes” — dashes, 中文 and 📈"
        date = 2024-05-03
        +++

        ## 本周新闻

        Emoji 🚢 and “curly” quotes.
        """
    )
    issue = load_issue(path)
    assert issue.title == "“Quotes” — dashes, 中文 and 📈"
    assert issue.blocks[0].heading == "本周新闻"
    assert "🚢" in issue.blocks[0].body.text
