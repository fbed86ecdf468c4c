"""A scheduled task that runs the support funnel job from Python.

The shape of an Airflow `@task` (or a Dagster op, or a cron script): take
the run's logical date, run the job for it, fail loudly when any report
failed, and hand the written locations to whatever runs next. No Airflow is
needed to try it:

    pip install ./python
    python examples/python_task.py examples/job.toml 2026-03-01

In Airflow, the same function is a task as it stands:

    from airflow.decorators import task
    funnel = task(retries=2)(funnel_report)
    funnel(config="/etc/supportfunnel/job.toml", ds="{{ ds }}")
"""
import sys

import supportfunnel


def funnel_report(config: str, ds: str) -> list:
    """Runs the job of `config` for day `ds` (YYYY-MM-DD) and returns what
    it wrote, one dict per table (`report`, `table`, `location`, `rows`).
    A failed report raises `supportfunnel.Error` (the task fails and the
    scheduler retries it); nothing is half-written."""
    summary = supportfunnel.run_job(config, ds)
    for written in summary["written"]:
        print(f"{written['report']}/{written['table']}: {written['rows']} rows"
              f" -> {written['location']}")
    return summary["written"]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python_task.py CONFIG YYYY-MM-DD")
    funnel_report(sys.argv[1], sys.argv[2])
