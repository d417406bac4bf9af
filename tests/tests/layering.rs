//! The house rules of the source tree, checked on the source itself: no
//! experiment kind imports another (what kinds share lives in a library
//! named for what it is, such as `llm`), the language-model library names
//! no kind, and no two modules import each other (a module and the modules
//! inside it excepted).
//!
//! `cargo test -p subliminal-tests --test layering` runs the check; each
//! failure names the two files and the path that joins them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's name as other crates write it, and its source folder.
const CRATES: [(&str, &str); 2] = [
    ("subliminal_shared", "shared/src"),
    ("subliminal_worker", "worker/src"),
];

/// A module: its crate's name and its path inside the crate.
type Module = (String, Vec<String>);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable source folder") {
        let path = entry.expect("a readable entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file holds: `a/mod.rs` and `a.rs` are `a`, `lib.rs` the crate.
fn module_of(krate: &str, src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("a file inside its crate");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    (krate.to_owned(), parts)
}

/// The text of a file without its inline test module, whose `super` is
/// the file itself rather than its parent, and without comments.
fn code_of(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `use` tree names, braces expanded: `a::{b, c::d}` gives
/// `a::b` and `a::c::d`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let item = tree.split(" as ").next().unwrap_or(tree).trim();
        out.push(match (prefix.is_empty(), item) {
            (true, _) => item.to_owned(),
            (false, "self") => prefix.to_owned(),
            (false, _) => format!("{prefix}::{item}"),
        });
        return;
    };
    let head = tree[..open].trim_end_matches("::");
    let prefix = match (prefix.is_empty(), head.is_empty()) {
        (true, _) => head.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}::{head}"),
    };
    let close = tree.rfind('}').filter(|c| *c > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                if !inner[start..i].trim().is_empty() {
                    expand(&prefix, &inner[start..i], out);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner[start..].trim().is_empty() {
        expand(&prefix, &inner[start..], out);
    }
}

/// The paths a file names: its `use` trees, and paths written inline.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = code.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(tree) = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|start| trimmed.strip_prefix(start))
        else {
            continue;
        };
        let mut statement = tree.to_owned();
        for next in &lines[i + 1..] {
            if statement.contains(';') {
                break;
            }
            statement.push_str(next.trim());
        }
        let statement = statement.split(';').next().unwrap_or_default();
        expand("", statement, &mut out);
    }
    for start in [
        "crate::",
        "super::",
        "subliminal_shared::",
        "subliminal_worker::",
    ] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            let joined = at > 0
                && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':');
            let len = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(code.len() - at);
            if !joined {
                out.push(code[at..at + len].trim_end_matches(':').to_owned());
            }
            from = at + len.max(1);
        }
    }
    out
}

/// The module a path leads to (the longest prefix that is a module), seen
/// from `from`.
fn resolve(from: &Module, path: &str, modules: &BTreeSet<Module>) -> Option<Module> {
    let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let (krate, mut base): (String, Vec<String>) = match segments.first().copied()? {
        "crate" => {
            segments.remove(0);
            (from.0.clone(), Vec::new())
        }
        "super" => {
            let mut base = from.1.clone();
            while segments.first() == Some(&"super") {
                segments.remove(0);
                base.pop();
            }
            (from.0.clone(), base)
        }
        "self" => {
            segments.remove(0);
            (from.0.clone(), from.1.clone())
        }
        name if CRATES.iter().any(|(k, _)| *k == name) => {
            segments.remove(0);
            (name.to_owned(), Vec::new())
        }
        _ => return None,
    };
    let mut found = (krate.clone(), base.clone());
    for segment in segments {
        base.push(segment.to_owned());
        if modules.contains(&(krate.clone(), base.clone())) {
            found = (krate.clone(), base.clone());
        } else {
            break;
        }
    }
    Some(found)
}

/// Every module of both crates and the modules each one names.
fn graph() -> (
    BTreeMap<Module, PathBuf>,
    BTreeMap<Module, BTreeMap<Module, String>>,
) {
    let mut files = BTreeMap::new();
    for (krate, src) in CRATES {
        let src = root().join(src);
        let mut list = Vec::new();
        rust_files(&src, &mut list);
        for file in list {
            files.insert(module_of(krate, &src, &file), file);
        }
    }
    let modules: BTreeSet<Module> = files.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeMap<Module, String>> = BTreeMap::new();
    for (module, file) in &files {
        let code = code_of(&std::fs::read_to_string(file).expect("a readable source file"));
        for path in paths_in(&code) {
            if let Some(to) = resolve(module, &path, &modules) {
                if &to != module {
                    edges
                        .entry(module.clone())
                        .or_default()
                        .entry(to)
                        .or_insert(path);
                }
            }
        }
    }
    (files, edges)
}

/// The experiment kind a module belongs to, if any.
fn kind_of(module: &Module) -> Option<&str> {
    match module.1.as_slice() {
        [experiments, kind, ..] if experiments == "experiments" => Some(kind.as_str()),
        _ => None,
    }
}

fn within(inner: &Module, outer: &Module) -> bool {
    inner.0 == outer.0 && inner.1.starts_with(&outer.1)
}

#[test]
fn no_kind_imports_another_and_the_language_model_library_names_none() {
    let (files, edges) = graph();
    assert!(files.len() > 50, "only {} modules found", files.len());
    let mut wrong = Vec::new();
    for (from, targets) in &edges {
        for (to, path) in targets {
            let (a, b) = (kind_of(from), kind_of(to));
            let library = from.1.first().is_some_and(|m| m == "llm");
            if (a.is_some() && b.is_some() && a != b) || (library && b.is_some()) {
                wrong.push(format!("{} names {path}", files[from].display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports across kinds:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_modules_import_each_other() {
    let (files, edges) = graph();
    let mut circles = Vec::new();
    for (a, targets) in &edges {
        for (b, path) in targets {
            if a < b && !within(a, b) && !within(b, a) {
                if let Some(back) = edges.get(b).and_then(|t| t.get(a)) {
                    circles.push(format!(
                        "{} names {path}, and {} names {back}",
                        files[a].display(),
                        files[b].display()
                    ));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules that import each other:\n{}",
        circles.join("\n")
    );
}
