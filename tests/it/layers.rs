//! The library's modules import only down their layers, so that no import cycle comes back
//! between layers: the table below is the layering, and a `use crate::` (or any `crate::` path
//! in code) that runs back up it fails this test with the line that does. Tests and comments are
//! not read. Within one layer modules may use each other (the coordinator and its workers call
//! each other by design).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module not listed fails the test: place a new one on purpose.
const LAYERS: &[&[&str]] = &[
    // Leaves: nothing of ours below them but each other.
    &["clock", "shown", "sys", "redact", "dir_handle", "keys"],
    // Who holds a lock: a record the errors carry.
    &["holder"],
    &["error"],
    // Checked input: URLs, the checked configuration, what an acquire is told.
    &["url", "config", "options"],
    // The seam to Redis (and to the session registry's stores).
    &["backend"],
    &["redis_node", "quorum", "handoff", "fake_node"],
    // The coordinator and its workers; `local` is here because the one-machine backend waits,
    // joins and records wait-for edges itself, where Redis has scripts for them.
    &[
        "coordinator",
        "connect",
        "acquire",
        "join",
        "lease",
        "multi",
        "slots",
        "init",
        "local",
        "deadlock",
        "ops",
        "stats",
    ],
    // Supervising a command under leases.
    &["group", "run"],
    // Files and the front door.
    &["repo", "settings", "session", "state", "workspace"],
];

fn layer_of() -> BTreeMap<&'static str, usize> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, names)| names.iter().map(move |n| (*n, i)))
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for `lib.rs` and the binary).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_owned()),
    }
}

/// The `crate::<module>` names a line of code uses.
fn crate_paths(line: &str) -> Vec<&str> {
    line.match_indices("crate::")
        .map(|(at, m)| {
            let rest = &line[at + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// The uses in `text` (a file of a module of layer `own`) of modules above it: line number,
/// module, its layer. Code before the file's tests only; comment lines are skipped.
fn upward_uses<'a>(
    layer: &BTreeMap<&str, usize>,
    own: usize,
    text: &'a str,
) -> Vec<(usize, &'a str, usize)> {
    let code = text.split("\n#[cfg(test)]").next().unwrap_or("");
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for used in crate_paths(line) {
            if let Some(&theirs) = layer.get(used)
                && theirs > own
            {
                found.push((n + 1, used, theirs));
            }
        }
    }
    found
}

#[test]
fn no_library_module_imports_one_of_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer = layer_of();
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let (mut upward, mut unplaced) = (Vec::new(), Vec::new());
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(&own) = layer.get(module.as_str()) else {
            unplaced.push(module);
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, used, theirs) in upward_uses(&layer, own, &text) {
            upward.push(format!(
                "{}:{n}: {module} (layer {own}) uses {used} (layer {theirs})",
                file.strip_prefix(&src).unwrap().display(),
            ));
        }
    }
    unplaced.sort();
    unplaced.dedup();
    assert!(
        unplaced.is_empty(),
        "modules in no layer (add them to LAYERS): {unplaced:?}"
    );
    assert!(
        upward.is_empty(),
        "imports that run back up the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_layer_check_sees_an_upward_use_and_passes_over_comments_and_tests() {
    let layer = layer_of();
    let holder = layer["holder"];
    let text = "//! Doc naming crate::workspace.\n\
                use crate::sys::now;\n\
                fn f() { crate::workspace::Workspace::x(); }\n\
                #[cfg(test)]\n\
                mod tests { use crate::state::StateFile; }\n";
    let found = upward_uses(&layer, holder, text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (3, "workspace"));
}
