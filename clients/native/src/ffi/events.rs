//! Rust SDK events as C events: fixed-size C strings, one C event per list entry.

use std::collections::VecDeque;
use std::ffi::c_char;

use super::{ChorusConnectionState, ChorusEvent, ChorusEventKind};
use crate::{ConnectionState, Event};

pub(super) fn empty_event() -> ChorusEvent {
    ChorusEvent {
        kind: ChorusEventKind::None,
        state: ChorusConnectionState::Connecting,
        sid: [0; 64],
        identity: [0; 128],
        name: [0; 128],
        text: [0; 256],
        code: [0; 32],
        team: [0; 65],
        shout: false,
        muted: false,
        level: 0.0,
        slot: 0,
        index: 0,
        count: 0,
        server_muted: false,
        deafened: false,
        ptt: false,
        x: 0.0,
        y: 0.0,
        z: 0.0,
        yaw_deg: 0.0,
    }
}

/// Copy `s` into a C string field, truncated at a character boundary to fit with its NUL.
pub(super) fn fill(field: &mut [c_char], s: &str) {
    let mut end = s.len().min(field.len() - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    for (dst, src) in field.iter_mut().zip(&s.as_bytes()[..end]) {
        *dst = *src as c_char;
    }
    field[end] = 0;
}

/// One Rust event as C events (a list becomes one event per entry).
pub(super) fn c_events(event: Event) -> VecDeque<ChorusEvent> {
    let mut e = empty_event();
    let mut out = VecDeque::new();
    match event {
        Event::ConnectionState(state) => {
            e.kind = ChorusEventKind::ConnectionState;
            e.state = match state {
                ConnectionState::Connecting => ChorusConnectionState::Connecting,
                ConnectionState::Joined => ChorusConnectionState::Joined,
                ConnectionState::Connected => ChorusConnectionState::Connected,
                ConnectionState::Disconnected => ChorusConnectionState::Disconnected,
                ConnectionState::Closed => ChorusConnectionState::Closed,
                ConnectionState::Reconnecting => ChorusConnectionState::Reconnecting,
            };
        }
        Event::Joined { sid, room, slots } => {
            e.kind = ChorusEventKind::Joined;
            fill(&mut e.sid, &sid);
            fill(&mut e.name, &room);
            e.slot = slots as u32;
        }
        Event::ParticipantJoined(p) => {
            e.kind = ChorusEventKind::ParticipantJoined;
            fill(&mut e.sid, &p.sid);
            fill(&mut e.identity, &p.identity);
            fill(&mut e.name, &p.name);
            fill(
                &mut e.team,
                p.team
                    .as_ref()
                    .map(vocab::TeamId::as_str)
                    .unwrap_or_default(),
            );
            e.shout = p.shout;
            e.muted = p.muted;
        }
        Event::ParticipantLeft { sid, reason } => {
            e.kind = ChorusEventKind::ParticipantLeft;
            fill(&mut e.sid, &sid);
            fill(&mut e.text, &reason);
        }
        Event::ParticipantMuted { sid, muted } => {
            e.kind = ChorusEventKind::ParticipantMuted;
            fill(&mut e.sid, &sid);
            e.muted = muted;
        }
        Event::Speaking(speakers) => {
            e.kind = ChorusEventKind::Speaking;
            e.count = speakers.len() as u32;
            for (i, (sid, level)) in speakers.iter().enumerate() {
                let mut s = e;
                s.index = i as u32;
                fill(&mut s.sid, sid);
                s.level = *level;
                out.push_back(s);
            }
            if !speakers.is_empty() {
                return out;
            }
        }
        Event::DominantSpeaker { sid } => {
            e.kind = ChorusEventKind::DominantSpeaker;
            fill(&mut e.sid, &sid);
        }
        Event::Slots(slots) => {
            e.kind = ChorusEventKind::Slot;
            e.count = slots.len() as u32;
            for (i, slot) in slots.iter().enumerate() {
                let mut s = e;
                s.index = i as u32;
                s.slot = u32::from(slot.slot);
                fill(&mut s.sid, slot.sid.as_deref().unwrap_or_default());
                out.push_back(s);
            }
            return out;
        }
        Event::Positions(positions) => {
            e.kind = ChorusEventKind::Position;
            e.count = positions.len() as u32;
            for (i, speaker) in positions.iter().enumerate() {
                let mut s = e;
                s.index = i as u32;
                fill(&mut s.sid, &speaker.sid);
                s.x = speaker.position.x;
                s.y = speaker.position.y;
                s.z = speaker.position.z;
                s.yaw_deg = speaker.position.yaw_deg;
                out.push_back(s);
            }
            if !positions.is_empty() {
                return out;
            }
        }
        Event::Draining => e.kind = ChorusEventKind::Draining,
        Event::Left { reason } => {
            e.kind = ChorusEventKind::Left;
            fill(&mut e.text, reason.as_deref().unwrap_or_default());
        }
        Event::Reconnecting { attempt, reason } => {
            e.kind = ChorusEventKind::Reconnecting;
            e.index = attempt;
            fill(&mut e.text, &reason);
        }
        Event::Error { code, message } => {
            e.kind = ChorusEventKind::Error;
            fill(&mut e.code, code.as_deref().unwrap_or_default());
            fill(&mut e.text, &message);
        }
        Event::ParticipantUpdated {
            sid,
            server_muted,
            deafened,
            ptt,
        } => {
            e.kind = ChorusEventKind::ParticipantUpdated;
            fill(&mut e.sid, &sid);
            e.server_muted = server_muted;
            e.deafened = deafened;
            e.ptt = ptt;
        }
        Event::Moved { sid, room, slots } => {
            e.kind = ChorusEventKind::Moved;
            fill(&mut e.sid, &sid);
            fill(&mut e.name, &room);
            e.slot = slots as u32;
        }
    }
    out.push_back(e);
    out
}
