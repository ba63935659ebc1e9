//! `cargo xtask layout`: the source tree keeps its shape. Inside each crate, imports between
//! modules go one way (no cycle), and no file is longer than [`MAX_LINES`] unless it is a
//! table of test cases named in [`LONG_FILES`].
//!
//! A module's imports are the `crate::`, `super::` and `self::` paths it names outside its
//! `#[cfg(test)]` items, resolved to the longest module path they start with. A file's
//! module is where its path puts it (`a/b.rs` and `a/b/mod.rs` are `a::b`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use syn::visit::Visit;

/// Longest file the layout allows.
pub const MAX_LINES: usize = 600;

/// Files allowed past [`MAX_LINES`], and why.
pub const LONG_FILES: &[(&str, &str)] = &[
    (
        "tests/tests/bpf_packets.rs",
        "test cases: one BPF_PROG_TEST_RUN case per rewrite path, exact output bytes",
    ),
    (
        "tests/tests/hostile_packets.rs",
        "test cases: one crafted packet per hostile input",
    ),
    (
        "forwarder/tests/dashboard.rs",
        "test cases: every dashboard panel's query against the metrics it names",
    ),
];

/// The crates' source folders, relative to the workspace root.
const CRATES: &[&str] = &[
    "forwarder/src",
    "forwarder-common/src",
    "forwarder-ebpf/src",
    "tests/src",
    "xtask/src",
];

/// Folders whose files are checked for length only (each file is a crate of its own).
const TEST_FOLDERS: &[&str] = &["tests/tests", "forwarder/tests", "tests/src/bin"];

pub fn run(root: &Path, graph: bool) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for krate in CRATES {
        let dir = root.join(krate);
        let modules = modules(&dir)?;
        for (file, _) in modules.values() {
            check_length(root, file, &mut problems)?;
        }
        let edges = imports(&modules);
        if graph {
            println!("{krate}:");
            for (m, targets) in &edges {
                let name = if m.is_empty() { "(root)" } else { m };
                let t: Vec<&str> = targets.iter().map(String::as_str).collect();
                println!("  {name} -> {}", t.join(", "));
            }
        }
        for cycle in strongly_connected(&edges) {
            problems.push(format!("{krate}: import cycle: {}", cycle.join(" -> ")));
        }
    }
    for folder in TEST_FOLDERS {
        for file in rust_files(&root.join(folder))? {
            check_length(root, &file, &mut problems)?;
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("layout: {p}");
        }
        bail!(
            "{} layout problem(s): break the cycle by moving what both sides need one layer down; split a long file by job (see docs/architecture.md)",
            problems.len()
        );
    }
    println!(
        "layout: no import cycle, no file over {MAX_LINES} lines outside the named test tables"
    );
    Ok(())
}

fn check_length(root: &Path, file: &Path, problems: &mut Vec<String>) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let lines = text.lines().count();
    let rel = file.strip_prefix(root).unwrap_or(file);
    let allowed = LONG_FILES.iter().any(|(f, _)| Path::new(f) == rel);
    if lines > MAX_LINES && !allowed {
        problems.push(format!(
            "{}: {lines} lines (at most {MAX_LINES})",
            rel.display()
        ));
    }
    Ok(())
}

fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries {
        let path = e?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Module path (`a::b`, `` for the crate root) -> (file, parsed file).
type Modules = BTreeMap<String, (PathBuf, syn::File)>;

fn modules(src: &Path) -> anyhow::Result<Modules> {
    let mut out = Modules::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        // Binaries under src/bin are crates of their own.
        if rel.starts_with("bin") {
            continue;
        }
        let mut parts: Vec<String> = rel
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
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        out.insert(parts.join("::"), (file, ast));
    }
    Ok(out)
}

/// Each module's imports of other modules of its crate.
fn imports(modules: &Modules) -> BTreeMap<&str, BTreeSet<String>> {
    let names: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (name, (_, ast)) in modules {
        let mut v = Refs {
            here: name
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            found: BTreeSet::new(),
        };
        for item in &ast.items {
            if !is_test_only(item) {
                v.visit_item(item);
            }
        }
        let targets = v
            .found
            .iter()
            .filter_map(|p| resolve(&names, p))
            .filter(|t| t != name)
            .collect();
        edges.insert(name.as_str(), targets);
    }
    edges
}

fn is_test_only(item: &syn::Item) -> bool {
    let attrs = match item {
        syn::Item::Mod(m) => &m.attrs,
        syn::Item::Fn(f) => &f.attrs,
        syn::Item::Use(u) => &u.attrs,
        syn::Item::Impl(i) => &i.attrs,
        _ => return false,
    };
    test_only(attrs)
}

/// `#[cfg(test)]`, or `#[cfg(all(test, ...))]`: compiled for tests alone.
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        if !a.path().is_ident("cfg") {
            return false;
        }
        let Ok(meta) = a.parse_args::<syn::Meta>() else {
            return false;
        };
        match &meta {
            syn::Meta::Path(p) => p.is_ident("test"),
            syn::Meta::List(l) if l.path.is_ident("all") => l
                .parse_args_with(
                    syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated,
                )
                .is_ok_and(|args| args.iter().any(|m| m.path().is_ident("test"))),
            _ => false,
        }
    })
}

/// The longest module path `path` starts with.
fn resolve(names: &BTreeSet<&str>, path: &[String]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|p| names.contains(p.as_str()))
}

/// Collects the absolute module paths a file names.
struct Refs {
    here: Vec<String>,
    found: BTreeSet<Vec<String>>,
}

impl Refs {
    /// `crate::a::b` -> `[a, b]`; `super::x` and `self::x` relative to this module.
    fn absolute(&self, segs: &[String]) -> Option<Vec<String>> {
        let first = segs.first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.here.clone(),
            "super" => {
                let mut b = self.here.clone();
                b.pop();
                b
            }
            _ => return None,
        };
        let mut rest = &segs[1..];
        while rest.first().is_some_and(|s| s == "super") {
            base.pop();
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.add(&full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                self.add(&full);
            }
            syn::UseTree::Glob(_) => {
                let full = prefix.clone();
                self.add(&full);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn add(&mut self, segs: &[String]) {
        if let Some(abs) = self.absolute(segs) {
            self.found.insert(abs);
        }
    }
}

impl<'ast> Visit<'ast> for Refs {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.add(&segs);
        syn::visit::visit_path(self, p);
    }

    // `pub(super)` names who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // Inline modules other than tests are part of their file's module.
        if !test_only(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
}

/// Tarjan's algorithm; returns the components with more than one node, sorted.
fn strongly_connected(edges: &BTreeMap<&str, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<&'a str, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on_stack: BTreeSet<String>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit(s: &mut State<'_>, v: &str) {
        s.index.insert(v.to_owned(), s.next);
        s.low.insert(v.to_owned(), s.next);
        s.next += 1;
        s.stack.push(v.to_owned());
        s.on_stack.insert(v.to_owned());
        let targets: Vec<String> = s
            .edges
            .get(v)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        for w in targets {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let lw = s.low[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(*v) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(pairs: &[(&'static str, &[&str])]) -> BTreeMap<&'static str, BTreeSet<String>> {
        pairs
            .iter()
            .map(|(a, bs)| (*a, bs.iter().map(|b| (*b).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn finds_a_cycle_and_only_it() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]);
        assert_eq!(strongly_connected(&g), vec![vec!["a", "b", "c"]]);
    }

    #[test]
    fn a_chain_has_no_cycle() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &[])]);
        assert!(strongly_connected(&g).is_empty());
    }

    #[test]
    fn paths_resolve_relative_to_the_module() {
        let r = Refs {
            here: vec!["daemon".into(), "run".into()],
            found: BTreeSet::new(),
        };
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            r.absolute(&s(&["super", "flowgc", "X"])),
            Some(s(&["daemon", "flowgc", "X"]))
        );
        assert_eq!(
            r.absolute(&s(&["crate", "model", "labels"])),
            Some(s(&["model", "labels"]))
        );
        assert_eq!(r.absolute(&s(&["std", "fmt"])), None);
        let names: BTreeSet<&str> = ["daemon", "daemon::flowgc", "model"].into();
        assert_eq!(
            resolve(&names, &s(&["daemon", "flowgc", "X"])),
            Some("daemon::flowgc".to_owned())
        );
    }

    #[test]
    fn only_test_builds_are_left_out() {
        let attrs = |src: &str| syn::parse_str::<syn::ItemMod>(src).unwrap().attrs;
        assert!(test_only(&attrs("#[cfg(test)] mod t {}")));
        assert!(test_only(&attrs(
            "#[cfg(all(test, feature = \"std\"))] mod t {}"
        )));
        assert!(!test_only(&attrs("#[cfg(feature = \"user\")] mod t {}")));
        assert!(!test_only(&attrs("mod t {}")));
    }

    #[test]
    fn the_workspace_keeps_its_layout() {
        run(&crate::root(), false).unwrap();
    }
}
