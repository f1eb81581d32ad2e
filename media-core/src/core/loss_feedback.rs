//! Downstream loss feedback (forward rooms): a publisher's encoder hears of the loss its listeners see.
//!
//! In a forwarding room a listener decodes the publisher's own Opus packets, so the only loss protection
//! that reaches it is what the publisher's encoder put in: in-band FEC (each packet carries a low-rate
//! copy of the previous one) or RED. A browser's encoder adds in-band FEC only when it expects loss, and
//! it learns the loss to expect from the receiver reports of whoever receives its stream: the server,
//! whose uplink from the publisher is usually clean. So every forwarding room's receiver reports to its
//! publishers state at least the highest loss a subscriber of the room currently reports on its slot
//! streams (capped by [`CoreConfig::loss_feedback_max_percent`](super::CoreConfig)); the real fraction
//! when it is higher. Anyone talking in the room may land in any subscriber's slot, hence one figure per
//! room. The cumulative count of lost packets in the reports stays the real one.
//!
//! The cap bounds what one listener on a bad link costs everyone else (the encoder spends part of its
//! bitrate on the FEC copy) and stays at or below 10 %, where a sender's loss-based bandwidth estimate
//! would start to back off. Mixed rooms are left alone: their listeners decode the server's mix, whose
//! encoders code in-band FEC for the loss each listener's own reports state (`Mixer::set_listener_loss`,
//! fed the same figures by `MediaCore::record_downstream`). A spanned room's shards tell each other their
//! own subscribers' figure (`TrunkMessage::LossFloor`), and each states the highest of them to its
//! publishers.
//!
//! In every room a publisher's reports state the loss of its own uplink as the server counts it
//! (`MicReception`: a packet is lost once later ones settled it, not while it may be in flight), a
//! small one raised to [`LEAST_STATED_PERCENT`] as a room's figure is ([`MediaCore::record_upstream`]).

use std::time::{Duration, Instant};

use super::{room::RoomKind, trunk::TrunkMessage, MediaCore, Participant};
use crate::core::peer::{Downstream, Peer};
use crate::ids::Ssrc;

/// How fast a subscriber's figure forgets: its packets expected and lost are summed over its receiver
/// reports, each sum decaying by e every 20 s. A report covers only its interval's packets, so a quiet
/// interval (a pause, 15 DTX packets of which none was lost) moves the figure little, and a link that
/// got better is believed within a minute or so.
const FORGET_AFTER: Duration = Duration::from_secs(20);

/// A subscriber's figure counts once its sums cover at least this many packets: about a second of
/// speech; and about a minute after its last report of a talking room it no longer does.
const MIN_PACKETS: f64 = 50.0;

/// How often a room's figure is recomputed at the latest, so that a listener whose loss went down, or
/// whose reports stopped, lowers it. A rise is applied at once.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The least loss (percent) a forwarding room's reports state while any subscriber's figure states
/// some. A browser's encoder smooths the fractions its reports state (an exponential filter: a report
/// 5 s after the one before moves it 39 % of the way) and tells libopus the result rounded to a whole
/// percent, so a figure of 2/256 stated for 6–12 s brought no FEC and 3/256 (1.2 %) brought it a report
/// or two later: Chromium 156, its listener losing 1 % (`loss-feedback.test.js` with
/// `LOSS_FEEDBACK_LOSS_PERCENT=1`), coded FEC 21–42 s after the loss began in four runs of five and not
/// within 42 s in the fifth (9–36 s in six with this). 5/255 is read as 1 % or more from the first
/// report that states it. What it costs: the FEC copy libopus codes for 2 % instead of 1 % or none, for
/// a listener that really loses packets. A figure of [`IN_FLIGHT_FRACTION`] or less is stated as it is.
const LEAST_STATED_PERCENT: u8 = 2;

/// A room figure this small (1/255, 0.4 %) is stated as it is, not raised to [`LEAST_STATED_PERCENT`]:
/// on a path that reorders over 300 ms, packets in flight at three reports in a row can leave it
/// (`sim.rs`, `a_listener_whose_packets_arrive_reordered_but_all_states_no_loss`), and a browser reads
/// it as 0 %: no FEC for a clean call. A listener really losing 0.4 % is left to its concealment.
const IN_FLIGHT_FRACTION: u8 = 1;

/// How long another shard's figure counts after its last message: it sends one every
/// [`REFRESH_EVERY`] or so while its figure is above 0, and one when it changes (0 when its lossy
/// listener left). A shard that died without saying so is forgotten after this.
const REMOTE_FOR: Duration = Duration::from_secs(15);

/// Most other shards' figures a room keeps (a spanned room has a shard per worker or node hosting it).
const MAX_REMOTE_SHARDS: usize = 64;

/// What a subscriber's receiver reports on its downlink counted, in sums that decay with time, and the
/// loss of its latest [`MIN_PACKETS`] or more on their own (its latest report's interval, or as many of
/// its latest reports as it takes). The figure is the higher of the two: a link that got worse is
/// believed once its reports cover enough packets of it, one that got better only as the sums forget
/// (FEC copies cost some bits; a loss they miss costs words). A publisher's own uplink has one too, from
/// the server's count of its microphone stream ([`MediaCore::record_upstream`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct DownstreamLoss {
    expected: f64,
    lost: f64,
    at: Instant,
    /// The fraction lost in the latest reports that covered at least [`MIN_PACKETS`] together.
    latest: Option<u8>,
    /// The packets expected and lost in the reports since, fewer than [`MIN_PACKETS`] so far. A client
    /// that reports every second covers about 35 packets of speech (or a few DTX packets) in each: its
    /// intervals alone never counted, and a listener that started losing 10 % after a clean minute was
    /// believed only as the sums moved (a few percent after 10 s), not from its first few reports.
    pending: (u32, u32),
}

impl DownstreamLoss {
    /// `previous` with one report's interval added at `at`.
    pub(crate) fn add(
        previous: Option<DownstreamLoss>,
        d: Downstream,
        at: Instant,
    ) -> DownstreamLoss {
        let mut next = previous.map_or(
            DownstreamLoss {
                expected: 0.0,
                lost: 0.0,
                at,
                latest: None,
                pending: (0, 0),
            },
            |p| {
                let (expected, lost) = p.decayed(at);
                DownstreamLoss {
                    expected,
                    lost,
                    at,
                    ..p
                }
            },
        );
        let d_lost = d.lost.min(d.expected);
        next.expected += d.expected as f64;
        next.lost += d_lost as f64;
        // An interval of more than 4 billion packets saturates (and then counts at once).
        let grown = |sum: u32, n: u64| sum.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        let (expected, lost) = (
            grown(next.pending.0, d.expected),
            grown(next.pending.1, d_lost),
        );
        next.pending = (expected, lost);
        if f64::from(expected) >= MIN_PACKETS {
            next.latest = Some(to_fraction((f64::from(lost) / f64::from(expected)) as f32));
            next.pending = (0, 0);
        }
        next
    }

    /// The sums as they stand at `now`.
    fn decayed(&self, now: Instant) -> (f64, f64) {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        let k = (-age / FORGET_AFTER.as_secs_f64()).exp();
        (self.expected * k, self.lost * k)
    }

    /// The fraction lost (1/256, as in a report block) at `now`, once the sums cover enough packets: the
    /// sums' fraction, or the latest reports' when it is higher and the last report is not older than
    /// [`FORGET_AFTER`].
    pub(crate) fn fraction_at(&self, now: Instant) -> Option<u8> {
        let (expected, lost) = self.decayed(now);
        let latest = self
            .latest
            .filter(|_| now.saturating_duration_since(self.at) < FORGET_AFTER)
            .unwrap_or(0);
        (expected >= MIN_PACKETS).then(|| to_fraction((lost / expected) as f32).max(latest))
    }
}

/// `loss` (0.0 to 1.0) as a report block's fraction, rounded: the inverse of str0m's reading of one
/// (`fraction / 255`).
fn to_fraction(loss: f32) -> u8 {
    if loss.is_nan() {
        return 0;
    }
    (loss.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// A report block's fraction as a percentage, rounded.
pub(crate) fn fraction_to_percent(fraction: u8) -> u8 {
    // At most 100: 255 · 100 / 255.
    ((u16::from(fraction) * 100 + 127) / 255) as u8
}

/// The loss (percent) a mix encoder codes its listener's FEC for, from the listener's figure: rounded,
/// but never 0 while the figure states any loss (1/255 is 0.4 %). A listener losing 2 % whose reports
/// come every 5 s (about 200 packets, 4 lost) has some reports that count none, and its figure then
/// sank to 1/255 (0 %) for a while: it moved back to the clean encode mid-sentence (FEC on 48 % of its
/// packets over a pass of the passage, 89 % when its figure held).
pub(crate) fn protected_percent(fraction: u8) -> u8 {
    fraction_to_percent(fraction).max(u8::from(fraction > 0))
}

/// A percentage as a report block's fraction.
pub(crate) fn percent_to_fraction(percent: u8) -> u8 {
    to_fraction(f32::from(percent) / 100.0)
}

/// What a forwarding room's receiver reports state at least for a room figure of `fraction` (its
/// subscribers' highest): at least [`LEAST_STATED_PERCENT`] once it is above [`IN_FLIGHT_FRACTION`],
/// at most `cap`.
pub(crate) fn stated_floor(fraction: u8, cap: u8) -> u8 {
    let least = if fraction > IN_FLIGHT_FRACTION {
        percent_to_fraction(LEAST_STATED_PERCENT)
    } else {
        0
    };
    fraction.max(least).min(cap)
}

/// What a publisher's microphone stream's receiver reports state for the server's own count of its
/// loss, `fraction`: the count, raised to at least [`LEAST_STATED_PERCENT`] (but no higher than `cap`)
/// once it is above [`IN_FLIGHT_FRACTION`], as a forwarding room's figure is. The count itself is not
/// capped: it is the publisher's own loss, which its encoder and its bandwidth estimate are owed.
pub(crate) fn upstream_floor(fraction: u8, cap: u8) -> u8 {
    fraction.max(stated_floor(fraction, cap))
}

/// The highest of a forwarding room's subscribers' figures, at most `cap`.
pub(crate) fn room_floor(
    now: Instant,
    subscribers: impl IntoIterator<Item = DownstreamLoss>,
    cap: u8,
) -> u8 {
    subscribers
        .into_iter()
        .filter_map(|s| s.fraction_at(now))
        .max()
        .unwrap_or(0)
        .min(cap)
}

/// A room's state of the feedback: what its receiver reports state at least, and when it was computed;
/// in a spanned room, what this shard last told the others and what the others told it.
#[derive(Clone, Debug, Default)]
pub(crate) struct RoomLossFeedback {
    pub(crate) floor: u8,
    refreshed: Option<Instant>,
    /// This shard's own figure as last sent to the room's other shards, and when.
    sent: Option<(u8, Instant)>,
    /// The other shards' figures.
    remote: Vec<RemoteFigure>,
}

/// Another shard's figure for a spanned room, and when its last message came.
#[derive(Clone, Copy, Debug)]
struct RemoteFigure {
    shard: u64,
    fraction: u8,
    received: Instant,
}

impl RoomLossFeedback {
    /// The room is no longer spanned: the other shards' figures no longer count.
    pub(crate) fn unspanned(&mut self) {
        self.sent = None;
        self.remote.clear();
    }
}

impl MediaCore {
    /// A subscriber's receiver reports on one of its downlink streams counted `d`: added to its
    /// figure, and its room's figure raised at once if this one is above it (or recomputed if due).
    pub(super) fn record_downstream(
        &mut self,
        now: Instant,
        id: super::ParticipantId,
        d: Downstream,
    ) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let figure = DownstreamLoss::add(p.downstream_loss, d, now);
        p.downstream_loss = Some(figure);
        if let Some(fraction) = figure.fraction_at(now) {
            p.red_frames_back = crate::mixer::red_frames_back(protected_percent(fraction));
        }
        let key = p.room;
        let mix_listener = p.mix_listener();
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        // A listener of a mix: the encoder it hears codes FEC for the loss it reports.
        let mixer = match &mut room.kind {
            RoomKind::Mix(mixer) => Some(&mut **mixer),
            RoomKind::Forward if mix_listener => room.broadcast.as_deref_mut(),
            RoomKind::Forward => None,
        };
        if let Some(mixer) = mixer {
            if let Some(fraction) = figure.fraction_at(now) {
                mixer.set_listener_loss(id, protected_percent(fraction));
            }
        }
        let due = room
            .loss_feedback
            .refreshed
            .is_none_or(|t| now.saturating_duration_since(t) >= REFRESH_EVERY);
        let cap = percent_to_fraction(self.config.loss_feedback_max_percent);
        let above = figure
            .fraction_at(now)
            .is_some_and(|f| f.min(cap) > room.loss_feedback.floor);
        if due || above {
            self.refresh_loss_feedback(now, key);
        }
    }

    /// The server's own count of a publisher's microphone stream came to `u` more packets expected and
    /// lost: added to its figure, which its receiver reports then state (at least
    /// [`LEAST_STATED_PERCENT`] once it is above [`IN_FLIGHT_FRACTION`], and the room's figure when that
    /// is higher) in place of the fraction each report's interval lost.
    pub(super) fn record_upstream(
        &mut self,
        now: Instant,
        id: super::ParticipantId,
        u: Downstream,
    ) {
        let cap = percent_to_fraction(self.config.loss_feedback_max_percent);
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let figure = DownstreamLoss::add(p.upstream_loss, u, now);
        p.upstream_loss = Some(figure);
        if cap == 0 {
            return;
        }
        let Some(fraction) = figure.fraction_at(now) else {
            return;
        };
        let floor = upstream_floor(fraction, cap);
        if p.upstream_floor == Some(floor) {
            return;
        }
        let rose = floor > p.upstream_floor.unwrap_or(0);
        p.upstream_floor = Some(floor);
        let room_floor = self
            .rooms
            .get(&p.room)
            .map_or(0, |room| room.loss_feedback.floor);
        if let Some(peer) = p.apply_loss_floor(room_floor) {
            if rose {
                self.out.schedule(peer, now);
            }
        }
    }

    /// Another shard of a spanned room sent its subscribers' figure: the room's is recomputed when that
    /// figure changed (a rise at once) or a refresh is due.
    pub(super) fn import_loss_floor(&mut self, now: Instant, key: u64, shard: u64, fraction: u8) {
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        let feedback = &mut room.loss_feedback;
        let figure = RemoteFigure {
            shard,
            fraction,
            received: now,
        };
        let known = feedback.remote.iter().position(|r| r.shard == shard);
        let changed = match known {
            Some(i) => std::mem::replace(&mut feedback.remote[i], figure).fraction != fraction,
            None if feedback.remote.len() < MAX_REMOTE_SHARDS => {
                feedback.remote.push(figure);
                true
            }
            None => false,
        };
        let due = feedback
            .refreshed
            .is_none_or(|t| now.saturating_duration_since(t) >= REFRESH_EVERY);
        if changed || due {
            self.refresh_loss_feedback(now, key);
        }
    }

    /// Recompute a forwarding room's figure from its subscribers' reports (and, in a spanned room, the
    /// other shards' figures, after telling them this shard's own) and, when it changed, give it to every
    /// member's microphone stream.
    pub(super) fn refresh_loss_feedback(&mut self, now: Instant, key: u64) {
        let cap = percent_to_fraction(self.config.loss_feedback_max_percent);
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        if !matches!(room.kind, RoomKind::Forward) || cap == 0 {
            return;
        }
        let reports = room
            .members
            .iter()
            .filter_map(|id| self.participants.get(id))
            .filter(|p| p.subscribes() && !p.mix_listener())
            .filter_map(|p| p.downstream_loss);
        let local = room_floor(now, reports, cap);
        room.loss_feedback.refreshed = Some(now);
        let feedback = &mut room.loss_feedback;
        if room.trunk.spanned {
            let send = match feedback.sent {
                None => local > 0,
                Some((sent, at)) => {
                    sent != local
                        || (local > 0 && now.saturating_duration_since(at) >= REFRESH_EVERY)
                }
            };
            if send {
                feedback.sent = Some((local, now));
                self.trunk_out.push_back(TrunkMessage::LossFloor {
                    room: room.id.clone(),
                    shard: self.shard_id,
                    fraction: local,
                });
            }
        }
        feedback
            .remote
            .retain(|r| now.saturating_duration_since(r.received) < REMOTE_FOR);
        let figure = feedback
            .remote
            .iter()
            .map(|r| r.fraction)
            .fold(local, u8::max);
        let floor = stated_floor(figure, cap);
        if floor == room.loss_feedback.floor {
            return;
        }
        let rose = floor > room.loss_feedback.floor;
        room.loss_feedback.floor = floor;
        for id in &room.members {
            let Some(peer) = self
                .participants
                .get_mut(id)
                .and_then(|p| p.apply_loss_floor(floor))
            else {
                continue;
            };
            // A higher floor is reported soon (str0m brings the next receiver report forward to a
            // second after the previous one): the peer's timers run now to learn the new due time.
            if rose {
                self.out.schedule(peer, now);
            }
        }
    }
}

impl Participant {
    /// Set the least fraction lost its microphone stream's receiver reports state: its room's figure
    /// `room_floor` or its own uplink's, whichever is higher. The peer that got it, if the participant
    /// has a peer and a microphone stream.
    pub(super) fn apply_loss_floor(&mut self, room_floor: u8) -> Option<&mut Peer> {
        let Ssrc(ssrc) = self.ssrc?;
        let upstream = self.upstream_floor;
        let peer = self.peer_mut()?;
        let floor = room_floor.max(upstream.unwrap_or(0));
        peer.set_mic_loss_floor(ssrc, floor, upstream.is_some());
        Some(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // the origin of a test's virtual time
    fn epoch() -> Instant {
        Instant::now()
    }

    fn interval(expected: u64, lost: u64) -> Downstream {
        Downstream { expected, lost }
    }

    #[test]
    fn a_subscribers_figure_weighs_each_interval_by_its_packets() {
        let t = epoch();
        // Too few packets yet to say anything.
        let a = DownstreamLoss::add(None, interval(20, 1), t);
        assert_eq!(a.fraction_at(t), None);
        // 5 s of speech at 5 %.
        let b = DownstreamLoss::add(Some(a), interval(250, 12), t);
        // 13 of 270 (4.8 %) in the sums, and in the latest reports together (the first covered too
        // few packets to count on its own).
        assert_eq!(b.fraction_at(t), Some(12));
        // A pause: 15 DTX packets, none lost, too few to count on their own: the sums barely move
        // (11) and the latest 270 still count.
        let c = DownstreamLoss::add(Some(b), interval(15, 0), t + Duration::from_secs(5));
        assert_eq!(c.fraction_at(t + Duration::from_secs(5)), Some(12));
        // A link that got better is believed within a minute.
        let mut d = c;
        for i in 2..14 {
            d = DownstreamLoss::add(Some(d), interval(250, 0), t + Duration::from_secs(5 * i));
        }
        let later = t + Duration::from_secs(65);
        assert!(d.fraction_at(later).unwrap() <= 1);
        // One that got worse is believed from the first interval that shows it: 25 of 250 lost (10 %)
        // after a clean minute, where the sums alone say 2 %.
        let worse = DownstreamLoss::add(Some(d), interval(250, 25), later);
        assert_eq!(worse.fraction_at(later), Some(26));
        // Until the sums forget it, once reports stop.
        assert_eq!(worse.fraction_at(later + FORGET_AFTER), Some(5));
        // A report's loss is never more than its packets.
        let e = DownstreamLoss::add(None, interval(100, 500), t);
        assert_eq!(e.fraction_at(t), Some(255));
        // Its sums fade: no figure long after the last report.
        assert_eq!(b.fraction_at(t + Duration::from_secs(90)), None);
        assert_eq!(to_fraction(f32::NAN), 0);
        assert_eq!(to_fraction(-0.5), 0);
        assert_eq!(percent_to_fraction(10), 26);
        assert_eq!(percent_to_fraction(0), 0);
    }

    /// A client that reports every second covers about 35 packets of speech in each report: a loss
    /// that starts after a clean minute is believed from its first reports that cover enough packets
    /// together, not only as the sums move.
    #[test]
    fn a_loss_is_believed_from_short_reports_together() {
        let t = epoch();
        let mut figure = None;
        let mut now = t;
        for _ in 0..60 {
            figure = Some(DownstreamLoss::add(figure, interval(35, 0), now));
            now += Duration::from_secs(1);
        }
        let clean = figure.expect("a minute of reports");
        assert_eq!(clean.fraction_at(now), Some(0));
        // 10 % from now: 4 of 35, then 3 of 35. The sums alone say 0.5 %, then 0.9 %.
        let one = DownstreamLoss::add(Some(clean), interval(35, 4), now);
        assert_eq!(one.fraction_at(now), Some(1), "the sums after one report");
        now += Duration::from_secs(1);
        let two = DownstreamLoss::add(Some(one), interval(35, 3), now);
        // 7 of 70.
        assert_eq!(two.fraction_at(now), Some(26));
        // A clean report of 35 alone does not take it back; a clean 70 does, down to the sums'.
        now += Duration::from_secs(1);
        let three = DownstreamLoss::add(Some(two), interval(35, 0), now);
        assert_eq!(three.fraction_at(now), Some(26));
        now += Duration::from_secs(1);
        let four = DownstreamLoss::add(Some(three), interval(35, 0), now);
        assert_eq!(four.fraction_at(now), Some(2));
    }

    #[test]
    fn any_loss_a_figure_states_protects_its_listener() {
        assert_eq!(protected_percent(0), 0);
        assert_eq!(fraction_to_percent(1), 0);
        assert_eq!(protected_percent(1), 1);
        assert_eq!(protected_percent(2), 1);
        assert_eq!(protected_percent(26), 10);
    }

    #[test]
    fn a_percentage_survives_the_round_trip_through_a_fraction() {
        for percent in 0..=100 {
            assert_eq!(fraction_to_percent(percent_to_fraction(percent)), percent);
        }
        assert_eq!(fraction_to_percent(255), 100);
        assert_eq!(fraction_to_percent(1), 0);
        assert_eq!(fraction_to_percent(2), 1);
    }

    #[test]
    fn a_room_reports_its_worst_subscriber_up_to_the_cap() {
        let t = epoch();
        let figure = |expected, lost| DownstreamLoss::add(None, interval(expected, lost), t);
        let cap = percent_to_fraction(10);
        assert_eq!(room_floor(t, [], cap), 0);
        assert_eq!(room_floor(t, [figure(250, 0), figure(250, 8)], cap), 8);
        // A listener on a terrible link is heard at the cap, not beyond.
        assert_eq!(room_floor(t, [figure(250, 8), figure(250, 100)], cap), cap);
        // A figure on too few packets does not count.
        assert_eq!(room_floor(t, [figure(250, 8), figure(10, 5)], cap), 8);
        // A cap of 0 turns the feedback off.
        assert_eq!(room_floor(t, [figure(250, 12)], 0), 0);
    }

    #[test]
    fn any_loss_a_room_states_reaches_a_browsers_encoder() {
        let cap = percent_to_fraction(10);
        let least = percent_to_fraction(LEAST_STATED_PERCENT);
        assert_eq!(least, 5);
        // A clean room states none; 1/255, which packets in flight on a reordering path can leave,
        // as it is (a browser reads it as 0 %).
        assert_eq!(stated_floor(0, cap), 0);
        assert_eq!(stated_floor(1, cap), 1);
        // A listener losing 1 %: 2 %, which a browser reads as 1 % or more at its first report
        // (3/256 only a report or two later, 2/256 not in 6–12 s).
        assert_eq!(stated_floor(2, cap), least);
        assert_eq!(stated_floor(3, cap), least);
        // More loss is stated as it is, up to the cap; a cap under 2 % still bounds it.
        assert_eq!(stated_floor(13, cap), 13);
        assert_eq!(stated_floor(200, cap), cap);
        assert_eq!(
            stated_floor(2, percent_to_fraction(1)),
            percent_to_fraction(1)
        );
        assert_eq!(stated_floor(9, 0), 0);
    }

    #[test]
    fn a_publishers_own_loss_is_stated_whole_and_raised_as_a_rooms() {
        let cap = percent_to_fraction(10);
        // None, or no more than may be in flight: as it is.
        assert_eq!(upstream_floor(0, cap), 0);
        assert_eq!(upstream_floor(1, cap), 1);
        // A small loss: at least 2 %, as a room's figure.
        assert_eq!(upstream_floor(2, cap), percent_to_fraction(2));
        assert_eq!(upstream_floor(13, cap), 13);
        // Above the cap: the publisher's own loss, stated whole (the cap bounds only the raise).
        assert_eq!(upstream_floor(60, cap), 60);
        assert_eq!(
            upstream_floor(2, percent_to_fraction(1)),
            percent_to_fraction(1)
        );
    }
}
