//! The crate's layers, read from its sources: which module may name which (see the crate docs'
//! layout table). A unit is a top-level file or folder of `src/`; a `crate::x` path outside
//! comments and test modules names unit `x`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files longer than this (tests included) are to be split by behaviour.
const MOST_LINES: usize = 700;

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/command/mod.rs` -> `command`; `src/client.rs` -> `client`.
fn unit_of(path: &Path) -> String {
    let relative = path.strip_prefix(src()).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The units a file's code names, leaving out comments and its test module.
fn named_units(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut units = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or_default();
                group.split(',').map(|n| n.trim()).collect()
            } else {
                vec![rest]
            };
            for name in names {
                let unit: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !unit.is_empty() {
                    units.insert(unit);
                }
            }
        }
    }
    units
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let unit = unit_of(&file);
        let mut named = named_units(&std::fs::read_to_string(&file).unwrap());
        named.remove(&unit);
        graph.entry(unit).or_default().extend(named);
    }
    graph
}

/// A unit that reaches itself through others, with the path, if any.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        unit: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|u| u == unit) {
            let mut circle = path[at..].to_vec();
            circle.push(unit.to_owned());
            return Some(circle);
        }
        if done.contains(unit) {
            return None;
        }
        path.push(unit.to_owned());
        for next in graph.get(unit).into_iter().flatten() {
            if graph.contains_key(next)
                && let Some(circle) = visit(next, graph, path, done)
            {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(unit.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|unit| visit(unit, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_of_the_library_reaches_itself_through_others() {
    let graph = graph();
    assert!(graph.len() > 10, "read too few units: {graph:?}");
    assert_eq!(find_circle(&graph), None, "an import circle");
}

#[test]
fn nothing_below_the_client_names_it() {
    let graph = graph();
    for below in [
        "command",
        "health",
        "maintenance",
        "connect",
        "supervisor",
        "config",
        "shared",
        "reauth",
    ] {
        let named = graph.get(below).expect(below);
        assert!(
            !named.contains("client") && !named.contains("cluster"),
            "{below} names {named:?}"
        );
    }
}

#[test]
fn the_circle_finder_finds_a_circle_and_none_where_there_is_none() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.insert("a".into(), ["b".into()].into());
    graph.insert("b".into(), ["c".into()].into());
    graph.insert("c".into(), BTreeSet::new());
    assert_eq!(find_circle(&graph), None);
    graph.insert("c".into(), ["a".into()].into());
    assert_eq!(
        find_circle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        named_units("use crate::{connect::Link, error::Error};\n// crate::client\n"),
        ["connect".to_owned(), "error".to_owned()].into()
    );
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    for file in files {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        let name = file
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            lines <= MOST_LINES,
            "{name}: {lines} lines, over {MOST_LINES}"
        );
    }
}
