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
    ConfigError, FileConfig, HostConfig, HostPolicy, Limits, Proto, RuleConfig, default_rules,
    default_rules_text, line_col,
};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file cannot be read, does not parse, or an edit would make it something the
    /// daemon cannot read (the same errors as at startup).
    #[error(transparent)]
    Config(#[from] ConfigError),
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

/// An edit that would leave the file unreadable to the daemon.
fn invalid(message: String) -> EditError {
    EditError::Config(ConfigError::Invalid(message))
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

/// What names a rule to the `rules` commands. Two rules without an address that differ
/// only in their backend's family would both be valid, but are refused as one rule twice
/// so that `rules remove tcp 443` keeps a single meaning.
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
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
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
            ConfigError::Parse {
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
        self.all_or_nothing(|d| d.add_rule_inner(rule))
    }

    fn add_rule_inner(&mut self, rule: &RuleConfig) -> Result<(), EditError> {
        let id = RuleId::of(rule);
        // Without any [[rule]] the default ports are forwarded: adding the first rule must
        // not silently stop them, so they are written out first (but for one the new rule
        // replaces).
        if self.file_config()?.rules.is_empty() {
            self.write_default_rules(Some(id))?;
        }
        if self
            .file_config()?
            .rules
            .iter()
            .any(|r| RuleId::of(r) == id)
        {
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
        self.all_or_nothing(|d| d.remove_rule_inner(proto, port, public_addr))
    }

    fn remove_rule_inner(
        &mut self,
        proto: Proto,
        port: u16,
        public_addr: Option<IpAddr>,
    ) -> Result<RuleConfig, EditError> {
        // The default ports are rules too while none is written: removing one of them
        // leaves the other forwarded.
        if self.file_config()?.rules.is_empty() {
            self.write_default_rules(None)?;
        }
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
                return Err(EditError::NotFound(format!("no [[rule]] forwards {want}")));
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
                    format!("remove the one meant by editing {}", self.path.display())
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
        if rules.len() == 1 {
            return Err(EditError::Conflict(format!(
                "{want} is the last [[rule]]: without any, the default rules ({}) would be forwarded again; stop the daemon to stop forwarding",
                default_rules_text(self.file_config()?.http3)
            )));
        }
        self.edit(|doc| remove_section(doc, "rule", index))?;
        Ok(rules.swap_remove(index))
    }

    /// Writes out the rules in force while the file has none (`default_rules`: TCP 80 and
    /// 443 on every address, with `http3` UDP 443, the configured backends), except `skip`.
    fn write_default_rules(&mut self, skip: Option<RuleId>) -> Result<(), EditError> {
        for rule in default_rules(self.file_config()?.http3) {
            if skip == Some(RuleId::of(&rule)) {
                continue;
            }
            let mut fields = vec![("port", i64::from(rule.port).into())];
            if rule.proto != Proto::Tcp {
                fields.insert(0, ("proto", rule.proto.to_string().into()));
            }
            self.edit(|doc| append_section(doc, "rule", fields))?;
        }
        Ok(())
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
                .ok_or_else(|| invalid("limits is not a [limits] section".into()))?;
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
    /// before the rename the original is untouched and the temporary file is gone;
    /// [`EditError::Sync`] alone means the new text is in place, just not yet durable.
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
    /// Runs a change made of several edits; on an error none of them stays.
    fn all_or_nothing<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<T, EditError>,
    ) -> Result<T, EditError> {
        let before = self.doc.clone();
        let result = change(self);
        if result.is_err() {
            self.doc = before;
        }
        result
    }

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
    found.ok_or_else(|| invalid(format!("[[{key}]] {} is not in the file", index + 1)))
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
            return Err(invalid(format!(
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
    let position = header_positions(doc.as_table())
        .into_iter()
        .max()
        .unwrap_or(0)
        + 1;
    let trailing = raw(doc.trailing().as_str());
    let (above, below) =
        if doc.as_table().get_values().is_empty() && header_positions(doc.as_table()).is_empty() {
            // Only comments so far: they introduce the file.
            (trailing.clone(), String::new())
        } else {
            let rest = drop_tail(&trailing, false);
            (
                trailing[..trailing.len() - rest.len()].to_owned(),
                rest.to_owned(),
            )
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
            return Err(invalid(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# forwarder configuration
# See docs/config.md.

public_iface = "eth0"   # the VPS's uplink
tunnel_iface = "wg0"
backends = ["10.8.0.2", "fd00::2"]

# Web traffic.
[[rule]]
port = 443  # HTTPS
fallback = "local"

# Game server, UDP.
[[rule]]
proto = "udp"
port = 27015
# backend_port = 27016

# Names counted separately.

# The main app.
[[host]]
name = "app.example.com"

[[host]]
name = "blog.example.com"
policy = "drop"  # retired
# owner: blog team

[health]
interval_ms = 1000

# vim: ft=toml
"#;

    fn doc() -> ConfigDoc {
        ConfigDoc::parse(Path::new("/etc/forwarder.toml"), FILE).unwrap()
    }

    /// `FILE` with its one occurrence of `from` replaced: the expected text spells out
    /// the change, and everything else must come back byte for byte.
    fn edited(from: &str, to: &str) -> String {
        assert_eq!(FILE.matches(from).count(), 1, "{from:?}");
        FILE.replacen(from, to, 1)
    }

    fn rule(proto: Proto, port: u16) -> RuleConfig {
        RuleConfig::port(proto, port)
    }

    fn host(name: &str, policy: HostPolicy) -> HostConfig {
        HostConfig {
            name: name.into(),
            policy,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unedited_document_is_the_file() {
        let d = doc();
        assert_eq!(d.text(), FILE);
        assert!(!d.changed());
        let f = d.file_config().unwrap();
        assert_eq!(f.rules.len(), 2);
        assert_eq!(f.hosts[1], host("blog.example.com", HostPolicy::Drop));
    }

    #[test]
    fn added_rule_goes_at_the_end_with_only_what_it_sets() {
        let mut d = doc();
        let r = RuleConfig {
            backend_port: Some(443),
            public_addr: Some(ip("203.0.113.1")),
            ..rule(Proto::Tcp, 8443)
        };
        d.add_rule(&r).unwrap();
        assert_eq!(
            d.text(),
            edited(
                "\n# vim: ft=toml\n",
                "\n[[rule]]\nport = 8443\nbackend_port = 443\npublic_addr = \"203.0.113.1\"\n\n# vim: ft=toml\n"
            )
        );
        assert!(d.changed());
        assert_eq!(d.file_config().unwrap().rules[2], r);

        let mut d = doc();
        let r = RuleConfig {
            backend: Some(ip("fd00::3")),
            ..rule(Proto::Udp, 53)
        };
        d.add_rule(&r).unwrap();
        assert!(
            d.text().ends_with(
                "\n[[rule]]\nproto = \"udp\"\nport = 53\nbackend = \"fd00::3\"\n\n# vim: ft=toml\n"
            ),
            "{}",
            d.text()
        );
        assert_eq!(d.file_config().unwrap().rules[2], r);
    }

    #[test]
    fn a_rule_already_in_the_file_is_not_added_twice() {
        let mut d = doc();
        let e = d.add_rule(&rule(Proto::Tcp, 443)).unwrap_err();
        assert!(matches!(e, EditError::Conflict(_)), "{e:?}");
        assert_eq!(e.to_string(), "a [[rule]] already forwards tcp port 443");
        let e = d
            .add_rule(&RuleConfig {
                backend: Some(ip("10.8.0.9")),
                ..rule(Proto::Udp, 27015)
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "a [[rule]] already forwards udp port 27015");
        assert!(!d.changed());
        // The same port on one named address is a different rule.
        let r = RuleConfig {
            public_addr: Some(ip("2001:db8::1")),
            ..rule(Proto::Tcp, 443)
        };
        d.add_rule(&r).unwrap();
        let e = d.add_rule(&r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a [[rule]] already forwards tcp 2001:db8::1 port 443"
        );
    }

    #[test]
    fn removed_rule_takes_its_own_comments_only() {
        let mut d = doc();
        let removed = d.remove_rule(Proto::Udp, 27015, None).unwrap();
        assert_eq!(removed, rule(Proto::Udp, 27015));
        assert_eq!(
            d.text(),
            edited(
                "# Game server, UDP.\n[[rule]]\nproto = \"udp\"\nport = 27015\n# backend_port = 27016\n\n",
                ""
            )
        );
        // The last rule stays (without any, the default ports would be forwarded).
        let e = d.remove_rule(Proto::Tcp, 443, None).unwrap_err();
        assert!(matches!(e, EditError::Conflict(_)), "{e:?}");
        assert_eq!(d.file_config().unwrap().rules.len(), 1);
    }

    #[test]
    fn removing_a_rule_that_is_not_there_names_it() {
        let mut d = doc();
        let e = d.remove_rule(Proto::Tcp, 8443, None).unwrap_err();
        assert!(matches!(e, EditError::NotFound(_)), "{e:?}");
        assert_eq!(e.to_string(), "no [[rule]] forwards tcp port 8443");
        let e = d.remove_rule(Proto::Tcp, 80, None).unwrap_err();
        assert_eq!(e.to_string(), "no [[rule]] forwards tcp port 80");
        // The rule for 443 covers every address; asked for one address, it is not removed.
        let e = d
            .remove_rule(Proto::Tcp, 443, Some(ip("203.0.113.1")))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no [[rule]] forwards tcp 203.0.113.1 port 443"
        );
        assert!(!d.changed());
    }

    #[test]
    fn which_rule_a_port_without_an_address_means() {
        let v4 = RuleConfig {
            public_addr: Some(ip("203.0.113.1")),
            ..rule(Proto::Tcp, 8443)
        };
        let v6 = RuleConfig {
            public_addr: Some(ip("2001:db8::1")),
            ..rule(Proto::Tcp, 8443)
        };
        // The only rule for the port: whatever its address.
        let mut d = doc();
        d.add_rule(&v4).unwrap();
        assert_eq!(d.remove_rule(Proto::Tcp, 8443, None).unwrap(), v4);
        // Several, none without an address: the user has to say which.
        d.add_rule(&v4).unwrap();
        d.add_rule(&v6).unwrap();
        let e = d.remove_rule(Proto::Tcp, 8443, None).unwrap_err();
        assert!(matches!(e, EditError::Ambiguous(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "2 [[rule]] sections forward tcp port 8443 (on 203.0.113.1, 2001:db8::1): name the public address"
        );
        assert_eq!(
            d.remove_rule(Proto::Tcp, 8443, Some(ip("2001:db8::1")))
                .unwrap(),
            v6
        );
        // Several, one without an address: that one is named exactly.
        d.add_rule(&rule(Proto::Tcp, 8443)).unwrap();
        assert_eq!(
            d.remove_rule(Proto::Tcp, 8443, None).unwrap(),
            rule(Proto::Tcp, 8443)
        );
        assert_eq!(d.file_config().unwrap().rules[2], v4);
    }

    #[test]
    fn hosts_are_added_at_the_end_and_compared_like_the_daemon_does() {
        let mut d = doc();
        d.add_host(&host("shop.example.com", HostPolicy::Forward))
            .unwrap();
        d.add_host(&host("*.internal.example.com", HostPolicy::Local))
            .unwrap();
        assert_eq!(
            d.text(),
            edited(
                "\n# vim: ft=toml\n",
                "\n[[host]]\nname = \"shop.example.com\"\n\n[[host]]\nname = \"*.internal.example.com\"\npolicy = \"local\"\n\n# vim: ft=toml\n"
            )
        );
        let hosts = d.file_config().unwrap().hosts;
        assert_eq!(hosts[3], host("*.internal.example.com", HostPolicy::Local));
        let before = d.text();
        for name in ["APP.example.com", "app.example.com.", "Shop.Example.Com"] {
            let e = d.add_host(&host(name, HostPolicy::Drop)).unwrap_err();
            assert!(matches!(e, EditError::Conflict(_)), "{e:?}");
            assert!(e.to_string().ends_with("\" is already configured"), "{e}");
        }
        let e = d
            .add_host(&host("App.Example.com", HostPolicy::Drop))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "host \"app.example.com\" is already configured"
        );
        assert_eq!(d.text(), before);
    }

    #[test]
    fn removed_host_leaves_the_group_comment() {
        let mut d = doc();
        d.remove_host("App.Example.com").unwrap();
        assert_eq!(
            d.text(),
            edited(
                "# The main app.\n[[host]]\nname = \"app.example.com\"\n\n",
                ""
            )
        );
        d.remove_host("blog.example.com").unwrap();
        assert_eq!(
            d.text(),
            edited(
                "# The main app.\n[[host]]\nname = \"app.example.com\"\n\n[[host]]\nname = \"blog.example.com\"\npolicy = \"drop\"  # retired\n# owner: blog team\n\n",
                ""
            )
        );
        let e = d.remove_host("blog.example.com").unwrap_err();
        assert!(matches!(e, EditError::NotFound(_)), "{e:?}");
        assert_eq!(e.to_string(), "host \"blog.example.com\" is not configured");
        assert!(d.file_config().unwrap().hosts.is_empty());
    }

    #[test]
    fn host_policy_is_written_only_when_not_forward() {
        let mut d = doc();
        d.set_host_policy("app.example.com", HostPolicy::Drop)
            .unwrap();
        // Changing a policy keeps the comment on it.
        d.set_host_policy("blog.example.com", HostPolicy::Local)
            .unwrap();
        assert_eq!(
            d.text(),
            edited(
                "name = \"app.example.com\"\n\n[[host]]\nname = \"blog.example.com\"\npolicy = \"drop\"  # retired\n",
                "name = \"app.example.com\"\npolicy = \"drop\"\n\n[[host]]\nname = \"blog.example.com\"\npolicy = \"local\"  # retired\n"
            )
        );
        d.set_host_policy("app.example.com", HostPolicy::Forward)
            .unwrap();
        d.set_host_policy("blog.example.com", HostPolicy::Forward)
            .unwrap();
        assert_eq!(d.text(), edited("policy = \"drop\"  # retired\n", ""));
        let hosts = d.file_config().unwrap().hosts;
        assert!(hosts.iter().all(|h| h.policy == HostPolicy::Forward));
        let e = d
            .set_host_policy("nope.example.com", HostPolicy::Drop)
            .unwrap_err();
        assert_eq!(e.to_string(), "host \"nope.example.com\" is not configured");
    }

    #[test]
    fn limits_are_added_updated_and_switched_off() {
        let mut d = doc();
        // Off and absent: nothing to write.
        d.set_limits(Limits::default()).unwrap();
        assert!(!d.changed());
        let limits = Limits {
            new_connections_per_second: 20,
            burst: Some(50),
            syn_flood_threshold: None,
        };
        d.set_limits(limits).unwrap();
        assert_eq!(
            d.text(),
            edited(
                "\n# vim: ft=toml\n",
                "\n[limits]\nnew_connections_per_second = 20\nburst = 50\n\n# vim: ft=toml\n"
            )
        );
        assert_eq!(d.file_config().unwrap().limits, limits);

        let text = "[limits]\n# Per client.\nnew_connections_per_second = 20  # was 10\nburst = 40\n\n[health]\ninterval_ms = 1000\n";
        let mut d = ConfigDoc::parse(Path::new("f.toml"), text).unwrap();
        d.set_limits(Limits {
            new_connections_per_second: 30,
            burst: None,
            syn_flood_threshold: None,
        })
        .unwrap();
        assert_eq!(
            d.text(),
            "[limits]\n# Per client.\nnew_connections_per_second = 30  # was 10\n\n[health]\ninterval_ms = 1000\n"
        );
        d.set_limits(Limits::default()).unwrap();
        assert_eq!(d.text(), "[limits]\n\n[health]\ninterval_ms = 1000\n");
        assert_eq!(d.file_config().unwrap().limits, Limits::default());
    }

    #[test]
    fn comments_at_the_top_of_the_file_stay_at_the_top() {
        let p = Path::new("f.toml");
        let mut d = ConfigDoc::parse(
            p,
            "# forwarder\n[[host]]\nname = \"a.example\"\n\n[[host]]\nname = \"b.example\"\n",
        )
        .unwrap();
        d.remove_host("a.example").unwrap();
        assert_eq!(d.text(), "# forwarder\n\n[[host]]\nname = \"b.example\"\n");
        d.remove_host("b.example").unwrap();
        assert_eq!(d.text(), "# forwarder\n");
        d.add_host(&host("c.example", HostPolicy::Forward)).unwrap();
        assert_eq!(d.text(), "# forwarder\n\n[[host]]\nname = \"c.example\"\n");

        let mut d = ConfigDoc::parse(p, "# forwarder\n").unwrap();
        d.add_rule(&rule(Proto::Tcp, 8443)).unwrap();
        assert_eq!(
            d.text(),
            "# forwarder\n\n[[rule]]\nport = 80\n\n[[rule]]\nport = 443\n\n[[rule]]\nport = 8443\n"
        );
    }

    #[test]
    fn with_http3_the_default_rules_written_out_include_udp_443() {
        let p = Path::new("f.toml");
        let mut d = ConfigDoc::parse(p, "http3 = true\n").unwrap();
        d.add_rule(&rule(Proto::Tcp, 8443)).unwrap();
        let rules: Vec<(Proto, u16)> = d
            .file_config()
            .unwrap()
            .rules
            .iter()
            .map(|r| (r.proto, r.port))
            .collect();
        assert_eq!(
            rules,
            [
                (Proto::Tcp, 80),
                (Proto::Tcp, 443),
                (Proto::Udp, 443),
                (Proto::Tcp, 8443)
            ]
        );
        let mut d = ConfigDoc::parse(p, "http3 = true\n").unwrap();
        d.remove_rule(Proto::Udp, 443, None).unwrap();
        assert_eq!(
            d.file_config().unwrap().rules,
            [rule(Proto::Tcp, 80), rule(Proto::Tcp, 443)]
        );
    }

    #[test]
    fn the_default_ports_stay_forwarded_when_rules_are_edited() {
        let p = Path::new("f.toml");
        // Without any [[rule]], 80 and 443 are forwarded: adding a port keeps them.
        let mut d = ConfigDoc::parse(p, "").unwrap();
        d.add_rule(&rule(Proto::Tcp, 8443)).unwrap();
        let ports: Vec<u16> = d
            .file_config()
            .unwrap()
            .rules
            .iter()
            .map(|r| r.port)
            .collect();
        assert_eq!(ports, [80, 443, 8443]);
        // A rule for a default port replaces that default.
        let mut d = ConfigDoc::parse(p, "").unwrap();
        let local = RuleConfig {
            fallback: Some("local".into()),
            ..rule(Proto::Tcp, 443)
        };
        d.add_rule(&local).unwrap();
        assert_eq!(
            d.file_config().unwrap().rules,
            [rule(Proto::Tcp, 80), local]
        );
        // Removing one default leaves the other.
        let mut d = ConfigDoc::parse(p, "").unwrap();
        d.remove_rule(Proto::Tcp, 80, None).unwrap();
        assert_eq!(d.file_config().unwrap().rules, [rule(Proto::Tcp, 443)]);
        // The last rule stays: without it, the defaults would come back.
        let e = d.remove_rule(Proto::Tcp, 443, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tcp port 443 is the last [[rule]]: without any, the default rules (TCP 80 and 443) would be forwarded again; stop the daemon to stop forwarding"
        );
        // A refused edit leaves nothing behind, defaults written out included.
        let mut d = ConfigDoc::parse(p, "").unwrap();
        assert!(d.remove_rule(Proto::Tcp, 8443, None).is_err());
        assert!(!d.changed());
        assert_eq!(d.text(), "");
    }

    #[test]
    fn commented_out_settings_stay_with_their_section() {
        let text = "[limits]\nnew_connections_per_second = 20\n# burst = 50\n";
        let mut d = ConfigDoc::parse(Path::new("f.toml"), text).unwrap();
        d.add_host(&host("a.example", HostPolicy::Forward)).unwrap();
        assert_eq!(
            d.text(),
            format!("{text}\n[[host]]\nname = \"a.example\"\n")
        );
        d.remove_host("a.example").unwrap();
        assert_eq!(d.text(), text);
    }

    #[test]
    fn arrays_written_inline_stay_inline() {
        let text = "rule = [{ port = 80 }, { port = 443 }]\nhost = [{ name = \"a.example\" }]\n";
        let mut d = ConfigDoc::parse(Path::new("f.toml"), text).unwrap();
        d.add_rule(&rule(Proto::Udp, 53)).unwrap();
        d.add_host(&host("b.example", HostPolicy::Drop)).unwrap();
        d.set_host_policy("a.example", HostPolicy::Local).unwrap();
        d.remove_rule(Proto::Tcp, 80, None).unwrap();
        let f = d.file_config().unwrap();
        assert_eq!(f.rules, [rule(Proto::Tcp, 443), rule(Proto::Udp, 53)]);
        assert_eq!(
            f.hosts,
            [
                host("a.example", HostPolicy::Local),
                host("b.example", HostPolicy::Drop)
            ]
        );
        assert!(!d.text().contains("[[rule]]") && !d.text().contains("[[host]]"));
    }

    #[test]
    fn files_that_do_not_parse_are_not_edited() {
        let p = Path::new("/etc/forwarder.toml");
        let e = ConfigDoc::parse(p, "public_iface = \"eth0\"\n[[rule]\nport = 1\n").unwrap_err();
        assert!(
            matches!(e, EditError::Config(ConfigError::Parse { line: 2, .. })),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("/etc/forwarder.toml:2:"), "{e}");
        let e = ConfigDoc::parse(p, "[[host]]\nname = \"a.b\"\npolicy = \"bounce\"\n").unwrap_err();
        assert!(e.to_string().starts_with("/etc/forwarder.toml:3:"), "{e}");
        assert!(e.to_string().contains("forward, drop or local"), "{e}");
        let e = ConfigDoc::open(Path::new("/nonexistent/forwarder.toml")).unwrap_err();
        assert!(
            matches!(e, EditError::Config(ConfigError::Read { .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("/nonexistent/forwarder.toml"), "{e}");
    }

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "forwarder-config-edit-{}-{name}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn write_atomic_replaces_the_file_and_keeps_its_mode() {
        let dir = Scratch::new("write");
        let path = dir.0.join("forwarder.toml");
        fs::write(&path, FILE).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let mut d = ConfigDoc::open(&path).unwrap();
        d.add_host(&host("shop.example.com", HostPolicy::Drop))
            .unwrap();
        d.write_atomic().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), d.text());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(dir.entries(), ["forwarder.toml"]);
        let again = ConfigDoc::open(&path).unwrap();
        assert!(!again.changed());
        assert_eq!(
            again.file_config().unwrap().hosts[2],
            host("shop.example.com", HostPolicy::Drop)
        );

        // Through a link, the file it points to is replaced and the link stays.
        let link = dir.0.join("link.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let mut d = ConfigDoc::open(&link).unwrap();
        d.remove_host("shop.example.com").unwrap();
        d.write_atomic().unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), FILE);
        assert_eq!(dir.entries(), ["forwarder.toml", "link.toml"]);
    }

    #[test]
    fn failed_writes_leave_the_original_and_no_temporary_file() {
        let dir = Scratch::new("fail");
        // No such directory: nothing is created.
        let missing = dir.0.join("missing").join("forwarder.toml");
        let d = ConfigDoc::parse(&missing, FILE).unwrap();
        let e = d.write_atomic().unwrap_err();
        assert!(matches!(e, EditError::Write { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "cannot write {}: No such file or directory (os error 2)",
                missing.display()
            )
        );

        // The rename fails (a directory is in the way) after the temporary file is
        // written: it is removed again.
        let path = dir.0.join("forwarder.toml");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), "x").unwrap();
        let d = ConfigDoc::parse(&path, FILE).unwrap();
        let e = d.write_atomic().unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot write {}: ", path.display())),
            "{e}"
        );
        assert_eq!(dir.entries(), ["forwarder.toml"]);
        assert_eq!(fs::read_to_string(path.join("keep")).unwrap(), "x");
        fs::remove_dir_all(&path).unwrap();

        // Something that is not ours holds the temporary name: it is left alone, and so
        // is the original.
        fs::write(&path, FILE).unwrap();
        let blocker = dir
            .0
            .join(format!(".forwarder.toml.tmp-{}", std::process::id()));
        fs::create_dir(&blocker).unwrap();
        let mut d = ConfigDoc::open(&path).unwrap();
        d.remove_host("app.example.com").unwrap();
        assert!(d.write_atomic().is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), FILE);
        assert!(blocker.is_dir());
        fs::remove_dir(&blocker).unwrap();

        // A stale temporary file of ours is replaced.
        fs::write(&blocker, "stale").unwrap();
        d.write_atomic().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), d.text());
        assert_eq!(dir.entries(), ["forwarder.toml"]);
    }

    mod model {
        use proptest::prelude::*;

        use super::*;

        #[derive(Clone, Debug)]
        enum Op {
            AddRule(RuleConfig),
            RemoveRule(Proto, u16, Option<IpAddr>),
            AddHost(HostConfig),
            RemoveHost(String),
            SetPolicy(String, HostPolicy),
            SetLimits(Limits),
        }

        /// Few values, so that edits often hit what earlier ones added.
        fn proto() -> impl Strategy<Value = Proto> {
            prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)]
        }

        fn port() -> impl Strategy<Value = u16> {
            prop::sample::select(vec![443u16, 8443, 27015])
        }

        fn public_addr() -> impl Strategy<Value = Option<IpAddr>> {
            prop::option::of(prop::sample::select(vec![
                ip("203.0.113.1"),
                ip("2001:db8::1"),
            ]))
        }

        fn policy() -> impl Strategy<Value = HostPolicy> {
            prop_oneof![
                Just(HostPolicy::Forward),
                Just(HostPolicy::Drop),
                Just(HostPolicy::Local)
            ]
        }

        fn name() -> impl Strategy<Value = String> {
            prop::sample::select(vec![
                "app.example.com",
                "APP.Example.com.",
                "blog.example.com",
                "*.example.com",
                "shop.example.com",
            ])
            .prop_map(str::to_owned)
        }

        fn op() -> impl Strategy<Value = Op> {
            let rule = (
                proto(),
                port(),
                prop::option::of(prop::sample::select(vec![ip("10.8.0.3"), ip("fd00::3")])),
                prop::option::of(1u16..),
                public_addr(),
                prop::option::of(Just("local".to_owned())),
            )
                .prop_map(
                    |(proto, port, backend, backend_port, public_addr, fallback)| RuleConfig {
                        proto,
                        port,
                        backend,
                        backend_port,
                        public_addr,
                        fallback,
                    },
                );
            prop_oneof![
                rule.prop_map(Op::AddRule),
                (proto(), port(), public_addr()).prop_map(|(p, n, a)| Op::RemoveRule(p, n, a)),
                (name(), policy())
                    .prop_map(|(name, policy)| Op::AddHost(HostConfig { name, policy })),
                name().prop_map(Op::RemoveHost),
                (name(), policy()).prop_map(|(n, p)| Op::SetPolicy(n, p)),
                (0u16..3, prop::option::of(1u16..100)).prop_map(|(rate, burst)| {
                    Op::SetLimits(Limits {
                        new_connections_per_second: rate,
                        burst,
                        syn_flood_threshold: None,
                    })
                }),
            ]
        }

        /// What the file should hold: the sections as plain lists.
        #[derive(Debug)]
        struct Model {
            rules: Vec<RuleConfig>,
            hosts: Vec<HostConfig>,
            limits: Limits,
        }

        impl Model {
            /// Whether the edit applies; if not, nothing changes.
            fn apply(&mut self, op: &Op) -> bool {
                let same_host = |h: &HostConfig, n: &str| host_label(&h.name) == host_label(n);
                // An empty rule list means the default ports: an edit starts from them.
                let defaults = |skip: Option<(Proto, u16, Option<IpAddr>)>| -> Vec<RuleConfig> {
                    default_rules(false)
                        .into_iter()
                        .filter(|r| skip != Some((r.proto, r.port, None)))
                        .collect()
                };
                match op {
                    Op::AddRule(r) => {
                        let mut rules = if self.rules.is_empty() {
                            defaults(Some((r.proto, r.port, r.public_addr)))
                        } else {
                            self.rules.clone()
                        };
                        let dup = rules.iter().any(|x| {
                            (x.proto, x.port, x.public_addr) == (r.proto, r.port, r.public_addr)
                        });
                        if !dup {
                            rules.push(r.clone());
                            self.rules = rules;
                        }
                        !dup
                    }
                    Op::RemoveRule(proto, port, addr) => {
                        let mut rules = if self.rules.is_empty() {
                            defaults(None)
                        } else {
                            self.rules.clone()
                        };
                        let same: Vec<usize> = (0..rules.len())
                            .filter(|&i| rules[i].proto == *proto && rules[i].port == *port)
                            .collect();
                        let named: Vec<usize> = same
                            .iter()
                            .copied()
                            .filter(|&i| rules[i].public_addr == *addr)
                            .collect();
                        let pick = match (addr, same.len(), named.len()) {
                            (None, 1, _) => same[0],
                            (_, _, 1) => named[0],
                            _ => return false,
                        };
                        // The last rule stays: without it the defaults would return.
                        if rules.len() == 1 {
                            return false;
                        }
                        rules.remove(pick);
                        self.rules = rules;
                        true
                    }
                    Op::AddHost(h) => {
                        let dup = self.hosts.iter().any(|x| same_host(x, &h.name));
                        if !dup {
                            self.hosts.push(h.clone());
                        }
                        !dup
                    }
                    Op::RemoveHost(n) => match self.hosts.iter().position(|x| same_host(x, n)) {
                        Some(i) => {
                            self.hosts.remove(i);
                            true
                        }
                        None => false,
                    },
                    Op::SetPolicy(n, p) => match self.hosts.iter_mut().find(|x| same_host(x, n)) {
                        Some(h) => {
                            h.policy = *p;
                            true
                        }
                        None => false,
                    },
                    Op::SetLimits(l) => {
                        self.limits = if l.new_connections_per_second == 0 {
                            Limits::default()
                        } else {
                            *l
                        };
                        true
                    }
                }
            }
        }

        fn run(d: &mut ConfigDoc, op: &Op) -> Result<(), EditError> {
            match op {
                Op::AddRule(r) => d.add_rule(r),
                Op::RemoveRule(p, n, a) => d.remove_rule(*p, *n, *a).map(drop),
                Op::AddHost(h) => d.add_host(h),
                Op::RemoveHost(n) => d.remove_host(n),
                Op::SetPolicy(n, p) => d.set_host_policy(n, *p),
                Op::SetLimits(l) => d.set_limits(*l),
            }
        }

        /// Applies `ops` to `base` and to the model side by side; returns the texts seen.
        fn check(base: &str, ops: &[Op]) -> Result<Vec<String>, TestCaseError> {
            let mut d = ConfigDoc::parse(Path::new("f.toml"), base).unwrap();
            let start = d.file_config().unwrap();
            let mut model = Model {
                rules: start.rules,
                hosts: start.hosts,
                limits: start.limits,
            };
            let mut texts = Vec::new();
            for op in ops {
                let before = d.text();
                let applied = model.apply(op);
                let result = run(&mut d, op);
                prop_assert_eq!(result.is_ok(), applied, "{:?}: {:?}", op, result);
                if !applied {
                    prop_assert_eq!(d.text(), before);
                }
                let text = d.text();
                let f = d
                    .file_config()
                    .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
                prop_assert_eq!(&f.rules, &model.rules);
                prop_assert_eq!(&f.hosts, &model.hosts);
                prop_assert_eq!(f.limits, model.limits);
                prop_assert!(!text.contains("\n\n\n"), "{}", text);
                // What is written reads back as the same text.
                let reread = ConfigDoc::parse(Path::new("f.toml"), &text).unwrap();
                prop_assert_eq!(reread.text(), text.as_str());
                texts.push(text);
            }
            Ok(texts)
        }

        proptest! {
            #[test]
            fn edits_match_a_list_model_and_keep_the_comments(
                ops in prop::collection::vec(op(), 1..40),
            ) {
                for text in check(FILE, &ops)? {
                    prop_assert!(
                        text.starts_with("# forwarder configuration\n# See docs/config.md.\n\npublic_iface = \"eth0\"   # the VPS's uplink\n"),
                        "{}", text
                    );
                    prop_assert!(text.contains("\n[health]\ninterval_ms = 1000\n"), "{}", text);
                    prop_assert!(text.ends_with("\n\n# vim: ft=toml\n"), "{}", text);
                }
            }

            #[test]
            fn edits_from_sparse_files_match_the_model(
                base in prop::sample::select(vec![
                    "",
                    "# forwarder\n",
                    "# forwarder\n[[host]]\nname = \"app.example.com\"\n",
                    "[health]\ninterval_ms = 1000\n# down_after = 3\n",
                    "rule = []\nhost = [{ name = \"blog.example.com\" }]\n",
                ]),
                ops in prop::collection::vec(op(), 1..30),
            ) {
                for text in check(base, &ops)? {
                    if base.starts_with("# forwarder\n") {
                        prop_assert!(text.starts_with("# forwarder\n"), "{}", text);
                    }
                    if base.contains("# down_after") {
                        prop_assert!(text.starts_with("[health]\ninterval_ms = 1000\n# down_after = 3\n"), "{}", text);
                    }
                }
            }
        }
    }
}
