//! Trunk messages between nodes: one [`TrunkMessage`] per UDP datagram, authenticated with HMAC-SHA256
//! under a key every node derives from `cluster.trunk_secret` (docs/architecture.md, "Rooms larger than a
//! node").
//!
//! Layout (integers big-endian):
//!
//! ```text
//! version u8 (2) | kind u8 (1 audio, 2 withdrawn, 3 loss floor) | boot u64 | seq u64 | sent_us u64
//! | node_len u8 | node | room_len u16 | room | speaker u64 (loss floor: the sending shard)
//! | loss floor only: fraction u8 (1/256, as in a report block)
//! | audio only: ssrc u32 | rtp_seq u64 | timestamp u32 | level u8 (255: none)
//!   | voice: flags u8 (bit 0: shout, bit 1: placed; the others 0) | team_len u8 (0: none) | team
//!     | target u8 (0 room, 1 team, 2 whisper) | whisper only: count u8 (1..=64) | count × participant u64
//!     | placed only: x f64 | y f64 | z f64 | yaw_deg f64 (IEEE 754 bits, a valid `Position`)
//!   | payload_len u16 | payload
//! | tag [32]: HMAC-SHA256 over everything before it
//! ```
//!
//! The speaker's voice (its team, shout role and talk target: `media_core::audibility::Voice`, and its
//! position in a spatial room) is in every audio datagram, so the receiving shard applies the same rules to
//! it from its first packet and a lost datagram loses nothing else (docs/architecture.md, "Rooms larger
//! than a node"). Version 1 had no voice: a node refuses it (`bad_version`) rather than hear a whisper as
//! talking to the room. A whisper names at most [`MAX_WHISPER_TARGETS`] (the protocol's own bound, so no
//! list is cut): with the longest node id, room name and team, and a position, that leaves 580 bytes of
//! Opus (230 kbit/s at 20 ms); a packet that still does not fit is not sent (`Oversized`, counted as a
//! failed send), never sent without its voice.
//!
//! A loss floor (kind 3) is what the shard's own subscribers of a forwarding room report losing, so that
//! the other shards' publishers are told it too (docs/architecture.md, "Loss feedback"). A node that
//! predates it refuses the kind (`malformed`) and keeps its own figure: version 2 stays.
//!
//! `boot` is random per start of the sending node and `seq` counts its datagrams from 1, so a receiver
//! keeps a replay window per (node, boot); `sent_us` is the sender's wall clock in µs since the Unix epoch,
//! for the hop metric and to refuse stale datagrams (a replay older than any window). The version is read
//! before the tag (another version may authenticate differently), everything else after it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use media_core::audibility::Voice;
use media_core::replay::ReplayWindow;
use media_core::{ParticipantId, RoomId, Ssrc, TrunkMessage, TrunkPacket};
use vocab::{Position, TalkTarget, TeamId, MAX_WHISPER_TARGETS};

/// The only version this node speaks (2: audio carries its speaker's voice).
pub const VERSION: u8 = 2;

/// The largest datagram sent or accepted: a 1500-byte Ethernet MTU less the IPv4 and UDP headers.
pub const MAX_DATAGRAM_BYTES: usize = 1472;

/// A datagram whose send time is further than this from the receiver's clock (either way) is refused:
/// nodes keep their clocks within milliseconds (NTP), and the replay windows need not remember longer.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(2);

/// A sender (node and boot) not heard from this long is forgotten.
const SENDER_IDLE: Duration = Duration::from_secs(60);

/// Most senders remembered at once (a cluster's nodes and their recent restarts).
const MAX_SENDERS: usize = 1024;

const TAG_BYTES: usize = 32;
const KIND_AUDIO: u8 = 1;
const KIND_WITHDRAWN: u8 = 2;
const KIND_LOSS_FLOOR: u8 = 3;
const NO_LEVEL: u8 = 255;
const SHOUT: u8 = 1;
const PLACED: u8 = 2;
const TARGET_ROOM: u8 = 0;
const TARGET_TEAM: u8 = 1;
const TARGET_WHISPER: u8 = 2;
const MAX_NODE_BYTES: usize = 64;
/// version, kind, boot, seq, sent_us, node_len, room_len, speaker: the smallest possible message.
const MIN_BYTES: usize = 1 + 1 + 8 + 8 + 8 + 1 + 2 + 8 + TAG_BYTES;

/// Why a datagram was refused (or a message could not be sent); each has its own metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram shorter than its fields")]
    Truncated,
    #[error("datagram longer than 1472 bytes")]
    Oversized,
    #[error("unknown trunk version {0}")]
    Version(u8),
    #[error("authentication tag does not match")]
    BadTag,
    #[error("malformed field: {0}")]
    Malformed(&'static str),
    #[error("sequence number already seen or too old")]
    Replay,
    #[error("send time more than 2 s from this node's clock")]
    Stale,
}

impl WireError {
    /// The `result` label of `chorus_cluster_trunk_datagrams_total`.
    pub fn label(&self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::Oversized => "oversized",
            WireError::Version(_) => "bad_version",
            WireError::BadTag => "bad_tag",
            WireError::Malformed(_) => "malformed",
            WireError::Replay => "replay",
            WireError::Stale => "stale",
        }
    }

    /// Every label, for the metric's declaration.
    pub const LABELS: [&'static str; 7] = [
        "truncated",
        "oversized",
        "bad_version",
        "bad_tag",
        "malformed",
        "replay",
        "stale",
    ];
}

/// The key every node derives from the shared secret: HMAC-SHA256(secret, label), so the secret itself
/// never keys anything and another use of it would derive another key.
#[derive(Clone)]
pub struct WireKey(hmac::Key);

impl WireKey {
    pub fn derive(secret: &[u8]) -> WireKey {
        let master = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&master, b"chorus cluster trunk v1");
        WireKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }
}

/// This node's sending side: its id, boot and next sequence number.
pub struct Sealer {
    key: WireKey,
    node: String,
    boot: u64,
    seq: u64,
}

impl Sealer {
    /// `node`: this node's id (at most 64 bytes, as `cluster.node_id` is); `boot`: random per start.
    pub fn new(key: WireKey, node: &str, boot: u64) -> Sealer {
        Sealer {
            key,
            node: node.to_owned(),
            boot,
            seq: 0,
        }
    }

    /// One datagram carrying `message`, sent at `now`. Refused (`Oversized`, `Malformed`) only for a
    /// message no receiver would accept; the sequence number is used only by datagrams returned.
    pub fn seal(&mut self, message: &TrunkMessage, now: SystemTime) -> Result<Vec<u8>, WireError> {
        let (kind, room, speaker) = match message {
            TrunkMessage::Audio(p) => (KIND_AUDIO, &p.room, p.speaker),
            TrunkMessage::Withdrawn { room, speaker } => (KIND_WITHDRAWN, room, *speaker),
            TrunkMessage::LossFloor { room, shard, .. } => {
                (KIND_LOSS_FLOOR, room, ParticipantId(*shard))
            }
        };
        let node_len = u8::try_from(self.node.len())
            .ok()
            .filter(|&n| usize::from(n) <= MAX_NODE_BYTES)
            .ok_or(WireError::Malformed("node id"))?;
        let room_len = u16::try_from(room.0.len()).map_err(|_| WireError::Malformed("room"))?;
        let mut out = Vec::with_capacity(256);
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&self.boot.to_be_bytes());
        out.extend_from_slice(&(self.seq + 1).to_be_bytes());
        out.extend_from_slice(&unix_micros(now).to_be_bytes());
        out.push(node_len);
        out.extend_from_slice(self.node.as_bytes());
        out.extend_from_slice(&room_len.to_be_bytes());
        out.extend_from_slice(room.0.as_bytes());
        out.extend_from_slice(&speaker.0.to_be_bytes());
        if let TrunkMessage::Audio(p) = message {
            let payload_len = u16::try_from(p.payload.len()).map_err(|_| WireError::Oversized)?;
            out.extend_from_slice(&p.ssrc.0.to_be_bytes());
            out.extend_from_slice(&p.seq.to_be_bytes());
            out.extend_from_slice(&p.timestamp.to_be_bytes());
            out.push(p.level.map_or(NO_LEVEL, |l| l.min(127)));
            put_voice(&mut out, &p.voice, p.position)?;
            out.extend_from_slice(&payload_len.to_be_bytes());
            out.extend_from_slice(&p.payload);
        }
        if let TrunkMessage::LossFloor { fraction, .. } = message {
            out.push(*fraction);
        }
        if out.len() + TAG_BYTES > MAX_DATAGRAM_BYTES {
            return Err(WireError::Oversized);
        }
        let tag = hmac::sign(&self.key.0, &out);
        out.extend_from_slice(tag.as_ref());
        self.seq += 1;
        Ok(out)
    }
}

/// A verified datagram.
#[derive(Debug, PartialEq)]
pub struct Opened {
    /// The sending node's id.
    pub node: String,
    /// When the sender sealed it, by the sender's clock.
    pub sent: SystemTime,
    pub message: TrunkMessage,
}

/// What a receiver remembers of one sender (node and boot).
struct Window {
    window: ReplayWindow,
    heard: SystemTime,
}

/// This node's receiving side: the key and a replay window per sender.
pub struct Opener {
    key: WireKey,
    windows: HashMap<(Arc<str>, u64), Window>,
}

impl Opener {
    pub fn new(key: WireKey) -> Opener {
        Opener {
            key,
            windows: HashMap::new(),
        }
    }

    /// Verifies and decodes one datagram received at `now`.
    pub fn open(&mut self, datagram: &[u8], now: SystemTime) -> Result<Opened, WireError> {
        if datagram.len() > MAX_DATAGRAM_BYTES {
            return Err(WireError::Oversized);
        }
        if datagram.len() < MIN_BYTES {
            return Err(WireError::Truncated);
        }
        if datagram[0] != VERSION {
            return Err(WireError::Version(datagram[0]));
        }
        let (body, tag) = datagram.split_at(datagram.len() - TAG_BYTES);
        hmac::verify(&self.key.0, body, tag).map_err(|_| WireError::BadTag)?;
        let mut r = Reader(&body[1..]);
        let kind = r.u8()?;
        let boot = r.u64()?;
        let seq = r.u64()?;
        let sent = UNIX_EPOCH + Duration::from_micros(r.u64()?);
        let node_len = usize::from(r.u8()?);
        let node = r.str(node_len, "node id")?;
        let room_len = usize::from(r.u16()?);
        let room = RoomId(r.str(room_len, "room")?.to_owned());
        let speaker = ParticipantId(r.u64()?);
        let message = match kind {
            KIND_AUDIO => {
                let ssrc = Ssrc(r.u32()?);
                let rtp_seq = r.u64()?;
                let timestamp = r.u32()?;
                let level = match r.u8()? {
                    NO_LEVEL => None,
                    l if l <= 127 => Some(l),
                    _ => return Err(WireError::Malformed("level")),
                };
                let (voice, position) = r.voice()?;
                let voice = Arc::new(voice);
                let len = usize::from(r.u16()?);
                let payload: Arc<[u8]> = Arc::from(r.take(len)?);
                TrunkMessage::Audio(TrunkPacket {
                    room,
                    speaker,
                    ssrc,
                    seq: rtp_seq,
                    timestamp,
                    level,
                    payload,
                    voice,
                    position,
                })
            }
            KIND_WITHDRAWN => TrunkMessage::Withdrawn { room, speaker },
            KIND_LOSS_FLOOR => TrunkMessage::LossFloor {
                room,
                shard: speaker.0,
                fraction: r.u8()?,
            },
            _ => return Err(WireError::Malformed("kind")),
        };
        if !r.0.is_empty() {
            return Err(WireError::Malformed("trailing bytes"));
        }
        let skew = now.duration_since(sent).unwrap_or_else(|e| e.duration());
        if skew > MAX_CLOCK_SKEW {
            return Err(WireError::Stale);
        }
        let node = node.to_owned();
        self.accept(&node, boot, seq, now)?;
        Ok(Opened {
            node,
            sent,
            message,
        })
    }

    /// Records `seq` of (node, boot), refusing it if already seen or below the window.
    fn accept(
        &mut self,
        node: &str,
        boot: u64,
        seq: u64,
        now: SystemTime,
    ) -> Result<(), WireError> {
        let key: (Arc<str>, u64) = (Arc::from(node), boot);
        if !self.windows.contains_key(&key) && self.windows.len() >= MAX_SENDERS {
            self.windows
                .retain(|_, w| now.duration_since(w.heard).unwrap_or_default() < SENDER_IDLE);
            if self.windows.len() >= MAX_SENDERS {
                // Only holders of the key can make senders: a cluster restarting this often is refused
                // until its old boots are forgotten.
                return Err(WireError::Replay);
            }
        }
        match self.windows.entry(key) {
            Entry::Vacant(v) => {
                v.insert(Window {
                    window: ReplayWindow::starting_at(seq),
                    heard: now,
                });
            }
            Entry::Occupied(mut o) => {
                let w = o.get_mut();
                if !w.window.is_fresh(seq) {
                    return Err(WireError::Replay);
                }
                w.window.accept(seq);
                w.heard = now;
            }
        }
        Ok(())
    }
}

/// Reads fields off the front of a slice; running out is `Truncated`.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A speaker's voice and position (see the layout): anything but the values they may take is
    /// `Malformed`.
    fn voice(&mut self) -> Result<(Voice, Option<Position>), WireError> {
        let flags = self.u8()?;
        if flags & !(SHOUT | PLACED) != 0 {
            return Err(WireError::Malformed("voice flags"));
        }
        let team = match usize::from(self.u8()?) {
            0 => None,
            n => Some(TeamId::new(self.str(n, "team")?).map_err(|_| WireError::Malformed("team"))?),
        };
        let target = match self.u8()? {
            TARGET_ROOM => TalkTarget::Room,
            TARGET_TEAM => TalkTarget::Team,
            TARGET_WHISPER => {
                let count = usize::from(self.u8()?);
                if !(1..=MAX_WHISPER_TARGETS).contains(&count) {
                    return Err(WireError::Malformed("whisper count"));
                }
                let mut to = Vec::with_capacity(count);
                for _ in 0..count {
                    to.push(ParticipantId(self.u64()?));
                }
                TalkTarget::Whisper(to)
            }
            _ => return Err(WireError::Malformed("talk target")),
        };
        let position = if flags & PLACED != 0 {
            let mut f = || -> Result<f64, WireError> { Ok(f64::from_bits(self.u64()?)) };
            let (x, y, z, yaw) = (f()?, f()?, f()?, f()?);
            Some(Position::new(x, y, z, yaw).map_err(|_| WireError::Malformed("position"))?)
        } else {
            None
        };
        let voice = Voice {
            team,
            shout: flags & SHOUT != 0,
            target,
        };
        Ok((voice, position))
    }

    fn str(&mut self, n: usize, field: &'static str) -> Result<&'a str, WireError> {
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Malformed(field))?;
        if s.is_empty() {
            return Err(WireError::Malformed(field));
        }
        Ok(s)
    }
}

/// A speaker's voice, as [`Reader::voice`] reads it. A whisper beyond [`MAX_WHISPER_TARGETS`] (the core
/// refuses one) or a team id longer than a byte's count is `Malformed`: never sent cut.
fn put_voice(
    out: &mut Vec<u8>,
    voice: &Voice,
    position: Option<Position>,
) -> Result<(), WireError> {
    let shout = if voice.shout { SHOUT } else { 0 };
    let placed = if position.is_some() { PLACED } else { 0 };
    out.push(shout | placed);
    match &voice.team {
        None => out.push(0),
        Some(team) => {
            let len =
                u8::try_from(team.as_str().len()).map_err(|_| WireError::Malformed("team"))?;
            out.push(len);
            out.extend_from_slice(team.as_str().as_bytes());
        }
    }
    match &voice.target {
        TalkTarget::Room => out.push(TARGET_ROOM),
        TalkTarget::Team => out.push(TARGET_TEAM),
        TalkTarget::Whisper(to) => {
            if !(1..=MAX_WHISPER_TARGETS).contains(&to.len()) {
                return Err(WireError::Malformed("whisper count"));
            }
            out.push(TARGET_WHISPER);
            out.push(to.len() as u8);
            for id in to {
                out.extend_from_slice(&id.0.to_be_bytes());
            }
        }
    }
    if let Some(p) = position {
        p.validate().map_err(|_| WireError::Malformed("position"))?;
        for v in [p.x, p.y, p.z, p.yaw_deg] {
            out.extend_from_slice(&v.to_bits().to_be_bytes());
        }
    }
    Ok(())
}

fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn audio(payload: &[u8]) -> TrunkMessage {
        voiced(payload, Voice::default())
    }

    fn voiced(payload: &[u8], voice: Voice) -> TrunkMessage {
        TrunkMessage::Audio(TrunkPacket {
            room: RoomId("big".into()),
            speaker: ParticipantId(7),
            ssrc: Ssrc(0xdead_beef),
            seq: 70_000,
            timestamp: 960,
            level: Some(30),
            payload: Arc::from(payload),
            voice: Arc::new(voice),
            position: None,
        })
    }

    fn placed(payload: &[u8], voice: Voice, position: Position) -> TrunkMessage {
        let TrunkMessage::Audio(mut p) = voiced(payload, voice) else {
            unreachable!()
        };
        p.position = Some(position);
        TrunkMessage::Audio(p)
    }

    fn team(name: &str) -> Option<TeamId> {
        Some(TeamId::new(name).expect("a valid team"))
    }

    /// Whispers to the most participants a whisper may name.
    fn widest_whisper() -> Voice {
        Voice {
            team: team(&"t".repeat(64)),
            shout: false,
            target: TalkTarget::Whisper(
                (0..MAX_WHISPER_TARGETS as u64)
                    .map(|i| ParticipantId(0xffff_ffff_ffff - i))
                    .collect(),
            ),
        }
    }

    /// `body` (a datagram without its tag) with a valid tag: what a holder of the key could send.
    fn signed(mut body: Vec<u8>) -> Vec<u8> {
        let tag = hmac::sign(&WireKey::derive(SECRET).0, &body);
        body.extend_from_slice(tag.as_ref());
        body
    }

    /// Where the voice starts in a sealed audio datagram of node "node-a", room "big".
    const VOICE_AT: usize = 1 + 1 + 8 + 8 + 8 + 1 + 6 + 2 + 3 + 8 + 4 + 8 + 4 + 1;

    fn pair() -> (Sealer, Opener) {
        let key = WireKey::derive(SECRET);
        (Sealer::new(key.clone(), "node-a", 42), Opener::new(key))
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    #[test]
    fn audio_withdrawals_and_loss_floors_round_trip() {
        let (mut s, mut o) = pair();
        let withdrawn = TrunkMessage::Withdrawn {
            room: RoomId("big".into()),
            speaker: ParticipantId(9),
        };
        let floor = TrunkMessage::LossFloor {
            room: RoomId("big".into()),
            shard: u64::MAX - 3,
            fraction: 26,
        };
        for m in [audio(&[1, 2, 3]), withdrawn, floor, audio(&[])] {
            let d = s.seal(&m, at(0)).expect("a small message seals");
            let opened = o.open(&d, at(1)).expect("a fresh datagram opens");
            assert_eq!(opened.message, m);
            assert_eq!(opened.node, "node-a");
            assert_eq!(opened.sent, at(0));
        }
    }

    #[test]
    fn every_voice_round_trips() {
        let (mut s, mut o) = pair();
        let voices = [
            Voice::default(),
            Voice {
                team: team("red"),
                shout: true,
                target: TalkTarget::Room,
            },
            Voice {
                team: team("blue.2"),
                shout: false,
                target: TalkTarget::Team,
            },
            Voice {
                team: None,
                shout: false,
                target: TalkTarget::Whisper(vec![ParticipantId(1), ParticipantId(0xabc)]),
            },
            widest_whisper(),
        ];
        let somewhere = Position::new(-12.5, 1e6, 0.25, 725.0).expect("in the world");
        for voice in voices {
            for m in [
                voiced(&[7; 80], voice.clone()),
                placed(&[7; 80], voice, somewhere),
            ] {
                let d = s.seal(&m, at(0)).expect("seals");
                assert_eq!(o.open(&d, at(0)).expect("opens").message, m);
            }
        }
    }

    #[test]
    fn the_widest_voice_leaves_room_for_580_bytes_of_opus_and_more_is_not_sent() {
        let key = WireKey::derive(SECRET);
        let mut s = Sealer::new(key.clone(), &"n".repeat(MAX_NODE_BYTES), 1);
        let room = RoomId("r".repeat(128));
        let at_origin = Position::new(0.0, 0.0, 0.0, 0.0).expect("in the world");
        let packet = |payload: usize| {
            let TrunkMessage::Audio(mut p) = placed(&vec![1; payload], widest_whisper(), at_origin)
            else {
                unreachable!()
            };
            p.room = room.clone();
            TrunkMessage::Audio(p)
        };
        let d = s.seal(&packet(580), at(0)).expect("580 bytes of Opus fit");
        assert_eq!(d.len(), MAX_DATAGRAM_BYTES);
        assert!(Opener::new(key).open(&d, at(0)).is_ok());
        assert_eq!(s.seal(&packet(581), at(0)), Err(WireError::Oversized));
        // A whisper the core would have refused is not sent cut.
        let mut too_wide = widest_whisper();
        too_wide.target = TalkTarget::Whisper(vec![ParticipantId(1); MAX_WHISPER_TARGETS + 1]);
        assert_eq!(
            s.seal(&voiced(&[1], too_wide), at(0)),
            Err(WireError::Malformed("whisper count"))
        );
    }

    #[test]
    fn garbage_or_truncated_voices_are_refused_by_name() {
        let (mut s, _) = pair();
        let whisper = Voice {
            team: team("red"),
            shout: true,
            target: TalkTarget::Whisper(vec![ParticipantId(5), ParticipantId(6)]),
        };
        let d = s.seal(&voiced(&[9; 20], whisper), at(0)).expect("seals");
        let whisper_body = d[..d.len() - TAG_BYTES].to_vec();
        let body = &whisper_body;
        // flags, team_len, "red", target, count, 2 ids
        assert_eq!(&body[VOICE_AT..VOICE_AT + 5], &[SHOUT, 3, b'r', b'e', b'd']);
        let team_at = VOICE_AT + 2;
        let target_at = VOICE_AT + 5;
        let count_at = target_at + 1;
        let cases: Vec<(usize, u8, WireError)> = vec![
            (VOICE_AT, 0x84, WireError::Malformed("voice flags")),
            // Placed, without the position's bytes: the payload length and payload are taken for it.
            (VOICE_AT, SHOUT | PLACED, WireError::Truncated),
            (team_at, b'!', WireError::Malformed("team")),
            (team_at, 0xff, WireError::Malformed("team")),
            (target_at, 3, WireError::Malformed("talk target")),
            (target_at, 0xff, WireError::Malformed("talk target")),
            (count_at, 0, WireError::Malformed("whisper count")),
            (count_at, 65, WireError::Malformed("whisper count")),
            // A count beyond the ids present: runs out of bytes.
            (count_at, 64, WireError::Truncated),
            // A team length beyond the datagram.
            (VOICE_AT + 1, 0xff, WireError::Truncated),
            // Room with ids after it: the ids are trailing bytes (or a wrong payload length).
            (target_at, TARGET_ROOM, WireError::Truncated),
        ];
        for (at_byte, value, expected) in cases {
            let mut bad = body.to_vec();
            bad[at_byte] = value;
            let (_, mut o) = pair();
            let got = o.open(&signed(bad), at(0));
            assert_eq!(got.map(|_| ()), Err(expected), "byte {at_byte} = {value}");
        }
        // A position that is not one (NaN, out of the world): malformed.
        let (mut s, _) = pair();
        let origin = Position::new(0.0, 0.0, 0.0, 0.0).expect("in the world");
        let d = s
            .seal(&placed(&[9; 20], Voice::default(), origin), at(0))
            .expect("seals");
        let body = d[..d.len() - TAG_BYTES].to_vec();
        assert_eq!(body[VOICE_AT], PLACED);
        let x_at = VOICE_AT + 3;
        for bad in [f64::NAN, f64::INFINITY, 2e6] {
            let mut b = body.clone();
            b[x_at..x_at + 8].copy_from_slice(&bad.to_bits().to_be_bytes());
            let (_, mut o) = pair();
            assert_eq!(
                o.open(&signed(b), at(0)).map(|_| ()),
                Err(WireError::Malformed("position")),
                "x = {bad}"
            );
        }
        for cut in x_at..x_at + 32 {
            let (_, mut o) = pair();
            assert_eq!(
                o.open(&signed(body[..cut].to_vec()), at(0)).map(|_| ()),
                Err(WireError::Truncated),
                "cut at {cut}"
            );
        }
        // Cut anywhere inside the whisper's voice (and signed again): truncated, never a panic.
        for cut in VOICE_AT..count_at + 1 + 16 {
            let (_, mut o) = pair();
            assert_eq!(
                o.open(&signed(whisper_body[..cut].to_vec()), at(0))
                    .map(|_| ()),
                Err(WireError::Truncated),
                "cut at {cut}"
            );
        }
    }

    /// What a holder of the key could send, at random: valid datagrams of every kind with bytes changed,
    /// cut or added behind the tag's protection (signed again), 20,000 of them from a fixed seed. Each
    /// opens or is refused by name; none panics, and one that opens seals back to the same body.
    #[test]
    fn signed_mutations_open_or_are_refused_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let origin = Position::new(1.0, 2.0, 3.0, 90.0).expect("in the world");
        let whisper = Voice {
            team: team("red"),
            shout: true,
            target: TalkTarget::Whisper(vec![ParticipantId(5), ParticipantId(6)]),
        };
        let messages = [
            audio(&[1; 40]),
            voiced(&[2; 30], whisper.clone()),
            placed(&[3; 20], whisper, origin),
            TrunkMessage::Withdrawn {
                room: RoomId("big".into()),
                speaker: ParticipantId(9),
            },
            TrunkMessage::LossFloor {
                room: RoomId("big".into()),
                shard: 7,
                fraction: 255,
            },
        ];
        let (mut s, _) = pair();
        let bodies: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| {
                let d = s.seal(m, at(0)).expect("seals");
                d[..d.len() - TAG_BYTES].to_vec()
            })
            .collect();
        let (mut opened, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut body = bodies[(next() % bodies.len() as u64) as usize].clone();
            for _ in 0..1 + next() % 4 {
                match next() % 3 {
                    0 => {
                        let i = (next() % body.len() as u64) as usize;
                        body[i] = next() as u8;
                    }
                    1 => body.truncate((next() % (body.len() as u64 + 1)) as usize),
                    _ => body.extend((0..1 + next() % 8).map(|_| next() as u8)),
                }
                if body.is_empty() {
                    break;
                }
            }
            // A fresh opener each time: the replay window is not what is tested.
            let (_, mut o) = pair();
            match o.open(&signed(body.clone()), at(0)) {
                Ok(got) => {
                    opened += 1;
                    // What opened is a message the sealer could have sent: sealing it gives a body
                    // that opens to the same message.
                    let (mut again, mut o2) = pair();
                    if let Ok(d) = again.seal(&got.message, at(0)) {
                        let back = o2.open(&d, at(0)).expect("a sealed message opens");
                        assert_eq!(back.message, got.message);
                    }
                }
                Err(_) => refused += 1,
            }
        }
        println!("trunk_wire: {opened} of 20000 mutated datagrams opened, {refused} refused");
        assert!(refused > 0 && opened + refused == 20_000, "{opened} opened");
    }

    #[test]
    fn a_wrong_key_or_any_flipped_bit_is_a_bad_tag() {
        let (mut s, _) = pair();
        let d = s.seal(&audio(&[5; 40]), at(0)).expect("seals");
        let mut other = Opener::new(WireKey::derive(b"another secret of thirty-two bytes"));
        assert_eq!(other.open(&d, at(0)), Err(WireError::BadTag));
        for i in 1..d.len() {
            let (_, mut o) = pair();
            let mut bad = d.clone();
            bad[i] ^= 0x10;
            assert_eq!(o.open(&bad, at(0)), Err(WireError::BadTag), "byte {i}");
        }
    }

    #[test]
    fn versions_lengths_replays_and_stale_times_are_refused() {
        let (mut s, mut o) = pair();
        let d = s.seal(&audio(&[1]), at(0)).expect("seals");
        for version in [1, 3] {
            // Version 1 (no voice) is refused before its tag is checked, as any other.
            let mut other = d.clone();
            other[0] = version;
            assert_eq!(o.open(&other, at(0)), Err(WireError::Version(version)));
        }
        assert_eq!(
            o.open(&d[..MIN_BYTES - 1], at(0)),
            Err(WireError::Truncated)
        );
        assert_eq!(
            o.open(&[VERSION; MAX_DATAGRAM_BYTES + 1], at(0)),
            Err(WireError::Oversized)
        );
        assert_eq!(
            s.seal(&audio(&[0; MAX_DATAGRAM_BYTES]), at(0)),
            Err(WireError::Oversized)
        );
        assert_eq!(o.open(&d, at(2_001)), Err(WireError::Stale));
        assert_eq!(
            o.open(&d, at(0) - Duration::from_millis(2_001)),
            Err(WireError::Stale)
        );
        assert!(o.open(&d, at(0)).is_ok());
        assert_eq!(o.open(&d, at(0)), Err(WireError::Replay));
    }

    #[test]
    fn the_window_takes_reordered_datagrams_once_and_refuses_older_ones() {
        let (mut s, mut o) = pair();
        let ds: Vec<Vec<u8>> = (0..100)
            .map(|_| s.seal(&audio(&[1]), at(0)).expect("seals"))
            .collect();
        assert!(o.open(&ds[99], at(0)).is_ok());
        assert!(o.open(&ds[50], at(0)).is_ok(), "49 behind: in the window");
        assert_eq!(o.open(&ds[50], at(0)), Err(WireError::Replay));
        assert_eq!(o.open(&ds[10], at(0)), Err(WireError::Replay), "89 behind");
        // Another boot of the same node has a window of its own.
        let mut restarted = Sealer::new(WireKey::derive(SECRET), "node-a", 43);
        let d = restarted.seal(&audio(&[1]), at(0)).expect("seals");
        assert!(o.open(&d, at(0)).is_ok());
    }

    #[test]
    fn random_and_mutated_bytes_never_panic_and_never_open() {
        let (mut s, mut o) = pair();
        let valid = s.seal(&audio(&[9; 100]), at(0)).expect("seals");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 1600) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && !d.is_empty() {
                d[0] = VERSION;
            }
            assert!(o.open(&d, at(0)).is_err());
            let mut m = valid.clone();
            let i = (next() as usize) % m.len();
            m[i] = m[i].wrapping_add(1 + (next() % 255) as u8);
            let cut = (next() as usize) % (m.len() + 1);
            assert!(o.open(&m[..cut], at(0)).is_err());
        }
    }
}
