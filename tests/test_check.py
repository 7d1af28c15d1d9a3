"""``newsletter check``: each lint finds its problem, names block and line, sets the exit code."""

from __future__ import annotations

import re

import pytest

from composer.composing.check import check_issue
from composer.composing.templates import copy_templates
from tests.conftest import EXAMPLE_MD

CLEAN_FRONT = (
    '+++\ntitle = "A clean issue"\ndate = 2024-05-03\n'
    'preheader = "What changed this week, and what it means for you"\n+++\n\n'
)


def _messages(report):
    return [(f.severity, f.line, f.message) for f in report.findings]


def test_example_issue_has_no_errors_or_warnings(config):
    report = check_issue(EXAMPLE_MD, config)
    assert report.errors == report.warnings == ()
    assert report.summary() == "No problems found."


def test_check_says_which_kind_each_block_got_and_why(write_issue, config):
    path = write_issue(
        CLEAN_FRONT + "## This Week's China News\n\n- [A](https://example.com/a)\n\n"
        "## Notes {.news}\n\nText.\n\n## The week ahead\n\nText.\n"
    )
    infos = [
        (f.line, f.block, f.message)
        for f in check_issue(path, config).findings
        if f.severity == "info"
    ]
    assert infos == [
        (7, '"This Week\'s China News"', "a news block, from its heading's words"),
        (11, "'Notes'", "a news block, as its {.news} says"),
        (
            15,
            "'The week ahead'",
            "a plain section: its heading implies no kind ({.kind} after the heading picks one)",
        ),
    ]


def test_info_lines_are_not_problems(write_issue, run_cli):
    result = run_cli("check", write_issue(CLEAN_FRONT + "## Notes\n\nSome words here.\n"))
    assert result.exit_code == 0
    assert ":7: info: a plain section" in result.output
    assert result.output.endswith("No problems found.\n")


def test_model_problems_are_errors_with_block_and_line(write_issue, config):
    path = write_issue(
        CLEAN_FRONT + "## What happened\n\nAn image ![](https://example.com/a.png) here.\n\n"
        "A [relative link](/about) and a [script](javascript:alert(1)).\n\n"
        "Still TK.\n\n![Chart](pics/b.png)\n"
    )
    report = check_issue(path, config)
    found = _messages(report)
    assert (
        "error",
        9,
        "image https://example.com/a.png has no alt text; write "
        "![what it shows](https://example.com/a.png)",
    ) in found
    assert any(s == "error" and line == 11 and "'/about'" in m for s, line, m in found)
    assert any(s == "error" and line == 11 and "javascript:" in m for s, line, m in found)
    assert any(s == "error" and line == 13 and "TK" in m for s, line, m in found)
    assert any(s == "error" and line == 15 and "pics/b.png" in m for s, line, m in found)
    assert all(f.block == "'What happened'" for f in report.errors)


def test_warnings_for_subject_preheader_generic_links_and_year(write_issue, config):
    path = write_issue(
        '+++\ntitle = "' + "Long " * 20 + '"\ndate = 2024-05-03\n+++\n\n'
        "## Notes\n\nRead [click here](https://example.com/x) — © 2023 Someone.\n"
    )
    report = check_issue(path, config)
    messages = " | ".join(f.message for f in report.warnings)
    assert not report.errors
    assert "no preheader" in messages
    assert re.search(r"subject \(the title\) is \d+ characters", messages)
    assert "'click here' says nothing" in messages
    assert "© year 2023 is not the issue's year 2024" in messages


def test_overlong_issue_gets_a_reading_length_warning(write_issue, config):
    path = write_issue(CLEAN_FRONT + "## Long\n\n" + ("word " * 3000) + "\n")
    messages = [f.message for f in check_issue(path, config).warnings]
    assert any("3,0" in m and "minutes" in m for m in messages)


def test_html_over_gmail_clip_is_an_error(write_issue, config):
    paragraphs = "\n\n".join(
        f"[Link number {n} to a long article](https://example.com/{n}) " + "text " * 10
        for n in range(900)
    )
    path = write_issue(CLEAN_FRONT + "## Links\n\n" + paragraphs + "\n")
    report = check_issue(path, config)
    assert any("Gmail clips" in f.message for f in report.errors)


def test_template_colour_that_vanishes_in_dark_mode_is_flagged(tmp_path, config, write_issue):
    # The newsletter's own email.mjml.j2 overrides the default; the blocks stay the defaults.
    copy_templates(config.newsletter.templates, ["email"])
    footer = tmp_path / "templates" / "email.mjml.j2"
    footer.write_text(
        footer.read_text(encoding="utf-8").replace(
            "Thanks for reading", '<span style="color:#222222">Dark words</span> Thanks for reading'
        ),
        encoding="utf-8",
    )
    report = check_issue(write_issue(CLEAN_FRONT + "## A\n\nText.\n"), config)
    assert any("#222222 would vanish on a dark background" in f.message for f in report.warnings)


def test_check_command_exits_1_on_errors_and_0_on_warnings(write_issue, run_cli):
    broken = write_issue(CLEAN_FRONT + "## A\n\nTK\n", "broken.md")
    result = run_cli("check", broken)
    assert result.exit_code == 1
    assert f"{broken}:9: error:" in result.output
    warned = write_issue('+++\ntitle = "t"\ndate = 2024-05-03\n+++\n\n## A\n\nText.\n', "w.md")
    result = run_cli("check", warned)
    assert result.exit_code == 0
    assert "warning: no preheader" in result.output


@pytest.mark.parametrize(
    ("preheader", "warned"),
    [
        ("Too short to fill the preview", "it leaves the preview half empty"),
        ("x" * 40, None),
        ("x" * 130, None),
        ("x" * 131, "it is cut off"),
    ],
)
def test_preheader_outside_40_to_130_characters_is_a_warning(
    write_issue, config, preheader, warned
):
    path = write_issue(
        f'+++\ntitle = "t"\ndate = 2024-05-03\npreheader = "{preheader}"\n+++\n\n'
        "## Notes\n\nSome words.\n"
    )
    messages = [f.message for f in check_issue(path, config).warnings]
    about_preheader = [m for m in messages if m.startswith("the preheader is")]
    if warned is None:
        assert about_preheader == []
    else:
        assert about_preheader == [
            f"the preheader is {len(preheader)} characters; inboxes preview 40–130 after "
            f"the subject, so {warned}"
        ]


def test_images_that_outweigh_the_text_are_a_warning_per_edition(write_issue, config):
    pictures = "\n\n".join(
        f"![Photo {n} of the harbour at dawn](https://example.com/{n}.jpg)\n\n"
        "A caption-length line of words about the photo above."
        for n in range(3)
    )
    path = write_issue(
        CLEAN_FRONT + f"## Photos\n\n{pictures}\n\n<!-- paywall -->\n\n## More\n\nText.\n"
    )
    messages = [f.message for f in check_issue(path, config).warnings]
    for tier in ("free", "paid"):
        assert any(
            m.startswith(f"the {tier} email has 3 image(s) and ") and "under 1,000 an image" in m
            for m in messages
        ), messages


def test_one_image_in_a_written_issue_is_not_a_ratio_warning(config):
    messages = [f.message for f in check_issue(EXAMPLE_MD, config).warnings]
    assert not any("image(s)" in m for m in messages)


def test_link_text_that_is_a_bare_url_is_a_warning(write_issue, config):
    path = write_issue(
        CLEAN_FRONT + "## Links\n\n"
        "See [https://example.com/a](https://example.com/a),\n"
        "<https://example.com/b>,\n"
        "[example.com/c](https://example.com/c)\n"
        "and [the full report](https://example.com/d), or <editor@example.com>.\n"
    )
    found = [
        (f.line, f.message) for f in check_issue(path, config).warnings if "bare URL" in f.message
    ]
    assert [(line, message.split(" is a bare URL")[0]) for line, message in found] == [
        (9, "link text 'https://example.com/a'"),
        (10, "link text 'https://example.com/b'"),
        (11, "link text 'example.com/c'"),
    ]


def test_finding_in_a_toml_story_item_names_the_line_of_its_body(write_issue, config):
    path = write_issue(
        'title = "A clean issue"\ndate = 2024-05-03\n'
        'preheader = "What changed this week, and what it means for you"\n\n'
        '[[blocks]]\nheading = "The big story"\nkind = "big-story"\n\n'
        '[[blocks.items]]\nlead = "First"\n\nbody = """\nSome words.\n\nStill TK.\n"""\n',
        "issue.toml",
    )
    found = [(f.line, f.message) for f in check_issue(path, config).errors]
    assert [line for line, message in found if "TK" in message] == [15]
