//! Arrival: a packet (or a RED-recovered frame) taken into the buffer — timestamp unwrapping, the
//! invalid, duplicate, late, too-far-ahead and overflow checks, and the delay measurement (see the
//! [module docs](super)).

use super::*;

impl JitterBuffer {
    /// A packet arrived at `arrival`.
    pub fn push(&mut self, arrival: Instant, packet: JitterPacket) -> PushOutcome {
        if packet.samples == 0 || packet.samples > MAX_PACKET_SAMPLES {
            self.stats.invalid += 1;
            return PushOutcome::Invalid;
        }
        let base = *self.base.get_or_insert(arrival);
        let arrival_us = duration_us(arrival.saturating_duration_since(base));
        let ts = self.unwrap_ts(packet.ts);
        let transit = arrival_us - samples_to_us(ts);
        let baseline = self.baseline(arrival_us);
        let far_us = duration_us(self.config.max_delay) + duration_us(self.config.far_margin);

        let index = self.packets.partition_point(|p| p.ts < ts);
        if let Some(p) = self.packets.get(index).filter(|p| p.ts == ts) {
            if !(p.recovered && p.seq == packet.seq) {
                self.stats.duplicate += 1;
                return PushOutcome::Duplicate;
            }
            // The packet itself came after its RED copy: it replaces the copy (it has its own level).
            self.packets.remove(index);
        }
        let resting = self.phase == Phase::Playing && self.packets.is_empty() && self.last_silent;
        if resting
            && ts < self.pos
            && ts >= self.audio_end
            && samples_to_us(self.pos - ts) <= far_us
            && !self.was_played(packet.seq)
        {
            // Only silence was rendered since the last audio, and the playout position ran ahead of this
            // sender (a slow clock over a long pause): start the talk spurt afresh instead of dropping it.
            self.phase = Phase::Buffering;
        }
        let playing = self.phase == Phase::Playing;
        if playing && ts < self.pos && self.was_played(packet.seq) {
            self.stats.duplicate += 1;
            return PushOutcome::Duplicate;
        }

        let ahead = baseline.is_some_and(|min| transit - min < -far_us);
        let behind = playing && samples_to_us(self.pos - ts) > far_us;
        if ahead || behind {
            let coherent =
                self.outliers > 0 && (transit - self.last_outlier_transit).abs() <= far_us;
            self.outliers = if coherent { self.outliers + 1 } else { 1 };
            self.last_outlier_transit = transit;
            if self.outliers >= self.config.resync_packets.max(1) {
                self.stats.resyncs += 1;
                self.restart();
                return self.push(arrival, packet);
            }
            if ahead {
                self.stats.too_far_ahead += 1;
                return PushOutcome::TooFarAhead;
            }
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        self.outliers = 0;

        // Late packets still tell us about the network: measure before deciding.
        self.measure(arrival_us, transit, baseline, packet.samples);

        if playing && ts < self.pos {
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        if self.packets.len() >= self.config.max_packets.max(1) {
            self.stats.overflow += 1;
            match self.packets.back() {
                Some(last) if last.ts > ts => {
                    self.packets.pop_back();
                }
                _ => return PushOutcome::Overflow,
            }
        }
        let index = self.packets.partition_point(|p| p.ts < ts);
        self.packets.insert(index, Buffered::new(ts, packet, false));
        self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
        if self.phase == Phase::Idle {
            self.phase = Phase::Buffering;
        }
        self.stats.accepted += 1;
        PushOutcome::Accepted
    }

    /// A frame recovered from RED (RFC 2198) redundancy: an earlier frame repeated inside a later packet,
    /// with the sequence number and timestamp it had. It only fills a gap: a frame that is buffered, was
    /// played, or whose playout time has passed is ignored without counting it as a duplicate or late
    /// packet, and it does not enter the delay measurement (its arrival says nothing about its own path).
    /// Filling the gap before playout reaches it means a missing frame comes from RED first, then from the
    /// next packet's FEC, then PLC. Call it after pushing the packet that carried the redundancy.
    pub fn push_redundant(&mut self, packet: JitterPacket) -> RedundantOutcome {
        if packet.samples == 0 || packet.samples > MAX_PACKET_SAMPLES {
            return RedundantOutcome::Refused;
        }
        self.red_seen = true;
        let ts = self.unwrap_ts(packet.ts);
        let end = ts + i64::from(packet.samples);
        let index = self.packets.partition_point(|p| p.ts < ts);
        if self.packets.get(index).is_some_and(|p| p.ts == ts)
            || self.was_played(packet.seq)
            || self.packets.iter().any(|p| p.seq == packet.seq)
        {
            return RedundantOutcome::NotMissing;
        }
        match self.phase {
            Phase::Idle => return RedundantOutcome::Refused,
            // Before playout starts, only a gap between buffered packets is filled: a frame before the first
            // would belong to an earlier talk spurt (or the time before the stream).
            Phase::Buffering if index == 0 => return RedundantOutcome::Refused,
            Phase::Buffering => {}
            Phase::Playing => {
                if ts < self.pos || self.last_seq.is_some_and(|l| packet.seq <= l) {
                    return RedundantOutcome::TooLate;
                }
            }
        }
        let prev = index.checked_sub(1).and_then(|i| self.packets.get(i));
        let next = self.packets.get(index);
        let fits = prev.is_none_or(|p| p.ts + i64::from(p.samples) <= ts && p.seq < packet.seq)
            && next.is_none_or(|n| end <= n.ts && packet.seq < n.seq);
        if !fits || self.packets.len() >= self.config.max_packets.max(1) {
            return RedundantOutcome::Refused;
        }
        self.packets.insert(index, Buffered::new(ts, packet, true));
        RedundantOutcome::Recovered
    }
}
