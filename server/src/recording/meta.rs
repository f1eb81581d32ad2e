//! What a recording says about itself: the JSON side file (`{id}.json`, format `chorus-recording/1`,
//! docs/broadcast.md "Recording"), its speaker timeline, and the static part also written as OpusTags
//! comments in the Ogg file.

use std::collections::HashMap;
use std::fmt;

use media_core::ParticipantId;
use serde::{Deserialize, Serialize};

/// The side file's `format`.
pub const FORMAT: &str = "chorus-recording/1";

/// A talker absent this long still holds its segment (speech has short pauses).
const HANG_MS: u64 = 500;

/// OpusTags holds the room's participants at the start up to this many (the side file has them all).
const MAX_TAGGED_PARTICIPANTS: usize = 100;

/// A recording's id: 12 hex digits of its start (Unix ms) and 8 random ones, so ids sort by start. Only
/// ids of this shape name files; a URL never carries a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordingId(String);

impl RecordingId {
    pub fn new(started_at_ms: u64) -> Self {
        let mut random = [0u8; 4];
        // Ids need to be unique, not secret; a failed random source leaves the time part to tell them apart.
        let _ = aws_lc_rs::rand::fill(&mut random);
        RecordingId(format!(
            "{:012x}{:08x}",
            started_at_ms & 0xffff_ffff_ffff,
            u32::from_le_bytes(random)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RecordingId {
    type Error = BadId;

    fn try_from(s: String) -> Result<Self, BadId> {
        s.parse()
    }
}

impl From<RecordingId> for String {
    fn from(id: RecordingId) -> String {
        id.0
    }
}

/// A string that is not a recording id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a recording id (20 lowercase hex digits)")]
pub struct BadId;

impl std::str::FromStr for RecordingId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<Self, BadId> {
        let ok = s.len() == 20 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| RecordingId(s.to_owned())).ok_or(BadId)
    }
}

impl fmt::Display for RecordingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The room's full mix (what a listener who talks to no one hears).
    Mix,
    /// One participant's own microphone packets, as received.
    Participant,
}

/// Where a recording is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Recording,
    /// Ended by a request, its room or participant going, or the server stopping.
    Stopped,
    /// Ended by an error writing it (`error` says which); the file is valid up to its last page.
    Failed,
    /// The server ended without stopping it (a crash); found so at the next start.
    Interrupted,
}

/// Why a recording ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The admin API.
    Request,
    RoomClosed,
    ParticipantLeft,
    /// The server stopped (drain).
    Shutdown,
    /// Writing failed.
    Error,
    /// The server ended without stopping it.
    Crash,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Request => "request",
            StopReason::RoomClosed => "room_closed",
            StopReason::ParticipantLeft => "participant_left",
            StopReason::Shutdown => "shutdown",
            StopReason::Error => "error",
            StopReason::Crash => "crash",
        }
    }
}

/// Someone who was in the room during the recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub sid: String,
    pub name: String,
}

/// A stretch of the recording in which someone talks, in ms of the recording's audio.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub sid: String,
    pub name: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// The side file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordingMeta {
    pub format: String,
    pub id: RecordingId,
    pub room: String,
    pub kind: Kind,
    /// The recorded participant (`kind: participant`).
    pub participant: Option<String>,
    pub state: State,
    /// Unix ms.
    pub started_at_ms: u64,
    pub started_at: String,
    pub ended_at_ms: Option<u64>,
    /// Audio in the file, in ms.
    pub duration_ms: u64,
    /// Size of the Ogg file.
    pub bytes: u64,
    pub stop_reason: Option<StopReason>,
    pub error: Option<String>,
    /// Everyone in the room at some time during the recording, in order of first appearance.
    pub participants: Vec<Person>,
    /// Who talks when, in order of start.
    pub timeline: Vec<Segment>,
}

impl RecordingMeta {
    /// The OpusTags comments (RFC 7845 §5.2): the static part of the metadata.
    pub fn comments(&self) -> Vec<String> {
        let mut c = vec![
            format!("TITLE={}", self.room),
            format!("CHORUS_RECORDING={}", self.id),
            format!("CHORUS_ROOM={}", self.room),
            format!(
                "CHORUS_KIND={}",
                match self.kind {
                    Kind::Mix => "mix",
                    Kind::Participant => "participant",
                }
            ),
            format!("DATE={}", self.started_at),
            format!("CHORUS_STARTED_AT={}", self.started_at),
        ];
        if let Some(p) = &self.participant {
            c.push(format!("CHORUS_PARTICIPANT={p}"));
            if let Some(person) = self.participants.iter().find(|x| &x.sid == p) {
                c.push(format!("ARTIST={}", person.name));
            }
        }
        for p in self.participants.iter().take(MAX_TAGGED_PARTICIPANTS) {
            let name: String = p
                .name
                .chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect();
            c.push(format!("CHORUS_PRESENT={} {name}", p.sid));
        }
        c
    }

    /// Note the people in the room now.
    pub fn saw(&mut self, people: &[Person]) {
        for p in people {
            if !self.participants.iter().any(|q| q.sid == p.sid) {
                self.participants.push(p.clone());
            }
        }
    }
}

/// Builds the speaker timeline as audio arrives.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Talkers with an open segment: where it started and their last talking frame's end.
    open: HashMap<ParticipantId, (u64, u64)>,
    closed: Vec<(ParticipantId, u64, u64)>,
}

impl Timeline {
    /// `who` talk in the audio `[from_ms, to_ms)`.
    pub fn talk(&mut self, who: &[ParticipantId], from_ms: u64, to_ms: u64) {
        for id in who {
            let segment = self.open.entry(*id).or_insert((from_ms, to_ms));
            segment.1 = to_ms;
        }
        self.close_before(from_ms.saturating_sub(HANG_MS));
    }

    /// Close the segments whose talker has not talked since `ms`.
    fn close_before(&mut self, ms: u64) {
        let stale: Vec<ParticipantId> = self
            .open
            .iter()
            .filter(|(_, (_, last))| *last < ms)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((start, end)) = self.open.remove(&id) {
                self.closed.push((id, start, end));
            }
        }
    }

    /// The segments so far (open ones up to now), named by `names` (the sid when unknown).
    pub fn segments(&self, names: &HashMap<ParticipantId, String>) -> Vec<Segment> {
        let mut all: Vec<(ParticipantId, u64, u64)> = self.closed.clone();
        all.extend(self.open.iter().map(|(id, (s, e))| (*id, *s, *e)));
        all.sort_by_key(|(id, s, _)| (*s, *id));
        all.into_iter()
            .map(|(id, start_ms, end_ms)| Segment {
                sid: id.to_string(),
                name: names.get(&id).cloned().unwrap_or_else(|| id.to_string()),
                start_ms,
                end_ms,
            })
            .collect()
    }
}

/// Unix ms as RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.000Z`).
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Now, in Unix ms.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_twenty_hex_digits_and_nothing_else_parses() {
        let id = RecordingId::new(1_700_000_000_000);
        assert_eq!(id.as_str().len(), 20);
        assert_eq!(id.as_str().parse::<RecordingId>(), Ok(id.clone()));
        assert!(id.as_str().starts_with("018bcfe56800"));
        for bad in [
            "",
            "../../etc/passwd",
            "018bcfe568000000000G",
            "018BCFE5680000000000",
            "0",
        ] {
            assert_eq!(bad.parse::<RecordingId>(), Err(BadId), "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_timeline_bridges_short_pauses_and_closes_long_ones() {
        let (a, b) = (ParticipantId(1), ParticipantId(2));
        let mut t = Timeline::default();
        for k in 0..50 {
            // A talks 0..1000 ms, pauses 300 ms, talks 1300..2000; B talks 500..700, then is silent.
            let ms = k * 20 + 1000 * u64::from(k >= 50);
            let mut who = Vec::new();
            if ms < 1000 {
                who.push(a);
            }
            if (500..700).contains(&ms) {
                who.push(b);
            }
            t.talk(&who, ms, ms + 20);
        }
        for ms in (1000..2000).step_by(20) {
            let who: &[ParticipantId] = if ms >= 1300 { &[a] } else { &[] };
            t.talk(who, ms, ms + 20);
        }
        let names = HashMap::from([(a, "Alice".to_owned())]);
        let s = t.segments(&names);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            (s[0].name.as_str(), s[0].start_ms, s[0].end_ms),
            ("Alice", 0, 2000)
        );
        assert_eq!(
            (s[1].sid.as_str(), s[1].start_ms, s[1].end_ms),
            ("PA_000000000002", 500, 700)
        );
    }
}
