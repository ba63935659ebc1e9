//! The load generator: one wrk run from the client namespace, and reading its output.

use std::fs;

use anyhow::{Context as _, bail};

use super::model::{Options, Workload};
use crate::lab::{Lab, SUBDOMAINS};

/// The fixed load: this many connections, each waiting this long between a response and
/// its next request (about 140 requests per second in the lab, a tenth of what the
/// slowest setup reaches).
pub(super) const FIXED_CONNECTIONS: u32 = 8;
pub(super) const FIXED_DELAY_MS: u32 = 50;

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wrk {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub requests: u64,
}

/// One wrk run from the client namespace: as fast as it goes, or (`fixed`) at the fixed
/// load.
pub(super) fn wrk(lab: &Lab, workload: Workload, o: &Options, fixed: bool) -> anyhow::Result<Wrk> {
    let url = format!("https://{}/", SUBDOMAINS[0]);
    let seconds = format!("{}s", o.seconds);
    let conns = if fixed {
        FIXED_CONNECTIONS
    } else {
        o.connections
    }
    .to_string();
    let script = lab.dir.join("fixed-rate.lua");
    let script = script.display().to_string();
    let mut args = vec![
        "wrk",
        "-t2",
        "-c",
        &conns,
        "-d",
        &seconds,
        "--timeout",
        "5s",
        "--latency",
    ];
    if fixed {
        fs::write(
            &script,
            format!("function delay()\n  return {FIXED_DELAY_MS}\nend\n"),
        )?;
        args.extend(["-s", &script]);
    }
    if workload != Workload::KeepAliveHttps {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(&url);
    let out = lab.exec(&lab.client, &args)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

/// Requests per second, p50 and p99 latency in ms, failed and completed requests.
pub fn parse_wrk(text: &str) -> anyhow::Result<Wrk> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .context("no Requests/sec line")?
        .trim()
        .parse()?;
    let pct = |p: &str| -> anyhow::Result<f64> {
        let v = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .with_context(|| format!("no {p} latency line"))?
            .trim();
        duration_ms(v)
    };
    let mut errors = 0;
    for l in text.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|f| f.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>()?;
        }
    }
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .context("no requests line")?
        .0
        .trim()
        .parse()?;
    Ok(Wrk {
        rps,
        p50_ms: pct("50%")?,
        p99_ms: pct("99%")?,
        errors,
        requests,
    })
}

fn duration_ms(v: &str) -> anyhow::Result<f64> {
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| v.split_at(i))
        .context("latency without unit")?;
    let n: f64 = num.parse()?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => bail!("unknown latency unit {unit:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 2s test @ https://app.example.test/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.10ms    2.00ms  30.00ms   80.00%
  Latency Distribution
     50%    4.80ms
     75%    6.00ms
     90%    7.50ms
     99%    1.20s
  2000 requests in 2.00s, 300.00KB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   1000.50
Transfer/sec:    150.00KB
";
        let w = parse_wrk(text).unwrap();
        assert_eq!(w.rps, 1000.5);
        assert_eq!(w.p50_ms, 4.8);
        assert_eq!(w.p99_ms, 1200.0);
        assert_eq!(w.errors, 9);
        assert_eq!(w.requests, 2000);
        assert!(parse_wrk("nothing").is_err());
        assert_eq!(duration_ms("750.00us").unwrap(), 0.75);
    }
}
