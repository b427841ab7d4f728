//! The harness's own checks, run with every `cargo test` (no host needed): the pieces
//! that decide pass or fail must themselves be right.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use libtest_mimic::Failed;

use crate::check::{first_timestamp, parse_instant};
use crate::data;
use crate::fluent_bit::log_time_ms;
use crate::receiver::{Answer, Receiver};

type Check = fn() -> Result<(), Failed>;

pub fn trials() -> Vec<(&'static str, Check)> {
    vec![
        ("harness::first_timestamp", first_timestamp_is_the_earliest),
        ("harness::log_time", fluent_bit_log_time),
        ("harness::receiver", receiver_reads_what_hosts_send),
    ]
}

fn first_timestamp_is_the_earliest() -> Result<(), Failed> {
    let line = r#"{"userIdentity":{"creationDate":"2023-07-10T11:42:31Z"},"eventTime":"2023-07-10T11:47:39Z"}"#;
    assert_eq!(
        first_timestamp(line).as_deref(),
        Some("2023-07-10T11:42:31Z")
    );
    for (text, want) in [
        (
            r#"{"timestamp":"2023-07-10T11:42:36.000000Z","a":1}"#,
            Some("2023-07-10T11:42:36.000000Z"),
        ),
        (
            r#"{"@timestamp":"2023-07-10T11:42:36+02:00"}"#,
            Some("2023-07-10T11:42:36+02:00"),
        ),
        (
            r#"{"t":"2023-07-10 11:42:36"}"#,
            Some("2023-07-10 11:42:36"),
        ),
        (r#"{"id":"12023-07-10T11:42:36Z"}"#, None),
        (r#"{"date":1688989659.0}"#, None),
    ] {
        assert_eq!(first_timestamp(text).as_deref(), want, "{text}");
    }
    assert_eq!(
        parse_instant("2023-07-10T11:47:39.000000Z"),
        parse_instant("2023-07-10T11:47:39Z")
    );
    assert_eq!(
        parse_instant("2023-07-10T13:47:39+02:00"),
        parse_instant("2023-07-10 11:47:39")
    );
    Ok(())
}

fn fluent_bit_log_time() -> Result<(), Failed> {
    // 2026-11-24T16:25:26.376Z
    let want = 1_795_537_526_376;
    assert_eq!(
        log_time_ms("[2026/11/24 16:25:26.376] [debug] [input:cloudtrail] paused by the host"),
        Some(want)
    );
    assert_eq!(
        log_time_ms("[2026/11/24 16:25:26.376800149] [ info] x"),
        Some(want),
        "4.x prints nanoseconds"
    );
    // 4.1.2 prints tv_nsec with %03ld: 82,860,916 ns after 16:25:26 (seen in its log,
    // between lines at .82147118 and .578903835).
    assert_eq!(
        log_time_ms("[2026/11/24 16:25:26.82860916] [debug] x"),
        Some(want - 376 + 82),
        "4.x does not pad the nanoseconds"
    );
    assert_eq!(log_time_ms("Fluent Bit v5.1.1"), None);
    Ok(())
}

fn post(conn: &mut TcpStream, head: &str, body: &[u8]) -> String {
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).unwrap();
        answer.push(byte[0]);
    }
    String::from_utf8(answer).unwrap()
}

fn receiver_reads_what_hosts_send() -> Result<(), Failed> {
    let rx = Receiver::start();
    let mut conn = TcpStream::connect(("127.0.0.1", rx.port())).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // gzip with Content-Length, then chunked, on one kept-alive connection.
    let gz = data::gzip(b"{\"a\":1}\n{\"a\":2}\n");
    let head = format!(
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\nX-Sumo-Category: c\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    );
    assert!(post(&mut conn, &head, &gz).starts_with("HTTP/1.1 200"));
    let chunked = b"4\r\n{\"a\"\r\n3\r\n:3}\r\n0\r\n\r\n";
    let head = "POST /y HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert!(post(&mut conn, head, chunked).starts_with("HTTP/1.1 200"));
    // A refused body is not received.
    rx.answer(Answer::Status(503));
    let head = "POST /z HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n";
    assert!(post(&mut conn, head, b"{\"a\":4}\n").starts_with("HTTP/1.1 503"));
    let lines: Vec<(String, String)> = rx.lines().into_iter().map(|l| (l.path, l.text)).collect();
    let want = [
        ("/x", "{\"a\":1}"),
        ("/x", "{\"a\":2}"),
        ("/y", "{\"a\":3}"),
    ];
    assert_eq!(
        lines,
        want.map(|(p, t)| (p.to_string(), t.to_string())).to_vec()
    );
    assert_eq!(rx.requests()[0].header("x-sumo-category"), Some("c"));
    assert_eq!(rx.rejected(), 1);
    assert!(rx.bad().is_empty());
    Ok(())
}
