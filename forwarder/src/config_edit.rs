//! Runtime edits of the configuration file (`forwarder rules …`, `forwarder hosts …`).
//!
//! The file is the user's: an edit changes only the section it is about and keeps every
//! comment and all the layout around it. The result is written so that a crash, a full
//! disk or a power loss leaves either the old file or the new one, never a mix.
//!
//! Which comments leave with a removed section: the comment lines directly above its
//! header and directly below its last key, with no blank line in between. That is how a
//! section is annotated and where commented-out settings are kept. Comments set off by a
//! blank line describe a group of sections or the file, and stay, as does the comment at
//! the very top of the file:
//!
//! ```toml
//! # Names counted separately.      <- stays (a blank line follows)
//!
//! # The blog, on the second box.   <- removed with the section
//! [[host]]
//! name = "blog.example.com"
//! # policy = "drop"                <- removed with the section
//!
//! # vim: ft=toml                   <- stays
//! ```
//!
//! New sections go at the end of the file, after the last section's own trailing comments
//! and before the comments that end the file.

use std::{
    fs::{self, File, OpenOptions, Permissions},
    io::{self, Write},
    net::IpAddr,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use forwarder_common::host::HostPattern;
use toml_edit::{ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use crate::config::{
    ConfigError, FileConfig, HostConfig, HostPolicy, Limits, Proto, RuleConfig, line_col,
};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The edit would make the file something the daemon cannot read.
    #[error("{0}")]
    Invalid(String),
    /// What is to be added is there already.
    #[error("{0}")]
    Conflict(String),
    /// What is to be changed or removed is not there.
    #[error("{0}")]
    NotFound(String),
    /// Several sections match; the user has to say which one.
    #[error("{0}")]
    Ambiguous(String),
    /// The file was not replaced.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file was replaced, but the replacement may not survive a power loss.
    #[error("wrote {path}, but cannot flush its directory: {source}")]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<ConfigError> for EditError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Read { path, source } => EditError::Read { path, source },
            ConfigError::Parse {
                path,
                line,
                column,
                message,
            } => EditError::Parse {
                path,
                line,
                column,
                message,
            },
            ConfigError::Invalid(m) => EditError::Invalid(m),
        }
    }
}

/// The configuration file as the user wrote it, with the edits made so far.
///
/// Every edit leaves a document that [`FileConfig`] reads; one that would not is undone
/// and reported. Whether the result is a configuration the daemon can run with (addresses,
/// duplicates across rules, host names) is for [`crate::config::Config::resolve`] to say,
/// on [`ConfigDoc::file_config`], before [`ConfigDoc::write_atomic`].
#[derive(Clone, Debug)]
pub struct ConfigDoc {
    path: PathBuf,
    doc: DocumentMut,
    original: String,
}

/// What tells two rules apart in the file: what the daemon would see as "forwarded twice"
/// for a rule naming its public address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RuleId {
    proto: Proto,
    port: u16,
    public_addr: Option<IpAddr>,
}

impl RuleId {
    fn of(r: &RuleConfig) -> Self {
        RuleId {
            proto: r.proto,
            port: r.port,
            public_addr: r.public_addr,
        }
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.public_addr {
            Some(a) => write!(f, "{} {a} port {}", self.proto, self.port),
            None => write!(f, "{} port {}", self.proto, self.port),
        }
    }
}

impl ConfigDoc {
    pub fn open(path: &Path) -> Result<Self, EditError> {
        let text = fs::read_to_string(path).map_err(|source| EditError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// `path` is where [`ConfigDoc::write_atomic`] writes and what messages name.
    pub fn parse(path: &Path, text: &str) -> Result<Self, EditError> {
        // The typed parse first: its messages are the ones the daemon gives at startup,
        // and it makes sure `rule` and `host` are arrays whose entries line up with the
        // parsed rules and hosts, which is how the edits find a section.
        FileConfig::parse(path, text)?;
        let doc = text.parse::<DocumentMut>().map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            EditError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim_end().to_owned(),
            }
        })?;
        Ok(ConfigDoc {
            path: path.to_owned(),
            doc,
            original: text.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a `[[rule]]` section with the fields the rule sets (`proto` only for UDP).
    /// Refused if a rule for the same protocol, port and `public_addr` (or equally without
    /// one) is in the file.
    pub fn add_rule(&mut self, rule: &RuleConfig) -> Result<(), EditError> {
        let id = RuleId::of(rule);
        if self.file_config()?.rules.iter().any(|r| RuleId::of(r) == id) {
            return Err(EditError::Conflict(format!(
                "a [[rule]] already forwards {id}"
            )));
        }
        let mut fields: Vec<(&str, Value)> = Vec::new();
        if rule.proto != Proto::Tcp {
            fields.push(("proto", rule.proto.to_string().into()));
        }
        fields.push(("port", i64::from(rule.port).into()));
        if let Some(b) = rule.backend {
            fields.push(("backend", b.to_string().into()));
        }
        if let Some(p) = rule.backend_port {
            fields.push(("backend_port", i64::from(p).into()));
        }
        if let Some(a) = rule.public_addr {
            fields.push(("public_addr", a.to_string().into()));
        }
        if let Some(f) = &rule.fallback {
            fields.push(("fallback", f.as_str().into()));
        }
        self.edit(|doc| append_section(doc, "rule", fields))
    }

    /// Removes the `[[rule]]` forwarding `proto` `port` on `public_addr`, and returns it.
    ///
    /// With an address, only a rule naming exactly that `public_addr` matches: a rule
    /// without one covers every public address, and removing it would stop more than was
    /// asked for. Without an address, the one rule for that protocol and port is removed,
    /// whatever its address. If several forward it, the one without a `public_addr` is
    /// meant (it is the one the request names exactly); if there is no such rule, or more
    /// than one, the request is ambiguous and nothing is removed.
    pub fn remove_rule(
        &mut self,
        proto: Proto,
        port: u16,
        public_addr: Option<IpAddr>,
    ) -> Result<RuleConfig, EditError> {
        let mut rules = self.file_config()?.rules;
        let want = RuleId {
            proto,
            port,
            public_addr,
        };
        let exact: Vec<usize> = (0..rules.len())
            .filter(|&i| RuleId::of(&rules[i]) == want)
            .collect();
        let same_port: Vec<usize> = (0..rules.len())
            .filter(|&i| rules[i].proto == proto && rules[i].port == port)
            .collect();
        let index = match (public_addr, exact.as_slice(), same_port.as_slice()) {
            (_, _, []) | (Some(_), [], _) => {
                return Err(EditError::NotFound(format!(
                    "no [[rule]] forwards {want}"
                )));
            }
            (None, _, [only]) | (_, [only], _) => *only,
            (_, _, several) => {
                let on: Vec<String> = several
                    .iter()
                    .map(|&i| match rules[i].public_addr {
                        Some(a) => a.to_string(),
                        None => "every address".into(),
                    })
                    .collect();
                let hint = if public_addr.is_some() || exact.len() > 1 {
                    format!("leave one in {}", self.path.display())
                } else {
                    "name the public address".into()
                };
                return Err(EditError::Ambiguous(format!(
                    "{} [[rule]] sections forward {} port {} (on {}): {hint}",
                    several.len(),
                    proto,
                    port,
                    on.join(", ")
                )));
            }
        };
        self.edit(|doc| remove_section(doc, "rule", index))?;
        Ok(rules.swap_remove(index))
    }

    /// Appends a `[[host]]` section (`policy` only when not `forward`). Refused if the
    /// name is configured already, in whatever case or with a trailing dot.
    pub fn add_host(&mut self, host: &HostConfig) -> Result<(), EditError> {
        let want = host_label(&host.name);
        if self
            .file_config()?
            .hosts
            .iter()
            .any(|h| host_label(&h.name) == want)
        {
            return Err(EditError::Conflict(format!(
                "host {want:?} is already configured"
            )));
        }
        let mut fields: Vec<(&str, Value)> = vec![("name", host.name.as_str().into())];
        if host.policy != HostPolicy::Forward {
            fields.push(("policy", host.policy.to_string().into()));
        }
        self.edit(|doc| append_section(doc, "host", fields))
    }

    pub fn remove_host(&mut self, name: &str) -> Result<(), EditError> {
        let index = self.host_index(name)?;
        self.edit(|doc| remove_section(doc, "host", index))
    }

    /// `forward` removes the `policy` key rather than writing the default out.
    pub fn set_host_policy(&mut self, name: &str, policy: HostPolicy) -> Result<(), EditError> {
        let index = self.host_index(name)?;
        self.edit(|doc| {
            let host = section_mut(doc, "host", index)?;
            if policy == HostPolicy::Forward {
                host.remove("policy");
            } else {
                set_value(host, "policy", policy.to_string().into());
            }
            Ok(())
        })
    }

    /// Writes the limits into `[limits]`, adding the section if there is none. A rate of
    /// 0 (no limit) removes the section's keys but keeps its header and the comments on
    /// it, for the next time a limit is set.
    pub fn set_limits(&mut self, limits: Limits) -> Result<(), EditError> {
        self.edit(|doc| {
            if limits.new_connections_per_second == 0 {
                if let Some(t) = doc.get_mut("limits").and_then(Item::as_table_like_mut) {
                    t.remove("new_connections_per_second");
                    t.remove("burst");
                }
                return Ok(());
            }
            if !doc.contains_key("limits") {
                let section = start_section(doc);
                doc.insert("limits", Item::Table(section));
            }
            let t = doc
                .get_mut("limits")
                .and_then(Item::as_table_like_mut)
                .ok_or_else(|| EditError::Invalid("limits is not a [limits] section".into()))?;
            set_value(
                t,
                "new_connections_per_second",
                i64::from(limits.new_connections_per_second).into(),
            );
            match limits.burst {
                Some(b) => set_value(t, "burst", i64::from(b).into()),
                None => {
                    t.remove("burst");
                }
            }
            Ok(())
        })
    }

    /// The edited document as the daemon would read it from the file.
    pub fn file_config(&self) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(&self.path, &self.text())
    }

    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// Whether the text differs from what was read.
    pub fn changed(&self) -> bool {
        self.text() != self.original
    }

    /// Replaces the file with the edited text: a temporary file `.<name>.tmp-<pid>` in
    /// the same directory, flushed, given the original's permissions, renamed over the
    /// original, and the directory flushed so the rename itself is durable. On any error
    /// before the rename the original is untouched and the temporary file is gone.
    /// A symbolic link is followed: the file it points to is replaced, the link stays.
    ///
    /// Callers make one edit at a time: two writers in one process share the temporary
    /// file name.
    pub fn write_atomic(&self) -> Result<(), EditError> {
        let failed = |source| EditError::Write {
            path: self.path.clone(),
            source,
        };
        let target = match fs::canonicalize(&self.path) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.path.clone(),
            Err(e) => return Err(failed(e)),
        };
        let Some(name) = target.file_name() else {
            return Err(failed(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name",
            )));
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mode = match fs::metadata(&target) {
            Ok(m) => Some(m.permissions().mode() & 0o7777),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(failed(e)),
        };
        let mut file = create_temp(&tmp, mode.is_some()).map_err(failed)?;
        let written = (|| {
            file.write_all(self.text().as_bytes())?;
            if let Some(mode) = mode {
                file.set_permissions(Permissions::from_mode(mode))?;
            }
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &target)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(failed(e));
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| EditError::Sync {
                path: self.path.clone(),
                source,
            })
    }

    fn host_index(&self, name: &str) -> Result<usize, EditError> {
        let want = host_label(name);
        self.file_config()?
            .hosts
            .iter()
            .position(|h| host_label(&h.name) == want)
            .ok_or_else(|| EditError::NotFound(format!("host {want:?} is not configured")))
    }

    /// Runs one edit; if it fails, or leaves a document the daemon could not read, the
    /// document is as before.
    fn edit<T>(
        &mut self,
        change: impl FnOnce(&mut DocumentMut) -> Result<T, EditError>,
    ) -> Result<T, EditError> {
        let before = self.doc.clone();
        let result = change(&mut self.doc).and_then(|v| {
            self.file_config()?;
            Ok(v)
        });
        if result.is_err() {
            self.doc = before;
        }
        result
    }
}

/// A leftover from an earlier attempt of this process id (a crash, a recycled pid) is in
/// the way and is ours to replace; anything else under that name (a directory) is not.
fn create_temp(tmp: &Path, restricted: bool) -> io::Result<File> {
    // Until it has the original's mode, the copy is readable by the owner only: the
    // original may be private.
    let mode = if restricted { 0o600 } else { 0o644 };
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)
    };
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp)?;
            create()
        }
        r => r,
    }
}

/// How names compare: the daemon's normalisation (case, trailing dot), or for a name it
/// would reject anyway, the name as written in lowercase.
fn host_label(name: &str) -> String {
    HostPattern::parse(name).map_or_else(|_| name.trim().to_ascii_lowercase(), |p| p.label)
}

/// The `index`th `[[key]]` section, however the file writes the array.
fn section_mut<'d>(
    doc: &'d mut DocumentMut,
    key: &str,
    index: usize,
) -> Result<&'d mut dyn TableLike, EditError> {
    let found = match doc.get_mut(key) {
        Some(Item::ArrayOfTables(a)) => a.get_mut(index).map(|t| t as &mut dyn TableLike),
        Some(Item::Value(Value::Array(a))) => a
            .get_mut(index)
            .and_then(Value::as_inline_table_mut)
            .map(|t| t as &mut dyn TableLike),
        _ => None,
    };
    found.ok_or_else(|| EditError::Invalid(format!("[[{key}]] {} is not in the file", index + 1)))
}

/// Replaces a value but keeps the comment after it (`port = 443  # HTTPS`) and the
/// comment lines above its key.
fn set_value(t: &mut dyn TableLike, key: &str, mut value: Value) {
    match t.get_mut(key) {
        Some(item) => {
            if let Some(old) = item.as_value() {
                *value.decor_mut() = old.decor().clone();
            }
            *item = Item::Value(value);
        }
        None => {
            t.insert(key, Item::Value(value));
        }
    }
}

fn append_section(
    doc: &mut DocumentMut,
    key: &str,
    fields: Vec<(&str, Value)>,
) -> Result<(), EditError> {
    match doc.get_mut(key) {
        // `rule = [{ port = 443 }]` stays in the style the user chose.
        Some(Item::Value(Value::Array(a))) => {
            let mut t = InlineTable::new();
            for (k, v) in fields {
                t.insert(k, v);
            }
            a.push(t);
            return Ok(());
        }
        Some(Item::ArrayOfTables(_)) | None => {}
        Some(_) => {
            return Err(EditError::Invalid(format!(
                "{key} in the file is not a list of [[{key}]] sections"
            )));
        }
    }
    let mut section = start_section(doc);
    for (k, v) in fields {
        section.insert(k, Item::Value(v));
    }
    match doc.get_mut(key) {
        Some(Item::ArrayOfTables(a)) => a.push(section),
        _ => {
            let mut a = ArrayOfTables::new();
            a.push(section);
            doc.insert(key, Item::ArrayOfTables(a));
        }
    }
    Ok(())
}

/// An empty section placed at the end of the file (see the module documentation).
fn start_section(doc: &mut DocumentMut) -> Table {
    let position = header_positions(doc.as_table()).into_iter().max().unwrap_or(0) + 1;
    let trailing = raw(doc.trailing().as_str());
    let (above, below) = if doc.as_table().get_values().is_empty()
        && header_positions(doc.as_table()).is_empty()
    {
        // Only comments so far: they introduce the file.
        (trailing.clone(), String::new())
    } else {
        let rest = drop_tail(&trailing, false);
        (trailing[..trailing.len() - rest.len()].to_owned(), rest.to_owned())
    };
    let prefix = if above.trim().is_empty() && doc.to_string().trim().is_empty() {
        String::new()
    } else {
        let mut p = above;
        if !p.is_empty() && !p.ends_with('\n') {
            p.push('\n');
        }
        if !ends_with_blank_line(&p) {
            p.push('\n');
        }
        p
    };
    doc.set_trailing(below);
    let mut t = Table::new();
    t.set_position(Some(position));
    t.decor_mut().set_prefix(prefix);
    t
}

fn remove_section(doc: &mut DocumentMut, key: &str, index: usize) -> Result<(), EditError> {
    let (removed, now_empty) = match doc.get_mut(key) {
        Some(Item::ArrayOfTables(a)) if index < a.len() => {
            let t = a.remove(index);
            (t, a.is_empty())
        }
        Some(Item::Value(Value::Array(a))) if index < a.len() => {
            a.remove(index);
            return Ok(());
        }
        _ => {
            return Err(EditError::Invalid(format!(
                "[[{key}]] {} is not in the file",
                index + 1
            )));
        }
    };
    if now_empty {
        doc.remove(key);
    }
    release_comments(doc, &removed);
    Ok(())
}

/// Hands the comments around a removed section that are not its own to what follows it.
fn release_comments(doc: &mut DocumentMut, removed: &Table) {
    let Some(position) = removed.position() else {
        return;
    };
    let prefix = raw(removed.decor().prefix().and_then(|p| p.as_str()));
    let positions = header_positions(doc.as_table());
    let first_in_file =
        doc.as_table().get_values().is_empty() && positions.iter().all(|&p| p > position);
    let kept = if first_in_file {
        prefix.as_str()
    } else {
        without_own_comments(&prefix)
    };
    match positions.into_iter().filter(|&p| p > position).min() {
        Some(next) => {
            if let Some(t) = table_at(doc.as_table_mut(), next) {
                let text = raw(t.decor().prefix().and_then(|p| p.as_str()));
                let joined = join(kept, drop_tail(&text, true));
                t.decor_mut().set_prefix(joined);
            }
        }
        None => {
            let text = raw(doc.trailing().as_str());
            let rest = drop_tail(&text, false);
            let joined = if has_comment(kept) && !has_comment(rest) {
                // Nothing follows but what this section left: end the file on it.
                format!("{}\n", kept.trim_end())
            } else {
                join(kept, rest)
            };
            doc.set_trailing(joined);
        }
    }
}

fn raw(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn has_comment(text: &str) -> bool {
    text.lines().any(is_comment)
}

fn ends_with_blank_line(text: &str) -> bool {
    text.split_inclusive('\n')
        .next_back()
        .is_some_and(|l| l.ends_with('\n') && l.trim().is_empty())
}

fn trim_leading_blank_lines(text: &str) -> &str {
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') || !line.trim().is_empty() {
            break;
        }
        start += line.len();
    }
    &text[start..]
}

/// The text above a header without the comment lines directly above it (nor the header's
/// indentation).
fn without_own_comments(prefix: &str) -> &str {
    let mut cut = prefix.rfind('\n').map_or(0, |i| i + 1);
    for line in prefix[..cut].split_inclusive('\n').rev() {
        if !is_comment(line) {
            break;
        }
        cut -= line.len();
    }
    &prefix[..cut]
}

/// The text after a section's last key without the comment lines directly below it. When
/// those run on up to the next header (`before_header`) with no blank line, they
/// introduce that section instead and stay.
fn drop_tail(text: &str, before_header: bool) -> &str {
    let mut cut = 0;
    for line in text.split_inclusive('\n') {
        if is_comment(line) {
            cut += line.len();
        } else if line.ends_with('\n') {
            return &text[cut..];
        } else {
            // The next header's indentation: the comments reach it.
            break;
        }
    }
    if before_header { text } else { &text[cut..] }
}

/// What is left above a header: the released comments, then what was there already,
/// with one blank line between the two and none doubled.
fn join(kept: &str, rest: &str) -> String {
    if !has_comment(kept) {
        let separated = rest.is_empty() || rest.starts_with('\n') || !rest.contains('\n');
        return if kept.contains('\n') && !separated {
            format!("\n{rest}")
        } else {
            rest.to_owned()
        };
    }
    if ends_with_blank_line(kept) {
        format!("{kept}{}", trim_leading_blank_lines(rest))
    } else {
        format!("{kept}{rest}")
    }
}

/// Positions of the sections that have a header in the file (`[limits]`, `[[rule]]`).
fn header_positions(t: &Table) -> Vec<isize> {
    let mut out = Vec::new();
    collect_positions(t, &mut out);
    out
}

fn collect_positions(t: &Table, out: &mut Vec<isize>) {
    for (_, item) in t.iter() {
        let children: Vec<&Table> = match item {
            Item::Table(c) => vec![c],
            Item::ArrayOfTables(a) => a.iter().collect(),
            _ => continue,
        };
        for c in children {
            if !c.is_dotted()
                && !c.is_implicit()
                && let Some(p) = c.position()
            {
                out.push(p);
            }
            collect_positions(c, out);
        }
    }
}

fn table_at(t: &mut Table, position: isize) -> Option<&mut Table> {
    for (_, item) in t.iter_mut() {
        let children: Vec<&mut Table> = match item {
            Item::Table(c) => vec![c],
            Item::ArrayOfTables(a) => a.iter_mut().collect(),
            _ => continue,
        };
        for c in children {
            if !c.is_dotted() && !c.is_implicit() && c.position() == Some(position) {
                return Some(c);
            }
            if let Some(found) = table_at(c, position) {
                return Some(found);
            }
        }
    }
    None
}
