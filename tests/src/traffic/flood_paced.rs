//! Sends a flood shape (`flood_shapes`) at a fixed rate: a set number of packets, paced
//! in millisecond steps, the second packet of each pair [`PAIR_GAP`] after its first,
//! and never longer than a deadline.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use anyhow::bail;

use super::{
    flood::PacketSocket,
    flood_shapes::{Aim, PAIR_GAP, Shape, Shaper},
};

/// Longest a paced flood runs, whatever it was asked.
const MAX_RUN: Duration = Duration::from_secs(120);

/// How fast, how many, and for how long at most.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Packets per second (pairs count as two).
    pub rate: u32,
    /// Packets in all.
    pub packets: u64,
    /// Deadline: the flood ends then even if packets are left.
    pub max_time: Duration,
}

impl Pace {
    /// `rate` packets per second for `seconds`, with a deadline of twice that and a second.
    pub fn for_seconds(rate: u32, seconds: f64) -> Self {
        Pace {
            rate,
            packets: (f64::from(rate) * seconds).round() as u64,
            max_time: Duration::from_secs_f64(seconds * 2.0 + 1.0),
        }
    }
}

/// What a paced flood sent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sent {
    pub packets: u64,
    /// Refused by the kernel (a full queue): not on the wire.
    pub refused: u64,
    pub seconds: f64,
}

impl Sent {
    pub fn pps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.packets as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Sends `shape` out of the aim's interface at `pace`, from a thread of its own (which
/// enters the aim's namespace); returns when done.
pub fn send_paced(aim: &Aim, shape: Shape, pace: Pace) -> anyhow::Result<Sent> {
    if pace.rate == 0 {
        bail!("a flood rate of 0 packets per second sends nothing");
    }
    let aim = aim.clone();
    std::thread::spawn(move || paced_loop(&aim, shape, pace))
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread panicked"))?
}

fn paced_loop(aim: &Aim, shape: Shape, pace: Pace) -> anyhow::Result<Sent> {
    let socket = PacketSocket::open(&aim.ns, &aim.iface, aim.macs.dst)?;
    let mut shaper = Shaper::new(aim, shape);
    let start = Instant::now();
    let deadline = start + pace.max_time.min(MAX_RUN);
    let rate = f64::from(pace.rate);
    // Second packets of pairs waiting for their time; FIFO, as every pair has one gap.
    let mut later: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut scheduled = 0u64;
    let mut sent = Sent::default();
    let out = |f: &[u8], sent: &mut Sent| {
        if socket.send(f) {
            sent.packets += 1;
        } else {
            sent.refused += 1;
        }
    };
    loop {
        let now = Instant::now();
        if now >= deadline || (scheduled >= pace.packets && later.is_empty()) {
            break;
        }
        // Packets due by now at the rate (the clock, not a count of sleeps, sets it).
        let due = ((now - start).as_secs_f64() * rate) as u64 + 1;
        let mut done = sent.packets + sent.refused;
        while done < due.min(pace.packets) {
            if later.front().is_some_and(|(t, _)| *t <= now) {
                if let Some((_, f)) = later.pop_front() {
                    out(&f, &mut sent);
                }
            } else if scheduled < pace.packets {
                let unit = shaper.next_unit();
                scheduled += 1;
                out(&unit.first, &mut sent);
                if let Some(f) = unit.then
                    && scheduled < pace.packets
                {
                    scheduled += 1;
                    later.push_back((now + PAIR_GAP, f));
                }
            } else {
                // Only pairs' second packets are left, and none is due yet.
                break;
            }
            done += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sent.seconds = start.elapsed().as_secs_f64();
    Ok(sent)
}
