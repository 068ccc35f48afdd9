//! The library's modules form no import cycle: a module that both uses and is used by another
//! is two ideas tangled (issue #15 found `cli ↔ offline` and `desired::effective ↔ desired::merge`).
//!
//! Reads `src/` (the library: not `main.rs` or `src/bin/`), collects every `crate::…` and
//! `super::…` path per file module, and lifts each edge to the children of the two modules'
//! closest common ancestor (so `controller::pipeline → desired::merge` counts as
//! `controller → desired`). Edges between a module and its own ancestors are not counted: a
//! `mod.rs` that re-exports its children, and children that use their parent's helpers, are one
//! idea. Any strongly connected component of two or more modules is a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                rs_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/desired/merge.rs` → `[desired, merge]`, `src/desired/mod.rs` → `[desired]`, `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.is_empty() && stem == "main" {
        return None;
    }
    if !(stem == "mod" || (parts.is_empty() && stem == "lib")) {
        parts.push(stem.to_string());
    }
    Some(parts)
}

/// Source without comments, string contents or char literals (they may hold `crate::` or braces).
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            '/' if b.get(i + 1) == Some(&'/') => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            '"' => {
                out.push('"');
                i += 1;
                while i < b.len() && b[i] != '"' {
                    i += if b[i] == '\\' { 2 } else { 1 };
                }
                out.push('"');
                i += 1;
            }
            'r' if b.get(i + 1) == Some(&'#')
                || (b.get(i + 1) == Some(&'"') && i > 0 && !b[i - 1].is_alphanumeric()) =>
            {
                // Raw string r"…" / r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&'"') {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
                let rest: String = b[j..].iter().collect();
                let end = rest
                    .find(&close)
                    .map_or(b.len(), |k| j + rest[..k].chars().count() + close.len());
                out.push_str("\"\"");
                i = end;
            }
            '\'' if b.get(i + 2) == Some(&'\'') || (b.get(i + 1) == Some(&'\\') && b.get(i + 3) == Some(&'\'')) => {
                i += if b.get(i + 1) == Some(&'\\') { 4 } else { 3 };
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Paths of a use tree starting at `code[i..]` (just after `crate::` or `super::`): `a::b`,
/// `a::{b, c::d}`, `{a, b}`. Returns the paths (as segments) and where parsing stopped.
fn parse_tree(code: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let skip_ws = |i: &mut usize| {
        while *i < code.len() && code[*i].is_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if code.get(i) == Some(&'{') {
        i += 1;
        let mut all = vec![];
        loop {
            skip_ws(&mut i);
            match code.get(i) {
                None => return (all, i),
                Some('}') => return (all, i + 1),
                Some(',') => i += 1,
                _ => {
                    let (sub, j) = parse_tree(code, i);
                    all.extend(sub);
                    if j == i {
                        i += 1;
                    } else {
                        i = j;
                    }
                }
            }
        }
    }
    let start = i;
    while i < code.len() && is_ident(code[i]) {
        i += 1;
    }
    if i == start {
        return (vec![vec![]], i);
    }
    let seg: String = code[start..i].iter().collect();
    if code.get(i) == Some(&':') && code.get(i + 1) == Some(&':') {
        let (subs, j) = parse_tree(code, i + 2);
        let paths = subs
            .into_iter()
            .map(|mut s| {
                s.insert(0, seg.clone());
                s
            })
            .collect();
        return (paths, j);
    }
    (vec![vec![seg]], i)
}

/// Every module `file_module` refers to through `crate::` or `super::` paths (raw, unresolved).
fn references(file_module: &Module, code: &str) -> Vec<Module> {
    let chars: Vec<char> = code.chars().collect();
    let mut refs = vec![];
    // Inline `mod x {` blocks change what `super` means.
    let mut inline: Vec<(String, usize)> = vec![];
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let at_word = i == 0 || !is_ident(chars[i - 1]);
        let rest = || chars[i..].iter().take(8).collect::<String>();
        match chars[i] {
            '{' => {
                depth += 1;
                i += 1;
            }
            '}' => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                i += 1;
            }
            'm' if at_word && rest().starts_with("mod ") => {
                let mut j = i + 4;
                let s = j;
                while j < chars.len() && is_ident(chars[j]) {
                    j += 1;
                }
                let name: String = chars[s..j].iter().collect();
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if chars.get(j) == Some(&'{') {
                    inline.push((name, depth));
                }
                i = j;
            }
            'c' | 's' if at_word && (rest().starts_with("crate::") || rest().starts_with("super::")) => {
                let mut base: Module = file_module.clone();
                base.extend(inline.iter().map(|(n, _)| n.clone()));
                let mut j = i;
                if chars[j] == 'c' {
                    base.clear();
                    j += 7;
                } else {
                    while chars[j..].iter().take(7).collect::<String>() == "super::" {
                        base.pop();
                        j += 7;
                    }
                }
                let (paths, end) = parse_tree(&chars, j);
                for p in paths {
                    let mut m = base.clone();
                    m.extend(p);
                    refs.push(m);
                }
                i = end.max(i + 1);
            }
            _ => i += 1,
        }
    }
    refs
}

/// Module graph of the library at `src`, lifted as described at the top of this file.
fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = vec![];
    rs_files(src, &mut files);
    let mut texts = vec![];
    for f in files {
        if let Some(m) = module_of(src, &f) {
            texts.push((m, std::fs::read_to_string(&f).expect("read source")));
        }
    }
    let modules: BTreeSet<Module> = texts.iter().map(|(m, _)| m.clone()).collect();
    let mut g: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, text) in &texts {
        for raw in references(from, &code_only(text)) {
            // The longest prefix that is a file module (the rest is items inside it).
            let to = (0..=raw.len())
                .rev()
                .map(|n| raw[..n].to_vec())
                .find(|p| modules.contains(p))
                .unwrap_or_default();
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue; // itself, an ancestor or a descendant
            }
            g.entry(from[..=common].to_vec())
                .or_default()
                .insert(to[..=common].to_vec());
        }
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct T<'a> {
        g: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on: BTreeSet<Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit(t: &mut T<'_>, v: &Module) {
        let n = t.index.len();
        t.index.insert(v.clone(), n);
        t.low.insert(v.clone(), n);
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = vec![];
            while let Some(w) = t.stack.pop() {
                t.on.remove(&w);
                let done = w == *v;
                scc.push(w);
                if done {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        out: vec![],
    };
    let nodes: BTreeSet<Module> = g.keys().chain(g.values().flatten()).cloned().collect();
    for v in &nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out.sort();
    t.out
}

fn show(scc: &[Module]) -> String {
    scc.iter().map(|m| m.join("::")).collect::<Vec<_>>().join(" ↔ ")
}

#[test]
fn library_modules_import_each_other_in_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    assert!(g.len() > 5, "the scan found the modules: {g:?}");
    let found: Vec<String> = cycles(&g).iter().map(|c| show(c)).collect();
    assert!(found.is_empty(), "module cycles: {found:#?}");
}

/// The checker finds what it is for: the two cycles issue #15 reported, written the ways the
/// source writes imports (grouped `use`, `super::`, inline paths, a test module's `super`).
#[test]
fn the_checker_finds_cycles_through_grouped_super_and_inline_paths() {
    let dir = std::env::temp_dir().join(format!("mlobs-module-cycles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("desired")).expect("mkdir");
    let files = [
        ("lib.rs", "pub mod cli;\npub mod offline;\npub mod desired;\n"),
        (
            "cli.rs",
            "fn run() { crate::offline::plan(); }\n// crate::desired::nothing in a comment\n",
        ),
        (
            "offline.rs",
            "use crate::{cli::{Args, EXIT}, desired};\npub fn plan() {}\n",
        ),
        (
            "desired/mod.rs",
            "pub mod effective;\npub mod merge;\npub use effective::Context;\n",
        ),
        (
            "desired/effective.rs",
            "fn f() { super::merge::bounded_name(\"crate::cli\"); }\n#[cfg(test)]\nmod tests { use super::f; }\n",
        ),
        (
            "desired/merge.rs",
            "use super::effective::*;\npub fn bounded_name() {}\n",
        ),
    ];
    for (path, text) in files {
        std::fs::write(dir.join(path), text).expect("write");
    }
    let found: Vec<String> = cycles(&graph(&dir)).iter().map(|c| show(c)).collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found, ["cli ↔ offline", "desired::effective ↔ desired::merge"]);
}
