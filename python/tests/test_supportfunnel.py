"""The Python package against the command line, on the bundled sample.

Run by .ci/run after `pip install ./python`:
    SUPPORTFUNNEL_BIN=<the CLI> python -m pytest python/tests
"""
import datetime
import os
import pathlib
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import supportfunnel

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
EVENTS = str(SAMPLE / "events")
MESSAGES = str(SAMPLE / "messages")
BIN = os.environ.get("SUPPORTFUNNEL_BIN", "supportfunnel")


def cli_report(tmp_path, *args):
    out = tmp_path / "report.parquet"
    subprocess.run(
        [BIN, "report", "--events", EVENTS, "--messages", MESSAGES,
         "--format", "parquet", "--output", str(out), *args],
        check=True,
    )
    return pq.read_table(out)


@pytest.fixture(scope="module")
def con():
    return supportfunnel.connect(events=EVENTS, messages=MESSAGES)


def test_report_equals_the_cli(con, tmp_path):
    got = con.report("2026-02-01", datetime.date(2026, 3, 1))
    want = cli_report(tmp_path, "--from", "2026-02-01", "--to", "2026-03-01")
    assert got.num_rows > 40
    assert got.schema == want.schema
    assert got.equals(want)


def test_default_period_zone_and_filters_equal_the_cli(con, tmp_path):
    assert con.report().equals(cli_report(tmp_path))
    got = con.report("2026-02-01", "2026-03-01", tz="America/New_York", tags=["outage"])
    want = cli_report(tmp_path, "--from", "2026-02-01", "--to", "2026-03-01",
                      "--tz", "America/New_York", "--tag", "outage")
    assert got.equals(want)


def test_sql_with_parameters(con):
    total = con.sql("SELECT count(*) AS n FROM events").column("n")[0].as_py()
    by_type = con.sql(
        "SELECT count(*) AS n FROM events WHERE event_type = $1", ["article_view"]
    ).column("n")[0].as_py()
    named = con.sql(
        "SELECT count(*) AS n FROM events WHERE event_type = $t", {"t": "article_view"}
    ).column("n")[0].as_py()
    assert 0 < by_type < total
    assert by_type == named
    sessions = con.sql("SELECT status, count(*) AS n FROM sessions GROUP BY 1 ORDER BY 1")
    assert set(sessions.column("status").to_pylist()) >= {"stopped"}
    # The result is a pyarrow.Table, with the Arrow PyCapsule stream.
    assert isinstance(sessions, pa.Table)
    assert hasattr(sessions, "__arrow_c_stream__")


def test_the_report_table_function_is_in_sql(con):
    got = con.sql("SELECT * FROM report('2026-02-01', '2026-03-01')")
    assert got.equals(con.report("2026-02-01", "2026-03-01"))


def test_results_go_to_duckdb_or_polars_without_a_copy(con):
    table = con.sql("SELECT user_id, session_start FROM sessions")
    try:
        import duckdb
    except ImportError:
        duckdb = None
    if duckdb is not None:
        # DuckDB scans the Arrow buffers in place (its Arrow scan), here
        # through nothing but the PyCapsule stream.
        class Stream:
            def __arrow_c_stream__(self, requested_schema=None):
                return table.__arrow_c_stream__(requested_schema)

        stream = Stream()  # noqa: F841 (DuckDB finds it by name)
        [(n, users)] = duckdb.sql(
            "SELECT count(*), count(DISTINCT user_id) FROM stream").fetchall()
        assert n == table.num_rows
        assert users == len(set(table.column("user_id").to_pylist()))
    try:
        import polars
    except ImportError:
        polars = None
    if polars is not None:
        assert polars.from_arrow(table).height == table.num_rows
    if duckdb is None and polars is None:
        pytest.skip("neither duckdb nor polars is installed")


SLOW_QUERY_CHILD = r"""
import sys, supportfunnel
con = supportfunnel.connect(events=sys.argv[1], messages=sys.argv[2])
print("ready", flush=True)
try:
    con.sql("SELECT sum(a.value * b.value) AS s FROM range(200000) a CROSS JOIN range(200000) b")
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
print("finished", flush=True)
"""


def test_ctrl_c_cancels_a_running_query():
    # In a child of its own, as a person at a prompt or a scheduler's
    # SIGINT meets it: the query (minutes of work) stops at once.
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_QUERY_CHILD, EVENTS, MESSAGES],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        child.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, _ = child.communicate(timeout=60)
        waited = time.monotonic() - sent
    finally:
        child.kill()
    assert child.returncode == 3 and "interrupted" in out, (child.returncode, out)
    # (A cancelled query answers within the signal check's 100 ms; far
    # below the minutes the query needs, on any machine.)
    assert waited < 30, waited


def test_errors_are_one_line_exceptions(con, tmp_path):
    with pytest.raises(supportfunnel.Error) as e:
        con.sql("SELECT nope FROM events")
    assert "nope" in str(e.value) and "\n" not in str(e.value).strip()
    with pytest.raises(supportfunnel.Error) as e:
        supportfunnel.connect(events=str(tmp_path / "missing"), messages=MESSAGES)
    assert "missing" in str(e.value)
    with pytest.raises(supportfunnel.Error):
        con.report("2026-02-01", None)
    with pytest.raises(supportfunnel.Error):
        con.report("2026-02-01", "2026-03-01", tz="Mars/Olympus")


def job_config(path, out):
    path.write_text(
        f'[[tables]]\nname = "events"\nuri = "{EVENTS}"\n\n'
        f'[[tables]]\nname = "messages"\nuri = "{MESSAGES}"\n\n'
        f'[output]\nlocation = "{out}/report"\n\n'
        '[[reports]]\nname = "trailing"\nperiod = "28d"\n'
    )
    return str(path)


def test_run_job_writes_what_the_cli_writes(tmp_path):
    mine = supportfunnel.run_job(job_config(tmp_path / "py.toml", tmp_path / "py"), "2026-03-01")
    subprocess.run(
        [BIN, "run", "--config", job_config(tmp_path / "cli.toml", tmp_path / "cli"),
         "--date", "2026-03-01"],
        check=True, capture_output=True,
    )
    assert mine["ok"] and len(mine["written"]) == 1, mine
    written = mine["written"][0]
    assert written["rows"] > 40
    theirs = written["location"].replace(str(tmp_path / "py"), str(tmp_path / "cli"))
    assert pq.read_table(written["location"]).equals(pq.read_table(theirs))


def test_the_scheduler_task_example_runs(tmp_path):
    # examples/python_task.py as a scheduler would call it.
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "python_task", ROOT / "examples" / "python_task.py")
    task = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(task)
    written = task.funnel_report(
        job_config(tmp_path / "job.toml", tmp_path / "out"), "2026-03-01")
    assert [w["table"] for w in written] == ["report"]
    assert pq.read_table(written[0]["location"]).num_rows == written[0]["rows"] > 40
    with pytest.raises(supportfunnel.Error):
        task.funnel_report(str(tmp_path / "missing.toml"), "2026-03-01")
