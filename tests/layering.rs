//! The layering check: the modules of `src/` import each other only down the
//! pipeline (docs/architecture.md), with no module-level cycle.
//!
//! An edge `a → b` is any `crate::b` path in module `a`'s non-test code
//! (`use crate::b::…`, `use crate::{b, …}`, `crate::b::f()`); comments, files
//! named `tests.rs` and everything from a file's `#[cfg(test)]` on are left
//! out, since tests may reach across layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// The layers, lowest first. A module may import only modules of lower
/// layers; modules of one layer never import each other.
const LAYERS: &[&[&str]] = &[
    // Leaves: value types and tools every layer may use.
    &["clock", "duration", "exposition", "ids", "labels", "reminder"],
    // The registry of fleetscrape's own metrics, which every component below feeds.
    &["self_metrics"],
    &["logging", "record", "relabel"],
    &["config"],
    &["discovery"],
    // The three consumers of a topology: none imports another.
    &["scrape", "store", "remote_write"],
    &["report", "emulator"],
    &["serve"],
    // `fleetscrape run`, and `fleetscrape preflight`, which checks what `run` will use.
    &["daemon", "preflight"],
    &["cli"],
];

/// Module → module → the files that make the edge.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The import graph of the crate whose sources are in `src`.
fn graph(src: &Path) -> Graph {
    let single = Regex::new(r"crate::([a-z_][a-z0-9_]*)").unwrap();
    let group = Regex::new(r"crate::\{([^}]*)\}").unwrap();
    let first = Regex::new(r"(?:^|,)\s*([a-z_][a-z0-9_]*)").unwrap();
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap().to_string_lossy().into_owned();
        let module = relative.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        if ["lib", "main", "bin"].contains(&module.as_str()) || relative.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let code: String = code.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
        let mut targets: Vec<String> = single.captures_iter(&code).map(|c| c[1].to_string()).collect();
        for list in group.captures_iter(&code) {
            targets.extend(first.captures_iter(&list[1]).map(|c| c[1].to_string()));
        }
        let edges = graph.entry(module.clone()).or_default();
        for target in targets.into_iter().filter(|t| *t != module && t != "self") {
            edges.entry(target).or_default().insert(relative.clone());
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Every module-level cycle, each as the modules of one strongly connected
/// component (Tarjan), with the edges inside it and the files making them.
fn cycles(graph: &Graph) -> Vec<String> {
    struct Tarjan<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        components: Vec<Vec<&'a str>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, node: &'a str) {
            let i = self.index.len();
            self.index.insert(node, i);
            self.low.insert(node, i);
            self.stack.push(node);
            for next in self.graph.get(node).into_iter().flat_map(|e| e.keys()) {
                if !self.index.contains_key(next.as_str()) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next.as_str()]);
                    self.low.insert(node, low);
                } else if self.stack.contains(&next.as_str()) {
                    let low = self.low[node].min(self.index[next.as_str()]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let at = self.stack.iter().position(|n| *n == node).unwrap();
                self.components.push(self.stack.split_off(at));
            }
        }
    }
    let mut tarjan =
        Tarjan { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), components: Vec::new() };
    for node in graph.keys() {
        if !tarjan.index.contains_key(node.as_str()) {
            tarjan.visit(node);
        }
    }
    tarjan
        .components
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|component| {
            let mut edges = Vec::new();
            for from in &component {
                for (to, files) in &graph[*from] {
                    if component.contains(&to.as_str()) {
                        edges.push(format!("{from} → {to} ({})", files.iter().cloned().collect::<Vec<_>>().join(", ")));
                    }
                }
            }
            format!("cycle {{{}}}: {}", component.join(", "), edges.join("; "))
        })
        .collect()
}

/// Edges that do not point to a lower layer, and modules in no layer.
fn layer_violations(graph: &Graph) -> Vec<String> {
    let layer_of = |module: &str| LAYERS.iter().position(|layer| layer.contains(&module));
    let mut found = Vec::new();
    for (from, edges) in graph {
        let Some(from_layer) = layer_of(from) else {
            found.push(format!("module {from} is in no layer: add it to LAYERS and docs/architecture.md"));
            continue;
        };
        for (to, files) in edges {
            match layer_of(to) {
                Some(to_layer) if to_layer < from_layer => {}
                _ => found.push(format!(
                    "{from} → {to} points up or across the layers ({})",
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
            }
        }
    }
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_modules_have_no_import_cycle() {
    let graph = graph(&src());
    assert!(graph.len() > 10, "the graph was read: {graph:?}");
    let cycles = cycles(&graph);
    assert!(cycles.is_empty(), "module-level import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn every_import_points_down_the_layers() {
    let violations = layer_violations(&graph(&src()));
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The check itself: a back-edge planted in a scratch copy of `src/` (config
/// importing cli, which imports config) is found as a cycle and as a layer
/// violation, naming the file.
#[test]
fn a_planted_back_edge_is_caught() {
    let scratch = tempfile::tempdir().unwrap();
    copy(&src(), scratch.path());
    let config = scratch.path().join("config/mod.rs");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("use crate::cli::Cli;\n{text}")).unwrap();

    let planted = graph(scratch.path());
    let cycles = cycles(&planted);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(cycles[0].contains("config → cli (config/mod.rs)"), "{}", cycles[0]);
    let violations = layer_violations(&planted);
    assert!(violations.iter().any(|v| v.starts_with("config → cli")), "{violations:?}");
    // A grouped import is an edge too.
    std::fs::write(&config, format!("use crate::{{duration, daemon::run}};\n{text}")).unwrap();
    assert!(layer_violations(&graph(scratch.path())).iter().any(|v| v.starts_with("config → daemon")));
}

fn copy(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
