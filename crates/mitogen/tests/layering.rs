//! Dependencies point down: the source itself is read to check that no module
//! reaches a layer above it (comments aside, which may name anything).
//!
//! From the bottom up: `core/` (the message bus every context runs), then
//! `service/` (services, on core alone), then `parent/` and `child/` (the
//! two ends of a connection, which share only core and services), then `methods/`, `target.rs`, `unix.rs`, then `api/` (the public
//! `Router`) and `entry.rs`. The crate root only re-exports. One edge runs
//! sideways: `parent/via.rs` carries a `methods::Method` to the context that
//! starts the next hop.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("source directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The lines of the files under `src/<dir>` that use a path starting with one
/// of `above` (each as `crate::NAME`), comments left out.
fn reaching_up(dir: &str, above: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for file in sources(&root.join(dir)) {
        let text = std::fs::read_to_string(&file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let code = code.split(" //").next().unwrap_or(code);
            for name in above {
                let needle = format!("crate::{name}");
                let hit = code.match_indices(&needle).any(|(i, _)| {
                    // `crate::api` but not `crate::apix`; `crate::Router`
                    // (a re-export at the root) counts as the root.
                    let rest = &code[i + needle.len()..];
                    !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if hit {
                    let shown = file.strip_prefix(&root).unwrap_or(&file).display();
                    found.push(format!("{shown}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    found
}

/// What lies above core: every other module of the crate, and the types
/// the root re-exports from them.
const ABOVE_CORE: &[&str] = &[
    "api",
    "builtins",
    "child",
    "entry",
    "files",
    "methods",
    "parent",
    "target",
    "testing",
    "unix",
    "master",
    "service",
    "router",
    "Router",
    "RouterBuilder",
    "ConnectOptions",
    "Context",
    "Sender",
    "Receiver",
    "Target",
    "Hop",
    "Method",
    "Local",
    "Ssh",
    "Sudo",
    "Su",
    "Doas",
];

#[test]
fn core_imports_nothing_above_it() {
    let found = reaching_up("core", ABOVE_CORE);
    assert!(found.is_empty(), "core/ reaches up:\n{}", found.join("\n"));
}

#[test]
fn a_child_knows_nothing_of_how_children_are_started() {
    let found = reaching_up("child", &["api", "methods", "parent", "Router", "unix"]);
    assert!(found.is_empty(), "child/ reaches up:\n{}", found.join("\n"));
}

#[test]
fn starting_a_child_does_not_use_the_public_router() {
    let found = reaching_up("parent", &["api", "child", "entry", "unix", "Router"]);
    assert!(
        found.is_empty(),
        "parent/ reaches up:\n{}",
        found.join("\n")
    );
}

#[test]
fn services_stand_on_core_alone() {
    let found = reaching_up(
        "service",
        &[
            "api", "builtins", "child", "entry", "methods", "parent", "target", "testing", "unix",
            "Router", "Target", "Method",
        ],
    );
    assert!(
        found.is_empty(),
        "service/ reaches up:\n{}",
        found.join("\n")
    );
}
