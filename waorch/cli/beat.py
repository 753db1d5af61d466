"""`waorch beat`: the Celery beat scheduler (watchdog, proxy health, trust review, backup)."""

from __future__ import annotations

from pathlib import Path

import click

from waorch.cli.worker import CELERY_APP
from waorch.core import settings
from waorch.launcher.become import become, python_module_argv


def beat_argv(schedule_file: Path, log_level: str) -> list[str]:
    return python_module_argv("celery", "-A", CELERY_APP, "beat", "-s", str(schedule_file),
                              "--loglevel", log_level)


@click.command("beat")
@click.option("--schedule-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where beat remembers last run times [WAORCH_STATE_DIR/celerybeat-schedule].")
def command(schedule_file: Path | None) -> None:
    """Run Celery beat. Run exactly one per deployment, or tasks fire twice."""
    conf = settings.load()
    if schedule_file is None:
        schedule_file = Path(conf.state_dir) / "celerybeat-schedule"
    schedule_file.parent.mkdir(parents=True, exist_ok=True)
    become(beat_argv(schedule_file.resolve(), conf.log_level))
