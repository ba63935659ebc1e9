//! Loads every program of the kernel object and prints, one line per program, whether
//! this kernel's verifier accepted it and how many instructions it processed:
//! `program<TAB>ok<TAB>count` or `program<TAB>refused<TAB>reason (the verifier's log)`.
//! `cargo xtask vmtest` runs it on each kernel for its table. Exits 1 if any program was
//! refused.

use aya::{
    Ebpf,
    programs::{SchedClassifier, Xdp},
};
use forwarder::dataplane::EBPF_OBJECT;
use forwarder_common::{XDP_INGRESS_PROG, XDP_READER_PROG};

fn main() {
    let mut ebpf = match Ebpf::load(EBPF_OBJECT) {
        Ok(e) => e,
        Err(e) => {
            println!("object\trefused\t{}", one_line(&format!("{e:#}")));
            std::process::exit(1);
        }
    };
    let mut refused = false;
    for name in forwarder_common::ALL_PROGS {
        let loaded = match ebpf.program_mut(name) {
            None => Err("not in the object".to_owned()),
            Some(p) => {
                let r = if name == XDP_INGRESS_PROG || name == XDP_READER_PROG {
                    <&mut Xdp>::try_from(p)
                        .map_err(|e| e.to_string())
                        .and_then(|x| {
                            x.load()
                                .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
                        })
                } else {
                    <&mut SchedClassifier>::try_from(p)
                        .map_err(|e| e.to_string())
                        .and_then(|x| {
                            x.load()
                                .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
                        })
                };
                r.map(|()| {
                    ebpf.program(name)
                        .and_then(|p| p.info().ok())
                        .and_then(|i| i.verified_instruction_count())
                        .unwrap_or(0)
                })
            }
        };
        match loaded {
            Ok(n) => println!("{name}\tok\t{n}"),
            Err(e) => {
                refused = true;
                println!("{name}\trefused\t{}", one_line(&e));
                // The whole log, for whoever has to find out why.
                eprintln!("=== {name} ===\n{e}\n");
            }
        }
    }
    if refused {
        std::process::exit(1);
    }
}

/// The reason on one line, with the end of the verifier's log (where it says why).
fn one_line(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(4)..];
    format!("{} ... {}", lines.first().unwrap_or(&""), tail.join(" | "))
}
