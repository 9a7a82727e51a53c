//! The host's layering, checked from its sources: Cargo already refuses a
//! circle between crates; this refuses one between the top-level modules of
//! any host crate, and keeps the policy crate free of the runtime and drivers.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn host_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host")
}

/// Every `src/` of a host crate: the binary's and each layer's.
fn crate_sources() -> Vec<PathBuf> {
    let host = host_dir();
    let mut out = vec![host.join("src")];
    for parent in [host.clone(), host.join("capability")] {
        for entry in std::fs::read_dir(&parent).unwrap() {
            let dir = entry.unwrap().path();
            if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
                out.push(dir.join("src"));
            }
        }
    }
    assert!(out.len() >= 15, "expected the host's crates under {host:?}");
    out
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

/// The top-level module a file belongs to (`None` for the crate root).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

/// The top-level modules a source names through `crate::`, comments aside.
fn crate_references(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                out.extend(inner.split(',').map(|p| ident(p.trim())));
            } else {
                out.insert(ident(after));
            }
            rest = after;
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

/// A circle in `graph`, as the modules it passes through, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = top_module(src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let refs = crate_references(&text);
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(refs.into_iter().filter(|r| *r != module));
    }
    graph
}

#[test]
fn the_checker_sees_a_circle_it_is_shown() {
    let mut graph = BTreeMap::new();
    graph.insert(
        "runtime".to_owned(),
        BTreeSet::from(["capability".to_owned()]),
    );
    graph.insert(
        "capability".to_owned(),
        BTreeSet::from(["policy".to_owned()]),
    );
    graph.insert("policy".to_owned(), BTreeSet::from(["runtime".to_owned()]));
    assert!(find_cycle(&graph).is_some());
    graph.insert("policy".to_owned(), BTreeSet::new());
    assert_eq!(find_cycle(&graph), None);
    assert_eq!(
        crate_references("use crate::{rows::X, runtime};\n// crate::silo\nx(crate::bindings::Y)"),
        BTreeSet::from(["rows".into(), "runtime".into(), "bindings".into()])
    );
}

#[test]
fn no_module_of_a_host_crate_reaches_back_up() {
    for src in crate_sources() {
        let graph = module_graph(&src);
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{}: import circle {}", src.display(), cycle.join(" -> "));
        }
    }
}

/// The `[dependencies]` names of a crate's manifest.
fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['.', ' ', '=']).next().unwrap_or("");
            out.push(name.to_owned());
        }
    }
    out
}

#[test]
fn the_policy_crate_builds_without_the_runtime_drivers_or_an_async_runtime() {
    let host = host_dir();
    let forbidden = [
        "wasmtime",
        "wasmtime-wasi",
        "tokio",
        "tokio-postgres",
        "deadpool-postgres",
        "mysql_async",
        "mongodb",
        "sqlx",
        "reqwest",
        "axum",
    ];
    // silo-policy and the workspace crates it builds on.
    let mut queue = vec![host.join("policy/Cargo.toml")];
    let mut seen = BTreeSet::new();
    while let Some(manifest) = queue.pop() {
        for dep in dependencies(&manifest) {
            assert!(
                !forbidden.contains(&dep.as_str()),
                "{} depends on {dep}",
                manifest.display()
            );
            let local = match dep.as_str() {
                "silo-core" => Some(host.join("core/Cargo.toml")),
                "silo-types" => Some(host.join("../sdk/types/Cargo.toml")),
                d if d.starts_with("silo-") => panic!("{} depends on {d}", manifest.display()),
                _ => None,
            };
            if let Some(m) = local.filter(|m| seen.insert(m.clone())) {
                queue.push(m);
            }
        }
    }
    assert!(seen.len() >= 2, "followed silo-core and silo-types");
}

/// The host's crates from the bottom up: each may use only crates before it
/// (the capabilities, one rank, not each other), so the runtime never names a
/// capability and no capability reaches the engine, control plane or API.
const LAYERS: &[&[&str]] = &[
    &["silo-types"],
    &["silo-core"],
    &["silo-policy", "silo-metadata"],
    &["silo-bindings"],
    &["silo-runtime"],
    &["silo-capability"],
    &[
        "silo-postgres",
        "silo-mysql",
        "silo-mongodb",
        "silo-files",
        "silo-http",
    ],
    &["silo-engine"],
    &["silo-control"],
    &["silo-api"],
    &["silo-host"],
];

fn package_name(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_owned()
}

#[test]
fn every_host_crate_uses_only_the_layers_below_it() {
    let rank = |name: &str| LAYERS.iter().position(|layer| layer.contains(&name));
    for manifest in crate_sources()
        .iter()
        .map(|src| src.parent().unwrap().join("Cargo.toml"))
    {
        let name = package_name(&manifest);
        let own = rank(&name).unwrap_or_else(|| panic!("{name} is in no layer"));
        for dep in dependencies(&manifest)
            .into_iter()
            .filter(|d| d.starts_with("silo-"))
        {
            let theirs = rank(&dep).unwrap_or_else(|| panic!("{dep} is in no layer"));
            assert!(theirs < own, "{name} uses {dep}, which is not below it");
        }
    }
}
