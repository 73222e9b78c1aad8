//! The runtime crate's modules form layers: no import cycle between its top-level modules, and
//! the driver imports nothing of the layers above it (executor, timers, buffers, ZCRX, the
//! builder). Read from the sources, so a new `use crate::…` that breaks a layer fails here.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Top-level module → the top-level modules its non-test code names as `crate::name`.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The non-test, non-comment code of a file: a `tests.rs` file is all test code, and a
/// top-level `#[cfg(test)]` that is not on a one-line `mod name;` starts the test code.
fn code_of(path: &Path, text: &str) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("#[cfg(test)]") {
            let next = lines.peek().copied().unwrap_or("");
            let declaration = next
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            if declaration.starts_with("mod ") && declaration.ends_with(';') {
                continue;
            }
            break;
        }
        if !line.trim_start().starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
    }
    code
}

/// The top-level modules named after `crate::` in `code`, including inside grouped imports
/// (`use crate::{a::X, b, c::{d, e}}`).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level entries of the group: split on commas at brace depth 0.
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.insert(first_segment(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(first_segment(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(first_segment(rest));
        }
    }
    // Items re-exported at the crate root (`crate::Runtime`, `crate::spawn`) are not modules.
    names.retain(|n| !n.is_empty() && n.starts_with(|c: char| c.is_ascii_lowercase()));
    names
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn graph() -> Graph {
    let root = source_dir();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut graph = Graph::new();
    for path in files {
        let relative = path.strip_prefix(&root).unwrap();
        let top = relative.components().next().unwrap().as_os_str();
        let top = top.to_str().unwrap().trim_end_matches(".rs").to_owned();
        if top == "lib" {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let mut deps = crate_paths(&code_of(&path, &text));
        deps.remove(&top);
        graph.entry(top).or_default().extend(deps);
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// A path `from → … → from` through `graph`, if there is one.
fn cycle_through(graph: &Graph, from: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &Graph,
        from: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in &graph[at] {
            if next == from {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, from, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_owned()];
    walk(graph, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_import_cycle_between_the_runtimes_modules() {
    let graph = graph();
    assert!(
        graph.contains_key("driver") && graph.contains_key("executor"),
        "{graph:?}"
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_through(&graph, m))
        .map(|path| path.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_driver_imports_nothing_of_the_layers_above_it() {
    let graph = graph();
    let allowed: BTreeSet<String> = ["current"].into_iter().map(String::from).collect();
    let above: Vec<&String> = graph["driver"].difference(&allowed).collect();
    assert!(above.is_empty(), "driver/ imports {above:?}");
}

#[test]
fn grouped_imports_are_read() {
    let code = "use crate::{a::X, b, c::{d, e}};\nlet x = crate::f::g();\nuse crate::Runtime;";
    let names: Vec<String> = crate_paths(code).into_iter().collect();
    assert_eq!(names, ["a", "b", "c", "f"]);
}
