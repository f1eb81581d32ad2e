//! The once-a-second monitor of a run: an engine snapshot, a point of the time series, the progress line.

use std::time::Instant;

use crate::engine::{Engine, Snapshot};
use crate::procstat;
use crate::stats::Summary;

use super::{sample_opt, Monitor, Point};

impl Monitor {
    pub(super) fn new(epoch: Instant, pid: Option<u32>, progress: bool) -> Monitor {
        Monitor {
            epoch,
            pid,
            progress,
            last: None,
            series: Vec::new(),
            measuring: false,
            window_latency: Vec::new(),
            window_chirp: Vec::new(),
            window_send_late: Vec::new(),
        }
    }

    pub(super) async fn tick(&mut self, engine: &Engine, joined: &usize) {
        self.tick_n(engine, *joined).await;
    }

    pub(super) fn absorb(&mut self, s: &mut Snapshot) {
        if self.measuring {
            self.window_latency.append(&mut s.latency_ms);
            self.window_chirp.append(&mut s.chirp_ms);
            self.window_send_late.append(&mut s.send_late_ms);
        }
    }

    pub(super) async fn tick_n(&mut self, engine: &Engine, joined: usize) {
        let Ok(mut s) = engine.snapshot().await else {
            return;
        };
        let now = Instant::now();
        let server = sample_opt(self.pid);
        let Ok(tool) = procstat::sample(None) else {
            return;
        };
        let mut lat = s.latency_ms.clone();
        let lat_sum = Summary::of(&mut lat);
        let mut chirp = s.chirp_ms.clone();
        let chirp_sum = Summary::of(&mut chirp);
        self.absorb(&mut s);
        let mut p = Point {
            t_s: now.saturating_duration_since(self.epoch).as_secs_f64(),
            joined,
            latency_p50_ms: lat_sum.p50,
            latency_p99_ms: lat_sum.p99,
            mix_latency_p50_ms: chirp_sum.p50,
            server_rss_mb: server.map(|x| x.rss_kb as f64 / 1024.0),
            ..Point::default()
        };
        if let Some((t, prev, prev_server, prev_tool)) = &self.last {
            let dt = now.saturating_duration_since(*t).as_secs_f64().max(1e-3);
            p.rx_pps = (s.rtp_delivered() - prev.rtp_delivered()) as f64 / dt;
            let de = s.expected.saturating_sub(prev.expected);
            let dr = s.received.saturating_sub(prev.received);
            p.loss_pct = (de > 0).then(|| 100.0 * de.saturating_sub(dr) as f64 / de as f64);
            p.server_cpu_pct = server
                .zip(*prev_server)
                .map(|(a, b)| 100.0 * (a.cpu_s() - b.cpu_s()) / dt);
            p.tool_cpu_pct = 100.0 * (tool.cpu_s() - prev_tool.cpu_s()) / dt;
        }
        if self.progress {
            use std::io::IsTerminal;
            let start = if std::io::stderr().is_terminal() {
                "\r"
            } else {
                "\n"
            };
            let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
            eprint!(
                "{start}[{:6.1}s] joined {:4} connected {:4} | rx {:7.0} pkt/s loss {:>5}% | latency p50 {:>6} p99 {:>6} ms | mix {:>6} ms | server cpu {:>6}% | tool cpu {:5.1}%   ",
                p.t_s,
                joined,
                s.connected,
                p.rx_pps,
                f(p.loss_pct),
                f(p.latency_p50_ms),
                f(p.latency_p99_ms),
                f(p.mix_latency_p50_ms),
                f(p.server_cpu_pct),
                p.tool_cpu_pct,
            );
        }
        self.series.push(p);
        self.last = Some((now, s, server, tool));
    }
}
