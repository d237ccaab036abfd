//! The direction of dependencies between the crate's top-level modules, read from the
//! source: every `crate::<module>` path in `src/` is an edge. Edges point inward (edges of
//! the system depend on its core, never the reverse), and the graph has no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What each top-level module may use. The composition roots (`app`, `demo`, `bench`) may
/// use everything; a module missing from this table fails the test until it is placed.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("context", &[]),
    ("config", &["model"]),
    ("telemetry", &["config"]),
    ("sign", &["config", "model"]),
    ("auth", &["config", "model", "sign"]),
    ("codec", &["model", "sign"]),
    // The request's ambient context (its trace) is a leaf like the model.
    ("store", &["model", "config", "context"]),
    ("exchange", &["store", "model", "config", "context"]),
    (
        "services",
        &[
            "model", "codec", "store", "exchange", "sign", "config", "auth", "context",
        ],
    ),
    (
        "adapters",
        &[
            "services", "codec", "exchange", "model", "sign", "config", "context",
        ],
    ),
    (
        "jobs",
        &["services", "exchange", "store", "model", "config"],
    ),
    (
        "http",
        &[
            "services", "codec", "model", "auth", "config", "exchange", "context", "sign",
        ],
    ),
    ("sim", &["codec", "model", "sign", "config"]),
];

/// Composition roots: they wire everything together.
const ROOTS: &[&str] = &["app", "demo", "bench"];

/// The top-level module of a file under `src/`.
fn top_level(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// `crate::<name>` references in code (comments skipped).
fn references(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in source.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::route!` is the route macro of `http`.
            let name = if name == "route" {
                "http".to_string()
            } else {
                name
            };
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module → the modules it uses, with one file that shows each edge.
fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let module = top_level(rel);
        if module == "lib" || module == "main" {
            continue;
        }
        let edges = graph.entry(module.clone()).or_default();
        for used in references(&std::fs::read_to_string(&file).unwrap()) {
            if used != module {
                edges
                    .entry(used)
                    .or_insert_with(|| rel.display().to_string());
            }
        }
    }
    graph
}

#[test]
fn dependencies_point_inward() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, edges) in graph() {
        if ROOTS.contains(&module.as_str()) {
            continue;
        }
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!(
                "module `{module}` has no place in the architecture table"
            ));
            continue;
        };
        for (used, file) in edges {
            if !may.contains(&used.as_str()) {
                wrong.push(format!("{module} -> {used} (in src/{file})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports pointing outward:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_rules_the_issue_names_hold() {
    let g = graph();
    let uses = |a: &str, b: &str| g.get(a).is_some_and(|e| e.contains_key(b));
    for (a, b) in [
        ("services", "adapters"),
        ("services", "http"),
        ("exchange", "http"),
        ("store", "services"),
        ("adapters", "store"),
        ("sim", "store"),
        ("sim", "adapters"),
    ] {
        assert!(!uses(a, b), "{a} must not use {b}");
    }
    assert!(
        g.get("model").is_none_or(|e| e.is_empty()),
        "model uses {:?}",
        g["model"]
    );
}

#[test]
fn no_cycle_between_modules() {
    let g = graph();
    // Depth-first search over modules other than the composition roots; a module already
    // explored is not entered again.
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for next in g.get(m).into_iter().flat_map(|e| e.keys()) {
            if ROOTS.contains(&next.as_str()) {
                continue;
            }
            if let Some(c) = visit(next, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys().filter(|m| !ROOTS.contains(&m.as_str())) {
        if let Some(cycle) = visit(m, &g, &mut Vec::new(), &mut done) {
            panic!("cycle between modules: {}", cycle.join(" -> "));
        }
    }
    // The source was read: every placed module was explored.
    for (m, _) in ALLOWED {
        assert!(done.contains(m), "module {m} not found in src/: {done:?}");
    }
}

#[test]
fn the_reader_finds_paths_in_code_not_in_comments() {
    let src = "use crate::model::Oid;\n// crate::http is mentioned here only\nlet x = crate::store::now_ms(); // crate::sim\n";
    let found: Vec<String> = references(src).into_iter().collect();
    assert_eq!(found, ["model", "store"]);
}
