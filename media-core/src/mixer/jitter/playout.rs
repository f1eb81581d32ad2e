//! Playout: which span to render next (packet, FEC, PLC or silence), delay steering and forced
//! corrections (see the [module docs](super)).

use super::*;

impl JitterBuffer {
    pub(super) fn was_played(&self, seq: u64) -> bool {
        seq <= self.played_top
            && self.played_top - seq < 64
            && self.played_mask & (1 << (self.played_top - seq)) != 0
    }

    pub(super) fn mark_played(&mut self, seq: u64) {
        if self.played_mask == 0 || seq > self.played_top {
            let shift = seq - self.played_top;
            self.played_mask = if self.played_mask == 0 || shift >= 64 {
                0
            } else {
                self.played_mask << shift
            };
            self.played_top = seq;
        }
        if self.played_top - seq < 64 {
            self.played_mask |= 1 << (self.played_top - seq);
        }
    }

    /// The fastest recent path's transit (the sliding window's minimum; 0 before any packet).
    pub(super) fn min_transit_us(&self) -> i64 {
        self.window.front().map_or(0, |f| f.1)
    }

    /// Current delay in µs: how long before `now_us` (the deadline of the playout position) a packet on the
    /// fastest path carrying the playout position arrived.
    pub(super) fn delay_us(&self, now_us: i64) -> i64 {
        now_us - samples_to_us(self.pos) - self.min_transit_us()
    }

    pub(super) fn next_span(&mut self, now_us: i64, held: i64) -> Playout {
        match self.phase {
            Phase::Idle => {
                return Playout::Silence {
                    samples: TICK_SAMPLES,
                }
            }
            Phase::Buffering => {
                let Some(first) = self.packets.front() else {
                    self.phase = Phase::Idle;
                    return Playout::Silence {
                        samples: TICK_SAMPLES,
                    };
                };
                // As of the tick: the consumer needs the first packet at its tick, however far into the
                // tick it starts to play.
                let waited =
                    now_us - samples_to_us(held) - samples_to_us(first.ts) - self.min_transit_us();
                if waited < self.target_us {
                    return Playout::Silence {
                        samples: TICK_SAMPLES,
                    };
                }
                self.pos = first.ts;
                self.phase = Phase::Playing;
                self.start_target_us = self.target_us;
            }
            Phase::Playing => {}
        }
        // Each pass either returns or shortens the buffer / the gap, so this ends; the bound is a backstop.
        for _ in 0..=self.config.max_packets.saturating_add(2) {
            if let Some(span) = self.step(now_us, held) {
                return span;
            }
        }
        Playout::Silence {
            samples: TICK_SAMPLES,
        }
    }

    /// One decision at the playout position, `held` samples into the consumer's tick; `None` means the
    /// state changed and the caller should decide again.
    pub(super) fn step(&mut self, now_us: i64, held: i64) -> Option<Playout> {
        // Two views of the delay. `delay`, as of the span's start, is what a listener hears; `margin`, as of
        // the consumer's tick, is what protects the packet at the playout position from jitter: the tick
        // needs it at its start however far into the tick (`held`) it starts to play. Steering the delay
        // onto the target left the margin up to a tick short of it, and packets arriving well inside the
        // target's spread were concealed. So time is given up (trims, skips, forced drops) only while the
        // margin stays at the target, and where adding time is inaudible (after a quiet packet, in a DTX
        // gap) it is added until the margin reaches the target: silence to the end of the tick, which moves
        // the next packet to the next tick (after a quiet packet only once the margin is more than
        // `ADD_AFTER_QUIET_SLACK_US` short, so the wander of the minimum transit is not steered). Inside
        // speech (concealment for a lost packet, a forced insert) only a short delay adds time, as before:
        // whole ticks of PLC there cost more than they protect.
        let delay = self.delay_us(now_us);
        self.last_delay_us = delay;
        let margin = delay - samples_to_us(held);
        let target = self.target_us;
        let force_us = duration_us(self.config.force_margin);
        // Before the stream's first quiet moment, the delay its playout started at is not forced down (only
        // what a stall added on top of it): the first talk spurt starts at the start-up target, which falls
        // to the measured one within half a second, by more than `force_margin` at a 10 ms floor, and loud
        // packets of the first long sentence were dropped (Chorus issue 15). The first pause removes it.
        let shrink_above = if self.settled {
            target
        } else {
            target.max(self.start_target_us)
        };
        // Growth is forced (PLC inside speech) only toward what the histogram asks for: a target raised to
        // cover a delay peak is reached in quiet moments, where adding time is inaudible (after a stall the
        // delay has grown by the stall already; a lone late packet does not warrant PLC in a sentence).
        let grow_to = self.grow_target_us;
        self.force = match self.force {
            _ if margin - shrink_above > force_us => Force::Shrink,
            _ if grow_to - delay > force_us => Force::Grow,
            Force::Shrink if margin <= shrink_above + samples_to_us(GRAIN) => Force::None,
            Force::Grow if delay >= grow_to => Force::None,
            other => other,
        };
        let force_allowed = self
            .last_forced
            .is_none_or(|at| self.pos - at >= FORCE_SPACING);

        let Some(head) = self.packets.front() else {
            return Some(self.conceal_empty());
        };
        if head.ts < self.pos {
            // Only possible with overlapping timestamps from a confused sender.
            self.packets.pop_front();
            self.stats.late += 1;
            return None;
        }

        if head.ts == self.pos {
            let samples = i64::from(head.samples);
            let quiet = head
                .audio_level
                .is_some_and(|l| l >= self.config.quiet_level);
            let next = self.packets.get(1).filter(|n| n.ts == head.ts + samples);
            let next_ready = next.is_some();
            // Quiet packets give up time inside a pause; between two quiet packets inside a sentence (a stop
            // consonant, a breath) only a large excess is removed, and never on the first quiet packet after
            // audio (it carries the end of it: the sender's codec delay) nor the last one before audio (it
            // primes the decoder for it).
            let in_pause = quiet && self.quiet_run >= STEER_AFTER_QUIET_PACKETS;
            let between = quiet && self.quiet_run >= 1;
            let may_shrink = in_pause || (between && margin - target >= MID_SENTENCE_STEER_US);
            // The successor has not arrived yet (nothing else is buffered): inside a pause the packet is
            // still shortened, but only by what keeps the successor due at the tick it was due at anyway
            // (`trim_keeping_margin`): it then plays sooner, with the margin it had. Without that, a stream
            // without DTX could never play sooner than a packet of delay plus what the consumer holds.
            let awaited = self.packets.len() == 1;
            let steerable = may_shrink
                && match next {
                    Some(n) => n.audio_level.is_some_and(|l| l >= self.config.quiet_level),
                    None => awaited && in_pause,
                };
            let spare = margin - samples_to_us(samples) - target;
            // Right after concealment, play the packet that was waited for; drop later ones.
            let forced_drop = self.force == Force::Shrink
                && force_allowed
                && spare >= 0
                && self.conceal_run == 0
                && self.loud_run >= FORCE_SHRINK_PATIENCE;
            if next_ready && forced_drop {
                let dropped = self
                    .packets
                    .pop_front()
                    .expect("front() was Some just above");
                self.pos += samples;
                self.last_seq = Some(dropped.seq);
                self.mark_played(dropped.seq);
                self.stats.delay_dropped += 1;
                self.last_forced = Some(self.pos);
                return None;
            }
            // A quiet packet gives up what keeps the delay at the target, down to 2.5 ms of it: it is still
            // handed out (and decoded: a decoder that skipped it would continue from a stale state), but
            // only its first part is played.
            let trim = round_down_grain(trim_keeping_margin(
                held,
                samples,
                margin - target,
                next_ready,
            ))
            .min(samples - GRAIN);
            if steerable && trim >= GRAIN {
                let trimmed = self
                    .packets
                    .pop_front()
                    .expect("front() was Some just above");
                self.pos += samples;
                self.last_seq = Some(trimmed.seq);
                self.mark_played(trimmed.seq);
                self.last_samples = trimmed.samples;
                self.last_quiet = true;
                self.quiet_run += 1;
                self.conceal_run = 0;
                self.loud_run = 0;
                self.settled = true;
                self.stats.played += 1;
                self.stats.delay_dropped += 1;
                return Some(Playout::Packet {
                    payload: trimmed.payload,
                    samples: to_u32(samples - trim),
                    audio_level: trimmed.audio_level,
                });
            }
            // Time is added right after a quiet packet, before whatever comes next: that never separates
            // audio from its end (which the quiet packet after it carries).
            let after_quiet = self.last_quiet;
            let forced_insert = delay < target && self.force == Force::Grow && force_allowed;
            if (after_quiet && target - margin > ADD_AFTER_QUIET_SLACK_US) || forced_insert {
                self.stats.delay_inserted += 1;
                if after_quiet {
                    return Some(Playout::Silence {
                        samples: to_u32(to_tick_end(held)),
                    });
                }
                self.last_forced = Some(self.pos);
                return Some(Playout::Plc {
                    samples: TICK_SAMPLES,
                });
            }
            let packet = self
                .packets
                .pop_front()
                .expect("front() was Some just above");
            let mut missing = 0;
            if let Some(last) = self.last_seq {
                let gap = packet.seq.saturating_sub(last).saturating_sub(1);
                // A jump of thousands of sequence numbers is a sender discontinuity, not loss.
                if gap <= MAX_COUNTED_LOSS {
                    self.stats.lost += gap;
                    missing = gap;
                }
            }
            self.note_loss(missing, packet.recovered, packet.fec_mode);
            self.pos += i64::from(packet.samples);
            self.last_seq = Some(packet.seq);
            self.mark_played(packet.seq);
            self.last_samples = packet.samples;
            self.last_quiet = quiet;
            self.quiet_run = if quiet { self.quiet_run + 1 } else { 0 };
            self.conceal_run = 0;
            self.loud_run = if steerable {
                0
            } else {
                self.loud_run + i64::from(packet.samples)
            };
            // A stream that never pauses (music, a source without quiet moments) is settled after
            // [`SETTLE_PATIENCE`] of audio all the same, so its start-up delay is not kept for good.
            self.settled |= steerable || self.loud_run >= SETTLE_PATIENCE;
            if packet.recovered {
                self.stats.recovered_red += 1;
                self.stats.lost += 1;
            } else {
                self.stats.played += 1;
            }
            return Some(Playout::Packet {
                payload: packet.payload,
                samples: packet.samples,
                audio_level: packet.audio_level,
            });
        }

        // A gap before the next packet: loss if sequence numbers are missing, else DTX.
        let gap = head.ts - self.pos;
        let loss = self
            .last_seq
            .is_some_and(|last| head.seq > last + 1 && head.seq - last - 1 <= MAX_COUNTED_LOSS);
        // The frame right before `head` can come back from its FEC if the whole frame is still missing.
        let fec_frame = i64::from(head.samples);
        let fec_frame = if loss && head.fec_mode && gap >= fec_frame {
            fec_frame
        } else {
            0
        };
        if margin - target >= samples_to_us(GRAIN) {
            let skip = round_down_grain(us_to_samples(margin - target)).min(gap - fec_frame);
            if skip > 0 {
                self.pos += skip;
                return None;
            }
        }
        let grain_us = samples_to_us(GRAIN);
        let short = if loss {
            target - delay >= grain_us && self.force == Force::Grow && force_allowed
        } else {
            target - margin >= grain_us
        };
        if short {
            let samples = if loss {
                round_up_grain(us_to_samples(target - delay)).min(i64::from(TICK_SAMPLES))
            } else {
                to_tick_end(held)
            };
            self.stats.delay_inserted += 1;
            if loss {
                self.last_forced = Some(self.pos);
                self.conceal_run += samples;
                return Some(Playout::Plc {
                    samples: to_u32(samples),
                });
            }
            return Some(Playout::Silence {
                samples: to_u32(samples),
            });
        }
        if !loss {
            let samples = gap.min(i64::from(TICK_SAMPLES));
            self.pos += samples;
            self.loud_run = 0;
            self.settled = true;
            return Some(Playout::Silence {
                samples: to_u32(samples),
            });
        }
        if fec_frame > 0 && gap == fec_frame {
            self.pos += gap;
            if !head.has_fec {
                // Its encoder coded no copy of this frame: PLC, which is what decoding it with FEC
                // would give.
                self.conceal_run += gap;
                self.stats.concealed_plc += 1;
                return Some(Playout::Plc {
                    samples: to_u32(gap),
                });
            }
            let payload = head.payload.clone();
            self.stats.concealed_fec += 1;
            return Some(Playout::Fec {
                payload,
                samples: to_u32(gap),
            });
        }
        let span = (gap - fec_frame).min(i64::from(self.last_samples));
        let span = if span > GRAIN {
            round_down_grain(span)
        } else {
            span
        };
        self.pos += span;
        if span % GRAIN != 0 || self.conceal_run >= us_to_samples(duration_us(self.config.max_plc))
        {
            return Some(Playout::Silence {
                samples: to_u32(span),
            });
        }
        self.conceal_run += span;
        self.stats.concealed_plc += 1;
        Some(Playout::Plc {
            samples: to_u32(span),
        })
    }

    /// Nothing buffered. After a loud packet, hold the playout position and conceal with PLC (a delayed
    /// packet still plays when it comes); after a quiet one or once PLC has run out, render silence and let
    /// the playout position move on with time, keeping the current delay.
    pub(super) fn conceal_empty(&mut self) -> Playout {
        let max_plc = us_to_samples(duration_us(self.config.max_plc));
        if self.last_quiet || self.conceal_run >= max_plc {
            self.pos += i64::from(TICK_SAMPLES);
            self.loud_run = 0;
            self.settled = true;
            return Playout::Silence {
                samples: TICK_SAMPLES,
            };
        }
        self.conceal_run += i64::from(TICK_SAMPLES);
        self.stats.concealed_plc += 1;
        Playout::Plc {
            samples: TICK_SAMPLES,
        }
    }
}

/// How much of a packet of `samples`, starting `held` samples into the consumer's tick, can be cut while
/// its successor keeps a margin of at least the target: `excess_us` is the margin above the target now.
/// The consumer takes a whole tick at once, so a packet must be buffered at the tick that needs it, however
/// late in that tick it starts to play: a cut that moves the successor into an earlier tick takes a whole
/// tick from its margin, a cut within the tick it starts in takes nothing (it only plays sooner). The
/// successor must already be buffered (`successor_ready`) to be cut into the current tick.
fn trim_keeping_margin(held: i64, samples: i64, excess_us: i64, successor_ready: bool) -> i64 {
    let tick = i64::from(TICK_SAMPLES);
    // The successor, `ticks` ticks after this one, keeps margin + ticks·tick − samples; at least the target.
    let needed = us_to_samples(samples_to_us(samples) - excess_us);
    let ticks = needed.div_euclid(tick) + i64::from(needed.rem_euclid(tick) != 0);
    let ticks = ticks.max(i64::from(!successor_ready));
    held + samples - ticks * tick
}

fn round_down_grain(samples: i64) -> i64 {
    samples.div_euclid(GRAIN) * GRAIN
}

fn to_u32(samples: i64) -> u32 {
    u32::try_from(samples.max(0)).unwrap_or(u32::MAX)
}

fn round_up_grain(samples: i64) -> i64 {
    (samples + GRAIN - 1).div_euclid(GRAIN) * GRAIN
}

/// Silence that fills the consumer's tick from `held` on (a whole tick when it holds nothing): the packet at
/// the playout position then starts the next tick, which gains it a tick of margin. Less would only delay
/// it inside the tick that needs it anyway.
fn to_tick_end(held: i64) -> i64 {
    let tick = i64::from(TICK_SAMPLES);
    tick - held.rem_euclid(tick)
}
