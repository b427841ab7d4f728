//! JSON numbers that no reader can hold as a number.
//!
//! JSON puts no limit on a number's size, but every reader on the way does: serde_json
//! (our encoders, Vector's `json` codec) refuses a number beyond f64's range (`1e400`, an
//! integer of 400 digits), and msgpack has no form for one. Such an event is still a valid
//! event of the audit trail, so it is not left out: each such number is written as a string
//! holding its JSON text, which keeps every digit.

/// `json` with every number beyond f64's range quoted, or `None` when it has none.
///
/// A byte scan, not a parser: outside strings, a JSON number is the only token that starts
/// with `-` or a digit (keys are strings; `true`, `false`, `null` are letters).
pub fn quoted(json: &str) -> Option<String> {
    let b = json.as_bytes();
    let mut out = String::new();
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let text = &json[start..i];
                if text.parse::<f64>().is_ok_and(f64::is_infinite) {
                    out.push_str(&json[copied..start]);
                    out.push('"');
                    out.push_str(text);
                    out.push('"');
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    (copied > 0).then(|| {
        out.push_str(&json[copied..]);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn numbers_beyond_f64_become_their_text() {
        let digits = "9".repeat(400);
        let json = format!(r#"{{"a":1e400,"b":[-1E+999, 2.5e3],"c":{digits},"d":1.5}}"#);
        assert_eq!(
            quoted(&json).unwrap(),
            format!(r#"{{"a":"1e400","b":["-1E+999", 2.5e3],"c":"{digits}","d":1.5}}"#)
        );
    }

    #[test]
    fn strings_and_numbers_in_range_are_left_alone() {
        assert_eq!(
            quoted(r#"{"a":"1e400","b":"x\"1e400","n":-0.5e-400}"#),
            None
        );
        assert_eq!(
            quoted(r#"{"a":18446744073709551616,"b":1.7976931348623157e308}"#),
            None
        );
        assert_eq!(
            quoted(r#"{"s":"\\","n":1e309}"#).unwrap(),
            r#"{"s":"\\","n":"1e309"}"#
        );
    }
}
