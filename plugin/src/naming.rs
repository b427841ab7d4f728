//! The input name a loaded copy of the plugin registers, derived from its file name.
//!
//! Fluent Bit sends pause and resume to the last initialized instance of a plugin, not to
//! the one that should pause (ABI doc section 6), so two `[INPUT]`s of one loaded file get
//! each other's backpressure. Copies of the `.so` under different file names are separate
//! plugins with their own statics, and pause/resume then reach the right instance; each copy
//! needs its own input name, so the name follows the file name.

/// The name for the default file name (`libcloudtrail_s3_plugin.so`), and the fallback.
pub const DEFAULT_NAME: &str = "cloudtrail";

/// `libcloudtrail_s3_plugin.so` -> `cloudtrail`; `/opt/cloudtrail_prod.so` ->
/// `cloudtrail_prod`; `libcloudtrail-EU.so` -> `cloudtrail_eu`. The stem loses a leading
/// `lib` and everything from the first `.`; letters are lower-cased and any other character
/// outside `[a-z0-9_]` becomes `_`, so the name is a plain word Fluent Bit matches as given.
pub fn input_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split('.').next().unwrap_or(file);
    let stem = stem.strip_prefix("lib").unwrap_or(stem);
    if stem.is_empty() || stem == "cloudtrail_s3_plugin" {
        return DEFAULT_NAME.to_string();
    }
    stem.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_file_name() {
        for (path, name) in [
            ("/x/target/debug/libcloudtrail_s3_plugin.so", "cloudtrail"),
            ("libcloudtrail_s3_plugin.so", "cloudtrail"),
            ("/opt/flb/cloudtrail_prod.so", "cloudtrail_prod"),
            ("/opt/flb/libcloudtrail-EU.so", "cloudtrail_eu"),
            ("/opt/flb/cloudtrail.so", "cloudtrail"),
            ("/opt/flb/lib.so", "cloudtrail"),
            ("/opt/flb/ct 2.so.1", "ct_2"),
        ] {
            assert_eq!(input_name(path), name, "{path}");
        }
    }
}
