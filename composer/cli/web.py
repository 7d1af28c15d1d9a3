"""``preview`` and ``serve``: the local preview page and the public web service."""

from __future__ import annotations

from pathlib import Path

import click

from composer.cli.options import config_option, issue_argument, port_option


@click.command()
@issue_argument
@port_option(8001, "Port on 127.0.0.1 (0 picks a free one).")
@click.option(
    "--open/--no-open",
    "open_browser",
    default=True,
    show_default=True,
    help="Open the preview in the default browser.",
)
@click.option(
    "--as",
    "as_email",
    metavar="EMAIL",
    help="Show the copy this subscriber gets: their tier and their unsubscribe link.",
)
@config_option
def preview(
    issue_path: Path, port: int, open_browser: bool, as_email: str | None, config_path: Path
) -> None:
    """Serve ISSUE on 127.0.0.1 and update the page whenever the issue, a template or the
    config changes: desktop and phone widths, paid and free, HTML and plain text, light
    and dark, the size against Gmail's clip and the check findings. Ctrl+C stops it."""
    from composer.web.preview import serve_preview

    serve_preview(
        issue_path,
        config_path,
        port=port,
        open_browser=open_browser,
        as_email=as_email,
        echo=click.echo,
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@port_option(8000, "Port to listen on.")
@click.option(
    "--issues",
    "issues_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of issue files to publish  [default: issues/ next to the config]",
)
@config_option
def serve(host: str, port: int, issues_dir: Path | None, config_path: Path) -> None:
    """Run the web service at base_url: signups with their confirmation and welcome
    emails, unsubscribe links, readers' own manage pages, web versions, archive, feed,
    and the bounce and complaint webhooks of [webhooks] services."""
    from composer.config import load_config
    from composer.web.serve import run_service

    run_service(load_config(config_path), issues_dir, host=host, port=port, echo=click.echo)


@click.command()
@config_option
def embed(config_path: Path) -> None:
    """Print an HTML subscribe form that another site can paste: it posts to
    base_url/subscribe, which asks the reader to press Subscribe once more there."""
    from composer.config import load_config
    from composer.web.joining import embed_form

    click.echo(embed_form(load_config(config_path)), nl=False)


COMMANDS = (preview, serve, embed)
