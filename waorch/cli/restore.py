"""`waorch restore ARCHIVE`: replace the Redis state and the sessions directory, or change nothing."""

from __future__ import annotations

from pathlib import Path

import click
import redis

from waorch.backups import create as backups
from waorch.backups import restore as backup_restore
from waorch.core import settings
from waorch.core.redis_client import get_redis
from waorch.core.redis_urls import redact

NOTHING_CHANGED = "nothing was changed"


@click.command("restore")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask before replacing the current state.")
@click.option("--check", is_flag=True, help="Only verify the archive.")
def command(archive: Path, yes: bool, check: bool) -> None:
    """Restore ARCHIVE (from `waorch backup`) with the stack stopped: every key in Redis and the
    sessions directory become the archive's. A corrupt archive is refused before any change."""
    r = get_redis()
    try:
        manifest = backup_restore.verify_archive(archive)
    except backups.RestoreError as exc:
        raise click.ClickException(f"{exc}; {NOTHING_CHANGED}") from None
    click.echo(f"{archive}: intact backup from {manifest.get('created_at')} "
               f"({manifest['redis']['keys']} keys, {len(manifest['sessions']['ids'])} sessions)")
    if check:
        return
    try:
        backup_restore.check_stack_stopped(r)
        if not yes:
            click.confirm(f"Replace every key in {redact(settings.get().redis_url)} and "
                          f"{backups.sessions_root()} with this backup?", abort=True)
        result = backup_restore.restore_backup(r, archive)
    except (backups.RestoreError, backups.BackupBusy) as exc:
        raise click.ClickException(f"{exc}; {NOTHING_CHANGED}") from None
    except backups.RestoreUncertain as exc:
        raise click.ClickException(str(exc)) from None
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis: {exc}; {NOTHING_CHANGED}") from None
    click.echo(f"restored {result['keys']} keys and {len(result['sessions'])} session directories "
               f"into {result['sessions_dir']}; start the stack again")
