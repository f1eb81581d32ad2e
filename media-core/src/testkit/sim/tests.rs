use super::*;

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

/// Sends `n` numbered datagrams from 1 to 2, one per ms, and delivers all; returns (numbers, times).
fn run(net: &mut SimNet, start: Instant, n: u32) -> Vec<(u32, Instant)> {
    let mut out = Vec::new();
    let mut now = start;
    for i in 0..n {
        net.send(now, addr(1), addr(2), i.to_be_bytes().to_vec());
        now += Duration::from_millis(1);
        while let Some(d) = net.deliver_due(now) {
            out.push((u32::from_be_bytes(d.data.try_into().unwrap()), now));
        }
    }
    while let Some(t) = net.next_delivery() {
        now = now.max(t);
        while let Some(d) = net.deliver_due(now) {
            out.push((u32::from_be_bytes(d.data.try_into().unwrap()), now));
        }
    }
    out
}

#[test]
fn rng_is_deterministic_and_sane() {
    let mut a = Rng::new(42);
    let mut b = Rng::new(42);
    let mut c = Rng::new(43);
    let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
    let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
    let zs: Vec<u64> = (0..100).map(|_| c.next_u64()).collect();
    assert_eq!(xs, ys);
    assert_ne!(xs, zs);
    // Known SplitMix64 output for seed 0.
    assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);

    let mut r = Rng::new(1);
    let mut counts = [0u32; 10];
    let mut sum = 0.0;
    let mut sq = 0.0;
    for _ in 0..100_000 {
        let f = r.next_f64();
        assert!((0.0..1.0).contains(&f));
        counts[r.below(10) as usize] += 1;
        let z = r.normal();
        sum += z;
        sq += z * z;
    }
    for c in counts {
        assert!((9_500..10_500).contains(&c), "{counts:?}");
    }
    assert!((sum / 100_000.0).abs() < 0.02);
    assert!((sq / 100_000.0 - 1.0).abs() < 0.03);
    assert_eq!(r.below(0), 0);
    assert!(!r.chance(0.0));
    assert!(r.chance(1.0));
    let x = r.range_f64(5.0, 6.0);
    assert!((5.0..6.0).contains(&x));
    let mut buf = [0u8; 13];
    r.fill_bytes(&mut buf);
    assert!(buf.iter().any(|&b| b != 0));
    let _ = r.next_u32();
}

#[test]
fn perfect_link_delivers_everything_in_order_with_the_base_delay() {
    let start = t0();
    let mut net = SimNet::new(1, LinkConfig::with_delay(30.0));
    net.send(start, addr(1), addr(2), vec![1]);
    assert_eq!(net.in_flight(), 1);
    assert_eq!(net.next_delivery(), Some(start + Duration::from_millis(30)));
    assert_eq!(net.deliver_due(start + Duration::from_millis(29)), None);
    let d = net.deliver_due(start + Duration::from_millis(30)).unwrap();
    assert_eq!(
        d,
        Datagram {
            source: addr(1),
            destination: addr(2),
            data: vec![1]
        }
    );
    assert_eq!(net.next_delivery(), None);

    let out = run(&mut net, start, 100);
    assert_eq!(
        out.iter().map(|x| x.0).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>()
    );
    assert_eq!(
        net.stats(),
        SimStats {
            sent: 101,
            lost: 0,
            duplicated: 0,
            delivered: 101
        }
    );
}

#[test]
fn same_seed_same_run() {
    let link = LinkConfig {
        loss: 0.1,
        jitter_ms: 40.0,
        base_delay_ms: 20.0,
        duplicate: 0.05,
        reorder: true,
        ..LinkConfig::default()
    };
    let start = t0();
    let a = run(&mut SimNet::new(7, link), start, 1000);
    let b = run(&mut SimNet::new(7, link), start, 1000);
    let c = run(&mut SimNet::new(8, link), start, 1000);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn loss_rate_is_honoured() {
    for loss in [0.01, 0.05, 0.2] {
        let mut net = SimNet::new(
            99,
            LinkConfig {
                loss,
                ..LinkConfig::default()
            },
        );
        let out = run(&mut net, t0(), 10_000);
        let s = net.stats();
        assert_eq!(s.sent, 10_000);
        assert_eq!(s.delivered as usize, out.len());
        assert_eq!(s.sent - s.lost, s.delivered);
        let rate = s.lost as f64 / s.sent as f64;
        // Within 4 standard deviations.
        let sd = (loss * (1.0 - loss) / 10_000.0).sqrt();
        assert!((rate - loss).abs() < 4.0 * sd, "loss {loss}: {rate}");
    }
}

#[test]
fn bursty_loss_keeps_the_average_and_comes_in_runs_of_the_mean_length() {
    for (loss, burst) in [(0.05, 3.0), (0.1, 5.0)] {
        let mut net = SimNet::new(
            99,
            LinkConfig {
                loss,
                loss_burst_packets: burst,
                ..LinkConfig::default()
            },
        );
        let n = 100_000;
        let out = run(&mut net, t0(), n);
        let mut delivered = vec![false; n as usize];
        for (i, _) in &out {
            delivered[*i as usize] = true;
        }
        let mut runs = Vec::new();
        let mut current = 0;
        for d in delivered {
            if d {
                if current > 0 {
                    runs.push(current);
                }
                current = 0;
            } else {
                current += 1;
            }
        }
        let rate = net.stats().lost as f64 / f64::from(n);
        let mean_run = runs.iter().sum::<u32>() as f64 / runs.len() as f64;
        assert!((rate - loss).abs() < loss * 0.15, "loss {loss}: {rate}");
        assert!(
            (mean_run - burst).abs() < burst * 0.1,
            "burst {burst}: mean run {mean_run}"
        );
    }
}

#[test]
fn jitter_reorders_only_when_allowed() {
    let link = LinkConfig {
        jitter_ms: 30.0,
        base_delay_ms: 10.0,
        ..LinkConfig::default()
    };
    let start = t0();
    let reordering = run(
        &mut SimNet::new(
            3,
            LinkConfig {
                reorder: true,
                ..link
            },
        ),
        start,
        1000,
    );
    let inversions = reordering.windows(2).filter(|w| w[1].0 < w[0].0).count();
    assert!(inversions > 100, "{inversions}");
    let ordered = run(
        &mut SimNet::new(
            3,
            LinkConfig {
                reorder: false,
                ..link
            },
        ),
        start,
        1000,
    );
    assert_eq!(
        ordered.iter().map(|x| x.0).collect::<Vec<_>>(),
        (0..1000).collect::<Vec<_>>()
    );
    // Delays stay within base .. base + jitter (+1 ms of delivery granularity) when reordering.
    for (i, (n, at)) in reordering.iter().enumerate() {
        let sent = start + Duration::from_millis(u64::from(*n));
        let d = *at - sent;
        assert!(
            d >= Duration::from_millis(10) && d <= Duration::from_millis(41),
            "{i}: {d:?}"
        );
    }
}

#[test]
fn duplicates_are_delivered_and_counted() {
    let mut net = SimNet::new(
        5,
        LinkConfig {
            duplicate: 0.1,
            ..LinkConfig::default()
        },
    );
    let out = run(&mut net, t0(), 10_000);
    let s = net.stats();
    assert!((800..1200).contains(&s.duplicated), "{s:?}");
    assert_eq!(out.len() as u64, 10_000 + s.duplicated);
    assert_eq!(s.delivered, out.len() as u64);
    // In-order link: copies are adjacent.
    assert!(out.windows(2).all(|w| w[1].0 >= w[0].0));
}

#[test]
fn per_link_overrides() {
    let start = t0();
    let mut net = SimNet::new(1, LinkConfig::with_delay(10.0));
    net.set_link(
        addr(1),
        addr(2),
        LinkConfig {
            loss: 1.0,
            ..LinkConfig::default()
        },
    );
    net.set_link_both(addr(3), addr(4), LinkConfig::with_delay(100.0));
    assert_eq!(net.link(addr(2), addr(1)), LinkConfig::with_delay(10.0));
    assert_eq!(net.link(addr(4), addr(3)), LinkConfig::with_delay(100.0));
    net.send(start, addr(1), addr(2), vec![1]);
    net.send(start, addr(2), addr(1), vec![2]);
    net.send(start, addr(3), addr(4), vec![3]);
    net.send(start, addr(4), addr(3), vec![4]);
    assert_eq!(net.stats().lost, 1);
    assert_eq!(net.next_delivery(), Some(start + Duration::from_millis(10)));
    let d = net.deliver_due(start + Duration::from_millis(10)).unwrap();
    assert_eq!(
        (d.source, d.destination, d.data),
        (addr(2), addr(1), vec![2])
    );
    assert_eq!(net.deliver_due(start + Duration::from_millis(99)), None);
    // Both due at 100 ms: send order.
    let late = start + Duration::from_millis(100);
    assert_eq!(net.deliver_due(late).unwrap().data, vec![3]);
    assert_eq!(net.deliver_due(late).unwrap().data, vec![4]);
    assert_eq!(net.deliver_due(late), None);
    net.clear_link(addr(1), addr(2));
    net.send(late, addr(1), addr(2), vec![5]);
    assert_eq!(net.next_delivery(), Some(late + Duration::from_millis(10)));
    net.set_default_link(LinkConfig::default());
    assert_eq!(net.link(addr(1), addr(2)), LinkConfig::default());
    let _ = net.rng().next_u64();
}

#[test]
fn deliveries_come_in_time_order_across_flows() {
    let start = t0();
    let mut net = SimNet::new(11, LinkConfig::lossy(0.0, 5.0, 50.0));
    for i in 0..200u16 {
        net.send(
            start + Duration::from_millis(u64::from(i % 7)),
            addr(i % 5),
            addr(100 + i % 3),
            vec![0],
        );
    }
    let mut last = None;
    let mut now = start;
    while let Some(t) = net.next_delivery() {
        assert!(last.is_none_or(|l| t >= l));
        now = now.max(t);
        last = Some(t);
        assert!(net.deliver_due(now).is_some());
    }
    assert_eq!(net.stats().delivered, 200);
}

#[test]
fn a_stall_holds_the_flow_and_then_delivers_it_in_order() {
    let link = LinkConfig {
        base_delay_ms: 10.0,
        stall_chance: 1.0,
        stall_ms: 30.0,
        ..LinkConfig::default()
    };
    let mut net = SimNet::new(3, link);
    let (a, b) = (addr(1), addr(2));
    let start = t0();
    // Every datagram restarts the stall here; the first is held 30 ms, then takes its 10 ms.
    net.send(start, a, b, vec![1]);
    assert_eq!(net.next_delivery(), Some(start + Duration::from_millis(40)));
    let calm = LinkConfig {
        stall_chance: 0.0,
        ..link
    };
    net.set_link(a, b, calm);
    // Sent during the stall (which is no longer restarted): held to its end, after the first.
    net.send(start + Duration::from_millis(20), a, b, vec![2]);
    // Sent after it: only the link's delay.
    net.send(start + Duration::from_millis(50), a, b, vec![3]);
    let mut got = Vec::new();
    while let Some(now) = net.next_delivery() {
        while let Some(d) = net.deliver_due(now) {
            got.push((d.data[0], now.duration_since(start).as_millis()));
        }
    }
    assert_eq!(got, [(1, 40), (2, 40), (3, 60)]);
}
