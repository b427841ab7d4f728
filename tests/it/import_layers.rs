//! The library's top-level modules import one another without a circle (issue 17: "no
//! import circle"), so each stage can be read, tested and replaced from the bottom up. The
//! imports are read from the source (`crate::MODULE` paths outside test code).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each top-level module's imports of the others, test code left out (a test may reach up).
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files {
        let rel = path
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs");
        let name = path.file_name().unwrap().to_string_lossy();
        if matches!(top, "lib" | "main") || name.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for (i, _) in code.match_indices("crate::") {
            let after = &code[i + 7..];
            // `crate::{a::X, b}`: the first segment of each item of the group.
            let names: Vec<&str> = match after.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|item| item.trim().split("::").next().unwrap_or(""))
                    .collect(),
                None => vec![after],
            };
            for name in names {
                let used: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !used.is_empty() && used != top {
                    edges.entry(top.to_string()).or_default().insert(used);
                }
            }
        }
    }
    edges
}

/// A circle through `from`, if any (depth first, the path kept).
fn circle(
    edges: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in edges.get(from).into_iter().flatten() {
        if let Some(at) = path.iter().position(|p| p == next) {
            let mut c = path[at..].to_vec();
            c.push(next.clone());
            return Some(c);
        }
        path.push(next.clone());
        if let Some(c) = circle(edges, next, path) {
            return Some(c);
        }
        path.pop();
    }
    None
}

#[test]
fn top_level_modules_import_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = imports(&src);
    // The imports are read at all (the engine drives the ledger).
    assert!(edges["engine"].contains("ledger"), "{edges:?}");
    for module in edges.keys() {
        let mut path = vec![module.clone()];
        if let Some(c) = circle(&edges, module, &mut path) {
            panic!("import circle: {}", c.join(" -> "));
        }
    }
    // A grouped import is read too.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("low")).unwrap();
    std::fs::write(
        dir.path().join("low/mod.rs"),
        "use crate::{high::X, base};\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("high.rs"), "use crate::low::Y;\n").unwrap();
    let grouped = imports(dir.path());
    let mut path = vec!["low".to_string()];
    assert!(
        circle(&grouped, "low", &mut path).is_some(),
        "a circle through a grouped import is not seen: {grouped:?}"
    );
    let mut planted = edges.clone();
    planted
        .entry("config".into())
        .or_default()
        .insert("ledger".into());
    let mut path = vec!["config".to_string()];
    assert!(
        circle(&planted, "config", &mut path).is_some(),
        "a planted config -> ledger import is not seen as a circle"
    );
}
