//! The comparison's results: the markdown tables (medians, spread, ratios to nftables)
//! and the bar chart.

use std::fmt::Write as _;

use super::model::{Sample, Setup, Workload};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The markdown table: medians with their spread (min..max), and ratios to nftables.
pub fn table(samples: &[Sample]) -> String {
    let mut out = String::from(
        "| workload | setup | requests/s (min..max) | vs nftables | p50 ms | p99 ms | vs nftables p99 | errors |\n|---|---|---|---|---|---|---|---|\n",
    );
    for w in Workload::THROUGHPUT {
        let of = |s: Setup| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|x| x.workload == w && x.setup == s)
                .collect()
        };
        let base = of(Setup::Nftables);
        let base_rps = median(base.iter().map(|x| x.requests_per_second).collect());
        let base_p99 = median(base.iter().map(|x| x.p99_ms).collect());
        for s in Setup::ALL {
            let v = of(s);
            if v.is_empty() {
                continue;
            }
            let rps: Vec<f64> = v.iter().map(|x| x.requests_per_second).collect();
            let (lo, hi) = rps
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
            let m = median(rps);
            let p50 = median(v.iter().map(|x| x.p50_ms).collect());
            let p99 = median(v.iter().map(|x| x.p99_ms).collect());
            let errors: u64 = v.iter().map(|x| x.errors).sum();
            let _ = writeln!(
                out,
                "| {} | {} | {m:.0} ({lo:.0}..{hi:.0}) | {:.2}x | {p50:.2} | {p99:.2} | {:.2}x | {errors} |",
                w.name(),
                s.name(),
                m / base_rps,
                p99 / base_p99,
            );
        }
    }
    out
}

/// The second table: CPU per request at the fixed load, bulk throughput and CPU per GB,
/// and the fixed load under a flood, each with its ratio to nftables.
pub fn cost_table(samples: &[Sample]) -> String {
    let of = |w: Workload, s: Setup| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|x| x.workload == w && x.setup == s)
            .collect()
    };
    let med = |w: Workload, s: Setup, f: &dyn Fn(&Sample) -> Option<f64>| -> f64 {
        median(of(w, s).into_iter().filter_map(f).collect())
    };
    let mut out = String::from(
        "| setup | CPU s / 10k req (fixed load) | vs nftables | without the client | vs nftables | of which wireguard-go | home nginx | of which BPF µs / req (runs) | bulk MB/s | vs nftables | CPU s / GB | vs nftables | under flood: ok % | p99 ms | vs idle p99 | flood pps |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let n = Setup::Nftables;
    let fixed = Workload::FixedRateHttps;
    let base_cpu = med(fixed, n, &|x| x.cpu_s_per_10k);
    let base_cpu_wo = med(fixed, n, &|x| x.cpu_s_per_10k_without_client);
    let base_mb = med(Workload::Bulk, n, &|x| x.mb_per_s);
    let base_gb = med(Workload::Bulk, n, &|x| x.cpu_s_per_gb);
    for s in Setup::ALL {
        if of(fixed, s).is_empty() {
            continue;
        }
        let cpu = med(fixed, s, &|x| x.cpu_s_per_10k);
        let cpu_wo = med(fixed, s, &|x| x.cpu_s_per_10k_without_client);
        let tunnel = med(fixed, s, &|x| x.tunnel_cpu_s_per_10k);
        let home = med(fixed, s, &|x| x.home_cpu_s_per_10k);
        let bpf_us = med(fixed, s, &|x| x.bpf_us_per_request);
        let bpf = if bpf_us.is_finite() {
            let runs = med(fixed, s, &|x| x.bpf_runs_per_request);
            format!("{bpf_us:.1} ({runs:.0})")
        } else {
            "-".to_string()
        };
        let mb = med(Workload::Bulk, s, &|x| x.mb_per_s);
        let gb = med(Workload::Bulk, s, &|x| x.cpu_s_per_gb);
        let idle_p99 = med(fixed, s, &|x| Some(x.p99_ms));
        let flood = of(Workload::Flood, s);
        let (ok, all) = flood.iter().fold((0, 0), |(a, b), x| {
            (a + x.requests, b + x.requests + x.errors)
        });
        let ok_pct = if all == 0 {
            0.0
        } else {
            100.0 * ok as f64 / all as f64
        };
        let fp99 = med(Workload::Flood, s, &|x| Some(x.p99_ms));
        let pps = med(Workload::Flood, s, &|x| x.flood_pps);
        let _ = writeln!(
            out,
            "| {} | {cpu:.1} | {:.2}x | {cpu_wo:.1} | {:.2}x | {tunnel:.1} | {home:.1} | {bpf} | {mb:.0} | {:.2}x | {gb:.1} | {:.2}x | {ok_pct:.1} | {fp99:.1} | {:.1}x | {pps:.0} |",
            s.name(),
            cpu / base_cpu,
            cpu_wo / base_cpu_wo,
            mb / base_mb,
            gb / base_gb,
            fp99 / idle_p99,
        );
    }
    out
}

/// A bar chart (SVG) of each setup's median requests per second relative to nftables, one
/// group of bars per workload.
pub fn chart(samples: &[Sample], path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let ratio = |w: Workload, s: Setup| -> f64 {
        let m = |s: Setup| {
            median(
                samples
                    .iter()
                    .filter(|x| x.workload == w && x.setup == s)
                    .map(|x| x.requests_per_second)
                    .collect(),
            )
        };
        m(s) / m(Setup::Nftables)
    };
    let n = Setup::ALL.len();
    let groups = Workload::THROUGHPUT.len();
    let top = Workload::THROUGHPUT
        .iter()
        .flat_map(|w| Setup::ALL.map(|s| ratio(*w, s)))
        .filter(|r| r.is_finite())
        .fold(1.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let slots = groups * (n + 1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Requests per second relative to nftables DNAT (same run, median)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..slots as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("x nftables")
        .draw()?;
    for (g, w) in Workload::THROUGHPUT.iter().enumerate() {
        for (i, s) in Setup::ALL.iter().enumerate() {
            let r = ratio(*w, *s);
            if !r.is_finite() {
                continue;
            }
            let x0 = (g * (n + 1) + i) as f64 + 0.5;
            let color = Palette99::pick(i);
            let bars = chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x0 + 0.9, r)],
                color.filled(),
            )))?;
            // One legend entry per setup: the colours repeat in every group.
            if g == 0 {
                bars.label(s.name()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
            }
        }
        let mid = (g * (n + 1)) as f64 + (n as f64 + 1.0) / 2.0;
        chart.draw_series(std::iter::once(Text::new(
            w.name(),
            (mid - 1.5, -top * 0.04),
            ("sans-serif", 15),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn the_cost_table_gives_ratios_to_nftables() {
        let mut samples = Vec::new();
        for (i, setup) in Setup::ALL.into_iter().enumerate() {
            let k = 1.0 + i as f64;
            samples.push(Sample {
                p99_ms: 10.0,
                requests: 1000,
                cpu_s_per_10k: Some(4.0 * k),
                cpu_s_per_10k_without_client: Some(2.0 * k),
                tunnel_cpu_s_per_10k: Some(1.5),
                home_cpu_s_per_10k: Some(0.5),
                bpf_us_per_request: matches!(setup, Setup::Forwarder).then_some(4.25),
                bpf_runs_per_request: matches!(setup, Setup::Forwarder).then_some(21.0),
                ..Sample::new(setup, Workload::FixedRateHttps, 0)
            });
            samples.push(Sample {
                mb_per_s: Some(100.0 * k),
                cpu_s_per_gb: Some(8.0),
                ..Sample::new(setup, Workload::Bulk, 0)
            });
            samples.push(Sample {
                p99_ms: 30.0,
                requests: 99,
                errors: 1,
                flood_pps: Some(5e5),
                ..Sample::new(setup, Workload::Flood, 0)
            });
        }
        let t = cost_table(&samples);
        // nftables is the third setup: k = 3.
        let nft = t.lines().find(|l| l.starts_with("| nftables")).unwrap();
        assert!(
            nft.contains("| 12.0 | 1.00x | 6.0 | 1.00x | 1.5 | 0.5 | - | 300 | 1.00x |"),
            "{nft}"
        );
        let fwd = t.lines().find(|l| l.starts_with("| forwarder |")).unwrap();
        assert!(fwd.contains("| 4.0 | 0.33x |"), "{fwd}");
        assert!(fwd.contains("| 0.5 | 4.2 (21) |"), "{fwd}");
        assert!(fwd.contains("| 99.0 | 30.0 | 3.0x | 500000 |"), "{fwd}");
    }

    #[test]
    fn the_chart_has_a_bar_per_setup_and_workload() {
        let mut samples = Vec::new();
        for (i, setup) in Setup::ALL.into_iter().enumerate() {
            for workload in Workload::THROUGHPUT {
                samples.push(Sample {
                    requests_per_second: 1000.0 + 100.0 * i as f64,
                    p50_ms: 1.0,
                    p99_ms: 2.0,
                    ..Sample::new(setup, workload, 0)
                });
            }
        }
        let path = std::env::temp_dir().join(format!("fwd-chart-{}.svg", std::process::id()));
        chart(&samples, &path).unwrap();
        let svg = fs::read_to_string(&path).unwrap();
        let _ = fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{svg}");
        for s in Setup::ALL {
            assert!(svg.contains(s.name()), "{}", s.name());
        }
        // Background, plot area and legend boxes aside: one bar per setup and workload.
        assert!(svg.matches("<rect").count() >= Setup::ALL.len() * Workload::THROUGHPUT.len());
    }
}
