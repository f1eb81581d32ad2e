//! Teams, whisper, shout, listen-only and per-listener volume in virtual time, with push-to-talk and
//! positions at the same time. What each listener should hear is computed here from the rules of
//! docs/protocol.md ("Teams, whisper, shout, listen-only and volumes"), independently of the server, and
//! checked against its slots, the packets it receives, its `speakers` and `dominant_speaker` events, and
//! (mixed rooms) the level of each voice in its mix.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use media_core::audio::ToneAnalysis;
use media_core::sim::LinkConfig;
use media_core::{
    CoreEvent, DropReason, FadeModel, MixSettings, ParticipantId, Position, RoomSettings,
    SpatialSettings, TalkTarget, TeamId, Volume,
};

use crate::support::Sim;

const PLAYERS: usize = 60;
/// Players 0..TALKERS send a tone; the last two of them are listen-only.
const TALKERS: usize = 14;
const LISTEN_ONLY: [usize; 2] = [12, 13];
const SHOUTER: usize = 0;
const WHISPERER: usize = 1;
const WHISPERED: [usize; 2] = [30, 31];
const TEAM_TALKER: usize = 2;
const PTT: usize = 3;
/// Listener 40 silences talker 4 (volume −50).
const SILENCER: (usize, usize) = (40, 4);
const AUDIBLE: f64 = 30.0;
const MAX_AUDIBLE: usize = 3;

fn team(i: usize) -> usize {
    i % 3
}

/// The same circles as the spatial tests: players drift in and out of each other's range.
fn path(i: usize, t_secs: f64) -> (f64, f64) {
    let k = i as f64;
    let (cx, cy) = ((k * 37.0) % 120.0, (k * 53.0 + 11.0) % 120.0);
    let radius = 5.0 + (k * 7.0) % 20.0;
    let speed = 0.3 + (k * 0.13) % 0.6;
    let phase = k * 0.7 + t_secs * speed * if i.is_multiple_of(2) { 1.0 } else { -1.0 };
    (cx + radius * phase.cos(), cy + radius * phase.sin())
}

fn ruler(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// Who `listener` hears, by the rules, with the positions `at` and the push-to-talk key.
fn expected(at: &[(f64, f64)], listener: usize, key_down: bool) -> HashSet<usize> {
    let publishes = |t: usize| t < TALKERS && !LISTEN_ONLY.contains(&t) && (t != PTT || key_down);
    let to_room = |t: usize| t != WHISPERER && t != TEAM_TALKER;
    let mut near: Vec<(f64, usize)> = (0..TALKERS)
        .filter(|&t| t != listener && publishes(t) && to_room(t))
        .map(|t| (ruler(at[listener], at[t]), t))
        .filter(|&(d, _)| d <= AUDIBLE)
        .collect();
    near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    near.truncate(MAX_AUDIBLE);
    let mut heard: HashSet<usize> = near.into_iter().map(|(_, t)| t).collect();
    for t in (0..TALKERS).filter(|&t| t != listener && publishes(t)) {
        let direct = match t {
            WHISPERER => WHISPERED.contains(&listener),
            TEAM_TALKER => team(t) == team(listener),
            _ => team(t) == team(listener) || t == SHOUTER,
        };
        if direct {
            heard.insert(t);
        }
    }
    if listener == SILENCER.0 {
        heard.remove(&SILENCER.1);
    }
    heard
}

/// When a step's state was set, the positions, and whether the push-to-talk key was down.
type Step = (Instant, Vec<(f64, f64)>, bool);

fn place(sim: &mut Sim, at: &[(f64, f64)]) {
    let now = sim.now;
    for (i, &(x, y)) in at.iter().enumerate() {
        let p = Position::new(x, y, 0.0, 0.0).expect("in the world");
        sim.core
            .set_position(now, sim.clients[i].id, p)
            .expect("a spatial room");
    }
    sim.drain_core();
}

/// 60 players in a spatial forwarding room, in three teams, moving for 7 s: a shouter, a whisperer, a team
/// talker, a push-to-talk talker (key down every other pair of steps), two listen-only players who send
/// anyway, and a listener who silenced one talker. At every step each listener's slots hold exactly the
/// voices the rules give it, every packet it receives is from one of them, and its speaking events name
/// nobody else.
#[test]
fn each_listener_hears_exactly_its_range_team_whispers_and_shouts() {
    let spatial = SpatialSettings {
        audible_distance: AUDIBLE,
        conversational_distance: 2.0,
        fade_intensity: 1.0,
        fade_model: FadeModel::Linear,
        max_audible: MAX_AUDIBLE as u16,
    };
    // Enough slots for the most voices a listener can hear (range, team, shout, whisper).
    let room = RoomSettings::forward(12).with_spatial(spatial);
    let voices: Vec<(f32, f32)> = (0..PLAYERS)
        .map(|i| {
            if i < TALKERS {
                (300.0 + 70.0 * i as f32, 0.1)
            } else {
                (0.0, 0.0)
            }
        })
        .collect();
    let mut sim = Sim::with_listeners(13, LinkConfig::with_delay(5.0), room, &voices, &LISTEN_ONLY);
    sim.connect();
    let ids: Vec<ParticipantId> = sim.clients.iter().map(|c| c.id).collect();
    let index_of: HashMap<ParticipantId, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let ssrc_of: HashMap<u32, usize> = sim
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.mic_ssrc, i))
        .collect();
    let now = sim.now;
    let teams = ["red", "blue", "green"].map(|t| TeamId::new(t).expect("a team"));
    for (i, &who) in ids.iter().enumerate() {
        sim.core
            .set_team(now, who, Some(teams[team(i)].clone()))
            .expect("present");
    }
    sim.core
        .set_shout(now, ids[SHOUTER], true)
        .expect("present");
    let whispered = WHISPERED.iter().map(|&i| ids[i]).collect();
    sim.core
        .set_talk_target(now, ids[WHISPERER], TalkTarget::Whisper(whispered))
        .expect("present");
    sim.core
        .set_talk_target(now, ids[TEAM_TALKER], TalkTarget::Team)
        .expect("present");
    sim.core.set_ptt(ids[PTT], true).expect("present");
    sim.core
        .set_volume(now, ids[SILENCER.0], ids[SILENCER.1], Volume::SILENT)
        .expect("present");
    sim.drain_core();
    let start = sim.now;
    let dropped_before = sim.core.stats().dropped(DropReason::NotPublishing);

    let step_len = Duration::from_millis(140);
    // Each step's state, for the packet check.
    let mut steps: Vec<Step> = Vec::new();
    let mut checked = 0;
    for step in 0..50 {
        let t = step as f64 * step_len.as_secs_f64();
        let at: Vec<(f64, f64)> = (0..PLAYERS).map(|i| path(i, t)).collect();
        let key_down = step % 4 >= 2;
        sim.core.set_ptt_key(ids[PTT], key_down).expect("present");
        place(&mut sim, &at);
        steps.push((sim.now, at.clone(), key_down));
        sim.run_for(step_len);
        if step < 3 {
            continue; // the talkers' first packets make them eligible
        }
        let mut slots: HashMap<usize, HashSet<usize>> = HashMap::new();
        let mut speakers: HashMap<usize, HashSet<usize>> = HashMap::new();
        for (_, e) in &sim.events {
            match e {
                CoreEvent::Slots {
                    subscriber,
                    slots: s,
                } => {
                    let held = s
                        .iter()
                        .filter_map(|a| a.participant.map(|p| index_of[&p]))
                        .collect();
                    slots.insert(index_of[subscriber], held);
                }
                CoreEvent::Speakers {
                    listeners,
                    speakers: s,
                } => {
                    let named: HashSet<usize> = s.iter().map(|(p, _)| index_of[p]).collect();
                    for l in listeners {
                        speakers.insert(index_of[l], named.clone());
                    }
                }
                _ => {}
            }
        }
        for listener in 0..PLAYERS {
            let want = expected(&at, listener, key_down);
            let held = slots.get(&listener).cloned().unwrap_or_default();
            assert_eq!(held, want, "step {step}: listener {listener}'s slots");
            // Its speaking events: itself (if it talks) and whom it hears, never anyone else.
            let named = speakers.get(&listener).cloned().unwrap_or_default();
            let mut may = want.clone();
            may.insert(listener);
            assert!(
                named.is_subset(&may),
                "step {step}: listener {listener} is told {:?} speak, but hears only {want:?}",
                named.difference(&may).collect::<Vec<_>>()
            );
            checked += 1;
        }
    }
    assert!(checked > 2000);

    // Every packet came from a voice the listener heard when it was sent: by that step's state, or the
    // previous step's while the move was being applied (up to 120 ms, plus the link's 5 ms).
    let allowed = |listener: usize, arrival: Instant| -> HashSet<usize> {
        let k = steps
            .iter()
            .rposition(|(at, _, _)| *at <= arrival)
            .unwrap_or(0);
        let mut ok = expected(&steps[k].1, listener, steps[k].2);
        if k > 0 && arrival < steps[k].0 + Duration::from_millis(130) {
            ok.extend(expected(&steps[k - 1].1, listener, steps[k - 1].2));
        }
        ok
    };
    let mut heard_by: HashMap<usize, usize> = HashMap::new();
    for (listener, c) in sim.clients.iter().enumerate() {
        for r in c.received.iter().filter(|r| r.arrival >= start) {
            let Some(&speaker) = r.csrc.and_then(|s| ssrc_of.get(&s)) else {
                continue;
            };
            assert!(
                allowed(listener, r.arrival).contains(&speaker),
                "listener {listener} got a packet of {speaker} at {:?}",
                r.arrival - start
            );
            *heard_by.entry(speaker).or_default() += 1;
        }
    }
    // The whisper, the team talk, the shout and the push-to-talk talker were heard (by their audiences),
    // the listen-only players never, and what they sent was dropped and counted.
    for t in [SHOUTER, WHISPERER, TEAM_TALKER, PTT] {
        assert!(
            heard_by.get(&t).copied().unwrap_or(0) > 100,
            "{t} heard {heard_by:?}"
        );
    }
    for t in LISTEN_ONLY {
        assert_eq!(heard_by.get(&t), None, "listen-only {t} was forwarded");
    }
    let dropped = sim.core.stats().dropped(DropReason::NotPublishing) - dropped_before;
    assert!(dropped > 500, "{dropped} listen-only packets dropped");
    // The dominant speaker is told only to those who hear it.
    for (_, e) in &sim.events {
        if let CoreEvent::DominantSpeaker {
            listeners,
            participant,
        } = e
        {
            if index_of[participant] == WHISPERER {
                for l in listeners {
                    let l = index_of[l];
                    assert!(
                        l == WHISPERER || WHISPERED.contains(&l),
                        "{l} told of a whisper"
                    );
                }
            }
        }
    }
}

/// A mixed room without positional voice: a whisper, a team talk, a talker to the room and a listener who
/// turns that talker down by 20 steps (−10 dB). Each listener's mix holds exactly its voices, each at the
/// level it should have (±1.5 dB); listeners who hear the plain room still share one encode.
#[test]
fn a_mixed_room_renders_whispers_team_talk_and_volumes() {
    const AMPLITUDE: f32 = 0.1;
    let freqs = [440.0, 660.0, 990.0];
    // 0 whispers to 3; 1 talks to team red (1 and 4); 2 talks to the room; 5 hears 2 at −10 dB; 6, 7, 8
    // hear the room.
    let mut voices: Vec<(f32, f32)> = freqs.iter().map(|&f| (f, AMPLITUDE)).collect();
    voices.extend(std::iter::repeat_n((0.0, 0.0), 6));
    let mut sim = Sim::with_room(
        17,
        LinkConfig::with_delay(5.0),
        RoomSettings::mix(MixSettings::default()),
        &voices,
    );
    sim.connect();
    let now = sim.now;
    let ids: Vec<ParticipantId> = sim.clients.iter().map(|c| c.id).collect();
    let red = TeamId::new("red").expect("a team");
    sim.core
        .set_talk_target(now, ids[0], TalkTarget::Whisper(vec![ids[3]]))
        .expect("present");
    sim.core
        .set_team(now, ids[1], Some(red.clone()))
        .expect("present");
    sim.core.set_team(now, ids[4], Some(red)).expect("present");
    sim.core
        .set_talk_target(now, ids[1], TalkTarget::Team)
        .expect("present");
    sim.core
        .set_volume(now, ids[5], ids[2], Volume::new(-20).expect("in range"))
        .expect("present");
    sim.drain_core();
    let from = sim.now + Duration::from_millis(500);
    sim.run_for(Duration::from_millis(2500));
    // (listener, [(talker, gain in dB)]).
    let want: [(usize, &[(usize, f64)]); 9] = [
        (0, &[(2, 0.0)]),
        (1, &[(2, 0.0)]),
        (2, &[]),
        (3, &[(0, 0.0), (2, 0.0)]),
        (4, &[(1, 0.0), (2, 0.0)]),
        (5, &[(2, -10.0)]),
        (6, &[(2, 0.0)]),
        (7, &[(2, 0.0)]),
        (8, &[(2, 0.0)]),
    ];
    let sent = f64::from(AMPLITUDE * AMPLITUDE / 2.0);
    for (listener, heard) in want {
        let mix = &sim.clients[listener].mix;
        let start = mix
            .packets
            .iter()
            .find(|p| p.arrival >= from)
            .map_or(mix.pcm.len(), |p| p.start);
        let pcm = &mix.pcm[start..];
        if heard.is_empty() {
            let energy: f32 = pcm.iter().map(|s| s * s).sum();
            assert!(
                energy < 1e-3,
                "listener {listener} should hear nobody ({energy})"
            );
            continue;
        }
        assert!(
            pcm.len() > 48_000,
            "listener {listener}: {} samples",
            pcm.len()
        );
        let analysis = ToneAnalysis::analyze(pcm, 48_000, &freqs);
        for (t, freq) in freqs.iter().enumerate() {
            let power = f64::from(analysis.get(*freq).expect("a candidate").power);
            let got_db = 10.0 * (power / sent).log10();
            match heard.iter().find(|(h, _)| *h == t) {
                Some(&(_, want_db)) => assert!(
                    (got_db - want_db).abs() <= 1.5,
                    "listener {listener}: talker {t} at {got_db:.2} dB, expected {want_db:.2} dB"
                ),
                None => assert!(
                    got_db < -30.0,
                    "listener {listener} hears talker {t} at {got_db:.2} dB"
                ),
            }
        }
    }
    // 6, 7 and 8 and the talkers 0 and 1 (who hear the plain room) share one encode, once 0 and 1 have
    // left the personal encoders they had as talkers of the plain room (the move back waits for a quiet
    // mix, at most 5 s): 4 encodes (shared, 3, 4, 5) for 8 packets a tick.
    sim.run_for(Duration::from_secs(3));
    let encodes_before = sim.core.stats().mix.frames_encoded;
    let packets_before = sim.core.stats().mix.packets_sent;
    sim.run_for(Duration::from_millis(500));
    let stats = &sim.core.stats().mix;
    let (encodes, packets) = (
        stats.frames_encoded - encodes_before,
        stats.packets_sent - packets_before,
    );
    assert!(
        encodes * 2 <= packets,
        "{encodes} encodes for {packets} packets"
    );
}
