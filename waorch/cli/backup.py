"""`waorch backup [--out DIR]`: one archive of the Redis state and every session's data."""

from __future__ import annotations

from pathlib import Path

import click
import redis

from waorch.backups import create as backups
from waorch.core import settings
from waorch.core.redis_client import get_redis


@click.command("backup")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for the archive [WAORCH_BACKUP_DIR]. Old archives are pruned to "
                   "WAORCH_BACKUP_KEEP only in WAORCH_BACKUP_DIR.")
def command(out: Path | None) -> None:
    """Write a backup (mode 0600: it holds secrets); prints the archive's path as its last line."""
    default = backups.backup_dir()
    target = out.resolve() if out else default
    # --out somewhere else (a USB disk, a mount) never loses archives the user put there
    keep = settings.get().backup_keep if target == default else None
    try:
        path = backups.create_backup(get_redis(), target, keep=keep)
    except backups.BackupBusy as exc:
        raise click.ClickException(str(exc)) from None
    except redis.RedisError as exc:
        raise click.ClickException(f"cannot read Redis: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write the backup: {exc}") from None
    click.echo(f"backup written ({path.stat().st_size} bytes)")
    click.echo(str(path))
