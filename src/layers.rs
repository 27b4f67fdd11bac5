//! Holds the map in `lib.rs` to what the code does: each module of the daemon imports only
//! modules listed above it there, so the imports form no cycle and point one way, down.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The daemon's top-level modules in the order the map in `lib.rs` lists them.
fn map_order(lib: &str) -> Vec<String> {
    let mut order = Vec::new();
    for line in lib.lines().take_while(|l| l.starts_with("//!")) {
        let Some(item) = line.strip_prefix("//! - ") else {
            continue;
        };
        let head = item.split(':').next().unwrap_or_default();
        for name in head.split(',') {
            let name = name
                .trim()
                .trim_matches(|c| c == '`' || c == '[' || c == ']');
            if !name.is_empty() {
                order.push(name.to_owned());
            }
        }
    }
    order
}

/// The top-level modules each module's non-test code names as `crate::NAME`.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("src/ is readable").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).expect("below src/");
            let first = rel.components().next().expect("a file below src/");
            let module = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            if ["lib", "main", "layers"].contains(&module.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            // Unit tests may reach anywhere; the layering is about the product's code.
            let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or_default();
            let names = found.entry(module.clone()).or_default();
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(0)];
                    for part in group.split(',') {
                        let name = part.trim().split("::").next().unwrap_or_default();
                        names.insert(name.to_owned());
                    }
                } else {
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    names.insert(rest[..end].to_owned());
                }
            }
            names.remove(&module);
        }
    }
    found
}

#[test]
fn every_module_imports_only_modules_above_it_in_the_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("src/lib.rs is readable");
    let order = map_order(&lib);
    let imports = imports(&root.join("src"));
    for module in imports.keys() {
        assert!(
            order.contains(module),
            "src/lib.rs's map does not list the module {module}: {order:?}"
        );
    }
    for (module, names) in &imports {
        let at = order.iter().position(|m| m == module).unwrap_or(0);
        for name in names {
            let Some(there) = order.iter().position(|m| m == name) else {
                panic!("{module} imports crate::{name}, which the map does not list");
            };
            assert!(
                there < at,
                "{module} imports {name}, which the map in src/lib.rs lists below it: {order:?}"
            );
        }
    }
}

#[test]
fn the_check_sees_imports_and_refuses_a_module_that_imports_upwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir(src.join("store")).expect("mkdir");
    std::fs::write(
        src.join("store/events.rs"),
        "use crate::{clock, service::now};\nfn f() { crate::random::fill(&mut []); }\n",
    )
    .expect("write");
    let found = imports(src);
    let names: Vec<&str> = found["store"].iter().map(String::as_str).collect();
    assert_eq!(names, ["clock", "random", "service"]);
    let order =
        map_order("//! - `clock`, `random`: low.\n//! - `store`: data.\n//! - [`service`]: top.\n");
    assert_eq!(order, ["clock", "random", "store", "service"]);
}
