//! The crate's layers, enforced: every `crate::…` path in `src/` must point at
//! the same layer or one below it, and a front door never reaches into another
//! front door. The table below is the architecture section of the README in
//! executable form; a new top-level module must be placed in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules of `src/` by layer, lowest first. A module may import
/// from its own layer and the layers below, never from above.
const LAYERS: &[(&str, &[&str])] = &[
    // Leaves: no crate imports of note, used everywhere.
    (
        "support",
        &["clock", "metrics", "otel", "reason", "telemetry", "tls"],
    ),
    ("store", &["store"]),
    // The decision core, bottom up.
    ("request", &["request"]),
    ("authn", &["authn"]),
    ("authz", &["authz"]),
    ("error", &["error"]),
    ("decision", &["decision"]),
    ("policy tools", &["policy_tools"]),
    ("config", &["config"]),
    ("state", &["state"]),
    // Front doors: siblings that never import one another.
    (
        "front doors",
        &[
            "proxy",
            "forward_auth",
            "ext_authz",
            "authzen",
            "api",
            "dashboard",
            "ops",
        ],
    ),
    ("app", &["app"]),
    ("cli", &["cli"]),
];

/// Layers whose modules are independent of each other (no sideways imports).
const SIBLINGS: &[&str] = &["front doors"];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, mods))| mods.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

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

/// The top-level module a file of `src/` belongs to (`src/authz/routes.rs` → `authz`).
fn owner(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Every top-level module a file names through `crate::` (in code, not comments).
fn imports(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
            rest = after;
        }
    }
    found
}

#[test]
fn imports_point_down_the_layers() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut edges: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = owner(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some((from_rank, from_layer)) = layer_of(&module) else {
            violations.push(format!(
                "{}: module `{module}` is in no layer of tests/architecture.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, target) in imports(&text) {
            if target == module {
                continue;
            }
            let Some((to_rank, to_layer)) = layer_of(&target) else {
                violations.push(format!(
                    "{}:{line}: `crate::{target}` is in no layer",
                    file.display()
                ));
                continue;
            };
            edges
                .entry(module.clone())
                .or_default()
                .insert(target.clone());
            if to_rank > from_rank {
                violations.push(format!(
                    "{}:{line}: `{module}` ({from_layer}) imports `{target}` ({to_layer}), a layer above it",
                    file.display()
                ));
            } else if to_rank == from_rank && SIBLINGS.contains(&from_layer) {
                violations.push(format!(
                    "{}:{line}: front door `{module}` imports front door `{target}`",
                    file.display()
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layers:\n{}",
        violations.join("\n")
    );
    // The graph the layers allow, for whoever reads the test output.
    for (from, to) in &edges {
        println!(
            "{from} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
}

/// The check itself must catch an upward import, or it guards nothing.
#[test]
fn an_upward_import_is_caught() {
    let found = imports("use crate::app::AppState; // crate::cli in a comment\n");
    assert_eq!(found, vec![(1, "app".to_owned())]);
    let (authz, _) = layer_of("authz").unwrap();
    let (app, _) = layer_of("app").unwrap();
    assert!(app > authz, "app must sit above the core");
    let (proxy, layer) = layer_of("proxy").unwrap();
    let (api, _) = layer_of("api").unwrap();
    assert_eq!(proxy, api);
    assert!(SIBLINGS.contains(&layer));
}
