//! Forwarding cost of the media core, measured in the virtual-time call harness (no kernel, no sockets):
//! real CPU time spent inside `MediaCore` per RTP packet forwarded into a subscriber's slot, including
//! str0m's SRTP encryption and RTCP. Clients' own work (their str0m peers) is excluded.
//!
//!     cargo bench -p media-core --bench forward
//!
//! Not a test: it asserts nothing and prints a table. `CHORUS_BENCH_ONLY=listeners,talkers,seconds` runs one
//! row only (scripts/callgrind.py counts instructions that way). `CHORUS_BENCH_RED=N`: every client offers
//! RED and the talkers send N earlier frames with each (Chrome: 1), so every subscriber gets RED.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use media_core::sim::LinkConfig;
use support::Sim;

fn run(listeners: usize, talkers: usize, seconds: u64) {
    let mut voices: Vec<(f32, f32)> = (0..talkers)
        .map(|i| (300.0 + 150.0 * i as f32, 0.3))
        .collect();
    voices.extend(std::iter::repeat_n((0.0, 0.0), listeners));
    let red = bench_red();
    let mut sim = if red == 0 {
        Sim::new(42, LinkConfig::default(), 3, &voices)
    } else {
        let mut sim = Sim::new(42, LinkConfig::default(), 3, &[]);
        for &(freq, amplitude) in &voices {
            sim.join_with_red(freq, amplitude, red);
        }
        sim.drain_core();
        sim
    };
    sim.keep_audio = false;
    sim.connect();
    sim.run_for(Duration::from_secs(1));
    let (busy0, fwd0, in0) = (
        sim.core_busy,
        sim.core.stats().rtp_forwarded,
        sim.core.stats().rtp_in,
    );
    let out0 = sim.core.stats().datagrams_out;
    let (timers0, wakeups0) = (sim.core_busy_timers, sim.core_timeouts);
    sim.run_for(Duration::from_secs(seconds));
    let stats = sim.core.stats();
    let busy = sim.core_busy - busy0;
    let forwarded = stats.rtp_forwarded - fwd0;
    let received = stats.rtp_in - in0;
    let datagrams = stats.datagrams_out - out0;
    let per_packet_us = busy.as_secs_f64() * 1e6 / forwarded.max(1) as f64;
    let load = busy.as_secs_f64() / seconds as f64;
    let timers = (sim.core_busy_timers - timers0).as_secs_f64();
    let wakeups = (sim.core_timeouts - wakeups0) as f64 / seconds as f64;
    println!(
        "{listeners:>9} {talkers:>7} {received:>10} {forwarded:>10} {datagrams:>10} {per_packet_us:>12.2} {:>13.1} {:>8.0} {:>8.0}",
        load * 100.0,
        100.0 * timers / busy.as_secs_f64(),
        wakeups
    );
}

/// `CHORUS_BENCH_RED`: the RED depth every client offers and its talkers send (0, the default: none).
fn bench_red() -> u8 {
    std::env::var("CHORUS_BENCH_RED").map_or(0, |v| {
        v.trim()
            .parse()
            .expect("CHORUS_BENCH_RED is a depth, 0 to 2")
    })
}

/// `CHORUS_BENCH_ONLY=a,b,c` as numbers, if set.
fn only_case() -> Option<(usize, usize, u64)> {
    let v = std::env::var("CHORUS_BENCH_ONLY").ok()?;
    let n: Vec<u64> = v
        .split(',')
        .map(|x| {
            x.trim()
                .parse()
                .expect("CHORUS_BENCH_ONLY is three numbers")
        })
        .collect();
    assert_eq!(n.len(), 3, "CHORUS_BENCH_ONLY is listeners,talkers,seconds");
    Some((n[0] as usize, n[1] as usize, n[2]))
}

fn main() {
    if let Some((listeners, talkers, seconds)) = only_case() {
        println!("listeners talkers   rtp_in  forwarded  datagrams  µs/forwarded  core%/1 core  timers% wakeup/s");
        run(listeners, talkers, seconds);
        return;
    }
    println!("media-core forwarding: CPU inside MediaCore per forwarded packet (virtual time, no syscalls)");
    println!("listeners talkers   rtp_in  forwarded  datagrams  µs/forwarded  core%/1 core  timers% wakeup/s");
    for (listeners, talkers) in [(10, 3), (50, 3), (200, 3), (500, 3)] {
        run(listeners, talkers, 5);
    }
}
