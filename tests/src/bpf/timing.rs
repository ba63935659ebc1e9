//! Per-run cost of the programs, from BPF_PROG_TEST_RUN's own clock: medians of single
//! runs, or the kernel repeating a run itself.

use std::time::Duration;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use forwarder_common::{TC_INGRESS_PROG, XDP_INGRESS_PROG};

use super::{conn::OpenedConn, harness::Harness};

impl Harness {
    /// Average per-run duration over `n` single runs of `f` (BPF_PROG_TEST_RUN's own clock).
    pub fn time_xdp(&self, frame: &[u8], n: u32) -> Duration {
        let prog: &Xdp = self
            .ebpf
            .program(XDP_INGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        self.timed(n, |out| {
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(out),
                ..TestRunOptions::default()
            })
            .expect("XDP test run")
            .duration
        })
    }

    pub fn time_tc(&self, name: &str, data: &[u8], ifindex: u32, n: u32) -> Duration {
        let prog: &SchedClassifier = self.ebpf.program(name).unwrap().try_into().unwrap();
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        self.timed(n, |out| {
            prog.test_run(TestRunOptions {
                data_in: Some(data),
                data_out: Some(out),
                ctx_in: if ifindex > 0 { Some(&ctx) } else { None },
                ..TestRunOptions::default()
            })
            .expect("tc test run")
            .duration
        })
    }

    /// Per-run time with the kernel repeating the run itself (only meaningful for paths
    /// that leave the packet unchanged).
    pub fn time_xdp_repeat(&self, frame: &[u8], repeat: u32) -> Duration {
        let prog: &Xdp = self
            .ebpf
            .program(XDP_INGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })
        .expect("XDP test run")
        .duration
    }

    /// Median over one single run per packet in `frames` (e.g. SYNs of distinct flows).
    pub fn time_xdp_each(&self, frames: &[Vec<u8>]) -> Duration {
        let prog: &Xdp = self
            .ebpf
            .program(XDP_INGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        let mut it = frames.iter();
        self.timed(frames.len() as u32, |out| {
            let f = it.next().expect("one frame per run");
            prog.test_run(TestRunOptions {
                data_in: Some(f),
                data_out: Some(out),
                ..TestRunOptions::default()
            })
            .expect("XDP test run")
            .duration
        })
    }

    pub fn time_tc_each(&self, name: &str, frames: &[Vec<u8>]) -> Duration {
        let prog: &SchedClassifier = self.ebpf.program(name).unwrap().try_into().unwrap();
        let mut it = frames.iter();
        self.timed(frames.len() as u32, |out| {
            let f = it.next().expect("one frame per run");
            prog.test_run(TestRunOptions {
                data_in: Some(f),
                data_out: Some(out),
                ..TestRunOptions::default()
            })
            .expect("tc test run")
            .duration
        })
    }

    /// Times the first payload segments of each connection after its handshake (not timed).
    /// Median per timed packet over connections: each connection's first frame (its SYN)
    /// runs untimed, the rest (its first payload segments) are timed one by one. With
    /// `tc_only`, tc ingress runs instead of XDP.
    pub fn time_first_payloads(&self, conns: &[OpenedConn], tc_only: bool) -> Duration {
        let xdp: &Xdp = self
            .ebpf
            .program(XDP_INGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        let tc: &SchedClassifier = self
            .ebpf
            .program(TC_INGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; 4096];
        let mut run = |f: &[u8]| {
            let opts = TestRunOptions {
                data_in: Some(f),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            };
            if tc_only {
                tc.test_run(opts).expect("tc test run").duration
            } else {
                xdp.test_run(opts).expect("XDP test run").duration
            }
        };
        let mut v = Vec::new();
        for c in conns {
            let _ = run(&c.syn);
            let _ = self.tunnel(&c.synack);
            let _ = run(&c.ack);
            for f in &c.payload {
                v.push(run(f));
            }
        }
        v.sort();
        v[v.len() / 2]
    }

    fn timed(&self, n: u32, mut f: impl FnMut(&mut [u8]) -> Duration) -> Duration {
        let mut out = vec![0u8; 4096];
        // Each run starts from the original packet: with `repeat`, the kernel would feed the
        // program its own (already translated) output again. The median of single runs
        // is robust against the odd interrupt.
        let mut v: Vec<Duration> = (0..n).map(|_| f(&mut out)).collect();
        v.sort();
        v[v.len() / 2]
    }
}
