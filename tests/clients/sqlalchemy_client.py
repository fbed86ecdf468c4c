"""What SQLAlchemy-based tools (Superset, pandas, Airflow's SQL hooks) ask
of a PostgreSQL server, asked of `supportfunnel serve`.

Usage: python sqlalchemy_client.py URL EXPECTED_EVENT_COUNTS_JSON
Prints one line per check; exits non-zero at the first failure.

Superset's "test connection" creates an engine and runs `SELECT 1` on a
connection (the dialect first runs `select pg_catalog.version()`,
`select current_schema()` and `show standard_conforming_strings`); its
table sync runs the inspector calls below (get_schema_names,
get_table_names, get_view_names, get_columns, get_pk_constraint,
get_foreign_keys, get_indexes, get_unique_constraints,
get_check_constraints, get_table_comment).
"""
import json
import sys

import pandas as pd
import sqlalchemy as sa

url, expected = sys.argv[1], json.loads(sys.argv[2])
engine = sa.create_engine(url)

with engine.connect() as c:
    assert c.execute(sa.text("SELECT 1")).scalar() == 1
    version = c.execute(sa.text("select pg_catalog.version()")).scalar()
    assert version.startswith("PostgreSQL 16."), version
    assert engine.dialect.server_version_info[0] == 16, engine.dialect.server_version_info
print("connect", engine.dialect.server_version_info)

inspector = sa.inspect(engine)
assert "public" in inspector.get_schema_names()
tables = set(inspector.get_table_names())
assert {"events", "messages"} <= tables, tables
views = set(inspector.get_view_names())
assert {"sessions", "conversations"} <= views, views
print("tables", sorted(tables), "views", len(views))

columns = {c["name"]: c for c in inspector.get_columns("events")}
assert isinstance(columns["event_id"]["type"], sa.types.String), columns["event_id"]
assert isinstance(columns["ts"]["type"], sa.types.DateTime), columns["ts"]
session_columns = {c["name"]: c for c in inspector.get_columns("sessions")}
assert isinstance(session_columns["session_start"]["type"], sa.types.DateTime)
print("columns", len(columns), len(session_columns))

for name in ["events", "sessions"]:
    assert inspector.get_pk_constraint(name)["constrained_columns"] == []
    assert inspector.get_foreign_keys(name) == []
    assert inspector.get_indexes(name) == []
    assert inspector.get_unique_constraints(name) == []
    assert inspector.get_check_constraints(name) == []
    assert inspector.get_table_comment(name) == {"text": None}
    assert inspector.has_table(name)
print("constraints, indexes and comments: none")

# pandas with bound parameters, both styles.
frame = pd.read_sql(
    sa.text("SELECT count(*) AS n FROM events WHERE event_type = :t"),
    engine,
    params={"t": "article_view"},
)
assert int(frame["n"][0]) == expected["article_view"], frame
frame = pd.read_sql(
    "SELECT count(*) AS n FROM events WHERE event_type = %(t)s",
    engine,
    params={"t": "bot_answer"},
)
assert int(frame["n"][0]) == expected["bot_answer"], frame
print("read_sql")

# SQLAlchemy Core over a reflected table.
events = sa.Table("events", sa.MetaData(), autoload_with=engine)
query = (
    sa.select(events.c.event_type, sa.func.count().label("n"))
    .group_by(events.c.event_type)
    .order_by(events.c.event_type)
)
with engine.connect() as c:
    got = {t: n for t, n in c.execute(query) if t is not None}
assert got == expected, (got, expected)
print("core select", len(got))
