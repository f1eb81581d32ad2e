//! Server-side source participants in virtual time: Opus packets pushed by the server process (an
//! Icecast source, an RTP socket) are heard by WebRTC listeners in forwarding and mixed rooms, are
//! speakers and slot occupants like anyone, stop when muted, and bad payloads are refused and counted.

use std::sync::Arc;
use std::time::Duration;

use media_core::audio::{ToneAnalysis, FRAME_SAMPLES, SAMPLE_RATE};
use media_core::sim::LinkConfig;
use media_core::testkit::analysis::ToneGenerator;
use media_core::{
    CoreError, CoreEvent, DropReason, MixSettings, ParticipantId, RoomSettings, SourcePacket,
    SourceRole,
};

use crate::support::Sim;

const SOURCE: ParticipantId = ParticipantId(9_000);
const TONE_HZ: f32 = 523.0;

/// A libopus encoder for the source's tone, one 20 ms packet at a time.
struct ToneSource {
    encoder: opus::Encoder,
    tone: ToneGenerator,
    seq: u16,
    ts: u32,
}

impl ToneSource {
    fn new() -> Self {
        ToneSource {
            encoder: opus::Encoder::new(
                SAMPLE_RATE,
                opus::Channels::Mono,
                opus::Application::Audio,
            )
            .expect("a mono 48 kHz encoder"),
            tone: ToneGenerator::new(f64::from(TONE_HZ), 0.3, SAMPLE_RATE),
            seq: 40_000,
            ts: 7,
        }
    }

    fn next(&mut self) -> SourcePacket {
        let mut pcm = [0f32; FRAME_SAMPLES];
        self.tone.fill(&mut pcm);
        let payload = self
            .encoder
            .encode_vec_float(&pcm, 1500)
            .expect("encodes a frame");
        let packet = SourcePacket {
            seq: self.seq,
            timestamp: self.ts,
            payload: Arc::from(payload),
        };
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
        packet
    }
}

/// Runs `d` of virtual time, pushing one source packet every 20 ms.
fn play(sim: &mut Sim, source: &mut ToneSource, d: Duration) {
    let frames = d.as_millis() / 20;
    for _ in 0..frames {
        let now = sim.now;
        sim.core
            .push_source(now, SOURCE, source.next())
            .expect("the source is in the room");
        sim.drain_core();
        sim.run_for(Duration::from_millis(20));
    }
}

fn assert_tone(pcm: &[f32], what: &str) {
    let tail = &pcm[pcm.len().saturating_sub(SAMPLE_RATE as usize)..];
    assert!(
        tail.len() >= SAMPLE_RATE as usize / 2,
        "{what}: too little audio ({})",
        pcm.len()
    );
    let a = ToneAnalysis::analyze(tail, SAMPLE_RATE, &[TONE_HZ, 440.0]);
    assert_eq!(a.present_default(), vec![TONE_HZ], "{what}: {a:?}");
}

#[test]
fn a_source_in_a_forwarding_room_is_a_speaker_in_a_listeners_slot() {
    // One silent WebRTC listener.
    let mut sim = Sim::new(31, LinkConfig::with_delay(5.0), 3, &[(440.0, 0.0)]);
    sim.connect();
    let now = sim.now;
    let room = sim.room.clone();
    sim.core
        .add_source(now, &room, RoomSettings::forward(3), SOURCE, false)
        .expect("a source joins the room");
    sim.drain_core();
    let mut source = ToneSource::new();
    play(&mut sim, &mut source, Duration::from_secs(2));

    // The listener's slot names the source and its (made-up) SSRC; the room hears it speak.
    let slot_ssrc = sim
        .events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            CoreEvent::Slots { slots, .. } => slots
                .iter()
                .find(|s| s.participant == Some(SOURCE))
                .and_then(|s| s.ssrc),
            _ => None,
        })
        .expect("the source took a slot");
    assert!(sim.events.iter().any(|(_, e)| matches!(e,
        CoreEvent::Speakers { speakers, .. } if speakers.iter().any(|(p, _)| *p == SOURCE))));
    assert_tone(sim.clients[0].pcm(slot_ssrc), "the listener");

    // Muted: nothing more is forwarded; the packets count as not publishing.
    sim.core
        .set_muted(SOURCE, true)
        .expect("the source is here");
    let before = sim.clients[0].pcm(slot_ssrc).len();
    let dropped = sim.core.stats().dropped(DropReason::NotPublishing);
    play(&mut sim, &mut source, Duration::from_millis(500));
    assert_eq!(sim.clients[0].pcm(slot_ssrc).len(), before);
    assert_eq!(
        sim.core.stats().dropped(DropReason::NotPublishing),
        dropped + 25
    );

    // Not Opus: refused, counted, nothing else changes.
    let malformed = sim.core.stats().dropped(DropReason::Malformed);
    let bad = SourcePacket {
        seq: 1,
        timestamp: 1,
        payload: Arc::from(&[0xffu8, 0xff, 0xff][..]),
    };
    let now = sim.now;
    assert!(matches!(
        sim.core.push_source(now, SOURCE, bad),
        Err(CoreError::NotOpus(_))
    ));
    assert_eq!(
        sim.core.stats().dropped(DropReason::Malformed),
        malformed + 1
    );
    // A WebRTC participant is no source.
    let peer = sim.clients[0].id;
    let packet = source.next();
    assert!(matches!(
        sim.core.push_source(now, peer, packet),
        Err(CoreError::NotASource(_))
    ));

    sim.core
        .remove_participant(now, SOURCE)
        .expect("the source leaves");
    assert_eq!(sim.core.room_members(&room), &[peer]);
}

#[test]
fn a_source_in_a_mixed_room_is_mixed_through_its_jitter_buffer() {
    let room = RoomSettings::mix(MixSettings::default());
    let mut sim = Sim::with_room(32, LinkConfig::with_delay(5.0), room, &[(440.0, 0.0)]);
    sim.connect();
    let now = sim.now;
    let id = sim.room.clone();
    sim.core
        .add_source(now, &id, room, SOURCE, false)
        .expect("a source joins the room");
    // Other settings for the same room are refused, as for a peer.
    assert!(matches!(
        sim.core.add_source(
            now,
            &id,
            RoomSettings::forward(2),
            ParticipantId(9_001),
            false
        ),
        Err(CoreError::RoomSettingsConflict(_))
    ));
    sim.drain_core();
    let mut source = ToneSource::new();
    play(&mut sim, &mut source, Duration::from_secs(2));
    assert_tone(&sim.clients[0].mix.pcm, "the mixed listener");
    assert!(sim.core.jitter_target(SOURCE).is_some());
}

/// Hold music (docs/broadcast.md, "Playout") is heard only while its room has exactly one WebRTC
/// participant: the packet right after a second one joins is dropped, and the packet right after they
/// leave is heard again.
#[test]
fn hold_music_is_heard_by_one_person_and_gated_from_the_next_packet_for_two() {
    let room = RoomSettings::mix(MixSettings::default());
    let mut sim = Sim::with_room(
        33,
        LinkConfig::with_delay(5.0),
        room,
        &[(440.0, 0.0), (660.0, 0.0)],
    );
    sim.connect();
    let now = sim.now;
    let id = sim.room.clone();
    sim.core
        .add_source_as(now, &id, room, SOURCE, false, SourceRole::Hold)
        .expect("hold music joins");
    sim.drain_core();
    let mut source = ToneSource::new();
    // Two people: every hold packet is gated (counted as not publishing), nobody hears it.
    let gated = sim.core.stats().dropped(DropReason::NotPublishing);
    play(&mut sim, &mut source, Duration::from_secs(1));
    assert_eq!(
        sim.core.stats().dropped(DropReason::NotPublishing),
        gated + 50
    );
    assert!(sim.clients[0].mix.pcm.iter().all(|s| s.abs() < 1e-3));
    // One leaves: the very next packet is heard.
    let now = sim.now;
    let second = sim.clients[1].id;
    sim.core.remove_participant(now, second).expect("leaves");
    play(&mut sim, &mut source, Duration::from_millis(20));
    assert_eq!(
        sim.core.stats().dropped(DropReason::NotPublishing),
        gated + 50
    );
    play(&mut sim, &mut source, Duration::from_secs(2));
    assert_tone(&sim.clients[0].mix.pcm, "the one person");
}

/// An announcement in a mixed room lowers the other voices by its duck in a listener's mix, and lifts
/// the duck when it leaves.
#[test]
fn an_announcement_ducks_the_other_voices_in_the_mix_until_it_leaves() {
    let room = RoomSettings::mix(MixSettings::default());
    // A talks a 440 Hz tone; B listens.
    let mut sim = Sim::with_room(
        34,
        LinkConfig::with_delay(5.0),
        room,
        &[(440.0, 0.2), (660.0, 0.0)],
    );
    sim.connect();
    sim.run_for(Duration::from_secs(1));
    // The tone's level in 100 ms windows, averaged (a level, whatever its phase does between windows).
    let power = |pcm: &[f32]| {
        let windows: Vec<f32> = pcm
            .chunks_exact(4800)
            .map(|w| media_core::audio::goertzel_power(w, 440.0, SAMPLE_RATE))
            .collect();
        windows.iter().sum::<f32>() / windows.len().max(1) as f32
    };
    let mark = |sim: &Sim| sim.clients[1].mix.pcm.len();
    let a = mark(&sim);
    sim.run_for(Duration::from_secs(1));
    let before = power(&sim.clients[1].mix.pcm[a..]);
    let now = sim.now;
    let id = sim.room.clone();
    sim.core
        .add_source_as(
            now,
            &id,
            room,
            SOURCE,
            false,
            SourceRole::Announcement { duck_db: -12.0 },
        )
        .expect("the announcement joins");
    sim.drain_core();
    let mut source = ToneSource::new();
    play(&mut sim, &mut source, Duration::from_millis(300));
    let b = mark(&sim);
    play(&mut sim, &mut source, Duration::from_secs(1));
    let during = power(&sim.clients[1].mix.pcm[b..]);
    let now = sim.now;
    sim.core.remove_participant(now, SOURCE).expect("leaves");
    sim.run_for(Duration::from_millis(300));
    let c = mark(&sim);
    sim.run_for(Duration::from_secs(1));
    let after = power(&sim.clients[1].mix.pcm[c..]);
    let db = |p: f32| 10.0 * (p / before).log10();
    assert!(
        (db(during) + 12.0).abs() <= 1.0,
        "ducked by {:.2} dB",
        db(during)
    );
    assert!(db(after).abs() <= 1.0, "after: {:.2} dB", db(after));
}
