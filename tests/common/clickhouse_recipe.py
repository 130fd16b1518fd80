"""Runs docker/clickhouse's recipe in chDB (in-process ClickHouse) on eddy's output records.

chDB has no working Kafka engine and no uniqTheta, so the recipe's SQL is run with two textual
substitutions, and nothing else changed:
  - the Kafka table becomes `ENGINE = Null` (a materialized view still fires on inserts into it);
  - `AggregateFunction(uniqTheta, String)` becomes `String`: the column keeps the exact bytes the
    CAST would hand ClickHouse (VarUInt length ++ compact Theta sketch), and this script merges
    them the way ClickHouse's uniqThetaMerge does (readVectorBinary, then a Theta union), with
    Python datasketches, the C++ library ClickHouse embeds.
The queries of queries.sql run the same way, with `uniqThetaMerge(users)` read as
`groupArray(users)` and merged here.

stdin: {"records": [output record JSON strings], "periods": [{"from": ms, "to": ms}],
        "event_type": str}
stdout: {"rows": n, "rows_final": n, "periods": [{"counts": {type: n}, "users": {...},
        "one_type": {...}}]}
"""

import base64
import json
import re
import sys

import chdb
from chdb import session
from datasketches import compact_theta_sketch, theta_union

ROOT = sys.argv[1]
SEED = 9001


def recipe_sql(text):
    text = re.sub(r"ENGINE = Kafka\s+SETTINGS[^;]*;", "ENGINE = Null;", text)
    return text.replace("AggregateFunction(uniqTheta, String)", "String")


def statements(text):
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def named_queries(text):
    queries = {}
    for block in text.split("-- name: ")[1:]:
        name, _, sql = block.partition("\n")
        queries[name.strip()] = statements(sql)[0]
    return queries


def read_var_uint(data):
    """ClickHouse's readVarUInt: the length ahead of an aggregate state's bytes."""
    value, shift, at = 0, 0, 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def theta_merge(states):
    """uniqThetaMerge over stored states: each is readVectorBinary'd and unioned in."""
    union = theta_union(lg_k=12, seed=SEED)
    for state in states:
        raw = state.encode("latin-1") if isinstance(state, str) else state
        length, at = read_var_uint(raw)
        assert length == len(raw) - at, ("VarUInt length", length, len(raw) - at)
        if length:
            union.update(compact_theta_sketch.deserialize(raw[at:], SEED))
    result = union.get_result()
    return {
        "estimate": result.get_estimate(),
        "lower": result.get_lower_bound(2),
        "upper": result.get_upper_bound(2),
        "exact": not result.is_estimation_mode(),
        "sketches": len(states),
    }


def run_check_sql():
    """Runs docker/clickhouse/check.sql as far as chDB can: the uniqThetaMerge assertion is done
    here on the stored states instead."""
    db = session.Session()
    text = recipe_sql(open(f"{ROOT}/docker/clickhouse/check.sql").read())
    users = None
    for statement in statements(text):
        if "uniqThetaMerge(users)" in statement:
            rows = db.query(
                "SELECT groupArray(base64Encode(users)) AS states FROM eddy_check.analytics_minutes FINAL "
                "WHERE aggregation = 'analytics.overall'", "JSONEachRow")
            states = json.loads(rows.bytes().decode())["states"]
            users = theta_merge([base64.b64decode(s) for s in states])
            assert users["estimate"] == 1500, users
            continue
        db.query(statement, "JSONEachRow")
    assert users is not None, "check.sql asserts the unique users"
    json.dump({"users": users}, sys.stdout)


def main():
    if len(sys.argv) > 2 and sys.argv[2] == "check-sql":
        return run_check_sql()
    request = json.load(sys.stdin)
    db = session.Session()

    def query(sql):
        result = db.query(sql, "JSONEachRow")
        text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    for statement in statements(recipe_sql(open(f"{ROOT}/docker/clickhouse/init.sql").read())):
        query(statement)

    def insert(records):
        rows = "\n".join(json.dumps({"record": r}) for r in records)
        query(f"INSERT INTO eddy.analytics_aggregates_queue FORMAT JSONEachRow\n{rows}")

    records = request["records"]
    insert(records)
    # The Kafka engine reads at least once: a batch inserted again after a restart.
    insert(records)
    # A record that is not final (emit = "update" writes these) must not land.
    not_final = [json.loads(r) for r in records[:1]]
    for r in not_final:
        r["final"] = False
        r["values"]["events"] = 10**9
    insert([json.dumps(r) for r in not_final])

    rows = query("SELECT count() AS n FROM eddy.analytics_minutes")[0]["n"]
    rows_final = query("SELECT count() AS n FROM eddy.analytics_minutes FINAL")[0]["n"]
    queries = named_queries(open(f"{ROOT}/docker/clickhouse/queries.sql").read())

    def bind(sql, period):
        sql = sql.replace("uniqThetaMerge(users)", "groupArray(users)")
        sql = sql.replace("{from:DateTime64(3)}", f"fromUnixTimestamp64Milli({period['from']}, 'UTC')")
        sql = sql.replace("{to:DateTime64(3)}", f"fromUnixTimestamp64Milli({period['to']}, 'UTC')")
        return sql.replace("{event_type:String}", "'" + request["event_type"].replace("'", "\\'") + "'")

    # groupArray of a String column comes back as JSON strings of the raw bytes (latin-1 safe
    # with output_format_json_escape_forward_slashes irrelevant): ask for base64 instead.
    def states_sql(sql):
        return sql.replace("groupArray(users)", "groupArray(base64Encode(users))")

    periods = []
    for period in request["periods"]:
        counts = {
            row["event_type"]: int(row["count"])
            for row in query(bind(queries["counts_by_event_type"], period))
        }
        users_row = query(states_sql(bind(queries["unique_users"], period)))[0]
        one = query(states_sql(bind(queries["one_event_type"], period)))[0]
        periods.append({
            "counts": counts,
            "users": theta_merge([base64.b64decode(s) for s in users_row["users"]]),
            "one_type": {
                "count": int(one["count"]),
                "users": theta_merge([base64.b64decode(s) for s in one["users"]]),
            },
        })
    json.dump({"rows": int(rows), "rows_final": int(rows_final), "periods": periods}, sys.stdout)


main()
