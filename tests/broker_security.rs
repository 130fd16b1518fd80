//! eddy against the test broker's SASL_SSL listener (SCRAM-SHA-512, a CA and a broker
//! certificate made at start, the KRaft StandardAuthorizer; see `scripts/kafka`):
//! - the vertical slice runs exactly-once over it, with the password read from a file;
//! - a wrong password stops eddy at once, naming the mechanism and the user;
//! - a principal denied WRITE on an output topic stops eddy naming the topic and the operation;
//!   the transaction that needed it is aborted, so nothing reaches that topic;
//! - no password appears in any log line.

mod common;

use common::reference::reference;
use common::EddyProcess;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the broker tests with `scripts/test` or `scripts/kafka run -- cargo test --release`")
    })
}

fn password() -> String {
    std::fs::read_to_string(var("EDDY_TEST_SASL_PASSWORD_FILE"))
        .unwrap()
        .trim()
        .to_string()
}

/// eddy's settings for the SASL_SSL listener; the password from its file unless `wrong` is given.
fn sasl_env(wrong: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("EDDY__BOOTSTRAP_SERVERS", var("EDDY_TEST_SASL_BOOTSTRAP")),
        ("EDDY__KAFKA__SECURITY_PROTOCOL", "SASL_SSL".into()),
        ("EDDY__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512".into()),
        ("EDDY__KAFKA__SASL_USERNAME", var("EDDY_TEST_SASL_USER")),
        ("EDDY__KAFKA__SSL_CA_LOCATION", var("EDDY_TEST_SASL_CA")),
        // Every librdkafka message, so the no-password check below sees the most there is.
        ("RUST_LOG", "debug".into()),
    ];
    match wrong {
        Some(password) => env.push(("EDDY__KAFKA__SASL_PASSWORD", password.into())),
        None => env.push((
            "EDDY__KAFKA__SASL_PASSWORD_FILE",
            var("EDDY_TEST_SASL_PASSWORD_FILE"),
        )),
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn wait_exit(process: &mut EddyProcess, within: Duration) -> (i32, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "eddy did not stop within {within:?}:\n{}",
            process.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_no_password(log: &str, passwords: &[&str]) {
    for password in passwords {
        assert!(!log.contains(password), "a password appears in eddy's log");
    }
}

#[test]
fn sasl_ssl_scram_runs_the_vertical_slice_exactly_once() {
    let run = common::shipped("sasl", 2);
    let config = eddy::events::GeneratorConfig {
        seed: 51,
        users: 200,
        step_ms: 40.0,
        ..Default::default()
    };
    let events = common::generate(6_000, 2, &run.orders, &run.analytics, config);
    let expected = reference(&run.topology, &events);
    common::produce_partitioned(&events);
    let app = common::unique("saslapp");
    let eddy = run.start(&app, "a", sasl_env(None));
    common::wait_for_exact(&expected, &run.outputs(), &eddy);
    let log = eddy.log_text();
    assert!(log.contains("SASL_SSL"), "eddy ran over SASL_SSL:\n{log}");
    assert_no_password(&log, &[&password()]);
    assert_eq!(eddy.stop(Duration::from_secs(60)), 0);
}

#[test]
fn a_wrong_password_stops_eddy_at_once_naming_the_mechanism_and_the_user() {
    let run = common::shipped("saslwrong", 1);
    let app = common::unique("saslwrongapp");
    let wrong = format!("wrong-{}", common::unique("pw"));
    let mut eddy = run.start(&app, "a", sasl_env(Some(&wrong)));
    let (code, took) = wait_exit(&mut eddy, Duration::from_secs(60));
    let log = eddy.log_text();
    println!("a wrong password stopped eddy after {took:?} with exit code {code}");
    if let Some(line) = log
        .lines()
        .find(|l| l.contains("refused eddy's credentials"))
    {
        println!("{line}");
    }
    assert_ne!(code, 0);
    assert!(
        log.contains("SCRAM-SHA-512") && log.contains("`eddy`") && log.contains("sasl.password"),
        "the error names the mechanism, the user and what to fix:\n{log}"
    );
    assert!(took < Duration::from_secs(30), "it failed fast: {took:?}");
    assert_no_password(&log, &[&wrong, &password()]);
}

#[test]
fn a_principal_without_write_on_an_output_topic_stops_eddy_naming_topic_and_operation() {
    let run = common::shipped("saslacl", 2);
    let denied = format!("analytics-aggregates-{}", run.suffix);
    let status = Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka"))
        .args(["acl", "deny", "User:eddy", "WRITE", "TOPIC", &denied])
        .status()
        .unwrap();
    assert!(status.success(), "scripts/kafka acl");
    let config = eddy::events::GeneratorConfig {
        seed: 52,
        users: 100,
        step_ms: 40.0,
        ..Default::default()
    };
    common::produce_partitioned(&common::generate(
        3_000,
        2,
        &run.orders,
        &run.analytics,
        config,
    ));
    let app = common::unique("saslaclapp");
    let mut eddy = run.start(&app, "a", sasl_env(None));
    let (code, took) = wait_exit(&mut eddy, Duration::from_secs(120));
    let log = eddy.log_text();
    println!("a missing WRITE ACL stopped eddy after {took:?} with exit code {code}");
    assert_ne!(code, 0);
    let error = log
        .lines()
        .rev()
        .find(|l| l.contains(&denied) && l.contains("WRITE"))
        .unwrap_or_else(|| panic!("the error names {denied} and WRITE:\n{log}"));
    println!("{error}");
    assert!(
        common::read_aggregates(&denied).is_empty(),
        "nothing committed to the denied topic"
    );
    assert_no_password(&log, &[&password()]);
}
