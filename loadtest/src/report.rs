//! The report for people (a table, an HTML page with plots) and for machines (JSON).

use std::fmt::Write as _;

use crate::floor::Floor;
use crate::run::{Point, Report};
use crate::stats::Summary;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

fn summary_row(name: &str, unit: &str, s: &Summary, digits: usize) -> String {
    format!(
        "  {name:<34} {:>9} {:>9} {:>9} {:>9}  {unit} (n={})\n",
        opt(s.p50, digits),
        opt(s.p95, digits),
        opt(s.p99, digits),
        opt(s.max, digits),
        s.count
    )
}

/// The floor as text.
pub fn floor_text(f: &Floor) -> String {
    format!(
        "machine floor (AES-128-GCM seal of 100 B + sendmmsg to 1,000 loopback ports, {} packets):\n  \
         {:.2} µs CPU per packet ({}); seal alone {:.2} µs; bare system call {:.2} µs; delivered {}/{}\n",
        f.packets,
        f.cpu_us_per_packet,
        match (f.user_us_per_packet, f.system_us_per_packet, f.kernel_share) {
            (Some(u), Some(s), Some(k)) => format!("{u:.2} user + {s:.2} system, {:.0} % kernel", k * 100.0),
            _ => "run too short to split user and system".to_string(),
        },
        f.seal_us_per_packet,
        f.syscall_us,
        f.delivered,
        f.packets
    )
}

/// The final table.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "chorus-loadtest: target {} mode {:?}, {} room(s), {} participants, {} talker(s)/room ({}, pauses {}), \
         ramp {}/s, steady {:.1} s{}",
        r.target,
        r.mode,
        r.rooms,
        r.participants,
        r.talkers_per_room,
        r.talk_model,
        if r.dtx { "DTX" } else { "silence frames" },
        r.ramp_rate,
        r.duration_s,
        if r.drop_rtp > 0.0 {
            format!(", injected loss {:.1} %", r.drop_rtp * 100.0)
        } else {
            String::new()
        }
    );
    if let Some(f) = &r.floor {
        s.push_str(&floor_text(f));
    }
    let j = &r.joins;
    let _ = writeln!(
        s,
        "joins: {} ok, {} failed of {} in {:.1} s{}",
        j.succeeded,
        j.failed,
        j.attempted,
        j.ramp_s,
        if j.failures.is_empty() {
            String::new()
        } else {
            format!(" ({:?})", j.failures)
        }
    );
    for (k, x) in &j.failure_examples {
        let _ = writeln!(s, "  e.g. {k}: {x}");
    }
    let _ = writeln!(
        s,
        "  {:<34} {:>9} {:>9} {:>9} {:>9}",
        "", "p50", "p95", "p99", "max"
    );
    if j.answer_ms.count > 0 {
        s.push_str(&summary_row(
            "join: ws open → answer",
            "ms",
            &j.answer_ms,
            1,
        ));
    }
    s.push_str(&summary_row(
        "join: ws open → media connected",
        "ms",
        &j.connect_ms,
        1,
    ));
    s.push_str(&summary_row(
        "join: ws open → first remote audio",
        "ms",
        &j.first_audio_ms,
        1,
    ));
    if r.latency_ms.count > 0 {
        s.push_str(&summary_row(
            "end-to-end latency (stamped)",
            "ms",
            &r.latency_ms,
            3,
        ));
    }
    if r.mix_latency_ms.count > 0 || r.mode == crate::run::Mode::Mix {
        s.push_str(&summary_row(
            "mix latency (chirp, codec removed)",
            "ms",
            &r.mix_latency_ms,
            1,
        ));
    }
    if r.send_late_ms.count > 0 {
        s.push_str(&summary_row(
            "tool: frame sent after its grid time",
            "ms",
            &r.send_late_ms,
            2,
        ));
    }
    s.push_str(&summary_row(
        "loss per stream",
        "%",
        &r.streams.loss_pct_per_stream,
        2,
    ));
    s.push_str(&summary_row(
        "jitter per stream",
        "ms",
        &r.streams.jitter_ms,
        2,
    ));
    let st = &r.streams;
    let _ = writeln!(
        s,
        "streams: {} received, {} packets expected, {} received, {} lost ({:.2} %); publishers sent {} RTP \
         packets ({} dropped on purpose); participants sent {:.0} other datagrams/s (RTCP, STUN, DTLS)",
        st.count,
        st.expected,
        st.received,
        st.lost,
        st.loss_pct,
        st.sent_rtp,
        st.injected_drops,
        st.sent_other_per_s
    );
    if let Some(sv) = &r.server {
        let _ = writeln!(
            s,
            "server pid {}: {:.2} CPU s in {:.1} s ({:.1} % of a core); {} packets out → {} µs CPU per packet{}",
            sv.pid,
            sv.cpu_s,
            sv.window_s,
            sv.cpu_share_of_core * 100.0,
            sv.packets_out,
            opt(sv.cpu_us_per_packet, 2),
            sv.ratio_to_floor
                .map_or(String::new(), |x| format!(" = {x:.2} × floor"))
        );
        let _ = writeln!(
            s,
            "  per participant: {:.3} % of a core ({} participants per core); RSS {:.1} → {:.1} MB, {:.0} kB per participant ({} kB each in the second half of the joins; private memory {} kB per participant)",
            sv.cpu_share_per_participant * 100.0,
            opt(sv.participants_per_core, 0),
            sv.rss_before_kb as f64 / 1024.0,
            sv.rss_after_kb as f64 / 1024.0,
            sv.rss_kb_per_participant,
            opt(sv.rss_kb_per_participant_second_half, 0),
            opt(sv.anon_kb_per_participant, 0),
        );
    }
    let _ = writeln!(
        s,
        "tool: {:.1} % of a core in the steady state; its socket dropped {} datagrams",
        r.tool_cpu_share * 100.0,
        r.tool_socket_drops
    );
    if r.rx_unmeasured > 0 {
        let _ = writeln!(
            s,
            "tool: {} RTP packets counted undecrypted by receivers not measured (--measure-receivers)",
            r.rx_unmeasured
        );
    }
    s
}

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    values: Vec<(f64, f64)>,
}

/// An SVG line plot; the y axis starts at 0 and reaches at least `min_top`.
fn svg_plot(title: &str, unit: &str, min_top: f64, series: &[Series]) -> String {
    let (w, h, ml, mr, mt, mb) = (720.0, 220.0, 60.0, 20.0, 28.0, 36.0);
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.values.clone()).collect();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" style="font:12px sans-serif;background:#fff">"#
    );
    let _ = write!(
        out,
        r#"<text x="{ml}" y="18" font-weight="bold">{title} ({unit})</text>"#
    );
    if all.is_empty() {
        let _ = write!(out, r#"<text x="{ml}" y="100">no data</text></svg>"#);
        return out;
    }
    let x0 = all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x1 = all
        .iter()
        .map(|p| p.0)
        .fold(f64::NEG_INFINITY, f64::max)
        .max(x0 + 1.0);
    let y1 = (all.iter().map(|p| p.1).fold(0.0, f64::max) * 1.1).max(min_top);
    let px = |x: f64| ml + (x - x0) / (x1 - x0) * (w - ml - mr);
    let py = |y: f64| h - mb - y / y1 * (h - mt - mb);
    let _ = write!(
        out,
        r##"<line x1="{ml}" y1="{}" x2="{}" y2="{}" stroke="#888"/><line x1="{ml}" y1="{mt}" x2="{ml}" y2="{}" stroke="#888"/>"##,
        h - mb,
        w - mr,
        h - mb,
        h - mb
    );
    for k in 0..=4 {
        let y = y1 * k as f64 / 4.0;
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end">{:.3}</text><line x1="{ml}" y1="{}" x2="{}" y2="{}" stroke="#eee"/>"##,
            ml - 4.0,
            py(y) + 4.0,
            y,
            py(y),
            w - mr,
            py(y)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">time (s): {:.0} … {:.0}</text>"#,
        (ml + w - mr) / 2.0,
        h - 8.0,
        x0,
        x1
    );
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .values
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            s.color,
            pts.join(" ")
        );
        let _ = write!(
            out,
            r#"<text x="{}" y="18" fill="{}">{}</text>"#,
            w - mr - 70.0 * (series.len() - i) as f64,
            s.color,
            s.name
        );
    }
    out.push_str("</svg>");
    out
}

fn pick(points: &[Point], f: impl Fn(&Point) -> Option<f64>) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter_map(|p| f(p).map(|v| (p.t_s, v)))
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A self-contained HTML page: the table and plots over time.
pub fn html(r: &Report) -> String {
    let p = &r.series;
    let mut out = String::from(
        "<!doctype html><meta charset=utf-8><title>chorus-loadtest report</title>\
         <body style=\"font-family:sans-serif;max-width:760px;margin:auto\"><h1>chorus-loadtest</h1>",
    );
    let _ = write!(
        out,
        "<pre style=\"font-size:11px;white-space:pre-wrap\">{}</pre>",
        esc(&table(r))
    );
    out.push_str(&svg_plot(
        "end-to-end latency",
        "ms",
        1.0,
        &[
            Series {
                name: "p50",
                color: "#1f77b4",
                values: pick(p, |x| x.latency_p50_ms),
            },
            Series {
                name: "p99",
                color: "#d62728",
                values: pick(p, |x| x.latency_p99_ms),
            },
            Series {
                name: "mix p50",
                color: "#2ca02c",
                values: pick(p, |x| x.mix_latency_p50_ms),
            },
        ],
    ));
    out.push_str(&svg_plot(
        "loss",
        "%",
        1.0,
        &[Series {
            name: "loss",
            color: "#d62728",
            values: pick(p, |x| x.loss_pct),
        }],
    ));
    out.push_str(&svg_plot(
        "CPU",
        "% of a core",
        10.0,
        &[
            Series {
                name: "server",
                color: "#1f77b4",
                values: pick(p, |x| x.server_cpu_pct),
            },
            Series {
                name: "tool",
                color: "#ff7f0e",
                values: pick(p, |x| Some(x.tool_cpu_pct)),
            },
        ],
    ));
    out.push_str(&svg_plot(
        "participants joined and packets received",
        "count, pkt/s ÷ 100",
        1.0,
        &[
            Series {
                name: "joined",
                color: "#9467bd",
                values: pick(p, |x| Some(x.joined as f64)),
            },
            Series {
                name: "rx/100",
                color: "#8c564b",
                values: pick(p, |x| Some(x.rx_pps / 100.0)),
            },
        ],
    ));
    out.push_str("</body>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_scales_points_into_the_frame() {
        let svg = svg_plot(
            "x",
            "ms",
            5.5,
            &[Series {
                name: "a",
                color: "#000",
                values: vec![(0.0, 0.0), (10.0, 5.0)],
            }],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        // (0, 0) maps to the bottom-left corner of the plot area.
        assert!(svg.contains("60.0,184.0"), "{svg}");
        assert!(svg.contains("700.0,"), "{svg}");
    }
}
