"""``miniecs keypair``: SSH key pairs injected into instances."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.errors import CliError
from controller.cli.output import (
    OutputFormat, col, note, print_json, render_list, render_message, render_object,
)
from controller.cli.resources import KEY_PAIR, resolve

app = typer.Typer(help="Key pairs: generate one (private key shown once) or import a public key.",
                  no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("NAME", "name"), col("TYPE", "key_type"),
           col("FINGERPRINT", "fingerprint"), col("CREATED", "created_at")]


@app.command("create")
def create_key_pair(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Key pair name (unique)")],
    private_key_file: Annotated[Path | None, typer.Option(
        "--private-key-file", dir_okay=False,
        help="Write the generated private key here (mode 0600; must not exist yet)")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Generate a key pair. The private key exists only in this answer: save it."""
    if private_key_file is not None:
        private_key_file = private_key_file.expanduser()
        # Checked before the API call, so a refusal leaves no orphan key pair behind.
        if private_key_file.exists():
            raise CliError(f"{private_key_file} exists; refusing to overwrite a private key")
        if not private_key_file.parent.is_dir():
            raise CliError(f"directory {private_key_file.parent} does not exist")
    created = client(ctx).post(KEY_PAIR.path, {"name": name})
    private_key = created.get("private_key")
    if private_key_file is not None and private_key:
        _write_private_key(private_key_file, private_key)
        # The key is on disk; keep it off the terminal and out of logs.
        created = {**created, "private_key": None}
        if output is OutputFormat.json:
            print_json(created)
        else:
            render_object(created, output, hide=("private_key",))
            note(f"private key written to {private_key_file} (mode 0600)")
        return
    if output is OutputFormat.json:
        print_json(created)
        return
    render_object(created, output, hide=("private_key",))
    if private_key:
        note("private key (shown only this once; save it now):")
        typer.echo(private_key.rstrip("\n"))


def _write_private_key(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}; the key pair was created but its "
                       "private key is lost: delete it and create another") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")


@app.command("import")
def import_key_pair(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Key pair name (unique)")],
    public_key_file: Annotated[Path, typer.Option(
        "--public-key-file", exists=True, dir_okay=False, readable=True,
        help="OpenSSH public key file, e.g. ~/.ssh/id_ed25519.pub")],
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Import an existing public key."""
    try:
        public_key = public_key_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {public_key_file}: {exc}") from None
    render_object(client(ctx).post(KEY_PAIR.path, {"name": name, "public_key": public_key}),
                  output)


@app.command("list")
def list_key_pairs(ctx: typer.Context, output: OutputOpt = OutputFormat.table,
                   max_results: MaxResultsOpt = None, next_token: NextTokenOpt = None) -> None:
    """List key pairs."""
    render_list(list_page_or_all(ctx, KEY_PAIR.path, max_results, next_token), COLUMNS, output)


@app.command("show")
def show_key_pair(ctx: typer.Context,
                  key_pair: Annotated[str, typer.Argument(help="Key pair id or name")],
                  output: OutputOpt = OutputFormat.table) -> None:
    """Show one key pair."""
    api = client(ctx)
    render_object(api.get(KEY_PAIR.item(resolve(api, KEY_PAIR, key_pair))), output)


@app.command("delete")
def delete_key_pair(ctx: typer.Context,
                    key_pair: Annotated[str, typer.Argument(help="Key pair id or name")],
                    output: OutputOpt = OutputFormat.table) -> None:
    """Delete a key pair (instances keep the key they booted with)."""
    api = client(ctx)
    key_pair_id = resolve(api, KEY_PAIR, key_pair)
    answer = api.delete(KEY_PAIR.item(key_pair_id))
    render_message(answer or {"id": key_pair_id, "deleted": True}, output,
                   f"deleted {key_pair_id}")
