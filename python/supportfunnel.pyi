"""supportfunnel: the support funnel report and SQL over customer-support
events (Parquet on local disk or S3), in-process, as Arrow tables."""

import datetime
from typing import Any, Dict, List, Optional, Sequence, Union

import pyarrow

__version__: str

DateLike = Union[datetime.date, str]

class Error(Exception):
    """An error of supportfunnel; its message is the command line's one-line message."""

class Connection:
    """The tables registered once and the settings resolved once (see `connect`)."""

    def report(
        self,
        date_from: Optional[DateLike] = None,
        date_to: Optional[DateLike] = None,
        tz: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        content_types: Optional[Sequence[str]] = None,
        senders: Optional[Sequence[str]] = None,
    ) -> pyarrow.Table:
        """The report for local days [date_from, date_to) in `tz` (default: the
        config's zone, else UTC) against the period before: the rows, columns and
        values of `supportfunnel report --format parquet`. Without dates, the
        default period. The filters apply to proactive messages."""

    def sql(
        self, query: str, params: Optional[Union[List[Any], Dict[str, Any]]] = None
    ) -> pyarrow.Table:
        """One SQL statement over the tables, views and functions; `params` binds
        `$1, $2, ...` (a list) or `$name` (a dict)."""

def connect(
    events: Optional[str] = None,
    messages: Optional[str] = None,
    config: Optional[str] = None,
    memory_limit: Optional[str] = None,
) -> Connection:
    """Registers `events` and `messages` (a Parquet file, a directory, a
    Hive-partitioned directory or s3://bucket/prefix). `config` is the CLI's
    config file; the arguments given here win over it. `memory_limit` as the
    CLI's --memory-limit, e.g. "2GiB"."""

def run_job(config: str, date: Optional[DateLike] = None) -> Dict[str, Any]:
    """Runs every [[reports]] of the config file for `date` (default: today in
    the config's zone) as `supportfunnel run` does; returns its summary and
    raises `Error` when a report failed."""
