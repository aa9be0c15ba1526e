//! The module structure of every workspace crate: no import cycle between the modules of one crate.
//!
//! Each `src/**/*.rs` file is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs`
//! the crate root). A file depends on module M when it names a path `crate::…` or `super::…` whose
//! longest prefix that is a module is M (not the file itself; the crate root is never a target, as
//! its items are the crate's public face). A child naming its parent counts: shared types belong in
//! leaf modules. Test code is left out: `#[cfg(test)] mod NAME { … }` blocks and the files of
//! `#[cfg(test)] mod NAME;`. A cycle of such dependencies fails the test, named with the line of
//! each step.
//!
//! It reads source text, not the compiler's name resolution: a path in a comment or a string counts
//! too, which errs on the side of reporting.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// A module: its path below the crate root (empty for the root).
type ModPath = Vec<String>;

/// Where a dependency was first seen: file and 1-based line.
#[derive(Debug, Clone)]
struct Site {
    file: PathBuf,
    line: usize,
}

/// Module → module it depends on → the first place it does.
type Graph = BTreeMap<ModPath, BTreeMap<ModPath, Site>>;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The crate directories the workspace's Cargo.toml lists.
fn workspace_crates() -> Vec<PathBuf> {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| repo().join(m.as_str().unwrap()))
        .collect()
}

#[test]
fn no_import_cycle_in_any_crate() {
    let mut report = vec![];
    for dir in workspace_crates() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let graph = graph_of(&dir.join("src"));
        for cycle in cycles(&graph) {
            report.push(format!("{name}: {}", describe(&graph, &cycle)));
        }
    }
    assert!(
        report.is_empty(),
        "import cycles between modules (move what both sides need into a leaf module):\n{}",
        report.join("\n")
    );
}

/// The same rule one level up: a top-level module with its submodules (a directory such as
/// `qemu/`) is one unit, so `qemu/mod.rs → reference/ → qemu/cmdline.rs` is a cycle even though no
/// two files name each other.
#[test]
fn no_import_cycle_between_top_level_modules() {
    let mut report = vec![];
    for dir in workspace_crates() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let graph = top_level(&graph_of(&dir.join("src")));
        for cycle in cycles(&graph) {
            report.push(format!("{name}: {}", describe(&graph, &cycle)));
        }
    }
    assert!(
        report.is_empty(),
        "import cycles between top-level modules (a command that drives both belongs above both):\n{}",
        report.join("\n")
    );
}

/// `graph` with every module folded into its top-level module; edges inside one are dropped.
fn top_level(graph: &Graph) -> Graph {
    let top = |m: &ModPath| m.iter().take(1).cloned().collect::<ModPath>();
    let mut folded = Graph::new();
    for (from, edges) in graph {
        let entry = folded.entry(top(from)).or_default();
        for (to, site) in edges {
            if top(to) != top(from) && !to.is_empty() {
                entry.entry(top(to)).or_insert_with(|| site.clone());
            }
        }
    }
    folded
}

/// The module of a file at `rel` (relative to `src/`).
fn module_path(rel: &Path) -> ModPath {
    let mut parts: ModPath = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Every `.rs` file under `src`, with the files of `#[cfg(test)] mod NAME;` left out.
fn source_files(src: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.insert(p.clone(), std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut test_files = BTreeSet::new();
    for (path, text) in &files {
        let dir = if path.file_name().is_some_and(|n| n == "mod.rs") || path.parent() == Some(src) {
            path.parent().unwrap().to_path_buf()
        } else {
            path.with_extension("")
        };
        for name in test_only_file_modules(text) {
            test_files.insert(dir.join(format!("{name}.rs")));
            test_files.insert(dir.join(&name).join("mod.rs"));
        }
    }
    files.retain(|p, _| !test_files.contains(p));
    files
}

/// The dependency graph of the crate whose sources are in `src`.
fn graph_of(src: &Path) -> Graph {
    let files = source_files(src);
    let mut texts: BTreeMap<ModPath, Vec<(PathBuf, String)>> = BTreeMap::new();
    for (path, text) in files {
        let module = module_path(path.strip_prefix(src).unwrap());
        // lib.rs and main.rs are both the root: their dependencies are merged.
        texts
            .entry(module)
            .or_default()
            .push((path, strip_test_blocks(&text)));
    }
    let modules: BTreeSet<ModPath> = texts.keys().cloned().collect();
    let mut graph = Graph::new();
    for (module, sources) in &texts {
        let edges = graph.entry(module.clone()).or_default();
        for (file, text) in sources {
            for (offset, path) in module_references(text) {
                let Some(full) = absolute(module, &path) else {
                    continue;
                };
                let target = (1..=full.len())
                    .rev()
                    .map(|k| full[..k].to_vec())
                    .find(|prefix| modules.contains(prefix));
                if let Some(target) = target.filter(|t| t != module) {
                    edges.entry(target).or_insert_with(|| Site {
                        file: file.clone(),
                        line: text[..offset].matches('\n').count() + 1,
                    });
                }
            }
        }
    }
    graph
}

/// A `crate::…` or `super::…` path (first word included) made absolute from `module`; `None` when
/// `super` climbs above the root.
fn absolute(module: &ModPath, path: &[String]) -> Option<ModPath> {
    let (first, rest) = path.split_first()?;
    let mut base = if first == "crate" {
        vec![]
    } else {
        module.split_last()?.1.to_vec()
    };
    let mut rest = rest;
    while rest.first().is_some_and(|w| w == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().filter(|w| *w != "self").cloned());
    Some(base)
}

fn is_word(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Every `crate::a::b…` / `super::a…` in `text`: its byte offset and its words (`["crate", "a",
/// "b"]`). The first word must not continue a longer word (`$crate` counts, `mycrate` does not).
fn module_references(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = vec![];
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let starts_word = !text[..i].chars().next_back().is_some_and(is_word);
        let keyword = ["crate", "super"]
            .into_iter()
            .find(|k| starts_word && rest.starts_with(k));
        let Some(keyword) = keyword else {
            i += rest.chars().next().unwrap().len_utf8();
            continue;
        };
        let mut words = vec![keyword.to_string()];
        let mut end = i + keyword.len();
        while let Some(after) = text[end..].strip_prefix("::") {
            let len: usize = after
                .chars()
                .take_while(|c| is_word(*c))
                .map(char::len_utf8)
                .sum();
            if len == 0 {
                break;
            }
            words.push(after[..len].to_string());
            end += 2 + len;
        }
        if words.len() > 1 {
            found.push((i, words));
            i = end;
        } else {
            i += keyword.len();
        }
    }
    found
}

/// The names of `#[cfg(test)] mod NAME;` declarations (test-only files).
fn test_only_file_modules(text: &str) -> Vec<String> {
    let mut names = vec![];
    for (at, _) in text.match_indices("#[cfg(test)]") {
        if let Some((name, after)) = module_item(&text[at + "#[cfg(test)]".len()..]) {
            if after.trim_start().starts_with(';') {
                names.push(name);
            }
        }
    }
    names
}

/// `(#[…])* (pub …)? mod NAME` at the start of `text` (after whitespace): the name and what follows it.
fn module_item(text: &str) -> Option<(String, &str)> {
    let mut t = text.trim_start();
    // Other attributes between `#[cfg(test)]` and the item.
    while t.starts_with("#[") {
        t = t[t.find(']')? + 1..].trim_start();
    }
    if let Some(after) = t.strip_prefix("pub") {
        t = after.trim_start();
        if t.starts_with('(') {
            t = &t[t.find(')')? + 1..];
        }
        t = t.trim_start();
    }
    let t = t.strip_prefix("mod")?;
    if !t.starts_with(char::is_whitespace) {
        return None;
    }
    let t = t.trim_start();
    let len: usize = t
        .chars()
        .take_while(|c| is_word(*c))
        .map(char::len_utf8)
        .sum();
    (len > 0).then(|| (t[..len].to_string(), &t[len..]))
}

/// `text` without its `#[cfg(test)] mod NAME { … }` blocks; lines are kept (blanked) so that line
/// numbers still point into the file.
fn strip_test_blocks(text: &str) -> String {
    let mut out = text.to_string();
    let mut from = 0;
    while let Some(found) = out[from..].find("#[cfg(test)]") {
        let at = from + found;
        let after_attr = at + "#[cfg(test)]".len();
        let block = module_item(&out[after_attr..])
            .map(|(_, rest)| rest)
            .filter(|rest| rest.trim_start().starts_with('{'))
            .map(|rest| out.len() - rest.len() + (rest.len() - rest.trim_start().len()));
        match block.and_then(|open| matching_brace(&out, open).map(|close| (open, close))) {
            Some((_, close)) => {
                let blanked: String = out[at..=close]
                    .chars()
                    .map(|c| if c == '\n' { '\n' } else { ' ' })
                    .collect();
                out.replace_range(at..=close, &blanked);
                from = at + blanked.len();
            }
            None => from = after_attr,
        }
    }
    out
}

/// The byte offset of the `}` closing the `{` at `open`, skipping comments, strings and
/// character literals (a `{` inside `"…"` does not count).
fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = text[i..].find('\n').map_or(b.len(), |n| i + n);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = text[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 1);
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && !(i > 0 && is_word(b[i - 1] as char)) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) == Some(&b'"') {
                    let close = format!("\"{}", "#".repeat(hashes));
                    let body = i + 2 + hashes;
                    i = text[body..]
                        .find(&close)
                        .map_or(b.len(), |n| body + n + close.len() - 1);
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            // A character literal ('x', '\n', '{'), not a lifetime ('a).
            b'\'' => {
                if b.get(i + 1) == Some(&b'\\') {
                    // '\n', '\'', '\u{7f}': the closing quote comes after the escaped character.
                    i += 3 + text.get(i + 3..).and_then(|t| t.find('\'')).unwrap_or(0);
                } else if let Some(c) = text[i + 1..].chars().next() {
                    if text[i + 1 + c.len_utf8()..].starts_with('\'') {
                        i += c.len_utf8() + 1;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The strongly connected components of more than one module (Tarjan), each sorted.
fn cycles(graph: &Graph) -> Vec<Vec<ModPath>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g ModPath, usize>,
        low: BTreeMap<&'g ModPath, usize>,
        stack: Vec<&'g ModPath>,
        on_stack: BTreeSet<&'g ModPath>,
        found: Vec<Vec<ModPath>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g ModPath) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for (w, _) in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = vec![];
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on_stack: BTreeSet::new(),
        found: vec![],
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "crate root".into()
    } else {
        m.join("::")
    }
}

/// The modules of a cycle and one loop through them, each step with where it is taken.
fn describe(graph: &Graph, component: &[ModPath]) -> String {
    let start = &component[0];
    let inside: BTreeSet<&ModPath> = component.iter().collect();
    // Breadth-first from `start` inside the component, back to `start`: a shortest loop.
    let mut previous: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    let mut last = None;
    'search: while let Some(v) = queue.pop_front() {
        for w in graph[v].keys().filter(|w| inside.contains(w)) {
            if w == start {
                last = Some(v);
                break 'search;
            }
            if !previous.contains_key(w) {
                previous.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    let mut path = vec![start];
    let mut v = last.expect("a component of more than one module has a loop");
    while v != start {
        path.push(v);
        v = previous[v];
    }
    path[1..].reverse();
    path.push(start);
    let steps: Vec<String> = path
        .windows(2)
        .map(|p| {
            let site = &graph[p[0]][p[1]];
            let file = site.file.strip_prefix(repo()).unwrap_or(&site.file);
            format!(
                "  {} → {} ({}:{})",
                name(p[0]),
                name(p[1]),
                file.display(),
                site.line
            )
        })
        .collect();
    format!(
        "[{}]\n{}",
        component.iter().map(name).collect::<Vec<_>>().join(", "),
        steps.join("\n")
    )
}

/// A throw-away crate source tree under target/test-scratch.
fn synthetic_tree(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let src = repo()
        .join("target/test-scratch")
        .join(format!("structure-{name}-{}", std::process::id()))
        .join("src");
    let _ = std::fs::remove_dir_all(&src);
    for (path, text) in files {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    src
}

fn names(cycles: &[Vec<ModPath>]) -> Vec<Vec<String>> {
    cycles
        .iter()
        .map(|c| c.iter().map(name).collect())
        .collect()
}

#[test]
fn a_two_module_cycle_is_found_and_named() {
    let src = synthetic_tree(
        "cycle",
        &[
            ("lib.rs", "pub mod a;\npub mod b;\npub struct Root;\n"),
            ("a.rs", "use crate::b::B;\npub struct A;\n"),
            (
                "b/mod.rs",
                "pub mod leaf;\n\n// the loop\nuse super::a::A;\n",
            ),
            ("b/leaf.rs", "use crate::Root;\n"),
        ],
    );
    let graph = graph_of(&src);
    let found = cycles(&graph);
    assert_eq!(names(&found), [["a", "b"]]);
    let text = describe(&graph, &found[0]);
    assert!(
        text.contains("a → b (") && text.contains("a.rs:1)"),
        "{text}"
    );
    assert!(
        text.contains("b → a (") && text.contains("b/mod.rs:4)"),
        "{text}"
    );
}

#[test]
fn a_child_naming_its_parent_module_is_a_cycle() {
    let src = synthetic_tree(
        "parent",
        &[
            ("lib.rs", "pub mod api;\n"),
            (
                "api/mod.rs",
                "pub mod handlers;\npub struct ApiError;\nuse crate::api::handlers::get;\n",
            ),
            ("api/handlers.rs", "use super::ApiError;\npub fn get() {}\n"),
        ],
    );
    assert_eq!(names(&cycles(&graph_of(&src))), [["api", "api::handlers"]]);
}

#[test]
fn a_dag_and_test_code_pass() {
    let src = synthetic_tree(
        "dag",
        &[
            (
                "lib.rs",
                "pub mod a;\npub mod b;\npub mod c;\n#[cfg(test)]\nmod testutil;\n",
            ),
            (
                "a.rs",
                "use crate::b::B;\nuse crate::c::C;\npub struct A;\n",
            ),
            (
                "b.rs",
                "use super::c::C;\npub struct B;\n\n#[cfg(test)]\nmod tests {\n    \
                 use crate::a::A;\n    const S: &str = \"}\";\n    const C: char = '{';\n    \
                 fn f<'a>(x: &'a str) -> &'a str { x }\n}\n\npub fn after() -> crate::c::C { \
                 crate::c::C }\n",
            ),
            ("c.rs", "pub struct C;\n"),
            ("testutil.rs", "use crate::a::A;\n"),
        ],
    );
    let graph = graph_of(&src);
    assert!(cycles(&graph).is_empty(), "{graph:?}");
    // The test module is dropped, the code after it is read.
    let b: Vec<String> = graph[&vec!["b".to_string()]].keys().map(name).collect();
    assert_eq!(b, ["c"]);
    assert!(!graph.contains_key(&vec!["testutil".to_string()]));
}

#[test]
fn super_paths_resolve_like_rust() {
    let m: ModPath = vec!["a".into(), "b".into(), "c".into()];
    let words = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(absolute(&m, &words("super::x")), Some(words("a::b::x")));
    assert_eq!(absolute(&m, &words("super::super::x")), Some(words("a::x")));
    assert_eq!(absolute(&m, &words("crate::self::x")), Some(words("x")));
    assert_eq!(absolute(&vec![], &words("super::x")), None);
    let refs = module_references("use crate::a::{b, c}; $crate::m::n; mycrate::x; super;");
    let refs: Vec<Vec<String>> = refs.into_iter().map(|(_, w)| w).collect();
    assert_eq!(refs, [words("crate::a"), words("crate::m::n")]);
}
