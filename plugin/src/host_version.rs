//! Which Fluent Bit the plugin was loaded into, when that can be told safely.
//!
//! The ABI has no version handshake (ABI doc section 10), yet one field depends on it:
//! `config_map` at offset 40 of the registration struct exists only from 5.1.1 on, and
//! older hosts allocate 32 or 40 bytes, so writing it there corrupts their heap. No exported
//! symbol of the host carries its version (checked against the 5.1.0 -> 5.1.1 diff: the
//! change that added `config_map` exports nothing new). The version is in the executable's
//! read-only data, in the NATS output's CONNECT line, `"lang":"c","version":"5.1.1"`, built
//! from `FLB_VERSION_STR`. The plugin reads it from `/proc/self/exe`: when it is absent (an
//! embedding program, a build without out_nats), the version is unknown and the plugin
//! writes nothing past offset 31, which every host has.

/// The marker that precedes the version string in the executable.
const MARKER: &[u8] = br#""lang":"c","version":""#;

/// A Fluent Bit version.
pub type Version = (u32, u32, u32);

/// The first release whose registration struct has `config_map` (fluent/fluent-bit#12058).
pub const CONFIG_MAP_SINCE: Version = (5, 1, 1);

/// The version of the running executable, if it is a Fluent Bit that says so.
pub fn running() -> Option<Version> {
    let exe = std::fs::File::open("/proc/self/exe").ok()?;
    find_in(exe, 1 << 20)
}

/// The version in an executable read `chunk` bytes at a time. Reading the whole file at
/// once cost its size in memory (8 MB for Fluent Bit; 222 MB for a benchmark host built
/// with debug information, which made that host's peak RSS a measure of its own size).
fn find_in(mut exe: impl std::io::Read, chunk: usize) -> Option<Version> {
    // A marker and its version cut by a chunk's end are whole in the next window.
    let keep = MARKER.len() + 32;
    let mut window: Vec<u8> = Vec::with_capacity(chunk + keep);
    loop {
        let at = window.len();
        window.resize(at + chunk, 0);
        let n = loop {
            match exe.read(&mut window[at..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        };
        window.truncate(at + n);
        if let Some(v) = find(&window) {
            return Some(v);
        }
        if n == 0 {
            return None;
        }
        let cut = window.len().saturating_sub(keep);
        window.drain(..cut);
    }
}

/// The version after the marker in an executable's bytes.
pub fn find(exe: &[u8]) -> Option<Version> {
    let at = memchr::memmem::find(exe, MARKER)? + MARKER.len();
    let rest = &exe[at..exe.len().min(at + 32)];
    let end = rest.iter().position(|&b| b == b'"')?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_after_the_marker() {
        let exe = br#"junk CONNECT {"verbose":false,"name":"fluent-bit","lang":"c","version":"5.1.1"} more"#;
        assert_eq!(find(exe), Some((5, 1, 1)));
        let old = br#"{"lang":"c","version":"4.1.2"}"#;
        assert_eq!(find(old), Some((4, 1, 2)));
        assert!(find(old).unwrap() < CONFIG_MAP_SINCE);
        assert_eq!(find(br#""lang":"c","version":"5.1"}"#), None);
        assert_eq!(find(br#""lang":"c","version":"x.y.z"}"#), None);
        assert_eq!(find(b"no marker here"), None);
    }

    #[test]
    fn finds_the_version_across_chunk_ends_without_reading_all_at_once() {
        let mut exe = vec![b'x'; 1000];
        exe.extend_from_slice(br#""lang":"c","version":"5.1.1"}"#);
        exe.extend_from_slice(&[b'y'; 500]);
        for chunk in [1, 7, 64, 1009, 1020, 4096] {
            assert_eq!(find_in(&exe[..], chunk), Some((5, 1, 1)), "chunk {chunk}");
        }
        assert_eq!(find_in(&[b'z'; 3000][..], 64), None);
    }
}
