//! Side-by-side ratios from the JSON reports of runs against Chorus and Janus.

use std::fmt::Write as _;

use serde_json::Value;

/// The reports to compare (any may be missing).
#[derive(Default)]
pub struct Reports {
    pub chorus_forward: Option<Value>,
    pub janus_forward: Option<Value>,
    pub chorus_mix: Option<Value>,
    pub janus_mix: Option<Value>,
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn line(out: &mut String, what: &str, c: Option<f64>, j: Option<f64>, unit: &str, digits: usize) {
    let _ = writeln!(
        out,
        "  {what:<44} {:>12} {:>12}  {unit}",
        f(c, digits),
        f(j, digits)
    );
}

/// The comparison as text.
pub fn text(r: &Reports) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  {:<44} {:>12} {:>12}", "", "chorus", "janus");
    if r.chorus_forward.is_some() || r.janus_forward.is_some() {
        let (c, j) = (r.chorus_forward.as_ref(), r.janus_forward.as_ref());
        let g = |v: Option<&Value>, p: &[&str]| v.and_then(|v| num(v, p));
        let _ = writeln!(
            out,
            "forward (Chorus slots / Janus VideoRoom audio-only), {} participants:",
            f(g(c, &["participants"]).or(g(j, &["participants"])), 0)
        );
        line(
            &mut out,
            "machine floor (same run)",
            g(c, &["floor", "cpu_us_per_packet"]),
            g(j, &["floor", "cpu_us_per_packet"]),
            "µs/packet",
            2,
        );
        line(
            &mut out,
            "server CPU per forwarded packet",
            g(c, &["server", "cpu_us_per_packet"]),
            g(j, &["server", "cpu_us_per_packet"]),
            "µs",
            2,
        );
        line(
            &mut out,
            "  ÷ floor",
            g(c, &["server", "ratio_to_floor"]),
            g(j, &["server", "ratio_to_floor"]),
            "×",
            2,
        );
        line(
            &mut out,
            "end-to-end latency p50",
            g(c, &["latency_ms", "p50"]),
            g(j, &["latency_ms", "p50"]),
            "ms",
            3,
        );
        line(
            &mut out,
            "end-to-end latency p99",
            g(c, &["latency_ms", "p99"]),
            g(j, &["latency_ms", "p99"]),
            "ms",
            3,
        );
        line(
            &mut out,
            "join → first audio p50",
            g(c, &["joins", "first_audio_ms", "p50"]),
            g(j, &["joins", "first_audio_ms", "p50"]),
            "ms",
            1,
        );
        line(
            &mut out,
            "join → first audio p95",
            g(c, &["joins", "first_audio_ms", "p95"]),
            g(j, &["joins", "first_audio_ms", "p95"]),
            "ms",
            1,
        );
        line(
            &mut out,
            "ramp (all joins done)",
            g(c, &["joins", "ramp_s"]),
            g(j, &["joins", "ramp_s"]),
            "s",
            1,
        );
        line(
            &mut out,
            "join failures",
            g(c, &["joins", "failed"]),
            g(j, &["joins", "failed"]),
            "",
            0,
        );
        line(
            &mut out,
            "loss",
            g(c, &["streams", "loss_pct"]),
            g(j, &["streams", "loss_pct"]),
            "%",
            2,
        );
        line(
            &mut out,
            "server RSS per participant",
            g(c, &["server", "rss_kb_per_participant"]),
            g(j, &["server", "rss_kb_per_participant"]),
            "kB",
            0,
        );
        line(
            &mut out,
            "  of which the second half of the joins",
            g(c, &["server", "rss_kb_per_participant_second_half"]),
            g(j, &["server", "rss_kb_per_participant_second_half"]),
            "kB",
            0,
        );
        line(
            &mut out,
            "server private memory per participant",
            g(c, &["server", "anon_kb_per_participant"]),
            g(j, &["server", "anon_kb_per_participant"]),
            "kB",
            0,
        );
        line(
            &mut out,
            "tool CPU",
            g(c, &["tool_cpu_share"]).map(|x| x * 100.0),
            g(j, &["tool_cpu_share"]).map(|x| x * 100.0),
            "% of a core",
            1,
        );
        let _ = writeln!(
            out,
            "  => Janus VideoRoom CPU per forwarded packet = {} × Chorus",
            f(
                ratio(
                    g(j, &["server", "cpu_us_per_packet"]),
                    g(c, &["server", "cpu_us_per_packet"])
                ),
                2
            )
        );
    }
    if r.chorus_mix.is_some() || r.janus_mix.is_some() {
        let (c, j) = (r.chorus_mix.as_ref(), r.janus_mix.as_ref());
        let g = |v: Option<&Value>, p: &[&str]| v.and_then(|v| num(v, p));
        let _ = writeln!(out, "mix (Chorus mix rooms / Janus AudioBridge):");
        line(
            &mut out,
            "participants",
            g(c, &["participants"]),
            g(j, &["participants"]),
            "",
            0,
        );
        line(
            &mut out,
            "server CPU",
            g(c, &["server", "cpu_share_of_core"]).map(|x| x * 100.0),
            g(j, &["server", "cpu_share_of_core"]).map(|x| x * 100.0),
            "% of a core",
            1,
        );
        line(
            &mut out,
            "CPU per mixed participant",
            g(c, &["server", "cpu_share_per_participant"]).map(|x| x * 100.0),
            g(j, &["server", "cpu_share_per_participant"]).map(|x| x * 100.0),
            "% of a core",
            3,
        );
        line(
            &mut out,
            "mixed participants per core",
            g(c, &["server", "participants_per_core"]),
            g(j, &["server", "participants_per_core"]),
            "",
            0,
        );
        line(
            &mut out,
            "mix latency (chirp) p50",
            g(c, &["mix_latency_ms", "p50"]),
            g(j, &["mix_latency_ms", "p50"]),
            "ms",
            1,
        );
        line(
            &mut out,
            "mix latency (chirp) p95",
            g(c, &["mix_latency_ms", "p95"]),
            g(j, &["mix_latency_ms", "p95"]),
            "ms",
            1,
        );
        line(
            &mut out,
            "server RSS per participant",
            g(c, &["server", "rss_kb_per_participant"]),
            g(j, &["server", "rss_kb_per_participant"]),
            "kB",
            0,
        );
        line(
            &mut out,
            "join failures",
            g(c, &["joins", "failed"]),
            g(j, &["joins", "failed"]),
            "",
            0,
        );
        let _ = writeln!(
            out,
            "  => Chorus mixes {} × the participants per core of Janus AudioBridge; mixer latency median {} ms vs {} ms",
            f(ratio(g(c, &["server", "participants_per_core"]), g(j, &["server", "participants_per_core"])), 1),
            f(g(c, &["mix_latency_ms", "p50"]), 1),
            f(g(j, &["mix_latency_ms", "p50"]), 1),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ratios_come_from_the_reports() {
        let r = Reports {
            chorus_forward: Some(json!({"participants": 50, "server": {"cpu_us_per_packet": 7.0}})),
            janus_forward: Some(json!({"participants": 50, "server": {"cpu_us_per_packet": 70.0}})),
            chorus_mix: Some(json!({"server": {"participants_per_core": 1000.0}})),
            janus_mix: Some(json!({"server": {"participants_per_core": 50.0}})),
        };
        let t = text(&r);
        assert!(t.contains("= 10.00 × Chorus"), "{t}");
        assert!(t.contains("Chorus mixes 20.0 ×"), "{t}");
    }
}
