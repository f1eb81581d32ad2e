//! chorus-loadtest: simulated voice participants with real WebRTC (str0m client peers, DTLS-SRTP) against
//! a running server — Chorus, or Janus for comparison — with latency, loss, jitter, join and server-CPU
//! measurements, and the machine's floor cost per packet to compare against. See docs/loadtest.md.

pub mod audio;
pub mod compare;
pub mod engine;
pub mod floor;
pub mod janus;
pub mod listen;
pub mod net;
pub mod procstat;
pub mod report;
pub mod run;
pub mod signal;
pub mod soak;
pub mod stamp;
pub mod stats;
pub mod talk;
