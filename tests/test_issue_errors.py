"""Every bad-input case of the issue format: one clear line naming file and line, exit 2."""

from __future__ import annotations

import pytest

MD_CASES = {
    "missing front matter": (
        "title = 'x'\n\n## What happened\n\nText.\n",
        1,
        "missing front matter",
    ),
    "front matter never closed": (
        '+++\ntitle = "x"\ndate = 2024-05-03\n\n## A\n\nText.\n',
        1,
        "never closed",
    ),
    "toml syntax error": (
        '+++\ntitle = "x"\ndate = 2024-05-03\nauthor = Morgan\n+++\n',
        4,
        "TOML syntax error",
    ),
    "missing title": ("+++\ndate = 2024-05-03\n+++\n\nText.\n", 2, "no title"),
    "missing date": ('+++\ntitle = "x"\n+++\n', 2, "no date"),
    "date in quotes": ('+++\ntitle = "x"\ndate = "2024-05-03"\n+++\n', 3, "TOML date"),
    "unknown key": (
        '+++\ntitle = "x"\ndate = 2024-05-03\nsubtitel = "typo"\n+++\n',
        4,
        "unknown key 'subtitel'",
    ),
    "second paywall marker": (
        '+++\ntitle = "x"\ndate = 2024-05-03\n+++\n\n## A\n\nOne.\n\n<!-- paywall -->\n\n'
        "## B\n\nTwo.\n\n<!-- paywall -->\n\n## C\n\nThree.\n",
        16,
        "second paywall marker",
    ),
    "empty block": (
        '+++\ntitle = "x"\ndate = 2024-05-03\n+++\n\n## What happened\n\n## Next\n\nText.\n',
        6,
        "'What happened' is empty",
    ),
    "bold-lead item outside any block": (
        '+++\ntitle = "x"\ndate = 2024-05-03\n+++\n\n**LOOSE LEAD:** A story.\n\n## A\n\nText.\n',
        6,
        "stands before any block",
    ),
    "text after the paywall marker": (
        '+++\ntitle = "x"\ndate = 2024-05-03\n+++\n\n## A\n\nOne.\n\n<!-- paywall -->\n\n'
        "Stray.\n\n## B\n\nTwo.\n",
        12,
        "belongs to no block",
    ),
    "kind with a space in its name": (
        '+++\ntitle = "x"\ndate = 2024-05-03\n+++\n\n## Odd {.what happened}\n\nText.\n',
        6,
        "block kind {.what happened} is not a valid name",
    ),
    "kind without a template": (
        '+++\ntitle = "x"\ndate = 2024-05-03\n+++\n\n## Odd {.sidebar}\n\nText.\n',
        6,
        "no template",
    ),
    "control character in the text": (
        '+++\ntitle = "x"\ndate = 2024-05-03\n+++\n\n## A\n\nHel\x01lo.\n',
        "8:4",
        "character U+0001 (a control character)",
    ),
    "control character in a Windows file": (
        '+++\r\ntitle = "x"\r\ndate = 2024-05-03\r\n+++\r\n\r\n## A\r\n\r\nOne\x1bTwo\r\n',
        "8:4",
        "character U+001B (a control character)",
    ),
    "control character escaped in the title": (
        '+++\ntitle = "Bad \\u0001 title"\ndate = 2024-05-03\n+++\n\n## A\n\nText.\n',
        2,
        "title holds character U+0001 (a control character), written as an escape",
    ),
    "array nested 5,000 deep": (
        '+++\ntitle = "x"\ndate = 2024-05-03\nx = ' + "[" * 5000 + "]" * 5000 + "\n+++\n",
        4,
        "TOML nested too deeply",
    ),
}

TOML_CASES = {
    "toml syntax error": ('title = "x"\ndate = 2024-05-03\n[[blocks]\n', 3, "TOML syntax error"),
    "unknown block key": (
        'title = "x"\ndate = 2024-05-03\n\n[[blocks]]\nheading = "A"\nbody = "t"\nbodyy = "t"\n',
        7,
        "unknown block key 'bodyy'",
    ),
    "block without heading": (
        'title = "x"\ndate = 2024-05-03\n\n[[blocks]]\nbody = "t"\n',
        4,
        "no heading",
    ),
    "empty block": ('title = "x"\ndate = 2024-05-03\n\n[[blocks]]\nheading = "A"\n', 4, "empty"),
    "story item outside any block": (
        'title = "x"\ndate = 2024-05-03\n\n[[blocks.items]]\nlead = "L"\nbody = "b"\n',
        4,
        "outside any block",
    ),
    "items in a block that is not a big story": (
        'title = "x"\ndate = 2024-05-03\n\n[[blocks]]\nheading = "What happened"\n'
        'body = "t"\n\n[[blocks.items]]\nlead = "L"\nbody = "b"\n',
        8,
        "belong to big-story blocks",
    ),
    "second paywall block": (
        'title = "x"\ndate = 2024-05-03\n\n[[blocks]]\nkind = "paywall"\n\n'
        '[[blocks]]\nkind = "paywall"\n',
        7,
        "second paywall",
    ),
    "unknown top-level key": ('title = "x"\ndate = 2024-05-03\nsubject = "y"\n', 3, "'subject'"),
    "control character escaped in a body": (
        'title = "x"\ndate = 2024-05-03\n\n[[blocks]]\nheading = "A"\n'
        'body = """\none\ntwo \\b\n"""\n',
        8,
        "body holds character U+0008 (a control character)",
    ),
    "non-character escaped in a story lead": (
        'title = "x"\ndate = 2024-05-03\n\n[[blocks]]\nheading = "The Big Story"\nbody = "b"\n\n'
        '[[blocks.items]]\nlead = "L \\uFFFF"\nbody = "b"\n',
        9,
        "lead holds character U+FFFF (a non-character)",
    ),
    "inline table nested 5,000 deep": (
        'title = "x"\ndate = 2024-05-03\n\n[[blocks]]\nheading = "A"\nbody = "b"\n'
        "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n",
        7,
        "TOML nested too deeply",
    ),
}


def _assert_one_clear_error(result, path, line, words, tmp_path):
    assert result.exit_code == 2, result.output
    assert f"{path}:{line}" in result.output
    assert words in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists(), "nothing may be written for a broken issue"


@pytest.mark.parametrize("case", MD_CASES, ids=list(MD_CASES))
def test_markdown_issue_error_names_file_and_line(case, write_issue, run_cli, tmp_path):
    text, line, words = MD_CASES[case]
    path = write_issue(text, "broken.md")
    result = run_cli("build", path, "--out", tmp_path / "out")
    _assert_one_clear_error(result, path, line, words, tmp_path)


@pytest.mark.parametrize("case", TOML_CASES, ids=list(TOML_CASES))
def test_toml_issue_error_names_file_and_line(case, write_issue, run_cli, tmp_path):
    text, line, words = TOML_CASES[case]
    path = write_issue(text, "broken.toml")
    result = run_cli("build", path, "--out", tmp_path / "out")
    _assert_one_clear_error(result, path, line, words, tmp_path)


def test_file_that_is_not_utf8_names_the_line_and_byte(write_issue, run_cli, tmp_path):
    path = write_issue(
        b'+++\ntitle = "x"\ndate = 2024-05-03\n+++\n\n## A\n\nCaf\xe9\n', "latin1.md"
    )
    result = run_cli("build", path, "--out", tmp_path / "out")
    _assert_one_clear_error(result, path, "8:4", "not UTF-8", tmp_path)


def test_missing_issue_file_is_a_usage_error(run_cli, tmp_path):
    result = run_cli("build", tmp_path / "nope.md")
    assert result.exit_code == 2
    assert "no such file" in result.output
    assert "Traceback" not in result.output


def test_check_reports_load_errors_the_same_way(write_issue, run_cli, tmp_path):
    path = write_issue('+++\ntitle = "x"\n+++\n', "broken.md")
    result = run_cli("check", path)
    assert result.exit_code == 2
    assert f"{path}:2" in result.output


@pytest.mark.parametrize(
    "case", ["control character escaped in the title", "array nested 5,000 deep"]
)
def test_check_names_the_line_of_an_invisible_character_or_a_deep_nesting(
    case, write_issue, run_cli, tmp_path
):
    text, line, words = MD_CASES[case]
    path = write_issue(text, "broken.md")
    _assert_one_clear_error(run_cli("check", path), path, line, words, tmp_path)
