-- Seed 002's GetMetrics(from, to, eventType) over eddy's minutes in ClickHouse (see init.sql).
-- Periods are [from, to) in whole minutes; pass them as parameters, e.g.
--   clickhouse-client --param_from='2026-12-07 10:00:00' --param_to='2026-12-07 11:00:00' \
--     --param_event_type='purchase' --queries-file docker/clickhouse/queries.sql
-- FINAL makes a redelivered record count once even before background merges replace it.

-- name: counts_by_event_type
-- Events per type in the period (GetEventCounts).
SELECT event_type, sum(events) AS count
FROM eddy.analytics_minutes FINAL
WHERE aggregation = 'analytics.by_event_type'
  AND window_start >= {from:DateTime64(3)} AND window_end <= {to:DateTime64(3)}
GROUP BY event_type
ORDER BY event_type;

-- name: unique_users
-- Unique users in the period (GetUniqueUsers): the union of every minute's Theta sketch.
SELECT uniqThetaMerge(users) AS users
FROM eddy.analytics_minutes FINAL
WHERE aggregation = 'analytics.overall'
  AND window_start >= {from:DateTime64(3)} AND window_end <= {to:DateTime64(3)};

-- name: one_event_type
-- Events and unique users of one type in the period (GetMetrics with eventType set).
SELECT sum(events) AS count, uniqThetaMerge(users) AS users
FROM eddy.analytics_minutes FINAL
WHERE aggregation = 'analytics.by_event_type'
  AND event_type = {event_type:String}
  AND window_start >= {from:DateTime64(3)} AND window_end <= {to:DateTime64(3)};
