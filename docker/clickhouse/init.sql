-- eddy's per-minute analytics aggregates in ClickHouse, with unique users mergeable over any range.
--
-- Run once (the docker stack mounts this file into /docker-entrypoint-initdb.d/). It reads the
-- `analytics-aggregates` output topic and keeps one row per (aggregation, group, window):
--
--   Kafka table (one JSON record per message)  ->  materialized view  ->  ReplacingMergeTree
--
-- The Kafka engine reads at least once: a batch it inserted may be read and inserted again after
-- a restart. The ReplacingMergeTree keys rows by (aggregation, group, window start), so a
-- redelivered record replaces its copy, and queries read with FINAL to see the replaced state
-- before background merges catch up. A Theta union of a sketch with itself is the sketch again,
-- so nothing a redelivery leaves behind changes a unique count either.
--
-- Topics read with `read_committed` (config.d/eddy-kafka.xml sets isolation.level), so
-- aggregates of an aborted eddy transaction are never seen.
--
-- The shipped topology keeps a Theta sketch for `unique_users` of analytics.by_event_type and
-- analytics.overall (`distinct(userId, theta)`); eddy writes it base64 under
-- `theta_sketches.unique_users` of each output record.

CREATE DATABASE IF NOT EXISTS eddy;

-- LEB128 length prefix ClickHouse puts before an aggregate state's bytes (VarUInt). Theta
-- sketches at lg_k 12 stay under 62 KB, so three bytes always suffice.
CREATE FUNCTION IF NOT EXISTS eddyVarUInt AS (n) -> multiIf(
    n < 128, char(n),
    n < 16384, char(n % 128 + 128, intDiv(n, 128)),
    char(n % 128 + 128, intDiv(n, 128) % 128 + 128, intDiv(n, 16384)));

-- One eddy output record per Kafka message, as a JSON string.
CREATE TABLE IF NOT EXISTS eddy.analytics_aggregates_queue (record String)
ENGINE = Kafka
SETTINGS kafka_broker_list = 'kafka:9092',
         kafka_topic_list = 'analytics-aggregates',
         kafka_group_name = 'clickhouse-eddy-analytics',
         kafka_format = 'JSONAsString';

-- One row per (aggregation, group, window); the latest insert of a key wins.
CREATE TABLE IF NOT EXISTS eddy.analytics_minutes
(
    aggregation LowCardinality(String),
    group_key String,
    event_type LowCardinality(String),
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    events UInt64,
    users AggregateFunction(uniqTheta, String)
)
ENGINE = ReplacingMergeTree
ORDER BY (aggregation, group_key, window_start);

-- Final per-minute records of the two aggregations that carry a Theta sketch. `group_key` is the
-- record's group as JSON (`{}` for analytics.overall); `event_type` is '' there.
CREATE MATERIALIZED VIEW IF NOT EXISTS eddy.analytics_minutes_mv TO eddy.analytics_minutes AS
SELECT
    JSONExtractString(record, 'aggregation') AS aggregation,
    JSONExtractRaw(record, 'group') AS group_key,
    JSONExtractString(record, 'group', 'eventType') AS event_type,
    fromUnixTimestamp64Milli(JSONExtractInt(record, 'window', 'start'), 'UTC') AS window_start,
    fromUnixTimestamp64Milli(JSONExtractInt(record, 'window', 'end'), 'UTC') AS window_end,
    JSONExtractUInt(record, 'values', 'events') AS events,
    CAST(concat(eddyVarUInt(length(theta)), theta) AS AggregateFunction(uniqTheta, String)) AS users
FROM
(
    SELECT record, base64Decode(JSONExtractString(record, 'theta_sketches', 'unique_users')) AS theta
    FROM eddy.analytics_aggregates_queue
)
WHERE JSONExtractBool(record, 'final')
  AND JSONExtractString(record, 'aggregation') IN ('analytics.by_event_type', 'analytics.overall')
  AND length(theta) > 0;
