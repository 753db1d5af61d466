"""`waorch doctor`: check Redis, the runner, proxies, profiles and Celery; say what is wrong."""

from __future__ import annotations

import json

import click

from waorch import doctor
from waorch.core import settings


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding instead of a table.")
@click.option("--celery-timeout", type=click.FloatRange(0.5, 60), default=3.0, show_default=True,
              help="Seconds to wait for Celery workers to answer.")
def command(as_json: bool, celery_timeout: float) -> None:
    """Check this deployment; exit status 1 when any check FAILs (secrets are never printed)."""
    try:
        conf = settings.load()
    except ValueError as exc:  # a malformed setting is itself the finding
        findings = [doctor.Finding("settings", doctor.FAIL, str(exc), "fix the environment variable")]
    else:
        findings = doctor.run_checks(conf, celery_timeout)
    if as_json:
        for finding in findings:
            click.echo(json.dumps(finding.as_dict()))
    else:
        click.echo(doctor.render_table(findings))
    if any(f.level == doctor.FAIL for f in findings):
        raise SystemExit(1)
