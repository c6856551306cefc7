"""``orbiter-sync dead-letters list|requeue|purge``: an operator's view of a queue's dead
letters (``{queue}:dead``) and what they may do with them (see ``orbiter_sync.admin``)."""

from __future__ import annotations

import sys

import click

from orbiter_sync.dead_letters import STREAM_ID, DeadLetter

from .common import (
    Target,
    echo_json,
    echo_table,
    json_option,
    queue_option,
    redis_option,
    short,
    when,
)

LETTER_COLUMNS = ("ID", "Task ID", "Reason", "When", "Size", "Worker")


@click.group("dead-letters")
def dead_letters_group() -> None:
    """List, requeue and purge a queue's dead letters.

    An entry is dead-lettered when it cannot be decoded or was delivered too many
    times (its workers kept dying); its task is marked failed.
    """


def size(characters: int) -> str:
    """``312 B``, ``4.5 KiB``, ``1.2 MiB`` (a dead letter's entry is ASCII JSON)."""
    if characters < 1024:
        return f"{characters} B"
    if characters < 1024 * 1024:
        return f"{characters / 1024:.1f} KiB"
    return f"{characters / 1024 / 1024:.1f} MiB"


def letter_row(letter: DeadLetter) -> list[object]:
    return [
        letter.id,
        letter.task_id or "-",
        short(letter.reason, 60),
        when(letter.dead_at),
        size(letter.entry_length),
        letter.worker_id or "-",
    ]


@dead_letters_group.command("list")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="At most N dead letters, newest first.",
)
@queue_option
@redis_option
@json_option
def list_dead_letters(limit: int, queue_name: str, redis_url: str | None, as_json: bool) -> None:
    """List dead letters, newest first: id, task id, reason, when, entry size, worker."""
    target = Target(redis_url, queue_name)
    try:
        letters = target.admin.dead_letter_entries(limit)
    finally:
        target.close()
    if as_json:
        echo_json([letter.to_dict() for letter in letters])
    elif not letters:
        click.echo(f"No dead letters on {queue_name}.")
    else:
        echo_table((letter_row(letter) for letter in letters), LETTER_COLUMNS)


def _letter_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not STREAM_ID.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not a dead letter id (like 1700000000000-0)")
    return value


@dead_letters_group.command("requeue")
@click.argument("letter_id", metavar="ID", required=False, callback=_letter_id)
@click.option("--all", "every", is_flag=True, help="Requeue every dead letter.")
@queue_option
@redis_option
@json_option
def requeue(
    letter_id: str | None, every: bool, queue_name: str, redis_url: str | None, as_json: bool
) -> None:
    """Put a dead letter's task back on its queue, then delete the dead letter.

    The task keeps its id and starts afresh: status pending, retries 0, its old
    events gone. A dead letter whose payload cannot be decoded (or whose task is
    live again) is kept: exit 1. With --all, every one that can be is requeued
    and the rest are reported (exit 1 if any was kept).
    """
    if (letter_id is None) == (not every):
        raise click.UsageError("give exactly one of ID and --all")
    target = Target(redis_url, queue_name)
    try:
        if letter_id is not None:
            requeued, kept = [target.admin.requeue_dead_letter(letter_id)], []
        else:
            report = target.admin.requeue_dead_letters()
            requeued, kept = report.requeued, report.kept
    finally:
        target.close()
    if as_json:
        echo_json({"queue": queue_name,
                   "requeued": [{"id": d.id, "task_id": d.task_id} for d in requeued],
                   "kept": [{"id": d.id, "task_id": d.task_id, "error": why}
                            for d, why in kept]})  # fmt: skip
    else:
        for letter in requeued:
            click.echo(f"Requeued task {letter.task_id} (dead letter {letter.id}) on {queue_name}.")
        for _letter, why in kept:
            click.echo(f"Kept: {why}", err=True)
        if every:
            click.echo(f"{len(requeued)} requeued, {len(kept)} kept.")
    if kept:
        sys.exit(1)


@dead_letters_group.command("purge")
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Only dead letters older than this.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@queue_option
@redis_option
@json_option
def purge(
    older_than: float | None, yes: bool, queue_name: str, redis_url: str | None, as_json: bool
) -> None:
    """Delete a queue's dead letters (asks first unless --yes)."""
    target = Target(redis_url, queue_name)
    try:
        count = target.admin.dead_letter_count()
        if count and not yes:
            which = f"older than {older_than:g}s " if older_than is not None else ""
            question = f"Delete the dead letters {which}of {queue_name} ({count} in all)?"
            # On stderr: stdout stays the command's answer (JSON with --json).
            click.confirm(question, abort=True, err=True)
        purged = target.admin.purge_dead_letters(older_than) if count else 0
    finally:
        target.close()
    if as_json:
        echo_json({"queue": queue_name, "purged": purged})
    else:
        click.echo(f"Purged {purged} dead letter{'s' if purged != 1 else ''} of {queue_name}.")
