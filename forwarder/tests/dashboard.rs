//! The Grafana dashboard in docs/grafana queries only what the daemon exports: every metric
//! name in its PromQL is a sample name of `forwarder::observe::metrics::encode` for a fully
//! populated snapshot, every label it filters or groups by exists on that metric, and
//! every fixed label value it matches is one the daemon produces.
//!
//! The PromQL reader below is deliberately small (no full parser): it tells metric names
//! apart from functions, keywords, label matchers, strings, durations and grouping labels,
//! and rejects what it does not understand so that the dashboard stays checkable.

use std::collections::{BTreeMap, BTreeSet};

use forwarder::{
    api::stats::{BackendSnapshot, ConnLogStats, FlowTableStats, Snapshot, TunnelState},
    model::labels::HostLabels,
    observe::{metrics::encode, snapshot::host_snapshots},
};
use forwarder_common::{Counter, HOST_DROP_REASONS, HostStats, host::HostPattern};
use serde_json::Value;

const DASHBOARD: &str = include_str!("../../docs/grafana/forwarder-dashboard.json");

/// Labels Prometheus attaches to every scraped series (the daemon does not export them).
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// PromQL functions and aggregation operators (always followed by a parenthesis, except
/// aggregations, which may take `by (...)` first).
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log2",
    "log10",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
    "year",
];
const AGGREGATIONS: &[&str] = &[
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "limitk",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
];
/// Aggregations that keep the labels of the series they select.
const LABEL_KEEPING_AGGREGATIONS: &[&str] = &["bottomk", "limitk", "topk"];
/// Followed by a list of label names in parentheses (`group_*` optionally).
const GROUPING_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];
/// Functions whose argument must be a counter.
const COUNTER_FUNCTIONS: &[&str] = &["rate", "irate", "increase", "resets"];
/// Functions whose argument must be a gauge.
const GAUGE_FUNCTIONS: &[&str] = &["delta", "idelta", "deriv", "predict_linear"];

// ---------------------------------------------------------------------------------------
// What the daemon exports.

/// A sample name the daemon exports: the family's type, and every label with the values
/// seen for it.
#[derive(Debug, Default)]
struct Exported {
    kind: String,
    labels: BTreeMap<String, BTreeSet<String>>,
}

/// A snapshot with every field set, every host (configured, `other`, `unknown`), every
/// drop reason and every data-path counter.
fn full_snapshot() -> Snapshot {
    let labels = HostLabels::new(&[
        HostPattern::parse("app.example.com").unwrap(),
        HostPattern::parse("*.example.com").unwrap(),
    ]);
    let stats: Vec<[HostStats; 2]> = (0..labels.count())
        .map(|id| {
            let n = u64::from(id) + 1;
            let s = HostStats {
                packets_to_backend: 10 * n,
                bytes_to_backend: 1500 * n,
                packets_to_client: 20 * n,
                bytes_to_client: 30_000 * n,
                connections: n,
                drops: [n; HOST_DROP_REASONS],
            };
            // TCP and QUIC: every protocol label is exported.
            [s, s]
        })
        .collect();
    let active: Vec<u64> = (0..u64::from(labels.count())).collect();
    Snapshot {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: 42,
        attach_mode: "xdp-driver".to_owned(),
        tunnel: TunnelState {
            iface: "wg0".to_owned(),
            up: true,
            handshake_age_seconds: Some(17),
        },
        host_stats_available: true,
        flow_table: FlowTableStats {
            entries: 6,
            capacity: 262_144,
            opening: 3,
            opening_capacity: 65_536,
            evictions_estimate: 2,
            removed_by_gc: 4,
        },
        hosts: host_snapshots(&labels, Some(&stats), &active),
        counters: Counter::ALL
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name().to_owned(), i as u64 + 1))
            .collect(),
        conn_log: ConnLogStats {
            enabled: true,
            lines: 7,
            suppressed: 1,
        },
        local: Default::default(),
        quic: Default::default(),
        backends: vec![BackendSnapshot {
            backend: "10.8.0.2:443".to_owned(),
            up: true,
            since_seconds: 30,
            transitions: 2,
            last_error: None,
        }],
    }
}

/// Parses the `{...}` of an exposition line: label names and unescaped values.
fn exposition_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label {name} of {s}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("{s}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// The sample names of an OpenMetrics text: `# TYPE name kind` declares a family, sampled
/// as `name_total` for a counter and `name` otherwise.
fn exported_from(text: &str) -> BTreeMap<String, Exported> {
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let sample = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            families.insert(
                sample,
                Exported {
                    kind: kind.to_owned(),
                    ..Exported::default()
                },
            );
        }
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, _value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, exposition_labels(rest.strip_suffix('}').unwrap())),
            None => (series, Vec::new()),
        };
        let family = families
            .get_mut(name)
            .unwrap_or_else(|| panic!("sample {name} without a # TYPE line:\n{text}"));
        for (k, v) in labels {
            family.labels.entry(k).or_default().insert(v);
        }
    }
    families
}

fn exported() -> BTreeMap<String, Exported> {
    let text = encode(full_snapshot()).unwrap();
    let families = exported_from(&text);
    assert!(
        families.len() >= 10,
        "too few metric families, is the snapshot empty?\n{text}"
    );
    families
}

// ---------------------------------------------------------------------------------------
// The PromQL reader.

#[derive(Clone, Debug, PartialEq, Eq)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// A metric name in a query, with its label matchers and the innermost function it is
/// an argument of (`""` if none).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
    inside: String,
}

#[derive(Debug, Default)]
struct Query {
    selectors: Vec<Selector>,
    /// Label names of `by`/`without`/`on`/`ignoring`/`group_*` lists (and of a
    /// `label_values` template query).
    grouping: BTreeSet<String>,
    /// Label names of `by` lists only: what a label-dropping aggregation keeps.
    by: BTreeSet<String>,
    /// Functions and aggregations called.
    functions: BTreeSet<String>,
}

impl Query {
    fn metrics(&self) -> Vec<&str> {
        self.selectors.iter().map(|s| s.metric.as_str()).collect()
    }

    fn drops_labels(&self) -> bool {
        self.functions.iter().any(|f| {
            AGGREGATIONS.contains(&f.as_str()) && !LABEL_KEEPING_AGGREGATIONS.contains(&f.as_str())
        })
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

struct Reader<'a> {
    src: &'a str,
    s: Vec<char>,
    i: usize,
}

impl Reader<'_> {
    fn err(&self, what: &str) -> String {
        format!("{what} at offset {} of {:?}", self.i, self.src)
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }

    /// The next non-blank character, without consuming anything.
    fn next_significant(&self) -> Option<char> {
        self.s[self.i..]
            .iter()
            .copied()
            .find(|c| !c.is_whitespace())
    }

    fn ident(&mut self) -> String {
        let start = self.i;
        while self.peek().is_some_and(is_ident_char) {
            self.i += 1;
        }
        self.s[start..self.i].iter().collect()
    }

    /// A quoted string starting at the current position, unescaped.
    fn string(&mut self) -> Result<String, String> {
        let quote = self.peek().ok_or_else(|| self.err("expected a string"))?;
        if !matches!(quote, '"' | '\'' | '`') {
            return Err(self.err("expected a string"));
        }
        self.i += 1;
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
            self.i += 1;
            match c {
                '\\' if quote != '`' => {
                    let e = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.i += 1;
                    out.push(e);
                }
                c if c == quote => return Ok(out),
                c => out.push(c),
            }
        }
    }

    /// `{label op "value", ...}`, starting at `{`.
    fn matchers(&mut self) -> Result<Vec<Matcher>, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some('}') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(',') => {
                    self.i += 1;
                    continue;
                }
                Some(c) if is_ident_start(c) => {}
                _ => return Err(self.err("expected a label name in a selector")),
            }
            let label = self.ident();
            self.skip_ws();
            let op = ["=~", "!~", "!=", "="]
                .into_iter()
                .find(|op| {
                    self.s[self.i..]
                        .iter()
                        .take(op.len())
                        .copied()
                        .eq(op.chars())
                })
                .ok_or_else(|| self.err("expected a matcher operator"))?;
            self.i += op.len();
            self.skip_ws();
            let value = self.string()?;
            out.push(Matcher {
                label,
                op: op.to_owned(),
                value,
            });
        }
    }

    /// `(label, ...)` after a grouping keyword, starting at `(`.
    fn label_list(&mut self) -> Result<Vec<String>, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(')') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(',') => self.i += 1,
                Some(c) if is_ident_start(c) => out.push(self.ident()),
                _ => return Err(self.err("expected a label name in a grouping list")),
            }
        }
    }
}

/// Reads the metric names, matchers, grouping labels and functions of a PromQL query
/// (with Grafana's `$variables`).
fn parse_promql(expr: &str) -> Result<Query, String> {
    let mut r = Reader {
        src: expr,
        s: expr.chars().collect(),
        i: 0,
    };
    let mut q = Query::default();
    // The function each open parenthesis belongs to ("" for plain grouping).
    let mut calls: Vec<String> = Vec::new();
    let mut pending_call: Option<String> = None;
    while let Some(c) = r.peek() {
        match c {
            c if c.is_whitespace() => r.i += 1,
            '#' => {
                while r.peek().is_some_and(|c| c != '\n') {
                    r.i += 1;
                }
            }
            '"' | '\'' | '`' => {
                r.string()?;
            }
            '[' => {
                // A range or subquery: durations, `$__rate_interval`, never metric names.
                while r.peek().is_some_and(|c| c != ']') {
                    r.i += 1;
                }
                if r.peek().is_none() {
                    return Err(r.err("unterminated ["));
                }
                r.i += 1;
            }
            '{' => return Err(r.err("selector without a metric name")),
            '(' => {
                r.i += 1;
                calls.push(pending_call.take().unwrap_or_default());
            }
            ')' => {
                r.i += 1;
                calls.pop().ok_or_else(|| r.err("unbalanced )"))?;
            }
            '$' => {
                // A Grafana variable outside a string: `$var` or `${var}`.
                r.i += 1;
                if r.peek() == Some('{') {
                    while r.peek().is_some_and(|c| c != '}') {
                        r.i += 1;
                    }
                    r.i += 1;
                } else {
                    r.ident();
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && r.s.get(r.i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // A number or a duration (`offset 5m`, `1e-3`, `0x1f`).
                let start = r.i;
                while let Some(c) = r.peek() {
                    let exponent_sign = matches!(c, '+' | '-')
                        && matches!(r.s.get(r.i.wrapping_sub(1)), Some('e' | 'E'))
                        && !r.s[start..r.i].iter().any(|c| c.eq_ignore_ascii_case(&'x'));
                    if c.is_ascii_alphanumeric() || c == '.' || c == '_' || exponent_sign {
                        r.i += 1;
                    } else {
                        break;
                    }
                }
            }
            c if is_ident_start(c) => {
                let ident = r.ident();
                let next = r.next_significant();
                let word = ident.as_str();
                if GROUPING_KEYWORDS.contains(&word) {
                    if next == Some('(') {
                        r.skip_ws();
                        let labels = r.label_list()?;
                        if word == "by" {
                            q.by.extend(labels.iter().cloned());
                        }
                        q.grouping.extend(labels);
                    } else if !word.starts_with("group_") {
                        return Err(r.err(&format!("{word} without a label list")));
                    }
                } else if KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                } else if AGGREGATIONS.contains(&word) || FUNCTIONS.contains(&word) {
                    if next != Some('(') && !AGGREGATIONS.contains(&word) {
                        return Err(r.err(&format!("function {word} is not called")));
                    }
                    q.functions.insert(ident.clone());
                    pending_call = Some(ident);
                } else if next == Some('(') {
                    return Err(r.err(&format!("unknown function {word}")));
                } else {
                    let matchers = if next == Some('{') {
                        r.skip_ws();
                        r.matchers()?
                    } else {
                        Vec::new()
                    };
                    q.selectors.push(Selector {
                        metric: ident,
                        matchers,
                        inside: calls.last().cloned().unwrap_or_default(),
                    });
                }
            }
            // Operators, commas, `@`.
            _ => r.i += 1,
        }
    }
    if !calls.is_empty() {
        return Err(r.err("unbalanced ("));
    }
    if pending_call.is_some() {
        return Err(r.err("aggregation without an argument"));
    }
    Ok(q)
}

/// A Grafana Prometheus template query: `label_values(selector, label)` or
/// `query_result(expr)`.
fn parse_template_query(query: &str) -> Result<Query, String> {
    let query = query.trim();
    if let Some(args) = query
        .strip_prefix("label_values(")
        .and_then(|a| a.strip_suffix(')'))
    {
        let (selector, label) = args
            .rsplit_once(',')
            .ok_or_else(|| format!("{query:?}: label_values without a metric"))?;
        let label = label.trim();
        if label.is_empty() || !label.chars().all(is_ident_char) {
            return Err(format!("{query:?}: bad label name {label:?}"));
        }
        let mut q = parse_promql(selector)?;
        if q.selectors.len() != 1 {
            return Err(format!("{query:?}: expected one metric"));
        }
        q.grouping.insert(label.to_owned());
        return Ok(q);
    }
    if let Some(expr) = query
        .strip_prefix("query_result(")
        .and_then(|a| a.strip_suffix(')'))
    {
        return parse_promql(expr);
    }
    Err(format!("{query:?}: unsupported template query"))
}

// ---------------------------------------------------------------------------------------
// A regex subset for label matchers: literals, `.`, `\` escapes, `*`, `+`, `?`, and `|`
// between alternatives. Anchored at both ends, as in PromQL.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repeat {
    One,
    Optional,
    Star,
    Plus,
}

/// An atom (`None` for `.`) and its repetition.
type Piece = (Option<char>, Repeat);

fn compile(re: &str) -> Result<Vec<Piece>, String> {
    let mut out: Vec<Piece> = Vec::new();
    let mut chars = re.chars();
    while let Some(c) = chars.next() {
        match c {
            '.' => out.push((None, Repeat::One)),
            '\\' => out.push((
                Some(chars.next().ok_or_else(|| format!("{re:?}: trailing \\"))?),
                Repeat::One,
            )),
            '*' | '+' | '?' => {
                let last = out
                    .last_mut()
                    .filter(|p| p.1 == Repeat::One)
                    .ok_or_else(|| format!("{re:?}: {c} without an atom"))?;
                last.1 = match c {
                    '*' => Repeat::Star,
                    '+' => Repeat::Plus,
                    _ => Repeat::Optional,
                };
            }
            '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' | '|' => {
                return Err(format!(
                    "{re:?}: regex syntax this test does not check ({c}); use plain alternatives"
                ));
            }
            c => out.push((Some(c), Repeat::One)),
        }
    }
    Ok(out)
}

fn matches_pieces(p: &[Piece], s: &[char]) -> bool {
    let Some(((atom, repeat), rest)) = p.split_first() else {
        return s.is_empty();
    };
    let ok = |c: char| atom.is_none_or(|a| a == c);
    match repeat {
        Repeat::One => !s.is_empty() && ok(s[0]) && matches_pieces(rest, &s[1..]),
        Repeat::Optional => {
            matches_pieces(rest, s) || (!s.is_empty() && ok(s[0]) && matches_pieces(rest, &s[1..]))
        }
        Repeat::Star | Repeat::Plus => {
            let min = usize::from(*repeat == Repeat::Plus);
            let mut n = 0;
            loop {
                if n >= min && matches_pieces(rest, &s[n..]) {
                    return true;
                }
                if n < s.len() && ok(s[n]) {
                    n += 1;
                } else {
                    return false;
                }
            }
        }
    }
}

/// Whether `value` matches the whole of `alternative` (one branch of a `|`).
fn regex_matches(alternative: &str, value: &str) -> Result<bool, String> {
    let chars: Vec<char> = value.chars().collect();
    Ok(matches_pieces(&compile(alternative)?, &chars))
}

// ---------------------------------------------------------------------------------------
// The checks.

fn label_exists(exported: &Exported, label: &str) -> bool {
    exported.labels.contains_key(label) || TARGET_LABELS.contains(&label) || label == "__name__"
}

/// Everything in `q` that the daemon does not export; empty if the query is sound.
fn check_query(q: &Query, exported: &BTreeMap<String, Exported>) -> Vec<String> {
    let mut errors = Vec::new();
    if q.selectors.is_empty() {
        errors.push("no metric".to_owned());
    }
    for sel in &q.selectors {
        let metric = &sel.metric;
        let Some(family) = exported.get(metric) else {
            errors.push(format!(
                "metric {metric} is not exported (exported: {:?})",
                exported.keys().collect::<Vec<_>>()
            ));
            continue;
        };
        if COUNTER_FUNCTIONS.contains(&sel.inside.as_str()) && family.kind != "counter" {
            errors.push(format!("{}() over {metric}, a {}", sel.inside, family.kind));
        }
        if GAUGE_FUNCTIONS.contains(&sel.inside.as_str()) && family.kind != "gauge" {
            errors.push(format!("{}() over {metric}, a {}", sel.inside, family.kind));
        }
        for m in &sel.matchers {
            if !label_exists(family, &m.label) {
                errors.push(format!(
                    "{metric} has no label {} (labels: {:?})",
                    m.label,
                    family.labels.keys().collect::<Vec<_>>()
                ));
                continue;
            }
            // Values from Grafana variables and Prometheus's own labels are not ours.
            let Some(values) = family.labels.get(&m.label) else {
                continue;
            };
            if m.value.contains('$') {
                continue;
            }
            if m.op.ends_with('~') {
                for alternative in m.value.split('|') {
                    let mut hit = false;
                    for v in values {
                        match regex_matches(alternative, v) {
                            Ok(true) => hit = true,
                            Ok(false) => {}
                            Err(e) => {
                                errors.push(format!("{metric}: {e}"));
                                hit = true;
                                break;
                            }
                        }
                    }
                    if !hit {
                        errors.push(format!(
                            "{metric}{{{}{}{:?}}}: {alternative:?} matches no value of {} ({values:?})",
                            m.label, m.op, m.value, m.label
                        ));
                    }
                }
            } else if !values.contains(&m.value) {
                errors.push(format!(
                    "{metric}{{{}{}{:?}}}: no such value ({values:?})",
                    m.label, m.op, m.value
                ));
            }
        }
        for label in &q.grouping {
            if !label_exists(family, label) {
                errors.push(format!(
                    "grouping by {label}, which {metric} does not have (labels: {:?})",
                    family.labels.keys().collect::<Vec<_>>()
                ));
            }
        }
    }
    errors
}

/// `{{label}}` references of a legend that the query's result does not carry.
fn check_legend(legend: &str, q: &Query, exported: &BTreeMap<String, Exported>) -> Vec<String> {
    let mut errors = Vec::new();
    let mut rest = legend;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            errors.push(format!("legend {legend:?}: unterminated {{{{"));
            break;
        };
        let label = rest[start + 2..start + end].trim();
        rest = &rest[start + end + 2..];
        let kept = if q.drops_labels() {
            q.by.contains(label)
        } else {
            TARGET_LABELS.contains(&label)
                || q.selectors.iter().all(|s| {
                    exported
                        .get(&s.metric)
                        .is_some_and(|f| f.labels.contains_key(label))
                })
        };
        if !kept {
            errors.push(format!(
                "legend {legend:?}: the result has no label {label}"
            ));
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------
// The dashboard.

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("docs/grafana/forwarder-dashboard.json is not JSON")
}

/// Every panel, rows' nested panels included.
fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(p));
    }
    out
}

/// Every `expr` anywhere in the document.
fn count_exprs(v: &Value) -> usize {
    match v {
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| usize::from(k == "expr") + count_exprs(v))
            .sum(),
        Value::Array(a) => a.iter().map(count_exprs).sum(),
        _ => 0,
    }
}

struct Target<'a> {
    panel: String,
    expr: &'a str,
    legend: &'a str,
}

fn targets(d: &Value) -> Vec<Target<'_>> {
    let mut out = Vec::new();
    for p in panels(d) {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Target {
                panel: title.to_owned(),
                expr: t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title}: a target without expr")),
                legend: t["legendFormat"].as_str().unwrap_or(""),
            });
        }
    }
    out
}

/// The template variables' queries, by variable name.
fn template_queries(d: &Value) -> Vec<(String, String)> {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = &v["query"];
            let q = q.as_str().or_else(|| q["query"].as_str()).unwrap_or("");
            (v["name"].as_str().unwrap_or("?").to_owned(), q.to_owned())
        })
        .collect()
}

#[test]
fn dashboard_queries_use_only_exported_metrics_and_labels() {
    let exported = exported();
    let d = dashboard();
    let mut errors = Vec::new();
    let targets = targets(&d);
    for t in &targets {
        match parse_promql(t.expr) {
            Ok(q) => {
                errors.extend(
                    check_query(&q, &exported)
                        .into_iter()
                        .chain(check_legend(t.legend, &q, &exported))
                        .map(|e| format!("panel {:?}: {e}\n    {}", t.panel, t.expr)),
                );
            }
            Err(e) => errors.push(format!("panel {:?}: {e}", t.panel)),
        }
    }
    let templates = template_queries(&d);
    for (name, query) in &templates {
        match parse_template_query(query) {
            Ok(q) => errors.extend(
                check_query(&q, &exported)
                    .into_iter()
                    .map(|e| format!("variable {name}: {e}\n    {query}")),
            ),
            Err(e) => errors.push(format!("variable {name}: {e}")),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // Every expr in the file was looked at (none hides in a place `targets` misses).
    assert_eq!(
        count_exprs(&d),
        targets.len(),
        "exprs outside panel targets"
    );
    assert!(targets.len() >= 15, "only {} queries", targets.len());
}

#[test]
fn dashboard_shows_every_exported_metric() {
    let exported = exported();
    let d = dashboard();
    let used: BTreeSet<String> = targets(&d)
        .iter()
        .flat_map(|t| parse_promql(t.expr).unwrap().selectors)
        .map(|s| s.metric)
        .collect();
    let missing: Vec<&String> = exported.keys().filter(|m| !used.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "metrics the dashboard does not show (add a panel): {missing:?}"
    );
}

#[test]
fn dashboard_is_importable_and_has_the_expected_panels() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()), "uid");
    assert!(d["id"].is_null(), "id must be null for import");

    // Data source: a `datasource` variable of type prometheus, or a `DS_PROMETHEUS` input.
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds_var = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .map(|v| format!("${{{}}}", v["name"].as_str().unwrap()));
    let ds_input = d["__inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["pluginId"] == "prometheus")
        .map(|i| format!("${{{}}}", i["name"].as_str().unwrap()));
    let ds = ds_var
        .or(ds_input)
        .expect("no prometheus datasource variable or input");

    // A `host` variable from a per-host metric.
    let templates = template_queries(&d);
    let (_, host_query) = templates
        .iter()
        .find(|(n, _)| n == "host")
        .expect("no host variable");
    let q = parse_template_query(host_query).unwrap();
    assert!(q.grouping.contains("host"), "{host_query}");
    assert!(
        q.metrics()[0].starts_with("forwarder_host_"),
        "{host_query}"
    );

    let panels = panels(&d);
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"].as_str(),
            Some(ds.as_str()),
            "{title}"
        );
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(
                t["datasource"]["uid"].as_str(),
                Some(ds.as_str()),
                "{title}"
            );
        }
        // Units: rates of bytes in bytes/s, of packets in packets/s.
        let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
        for t in p["targets"].as_array().unwrap() {
            let q = parse_promql(t["expr"].as_str().unwrap()).unwrap();
            for s in q.selectors.iter().filter(|s| s.inside == "rate") {
                if s.metric.ends_with("_bytes_total") {
                    assert!(matches!(unit, "Bps" | "binBps"), "{title}: unit {unit}");
                }
                if s.metric.ends_with("_packets_total") && s.metric.contains("_host_") {
                    assert_eq!(unit, "pps", "{title}");
                }
            }
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Traffic per host (bytes/s)",
        "Packets per host (packets/s)",
        "New connections per host",
        "Flows currently tracked per host",
        "Drops per host by reason",
        "Drops by reason (global)",
        "Packets by verdict",
        "Parse failures",
        "Classification outcomes",
        "Flow table occupancy",
        "Flow table evictions (estimated)",
        "XDP attach mode",
        "Tunnel",
        "Connection log",
    ] {
        assert!(titles.contains(&want), "no panel {want:?}: {titles:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The checker itself catches mistakes.

fn errors_of(expr: &str) -> Vec<String> {
    check_query(&parse_promql(expr).unwrap(), &exported())
}

#[test]
fn reader_extracts_metrics_not_functions_labels_strings_or_durations() {
    let q = parse_promql(
        r#"sum by (host, direction) (rate(forwarder_host_bytes_total{host=~"$host", direction="to_backend"}[$__rate_interval] offset 5m))
           / on(instance) group_left
           sum without (host) (irate(job:other_metric:rate5m{a="b{c}, d=\"e\""}[1m:30s])) * 1e-3 > bool 0.5"#,
    )
    .unwrap();
    assert_eq!(
        q.metrics(),
        ["forwarder_host_bytes_total", "job:other_metric:rate5m"]
    );
    assert_eq!(q.selectors[0].inside, "rate");
    assert_eq!(q.selectors[1].inside, "irate");
    assert_eq!(
        q.selectors[0].matchers[1],
        Matcher {
            label: "direction".into(),
            op: "=".into(),
            value: "to_backend".into()
        }
    );
    assert_eq!(q.selectors[1].matchers[0].value, r#"b{c}, d="e""#);
    let grouping: Vec<&str> = q.grouping.iter().map(String::as_str).collect();
    assert_eq!(grouping, ["direction", "host", "instance"]);
    assert_eq!(q.by.len(), 2);
    assert!(q.functions.contains("sum") && q.functions.contains("irate"));

    let q = parse_promql(
        r#"label_replace(forwarder_tunnel_up, "dst", "$1", "src", "(.*)") and max(forwarder_host_flows) by (host)"#,
    )
    .unwrap();
    assert_eq!(q.metrics(), ["forwarder_tunnel_up", "forwarder_host_flows"]);
    assert!(q.by.contains("host"));

    let q =
        parse_template_query(r#"label_values(forwarder_host_flows{instance=~"$instance"}, host)"#)
            .unwrap();
    assert_eq!(q.metrics(), ["forwarder_host_flows"]);
    assert!(q.grouping.contains("host"));
}

#[test]
fn reader_rejects_what_it_cannot_check() {
    for bad in [
        r#"{__name__="forwarder_tunnel_up"}"#,
        "rat(forwarder_host_bytes_total[5m])",
        "sum(rate(forwarder_host_bytes_total[5m])",
        "forwarder_tunnel_up{host}",
        "rate",
    ] {
        assert!(parse_promql(bad).is_err(), "{bad}");
    }
    assert!(parse_template_query("label_values(host)").is_err());
    assert!(parse_template_query("metrics(forwarder_.*)").is_err());
}

#[test]
fn checker_rejects_unknown_metrics_labels_and_values() {
    let exported = exported();
    // Sound queries pass.
    for good in [
        r#"sum by (host) (rate(forwarder_host_bytes_total{host=~"$host", direction="to_client"}[5m]))"#,
        r#"rate(forwarder_datapath_packets_total{event=~"classified_.+|xdp_rx", instance="vps"}[5m])"#,
        "forwarder_flow_table_entries / forwarder_flow_table_capacity",
    ] {
        assert_eq!(errors_of(good), Vec::<String>::new(), "{good}");
    }
    // A metric the daemon does not export (typo, invented, or a counter without _total).
    for (bad, want) in [
        (
            r#"sum by (host) (rate(forwarder_bogus_bytes_total{host=~"$host"}[5m]))"#,
            "forwarder_bogus_bytes_total is not exported",
        ),
        (
            "rate(forwarder_host_bytes[5m])",
            "forwarder_host_bytes is not exported",
        ),
        (
            "forwarder_backend_latency_seconds",
            "forwarder_backend_latency_seconds is not exported",
        ),
        // Labels the metric does not have.
        (r#"forwarder_tunnel_up{iface="wg0"}"#, "has no label iface"),
        (
            "sum by (reason) (forwarder_host_flows)",
            "grouping by reason",
        ),
        // Label values the daemon never produces.
        (
            r#"forwarder_datapath_packets_total{event="xdp_drop"}"#,
            "no such value",
        ),
        (
            r#"forwarder_datapath_packets_total{event=~"classified_.+|clasify_.+"}"#,
            "\"clasify_.+\" matches no value",
        ),
        (
            r#"forwarder_host_packets_total{direction="inbound"}"#,
            "no such value",
        ),
        // Regexes the checker cannot follow are refused rather than waved through.
        (
            r#"forwarder_datapath_packets_total{event=~"(xdp|tc)_pass"}"#,
            "does not check",
        ),
        // rate() of a gauge.
        (
            "rate(forwarder_host_flows[5m])",
            "rate() over forwarder_host_flows, a gauge",
        ),
    ] {
        let errors = errors_of(bad);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{bad}: want {want:?}, got {errors:?}"
        );
    }
    // A template variable over a label the metric lacks.
    let q = parse_template_query("label_values(forwarder_host_flows, direction)").unwrap();
    assert!(!check_query(&q, &exported).is_empty());
    // Legends naming labels an aggregation dropped.
    let q = parse_promql("sum by (host) (rate(forwarder_host_bytes_total[5m]))").unwrap();
    assert!(check_legend("{{host}}", &q, &exported).is_empty());
    assert!(!check_legend("{{host}} {{direction}}", &q, &exported).is_empty());
    let q = parse_promql("forwarder_xdp_attach_mode == 1").unwrap();
    assert!(check_legend("{{mode}} on {{instance}}", &q, &exported).is_empty());
    assert!(!check_legend("{{version}}", &q, &exported).is_empty());
}

#[test]
fn regex_subset() {
    for (re, s, want) in [
        ("xdp_pass_.+", "xdp_pass_no_rule", true),
        ("xdp_pass_.+", "xdp_pass_", false),
        (".+_drop_malformed", "tc_drop_malformed", true),
        (".*", "", true),
        ("a\\.b", "a.b", true),
        ("a\\.b", "axb", false),
        ("a.b", "axb", true),
        ("colou?r", "color", true),
        ("tc_pass", "tc_pass_x", false),
    ] {
        assert_eq!(regex_matches(re, s), Ok(want), "{re} ~ {s}");
    }
    assert!(regex_matches("[a-z]+", "x").is_err());
}

#[test]
fn exposition_is_read_with_counter_suffixes_and_all_labels() {
    let e = exported();
    assert_eq!(e["forwarder_host_bytes_total"].kind, "counter");
    assert_eq!(e["forwarder_host_flows"].kind, "gauge");
    assert!(!e.contains_key("forwarder_host_bytes"));
    let hosts = &e["forwarder_host_bytes_total"].labels["host"];
    assert!(
        hosts.contains("*.example.com") && hosts.contains("unknown"),
        "{hosts:?}"
    );
    let events = &e["forwarder_datapath_packets_total"].labels["event"];
    assert_eq!(events.len(), Counter::ALL.len());
}
