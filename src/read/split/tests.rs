use super::*;

const FALLBACK: EventTime = match EventTime::from_parts(1_000, 0) {
    Some(t) => t,
    None => panic!(),
};

fn opts(skip: u64) -> SplitOptions {
    SplitOptions {
        skip,
        passed: Vec::new(),
        fallback: FALLBACK,
        max_event_bytes: 1 << 20,
    }
}

fn run(json: &str, skip: u64) -> (Vec<(u64, String, u32)>, SplitOutcome) {
    let mut got = Vec::new();
    let out = split(json.as_bytes(), opts(skip), |e| {
        got.push((e.index, e.json.to_string(), e.time.secs()));
        Ok(())
    });
    (got, out)
}

/// A reader that returns one byte per read: every token crosses a window boundary.
struct Trickle<'a>(&'a [u8]);
impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.split_first() {
            Some((c, rest)) if !buf.is_empty() => {
                buf[0] = *c;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn splits_records_keeping_the_text() {
    let (got, out) = run(
        r#" {"Records" : [ {"eventTime":"2023-07-10T11:42:36Z","b":1.50,"a":"\u00e9"} , {"x":null}]}
"#,
        0,
    );
    assert_eq!(out.error, None);
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].1,
        r#"{"eventTime":"2023-07-10T11:42:36Z","b":1.50,"a":"\u00e9"}"#
    );
    assert_eq!(got[0].2, 1_688_989_356);
    assert_eq!(got[1], (1, r#"{"x":null}"#.to_string(), 1_000));
    assert_eq!(out.stats.fallback_time, 1);
    assert_eq!(out.stats.position, 2);
}

#[test]
fn the_same_events_whatever_the_read_sizes() {
    let json = r#"{"a":{"b":"]}\"["},"Records":[{"k":"v\\","eventTime":"2023-07-10T11:42:36Z","n":[1,{"x":"}"}]},{"eventTime":"x"},7,true]}"#;
    let (want, _) = run(json, 0);
    let mut got = Vec::new();
    let out = split(Trickle(json.as_bytes()), opts(0), |e| {
        got.push((e.index, e.json.to_string(), e.time.secs()));
        Ok(())
    });
    assert_eq!(out.error, None);
    assert_eq!(got, want);
    assert_eq!(got.len(), 2);
    assert_eq!(out.stats.not_objects, 2);
}

#[test]
fn skip_resumes_after_shipped_events() {
    let (got, out) = run(r#"{"Records":[{"i":0},{"i":1},{"i":2}]}"#, 2);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![2]);
    assert_eq!(out.stats.position, 3);
    assert_eq!(out.stats.events, 1);
}

#[test]
fn ranges_delivered_ahead_are_passed() {
    let json = r#"{"Records":[{"i":0},{"i":1},{"i":2},{"i":3},{"i":4},{"i":5}]}"#;
    let mut got = Vec::new();
    let options = SplitOptions {
        passed: vec![(2, 4), (5, 6)],
        ..opts(1)
    };
    let out = split(json.as_bytes(), options, |e| {
        got.push(e.index);
        Ok(())
    });
    assert_eq!(out.error, None);
    assert_eq!(got, vec![1, 4]);
    assert_eq!(
        out.stats.position, 6,
        "the position counts the passed elements"
    );
}

#[test]
fn odd_event_times_fall_back() {
    let (got, out) = run(
        r#"{"Records":[{"eventTime":12},{"eventTime":"yesterday"},{"eventTime":"2023-07-10t11:42:36.25+00:00"}]}"#,
        0,
    );
    assert_eq!(out.stats.fallback_time, 2);
    assert_eq!(got[2].2, 1_688_989_356);
}

#[test]
fn times_the_host_cannot_carry_take_the_fallback_with_their_reason() {
    let (got, out) = run(
        r#"{"Records":[{"eventTime":"2106-02-07T06:28:14Z"},{"eventTime":"2106-02-07T06:28:15Z"},{"eventTime":"2200-01-01T00:00:00Z"},{"eventTime":"1969-12-31T23:59:59Z"},{"eventTime":"2023-07-10T11:42:36Z"},{"eventTime":"soon"},{"x":1}]}"#,
        0,
    );
    assert_eq!(out.error, None);
    let secs: Vec<u32> = got.iter().map(|g| g.2).collect();
    assert_eq!(
        secs,
        [1_000, 1_000, 1_000, 1_000, 1_688_989_356, 1_000, 1_000]
    );
    assert_eq!(
        out.stats.fallback,
        FallbackReasons {
            missing: 1,
            unreadable: 1,
            before_1970: 1,
            beyond_host: 3,
        }
    );
    assert_eq!(out.stats.fallback_time, out.stats.fallback.total());
    assert_eq!(
        out.stats.fallback.to_string(),
        "1 without eventTime, 1 with an unreadable eventTime, 1 with an eventTime before \
         1970, 3 with an eventTime from 2106-02-07T06:28:14Z on (beyond Fluent Bit's range)"
    );
}

#[test]
fn errors_say_what_is_wrong() {
    let cases = [
        (r#"{"Records":[{"a":1},{"b":"#, "truncated"),
        (r#"{"digestStartTime":"x"}"#, "no 'Records'"),
        (r#"{"Records":{}}"#, "not an array"),
        (r#"[1,2]"#, "top level"),
        (r#"{"Records":[]} junk"#, "invalid JSON"),
        (r#"{"Records":[{}] "x":1}"#, "invalid JSON"),
        // Found by the fuzzer: a `]` closing an object was taken for the event's end.
        (r#"{"Records":[{"a":[1}]]}"#, "mismatched brackets"),
        (r#"{"Records":[{"a":1]]}"#, "mismatched brackets"),
        ("", "truncated"),
        ("{}", "no 'Records'"),
    ];
    for (json, want) in cases {
        let (_, out) = run(json, 0);
        let err = out.error.expect(json).to_string();
        assert!(err.contains(want), "{json}: {err}");
    }
    let (got, out) = run(r#"{"Records":[{"a":1},{"b":"#, 0);
    assert_eq!(
        got.len(),
        1,
        "events before the damage are still handed over"
    );
    assert_eq!(out.stats.position, 1);
}

#[test]
fn nesting_is_bounded() {
    let deep = format!(r#"{{"Records":[{}{}]}}"#, "[".repeat(200), "]".repeat(200));
    let (_, out) = run(&deep, 0);
    assert!(
        out.error
            .unwrap()
            .to_string()
            .contains("nested deeper than 128")
    );
    let ok = format!(
        r#"{{"Records":[{{"a":{}1{}}}]}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let (got, out) = run(&ok, 0);
    assert_eq!((got.len(), out.error), (1, None));
}

#[test]
fn event_larger_than_the_limit_is_an_error() {
    let big = format!(r#"{{"Records":[{{"a":"{}"}}]}}"#, "x".repeat(2 << 20));
    let out = split(big.as_bytes(), opts(0), |_| Ok(()));
    assert_eq!(out.error, Some(SplitError::EventTooLarge(1 << 20)));
}

#[test]
fn callback_can_stop() {
    let mut n = 0;
    let out = split(&br#"{"Records":[{},{},{}]}"#[..], opts(0), |_| {
        n += 1;
        if n == 2 { Err(Stop) } else { Ok(()) }
    });
    assert_eq!(out.error, Some(SplitError::Stopped));
    assert_eq!(out.stats.position, 2);
}
