//! The flood shapes' table: one row per shape, the idle baseline first.

use std::fmt::Write as _;

use super::ShapeRow;

const HEADER: [&str; 11] = [
    "shape",
    "sent",
    "pps",
    "reached home",
    "flows (flood)",
    "confirmed (flood)",
    "to spoofed",
    "real ok",
    "p50 ms",
    "p99 ms",
    "download",
];

/// The table (Markdown) of `rows`, with the baseline's first if given.
pub fn table(baseline: Option<&ShapeRow>, rows: &[ShapeRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} | backend up |", HEADER.join(" | "));
    let _ = writeln!(out, "|---|{}---|---|", "---:|".repeat(HEADER.len() - 2));
    for r in baseline.into_iter().chain(rows) {
        let _ = writeln!(out, "{}", row_line(r));
    }
    out
}

/// One row of the table.
pub fn row_line(r: &ShapeRow) -> String {
    let name = r.shape.map_or("idle (no flood)", |s| s.name());
    let ms = |p: f64| {
        r.clients
            .percentile_ms(p)
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
    };
    let download = match &r.download {
        Ok(()) => "intact".to_owned(),
        Err(e) => format!("FAILED: {}", e.lines().next().unwrap_or_default()),
    };
    let backend = r.backend_up_min.map_or_else(
        || "?".to_owned(),
        |v| if v >= 1.0 { "up".into() } else { "DOWN".into() },
    );
    format!(
        "| {name} | {} | {:.0} | {} | {} | {} | {} | {}/{} ({:.1} %) | {} | {} | {download} | {backend} |",
        r.sent.packets,
        r.sent.pps(),
        r.reached_home,
        r.spoofed_flows_created(),
        r.spoofed_flows_confirmed(),
        r.reflected,
        r.clients.ok_ms.len(),
        r.clients.requests,
        r.clients.success_pct(),
        ms(50.0),
        ms(99.0),
    )
}
