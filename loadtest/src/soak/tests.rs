use super::*;

#[test]
fn churn_is_poisson_at_the_asked_rate_and_seeded() {
    let mut a = ChurnSchedule::new(30.0, 0.25, 7);
    let gaps: Vec<f64> = (0..20_000)
        .map(|_| a.next_gap().expect("churn on").as_secs_f64())
        .collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!((mean - 2.0).abs() < 0.06, "mean gap {mean} s, want 2 s");
    // Exponential: the standard deviation equals the mean.
    let var = gaps.iter().map(|g| (g - mean) * (g - mean)).sum::<f64>() / gaps.len() as f64;
    assert!((var.sqrt() - 2.0).abs() < 0.1, "sd {}", var.sqrt());
    let mut b = ChurnSchedule::new(30.0, 0.25, 7);
    assert_eq!(b.next_gap(), Some(Duration::from_secs_f64(gaps[0])));
    assert!(ChurnSchedule::new(0.0, 0.25, 7).next_gap().is_none());
}

#[test]
fn churn_picks_uniformly_with_the_abrupt_share() {
    let mut c = ChurnSchedule::new(30.0, 0.25, 3);
    let mut hits = [0u32; 6];
    let mut abrupt = 0;
    let n = 60_000;
    for _ in 0..n {
        let e = c.pick(6).expect("six candidates");
        hits[e.pick] += 1;
        abrupt += u32::from(e.abrupt);
    }
    for h in hits {
        assert!((h as f64 - 10_000.0).abs() < 400.0, "{hits:?}");
    }
    let share = abrupt as f64 / n as f64;
    assert!((share - 0.25).abs() < 0.01, "abrupt share {share}");
    assert!(c.pick(0).is_none());
}

#[test]
fn slope_is_the_least_squares_fit() {
    let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 0.5 * i as f64)).collect();
    assert!((slope(&pts).expect("fit") - 0.5).abs() < 1e-12);
    // Symmetric noise around a line leaves the slope.
    let noisy: Vec<(f64, f64)> = (0..10)
        .map(|i| {
            (
                i as f64,
                2.0 * i as f64 + if i % 2 == 0 { 1.0 } else { -1.0 },
            )
        })
        .collect();
    let s = slope(&noisy).expect("fit");
    assert!((s - 2.0).abs() < 0.25, "{s}");
    assert!(slope(&[(1.0, 2.0)]).is_none());
    assert!(slope(&[(1.0, 2.0), (1.0, 3.0)]).is_none());
}

#[test]
fn an_episode_counts_once_until_it_ends() {
    let mut e = Episodes::default();
    assert!(!e.observe(1, false));
    assert!(e.observe(1, true));
    assert!(!e.observe(1, true));
    assert!(!e.observe(1, true));
    assert!(e.observe(2, true));
    assert!(!e.observe(1, false));
    assert!(e.observe(1, true));
    assert_eq!(e.count, 3);
    e.forget(2);
    assert!(e.observe(2, true));
    assert_eq!(e.count, 4);
}

#[test]
fn silence_is_measured_from_the_latest_packet_or_the_join() {
    let t0 = Instant::now();
    let limit = Duration::from_secs(2);
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    assert!(!silent_too_long(Some(at(1000)), t0, at(2900), limit));
    assert!(silent_too_long(Some(at(1000)), t0, at(3100), limit));
    assert!(!silent_too_long(None, t0, at(1999), limit));
    assert!(silent_too_long(None, t0, at(2001), limit));
    // A packet from before the (re)join does not count.
    assert!(!silent_too_long(Some(t0), at(5000), at(6000), limit));
}

#[test]
fn metrics_text_is_parsed_and_trouble_counters_are_picked() {
    let text = "# HELP chorus_mixer_ticks_late_total Ticks late.\n\
            # TYPE chorus_mixer_ticks_late_total counter\n\
            chorus_mixer_ticks_late_total 3\n\
            chorus_participants{mode=\"mix\"} 27\n\
            chorus_packets_dropped_total{reason=\"stale_or_duplicate\"} 12 1700000000000\n\
            chorus_jitter_buffer_discarded_packets_total{reason=\"late\"} 4\n\
            chorus_rtt_seconds_bucket{le=\"+Inf\"} 1e3\n\
            process_resident_memory_bytes 1.2e7\n\
            chorus_rtp_packets_forwarded_total 991\n\
            garbage\n";
    let m = parse_metrics(text);
    assert_eq!(m["chorus_mixer_ticks_late_total"], 3.0);
    assert_eq!(m["chorus_participants{mode=\"mix\"}"], 27.0);
    assert_eq!(
        m["chorus_packets_dropped_total{reason=\"stale_or_duplicate\"}"],
        12.0
    );
    assert_eq!(m["chorus_rtt_seconds_bucket{le=\"+Inf\"}"], 1000.0);
    assert_eq!(m["process_resident_memory_bytes"], 1.2e7);
    assert_eq!(m.len(), 7);
    assert!(is_trouble_counter("chorus_mixer_ticks_late_total"));
    assert!(is_trouble_counter(
        "chorus_jitter_buffer_discarded_packets_total{reason=\"late\"}"
    ));
    assert!(is_trouble_counter("chorus_media_events_dropped_total"));
    assert!(!is_trouble_counter("chorus_rtp_packets_forwarded_total"));
    assert!(!is_trouble_counter(
        "chorus_rtt_seconds_bucket{le=\"+Inf\"}"
    ));
    assert!(is_watched("chorus_participants{mode=\"mix\"}"));
    assert!(!is_watched("chorus_rtp_packets_forwarded_total"));
}

#[test]
fn the_metrics_url_comes_from_the_websocket_url() {
    assert_eq!(
        http_base("ws://127.0.0.1:7880/ws").as_deref(),
        Some("http://127.0.0.1:7880")
    );
    assert_eq!(http_base("wss://x/ws"), None);
    assert_eq!(
        SoakModes::Both.room_mode(0),
        Mode::Forward,
        "even rooms forward"
    );
    assert_eq!(SoakModes::Both.room_mode(3), Mode::Mix);
}
