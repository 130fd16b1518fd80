//! The seed services as they really are, on the real broker: their events produced by Go code
//! (the seeds' structs, encoding/json, segmentio/kafka-go with LeastBytes), aggregated by
//! `eddy run`, read back read_committed and through the query API, and checked against an
//! independent reference.

mod common;

use common::reference::{event_time, reference, Produced};
use common::wait_for_exact;
use common::{EddyOptions, EddyProcess};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const START_S: i64 = 1_795_000_000;

fn rfc(ms: i64) -> String {
    eddy::record::format_rfc3339_ms(ms)
}

#[test]
fn go_seed_events_aggregate_exactly_and_the_api_answers_get_metrics() {
    let common::Shipped {
        suffix,
        dir,
        files,
        orders,
        analytics,
        topology,
    } = common::shipped("seed", 3);
    let n = 12_000;
    common::run_go_producer(&[
        "-mode",
        "seed",
        "-orders",
        &orders,
        "-analytics",
        &analytics,
        "-n",
        &n.to_string(),
        "-start",
        &START_S.to_string(),
        "-step-ms",
        "50",
        "-seed",
        "3",
    ]);
    let produced = common::read_back(&[&orders, &analytics]);
    assert_eq!(
        produced.len(),
        n,
        "the Go producer's records are all on the broker"
    );
    let last_ms = produced
        .iter()
        .map(|p| event_time(&topology, &p.topic, &p.value))
        .max()
        .unwrap();
    common::produce_partitioned(&common::closing_records(
        3,
        &orders,
        &analytics,
        (last_ms / 1000 + 86_400) * 1000,
    ));
    let events = common::read_back(&[&orders, &analytics]);
    let expected = reference(&topology, &events);
    assert!(expected.len() > 200, "{} windows", expected.len());

    let app = common::unique("seedapp");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let eddy = EddyProcess::start(&EddyOptions {
        application_id: &app,
        topologies: &files,
        state_dir: dir.path(),
        guarantee: "exactly_once",
        instance: "a",
        extra_env: vec![("EDDY__HTTP__LISTEN".into(), addr.clone())],
    });
    let outputs = common::shipped_outputs(&suffix);
    wait_for_exact(&expected, &outputs, &eddy);
    let dead = common::read_committed(&format!("{app}-dlq"));
    assert!(
        dead.is_empty(),
        "seed events were dead-lettered: {:?}",
        dead.first().map(|r| &r.headers)
    );

    // The query API against the reference: a 5-minute range that does not start on a minute.
    let first_minute = (START_S * 1000 / 60_000 + 1) * 60_000;
    let (from, to) = (first_minute - 15_000, first_minute + 5 * 60_000 + 20_000);
    let (covered_from, covered_to) = (first_minute, first_minute + 5 * 60_000);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (identity, want) in &expected {
        if identity.aggregation == "analytics.by_event_type"
            && identity.start >= covered_from
            && identity.end <= covered_to
        {
            let group: serde_json::Value = serde_json::from_str(&identity.group).unwrap();
            *counts
                .entry(group["eventType"].as_str().unwrap().to_string())
                .or_default() += want.count("events").unwrap();
        }
    }
    let in_range = |p: &&Produced| {
        let t = event_time(&topology, &p.topic, &p.value);
        p.topic == analytics && !p.closing && t >= covered_from && t < covered_to
    };
    let users: BTreeSet<&str> = events
        .iter()
        .filter(in_range)
        .map(|p| p.value["userId"].as_str().unwrap())
        .collect();
    let clicks: BTreeSet<&str> = events
        .iter()
        .filter(in_range)
        .filter(|p| p.value["eventType"] == "click")
        .map(|p| p.value["userId"].as_str().unwrap())
        .collect();
    let path = format!("/api/v1/metrics?from={}&to={}", rfc(from), rfc(to));
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, body) = common::http_get(&addr, &path).unwrap();
        assert_eq!(status, 200, "{body}");
        let got: BTreeMap<String, u64> = body["counts"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        if got == counts || Instant::now() > deadline {
            assert_eq!(
                got,
                counts,
                "counts by event type over [{}, {})",
                rfc(covered_from),
                rfc(covered_to)
            );
            break body;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    println!("GET {path} -> {body}");
    let (estimate, bound) = (
        body["users"].as_u64().unwrap(),
        body["users_error"].as_u64().unwrap(),
    );
    assert!(
        estimate.abs_diff(users.len() as u64) <= bound,
        "users {estimate} ± {bound}, exact {}",
        users.len()
    );
    assert_eq!(body["covered"]["from"], rfc(covered_from));
    assert_eq!(body["covered"]["to"], rfc(covered_to));
    assert_eq!(body["period"]["from"], rfc(from));
    assert_eq!(body["complete"], true);
    assert!(body["users_sketch"].as_str().is_some_and(|s| !s.is_empty()));

    let (status, body) = common::http_get(&addr, &format!("{path}&eventType=click")).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["counts"].as_object().unwrap().len(), 1);
    assert_eq!(
        body["counts"]["click"].as_u64(),
        counts.get("click").copied()
    );
    let click_users = body["event_type_users"].as_u64().unwrap();
    assert!(click_users.abs_diff(clicks.len() as u64) <= bound);

    // The general form: orders and revenue merged over the range, exact.
    let (mut orders_n, mut revenue) = (0u64, 0i128);
    for (identity, want) in &expected {
        if identity.aggregation == "orders.per_minute"
            && identity.start >= covered_from
            && identity.end <= covered_to
        {
            orders_n += want.count("orders").unwrap();
            revenue += want.sum_millionths("revenue").unwrap();
        }
    }
    let (status, body) = common::http_get(
        &addr,
        &format!(
            "/api/v1/aggregations/orders.per_minute?from={}&to={}",
            rfc(from),
            rfc(to)
        ),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"]["values"]["orders"].as_u64(), Some(orders_n));
    let got_revenue = (body["total"]["values"]["revenue"].as_f64().unwrap() * 1e6).round() as i128;
    assert_eq!(got_revenue, revenue);

    // Bad requests: 400 with the parameter named.
    for (path, parameter) in [
        ("/api/v1/metrics?to=2026-11-22T10:00:00Z".to_string(), "from"),
        ("/api/v1/metrics?from=2026-11-22T10:00:00Z&to=tomorrow".into(), "to"),
        ("/api/v1/metrics?from=2026-11-22T11:00:00Z&to=2026-11-22T10:00:00Z".into(), "from"),
        ("/api/v1/metrics?from=2026-11-22T10:00:00Z&to=2026-11-22T11:00:00Z&event_type=x".into(), "event_type"),
        ("/api/v1/aggregations/nope?from=2026-11-22T10:00:00Z&to=2026-11-22T11:00:00Z".into(), "name"),
        ("/api/v1/aggregations/analytics.by_event_type?from=2026-11-22T10:00:00Z&to=2026-11-22T11:00:00Z&color=red".into(), "color"),
    ] {
        let (status, body) = common::http_get(&addr, &path).unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["parameter"], parameter, "{path}: {body}");
    }
    let (status, body) = common::http_get(&addr, "/api/v1/openapi.json").unwrap();
    assert_eq!(status, 200);
    assert!(body["paths"]["/api/v1/metrics"].is_object());
    assert!(
        !eddy.log_text().contains("/api/v1/metrics"),
        "requests are not logged"
    );

    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
}

/// Seed 001's two versioning styles at once: a topic per version, and a `version` field.
#[test]
fn versioned_go_events_aggregate_across_topics_and_versions() {
    let suffix = common::unique("versions");
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (
        format!("order.created.v1.{suffix}"),
        format!("order.created.v2.{suffix}"),
    );
    let file = dir.path().join("versions.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[source]]
name = "orders"
topics = ["{v1}", "{v2}"]
schema = "order_created"
time = {{ field = "timestamp", format = "epoch_s" }}

[[source.version]]
version = 2
topic = "{v2}"
fields = {{ user_id = "customer_id", total_amount = "total" }}

[[aggregation]]
name = "orders.per_minute"
source = "orders"
window = {{ type = "tumbling", size = "1m" }}
grace = "30s"
output = "order-aggregates-{suffix}"
[aggregation.aggregates]
orders = "count"
revenue = "sum(total_amount)"
buyers = "distinct(user_id)"
"#
        ),
    )
    .unwrap();
    let topology = eddy::topology::Topology::from_file(&file).unwrap();
    common::create_topics(&[(&v1, 2), (&v2, 2)]);
    let n = 3_000;
    common::run_go_producer(&[
        "-mode",
        "versions",
        "-v1",
        &v1,
        "-v2",
        &v2,
        "-n",
        &n.to_string(),
        "-start",
        &START_S.to_string(),
        "-step-ms",
        "100",
        "-seed",
        "5",
    ]);
    // Closing records on every partition of both topics, each in its topic's version.
    let mut closing = Vec::new();
    for (topic, value) in [
        (
            &v1,
            serde_json::json!({"order_id": "closing", "user_id": "closer", "items": [], "total_amount": 0, "timestamp": START_S + 86_400}),
        ),
        (
            &v2,
            serde_json::json!({"order_id": "closing", "customer_id": "closer", "items": [], "total": 0, "timestamp": START_S + 86_400}),
        ),
    ] {
        for partition in 0..2 {
            closing.push(Produced {
                topic: topic.clone(),
                partition,
                key: "closer".into(),
                value: value.clone(),
                closing: true,
            });
        }
    }
    common::produce_partitioned(&closing);
    // The reference reads each version's fields by the names it was written with, independently.
    let mut events = common::read_back(&[&v1, &v2]);
    let mut unknown = 0;
    events.retain_mut(|e| {
        let version = e
            .value
            .get("version")
            .and_then(|v| v.as_i64())
            .unwrap_or(if e.topic == v2 { 2 } else { 1 });
        match version {
            1 => true,
            2 => {
                let object = e.value.as_object_mut().unwrap();
                let user = object.remove("customer_id").unwrap();
                let total = object.remove("total").unwrap();
                object.insert("user_id".into(), user);
                object.insert("total_amount".into(), total);
                true
            }
            _ => {
                unknown += 1;
                false
            }
        }
    });
    assert_eq!(unknown, 1);
    let expected = reference(&topology, &events);

    let app = common::unique("versionsapp");
    let eddy = EddyProcess::start(&EddyOptions {
        application_id: &app,
        topologies: std::slice::from_ref(&file),
        state_dir: dir.path(),
        guarantee: "exactly_once",
        instance: "a",
        extra_env: vec![],
    });
    wait_for_exact(&expected, &[format!("order-aggregates-{suffix}")], &eddy);
    let total: u64 = expected.values().filter_map(|e| e.count("orders")).sum();
    assert_eq!(total, n as u64, "every v1 and v2 order is counted");
    let dead = common::read_committed(&format!("{app}-dlq"));
    assert_eq!(dead.len(), 1, "only the version-3 record is dead-lettered");
    let reason = dead[0]
        .headers
        .iter()
        .find(|(k, _)| k == "eddy.error")
        .map(|(_, v)| String::from_utf8_lossy(v).to_string())
        .unwrap();
    assert!(
        reason.contains("unknown schema version 3") && reason.contains("[1, 2]"),
        "{reason}"
    );
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
}

/// The API reads committed output only: an open transaction's records are not visible, and an
/// aborted transaction's records never are.
#[test]
fn the_api_never_answers_from_open_or_aborted_transactions() {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let suffix = common::unique("apitxn");
    let out = format!("clicks-out-{suffix}");
    common::create_topics(&[(&out, 1)]);
    let topology = eddy::topology::Topology::builder()
        .source(
            eddy::topology::SourceBuilder::new("clicks", "clicks", eddy::topology::Schema::Json)
                .build(),
        )
        .aggregation(
            eddy::topology::AggregationBuilder::new("clicks.per_minute", "clicks", &out)
                .aggregate("n", eddy::topology::AggregateKind::Count)
                .build(),
        )
        .build()
        .unwrap();
    let api = eddy::api::ApiState::new(&topology);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    eddy::api::spawn_materializer(
        common::settings(),
        vec![out.clone()],
        api.index.clone(),
        stop.clone(),
    )
    .unwrap();
    let addr = eddy::telemetry::serve_http(
        "127.0.0.1:0",
        None,
        eddy::telemetry::Health::default(),
        Some(api),
    )
    .unwrap()
    .to_string();
    let producer = |id: &str| -> BaseProducer {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", common::bootstrap())
            .set("transactional.id", format!("{id}-{suffix}"))
            .create()
            .unwrap();
        p.init_transactions(Duration::from_secs(30)).unwrap();
        p
    };
    let record = |minute: i64, n: u64| {
        serde_json::json!({"aggregation": "clicks.per_minute", "window": {"start": minute * 60_000, "end": (minute + 1) * 60_000},
            "group": {}, "values": {"n": n}, "sketches": {}, "final": true})
        .to_string()
    };
    let send = |p: &BaseProducer, minute: i64, n: u64| {
        let value = record(minute, n);
        let key = format!("k{minute}");
        p.send(BaseRecord::to(&out).key(&key).payload(&value))
            .unwrap();
        p.flush(Duration::from_secs(30)).unwrap();
    };
    let total = || -> (u64, u64) {
        let (status, body) = common::http_get(&addr, "/api/v1/aggregations/clicks.per_minute?from=1970-01-01T00:00:00Z&to=1970-01-01T01:00:00Z").unwrap();
        assert_eq!(status, 200, "{body}");
        (
            body["total"]["values"]["n"].as_u64().unwrap(),
            body["total"]["windows"].as_u64().unwrap(),
        )
    };
    let committed = producer("committed");
    committed.begin_transaction().unwrap();
    send(&committed, 1, 5);
    committed
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    common::wait_for("the committed window", Duration::from_secs(60), || {
        total() == (5, 1)
    });

    let aborted = producer("aborted");
    aborted.begin_transaction().unwrap();
    send(&aborted, 0, 999);
    send(&aborted, 1, 777);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        total(),
        (5, 1),
        "an open transaction's output is not answered"
    );
    aborted.abort_transaction(Duration::from_secs(30)).unwrap();

    committed.begin_transaction().unwrap();
    send(&committed, 2, 7);
    committed
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    common::wait_for(
        "the second committed window",
        Duration::from_secs(60),
        || total().1 >= 2,
    );
    assert_eq!(
        total(),
        (12, 2),
        "the aborted transaction's windows never reach the answer"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}
