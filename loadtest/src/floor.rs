//! The machine's floor: what the kernel and the cipher alone cost per forwarded packet.
//!
//! A forwarding server must at least, per packet it forwards, seal the payload for the receiver
//! (SRTP AEAD_AES_128_GCM) and hand it to the kernel, which delivers it to the receiver's socket. This
//! module does exactly that and nothing else — an AES-128-GCM seal of a 12-byte header plus a ~100-byte
//! payload, then `sendmmsg(2)` in batches of 64 to ~1,000 distinct loopback ports that have bound sockets
//! — and measures the sending thread's CPU time per packet (the scheduler's exact runtime,
//! `CLOCK_THREAD_CPUTIME_ID`, split into user and system by `getrusage(RUSAGE_THREAD)`). Servers are
//! then reported as a ratio to this floor, measured in the same run on the same machine, which means
//! something across machines where absolute microseconds do not.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use media_core::audio::FRAME_SAMPLES;
use serde::Serialize;

use crate::net::{MultiSocket, Outgoing};

/// How the floor is measured.
#[derive(Clone, Copy, Debug)]
pub struct FloorConfig {
    /// Distinct destination ports (each a bound socket).
    pub ports: usize,
    /// RTP payload bytes sealed per packet (plus a 12-byte header and a 16-byte tag on the wire).
    pub payload: usize,
    /// Packets per round; receivers are drained (untimed) between rounds so no socket overflows.
    pub packets_per_round: usize,
    pub rounds: usize,
}

impl Default for FloorConfig {
    fn default() -> Self {
        FloorConfig {
            ports: 1000,
            payload: 100,
            packets_per_round: 50_000,
            rounds: 6,
        }
    }
}

/// The result, per packet.
#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    pub packets: u64,
    /// Packets that reached a receiving socket (the rest were refused by the kernel).
    pub delivered: u64,
    /// CPU time of the sending thread per packet, µs (user + system).
    pub cpu_us_per_packet: f64,
    /// The split of `cpu_us_per_packet` into user and system time, and the kernel's share of it; `None`
    /// when the run had too little CPU time for the kernel's tick samples, from which the split is
    /// taken, to tell it (`SPLIT_MIN`).
    pub user_us_per_packet: Option<f64>,
    pub system_us_per_packet: Option<f64>,
    pub kernel_share: Option<f64>,
    /// The seal alone, µs per packet (CPU time of a loop without sending).
    pub seal_us_per_packet: f64,
    /// A bare system call (`getppid`), µs.
    pub syscall_us: f64,
}

/// Errors of the floor measurement.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("AES-GCM: {0}")]
    Crypto(String),
}

/// CPU time of the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadCpu {
    /// The scheduler's runtime of the thread (`CLOCK_THREAD_CPUTIME_ID`), exact to the nanosecond.
    pub total: Duration,
    /// User and system time (`getrusage(RUSAGE_THREAD)`). The kernel splits the runtime by tick
    /// samples and brings it up to date only at a tick or a context switch, so over a few milliseconds
    /// both may stand still: use `total` for the amount, these only for the split over a long run.
    pub user: Duration,
    pub system: Duration,
}

impl std::ops::Sub for ThreadCpu {
    type Output = ThreadCpu;
    fn sub(self, earlier: ThreadCpu) -> ThreadCpu {
        ThreadCpu {
            total: self.total.saturating_sub(earlier.total),
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

impl std::ops::AddAssign for ThreadCpu {
    fn add_assign(&mut self, other: ThreadCpu) {
        self.total += other.total;
        self.user += other.user;
        self.system += other.system;
    }
}

impl ThreadCpu {
    /// The kernel's share of `total`, from the user/system split; `None` under `SPLIT_MIN`.
    pub fn kernel_share(&self) -> Option<f64> {
        let split = self.user + self.system;
        (split >= SPLIT_MIN).then(|| self.system.as_secs_f64() / split.as_secs_f64())
    }
}

/// The least sampled CPU time from which a user/system split is reported: the kernel samples the split
/// once a tick (1–10 ms), so a few milliseconds may fall wholly on one side.
pub const SPLIT_MIN: Duration = Duration::from_millis(200);

/// CPU time of the calling thread so far.
pub fn thread_cpu() -> ThreadCpu {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let total = Duration::new(t.tv_sec as u64, t.tv_nsec as u32);
    let (user, system) = thread_rusage();
    ThreadCpu {
        total,
        user,
        system,
    }
}

/// (user, system) of the calling thread.
// getrusage(RUSAGE_THREAD) is the one source of a thread's user and system time apart (/proc/thread-self/stat
// counts clock ticks); neither std nor rustix wraps it.
#[allow(unsafe_code)]
fn thread_rusage() -> (Duration, Duration) {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

fn key() -> Result<LessSafeKey, FloorError> {
    let unbound = UnboundKey::new(&AES_128_GCM, &[0x42; 16])
        .map_err(|e| FloorError::Crypto(e.to_string()))?;
    Ok(LessSafeKey::new(unbound))
}

fn seal_packet(key: &LessSafeKey, seq: u64, payload: usize) -> Result<Vec<u8>, FloorError> {
    let mut pkt = Vec::with_capacity(12 + payload + 16);
    pkt.extend_from_slice(&[0x80, 111]);
    pkt.extend_from_slice(&(seq as u16).to_be_bytes());
    pkt.extend_from_slice(&((seq as u32).wrapping_mul(FRAME_SAMPLES as u32)).to_be_bytes());
    pkt.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    pkt.resize(12 + payload, 0x5a);
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&seq.to_be_bytes());
    let (header, body) = pkt.split_at_mut(12);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&*header),
            body,
        )
        .map_err(|e| FloorError::Crypto(e.to_string()))?;
    pkt.extend_from_slice(tag.as_ref());
    Ok(pkt)
}

/// Measure the floor. Takes about a second.
pub fn measure(config: FloorConfig) -> Result<Floor, FloorError> {
    let key = key()?;
    let receivers: Vec<UdpSocket> = (0..config.ports)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_nonblocking(true)?;
            // Failure (no CAP_NET_ADMIN) is harmless: the buffer keeps its default.
            let _ = chorus_udp::force_receive_buffer(&s, 1 << 20);
            Ok(s)
        })
        .collect::<io::Result<_>>()?;
    let dests: Vec<SocketAddr> = receivers
        .iter()
        .map(|s| s.local_addr())
        .collect::<io::Result<_>>()?;
    let sender = MultiSocket::bind(0, Some("lo"))?;
    let mut seq = 0u64;
    let mut packets = 0u64;
    let mut delivered = 0u64;
    let mut cpu = ThreadCpu::default();
    let mut drain = [0u8; 2048];
    let mut batch: Vec<Outgoing> = Vec::with_capacity(crate::net::BATCH);
    for round in 0..config.rounds + 1 {
        let c0 = thread_cpu();
        for i in 0..config.packets_per_round {
            let contents = seal_packet(&key, seq, config.payload)?;
            seq += 1;
            batch.push(Outgoing {
                source: Ipv4Addr::LOCALHOST,
                destination: dests[i % dests.len()],
                contents,
            });
            if batch.len() == crate::net::BATCH {
                sender.send_all(&batch)?;
                batch.clear();
            }
        }
        sender.send_all(&batch)?;
        batch.clear();
        let c1 = thread_cpu();
        // Round 0 warms caches, page tables and socket buffers; it is not counted.
        if round > 0 {
            cpu += c1 - c0;
            packets += config.packets_per_round as u64;
        }
        for r in &receivers {
            while r.recv(&mut drain).is_ok() {
                if round > 0 {
                    delivered += 1;
                }
            }
        }
    }
    // The seal alone.
    let seal_n = 100_000u64;
    let c0 = thread_cpu();
    let mut sink = 0u8;
    for i in 0..seal_n {
        let p = seal_packet(&key, i, config.payload)?;
        sink ^= p[p.len() - 1];
    }
    std::hint::black_box(sink);
    let seal_cpu = (thread_cpu() - c0).total;
    // A bare system call.
    let calls = 1_000_000u64;
    let c0 = thread_cpu();
    for _ in 0..calls {
        // getppid(2): glibc does not cache it, so every call enters the kernel.
        std::hint::black_box(std::os::unix::process::parent_id());
    }
    let syscall_cpu = (thread_cpu() - c0).total;
    let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    let share = cpu.kernel_share();
    let cpu_us = per(cpu.total, packets);
    Ok(Floor {
        packets,
        delivered,
        cpu_us_per_packet: cpu_us,
        user_us_per_packet: share.map(|k| cpu_us * (1.0 - k)),
        system_us_per_packet: share.map(|k| cpu_us * k),
        kernel_share: share,
        seal_us_per_packet: per(seal_cpu, seal_n),
        syscall_us: per(syscall_cpu, calls),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_packet_opens_with_the_same_key() {
        let key = key().expect("a static key");
        let mut p = seal_packet(&key, 7, 100).expect("seal");
        assert_eq!(p.len(), 12 + 100 + 16);
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&7u64.to_be_bytes());
        let (h, body) = p.split_at_mut(12);
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&*h), body)
            .expect("opens");
        assert_eq!(plain, &[0x5a; 100][..]);
    }

    #[test]
    fn a_small_floor_run_delivers_every_packet_and_counts_cpu() {
        let f = measure(FloorConfig {
            ports: 50,
            payload: 100,
            packets_per_round: 2_000,
            rounds: 2,
        })
        .expect("floor");
        assert_eq!(f.packets, 4_000);
        assert_eq!(f.delivered, 4_000);
        // The amount is exact however short the run; the split needs a tick to have seen the thread.
        assert!(f.cpu_us_per_packet > 0.0);
        if let (Some(u), Some(s)) = (f.user_us_per_packet, f.system_us_per_packet) {
            assert!((u + s - f.cpu_us_per_packet).abs() < 1e-9);
        }
        assert!(f.seal_us_per_packet > 0.0 && f.syscall_us > 0.0);
    }
}
