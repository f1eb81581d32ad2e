//! A room larger than a worker in virtual time: two cores hold one shard each of the same room and exchange
//! their trunk messages (as two workers' glue would, one hop after each 5 ms step). Speakers on either
//! shard are heard on the other at their level, both shards select the same speakers, a louder voice
//! takes over on both, a withdrawn speaker leaves at once, and a shard ends with its last local member.
//! A speaker's voice (team, shout role, talk target) travels with its packets: a whisper or a team's talk
//! reaches only whom it is for on the other shard, in forward and mixed rooms, and a change applies there.
//! In a spatial room a speaker's position travels too: the other shard's listeners hear it by distance.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use media_core::audio::{ToneAnalysis, SAMPLE_RATE};
use media_core::sim::LinkConfig;
use media_core::{
    CoreError, CoreEvent, FadeModel, MixSettings, ParticipantId, Position, RoomSettings,
    SpatialSettings, TalkTarget, TeamId, Volume,
};

use crate::support::Sim;

/// Two shards of one room: `a` with clients `id 100 + i`, `b` with `id 200 + i`, both spanned.
struct Shards {
    a: Sim,
    b: Sim,
}

impl Shards {
    fn new(settings: RoomSettings, a: &[(f32, f32)], b: &[(f32, f32)]) -> Shards {
        let mut sa = Sim::with_room(41, LinkConfig::with_delay(5.0), settings, &[]);
        let mut sb = Sim::with_room(42, LinkConfig::with_delay(5.0), settings, &[]);
        sb.id_base = 200;
        for &(f, amp) in a {
            sa.join(f, amp);
        }
        for &(f, amp) in b {
            sb.join(f, amp);
        }
        let mut shards = Shards { a: sa, b: sb };
        for sim in [&mut shards.a, &mut shards.b] {
            let (now, room) = (sim.now, sim.room.clone());
            sim.core.set_spanned_rooms(now, HashSet::from([room]));
            sim.drain_core();
        }
        for _ in 0..300 {
            if shards.a.all_connected() && shards.b.all_connected() {
                break;
            }
            shards.run_for(Duration::from_millis(100));
        }
        assert!(shards.a.all_connected() && shards.b.all_connected());
        for sim in [&mut shards.a, &mut shards.b] {
            let now = sim.now;
            for c in &mut sim.clients {
                c.next_frame = c.next_frame.max(now);
            }
        }
        shards
    }

    /// Both shards run in 5 ms steps (each on its own virtual clock, as two workers' cores); after each, each one's trunk messages are pushed into the other.
    fn run_for(&mut self, d: Duration) {
        let step = Duration::from_millis(5);
        let mut left = d;
        while !left.is_zero() {
            let s = step.min(left);
            self.a.run_for(s);
            self.b.run_for(s);
            exchange(&mut self.a, &mut self.b);
            exchange(&mut self.b, &mut self.a);
            left -= s;
        }
    }
}

/// `from`'s trunk messages into `to`'s core.
fn exchange(from: &mut Sim, to: &mut Sim) {
    for message in std::mem::take(&mut from.trunk) {
        let now = to.now;
        match to.core.push_trunk(now, message) {
            Ok(()) | Err(CoreError::UnknownRoom(_)) => {}
            Err(e) => panic!("a trunk message refused: {e}"),
        }
        to.drain_core();
    }
}

/// The participants in `sim`'s client `i`'s slots, from its last `Slots` event.
fn slotted(sim: &Sim, i: usize) -> BTreeSet<ParticipantId> {
    let id = sim.clients[i].id;
    sim.events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            CoreEvent::Slots { subscriber, slots } if *subscriber == id => {
                Some(slots.iter().filter_map(|s| s.participant).collect())
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// The tones `sim`'s client `i` hears from `speaker` (a client of either shard) in the last second.
fn hears(sim: &Sim, i: usize, speaker: &Speaker) -> Vec<f32> {
    let pcm = sim.clients[i].pcm(speaker.ssrc);
    let tail = &pcm[pcm.len().saturating_sub(SAMPLE_RATE as usize)..];
    if tail.len() < SAMPLE_RATE as usize / 2 {
        return Vec::new();
    }
    ToneAnalysis::analyze(tail, SAMPLE_RATE, &[speaker.freq, 1234.0]).present_default()
}

/// A client as the other shard knows it: its microphone SSRC and its tone.
struct Speaker {
    ssrc: u32,
    freq: f32,
}

fn speaker(sim: &Sim, i: usize) -> Speaker {
    Speaker {
        ssrc: sim.clients[i].mic_ssrc,
        freq: sim.clients[i].freq,
    }
}

#[test]
fn speakers_on_each_shard_are_heard_on_the_other_and_both_select_the_same() {
    // K = 2. Shard A: a talker at 440 Hz and a silent listener; shard B: a talker at 660 Hz and two
    // silent listeners (one of them the 770 Hz voice that talks later).
    let mut s = Shards::new(
        RoomSettings::forward(2),
        &[(440.0, 0.3), (550.0, 0.0)],
        &[(660.0, 0.3), (770.0, 0.0), (880.0, 0.0)],
    );
    s.run_for(Duration::from_secs(3));

    let (a440, b660) = (s.a.clients[0].id, s.b.clients[0].id);
    let loud = BTreeSet::from([a440, b660]);
    assert_eq!(slotted(&s.a, 1), loud, "the listener on A");
    assert_eq!(slotted(&s.b, 2), loud, "the listener on B");
    // Heard, not only slotted: each talker's tone through the other shard.
    assert_eq!(hears(&s.a, 1, &speaker(&s.b, 0)), vec![660.0]);
    assert_eq!(hears(&s.b, 2, &speaker(&s.a, 0)), vec![440.0]);
    assert_eq!(
        hears(&s.b, 0, &speaker(&s.a, 0)),
        vec![440.0],
        "talker B hears A"
    );
    assert_eq!(
        hears(&s.a, 0, &speaker(&s.b, 0)),
        vec![660.0],
        "talker A hears B"
    );
    // Each shard exported its own talkers only: at most K a shard, never an imported one back.
    assert!(s.a.core.stats().trunk.packets_out > 100);
    assert!(s.b.core.stats().trunk.packets_in > 100);
    // The speakers event on either shard names both talkers.
    assert!(s.a.events.iter().any(|(_, e)| matches!(e,
        CoreEvent::Speakers { speakers, .. } if speakers.iter().any(|(p, _)| *p == b660))));

    // Level-based switching: A's talker falls silent and B's 770 Hz voice starts: both shards move it
    // into the slot A's talker held.
    s.a.set_amplitude(0, 0.0);
    s.b.set_amplitude(1, 0.3);
    s.run_for(Duration::from_secs(3));
    let b770 = s.b.clients[1].id;
    let now_loud = BTreeSet::from([b660, b770]);
    assert_eq!(
        slotted(&s.a, 1),
        now_loud,
        "the listener on A after the switch"
    );
    assert_eq!(
        slotted(&s.b, 2),
        now_loud,
        "the listener on B after the switch"
    );
    assert_eq!(hears(&s.a, 1, &speaker(&s.b, 1)), vec![770.0]);
}

#[test]
fn a_muted_speaker_is_withdrawn_and_a_shard_ends_with_its_last_local_member() {
    let mut s = Shards::new(
        RoomSettings::forward(3),
        &[(440.0, 0.3)],
        &[(660.0, 0.3), (770.0, 0.0)],
    );
    s.run_for(Duration::from_secs(2));
    let room = s.a.room.clone();
    let b660 = s.b.clients[0].id;
    assert!(s.a.core.room_members(&room).contains(&b660));

    // Muted on B: withdrawn at B's next selection, gone from A within a few ticks (not after 2 s).
    s.b.core.set_muted(b660, true).expect("a participant of B");
    s.run_for(Duration::from_millis(100));
    assert!(
        !s.a.core.room_members(&room).contains(&b660),
        "A still has B's muted talker"
    );
    assert!(s.a.core.stats().trunk.withdrawn_in >= 1);

    // A's only local participant leaves: the shard ends with it, its remote participants too, and B's
    // messages for the room are refused as for a room it does not host.
    let a440 = s.a.clients[0].id;
    let now = s.a.now;
    s.a.core
        .remove_participant(now, a440)
        .expect("A's participant");
    assert_eq!(s.a.core.room_count(), 0);
    assert_eq!(s.a.core.participant_count(), 0);
    s.b.set_amplitude(1, 0.3);
    s.run_for(Duration::from_millis(500));
    assert!(s.a.core.stats().trunk.no_room > 0);
}

/// Loss feedback across shards (`loss_feedback.rs`): a listener losing 15 % on shard B is stated to a
/// talker on shard A (at the cap), and no longer once it left.
#[test]
fn a_listeners_loss_on_one_shard_reaches_a_talker_on_the_other() {
    let mut s = Shards::new(RoomSettings::forward(3), &[(440.0, 0.3)], &[(550.0, 0.0)]);
    let (server, listener) = (s.b.server, s.b.clients[0].addr);
    s.b.net
        .set_link(server, listener, LinkConfig::lossy(0.15, 5.0, 0.0));
    let mut first_told = None;
    for second in 1..=25 {
        s.run_for(Duration::from_secs(1));
        let told = s.a.clients[0].peer.reported_mic_loss().unwrap_or(0.0);
        if told >= 0.09 && first_told.is_none() {
            first_told = Some(second);
        }
    }
    let told = s.a.clients[0].peer.reported_mic_loss().unwrap_or(0.0);
    println!("A's talker was told {told} after {first_told:?} s");
    // 15 % lost on B, stated at the cap on A: 26 / 255.
    assert!((0.09..=0.11).contains(&told), "told {told}");
    assert!(
        first_told.is_some_and(|s| s <= 9),
        "A's talker was told after {first_told:?} s"
    );

    // The lossy listener leaves B (which ends its shard with it): its last word is a figure of 0.
    let (now, id) = (s.b.now, s.b.clients[0].id);
    s.b.core.remove_participant(now, id).expect("B's listener");
    s.b.drain_core();
    s.run_for(Duration::from_secs(8));
    let told = s.a.clients[0].peer.reported_mic_loss().unwrap_or(0.0);
    assert!(told < 0.01, "told {told} after B's listener left");
}

#[test]
fn a_mixed_room_across_shards_mixes_both_shards_talkers() {
    let mut s = Shards::new(
        RoomSettings::mix(MixSettings::default()),
        &[(440.0, 0.2), (550.0, 0.0)],
        &[(660.0, 0.2), (770.0, 0.0)],
    );
    s.run_for(Duration::from_secs(4));
    for (sim, listener, what) in [(&s.a, 1, "A's listener"), (&s.b, 1, "B's listener")] {
        let played = &sim.clients[listener].mix.played;
        let tail = &played[played.len().saturating_sub(SAMPLE_RATE as usize * 2)..];
        assert!(
            tail.len() > SAMPLE_RATE as usize,
            "{what} played too little"
        );
        let a = ToneAnalysis::analyze(tail, SAMPLE_RATE, &[440.0, 550.0, 660.0, 770.0]);
        assert_eq!(a.present_default(), vec![440.0, 660.0], "{what}: {a:?}");
    }
    // A talker hears the other shard's talker, not itself.
    let played = &s.a.clients[0].mix.played;
    let tail = &played[played.len().saturating_sub(SAMPLE_RATE as usize * 2)..];
    let a = ToneAnalysis::analyze(tail, SAMPLE_RATE, &[440.0, 660.0]);
    assert_eq!(a.present_default(), vec![660.0], "A's talker: {a:?}");
}

/// Whether `sim`'s client `i` was ever told that `speaker` speaks (`speakers` events sent to it).
fn told_of(sim: &Sim, i: usize, speaker: ParticipantId) -> bool {
    let id = sim.clients[i].id;
    sim.events.iter().any(|(_, e)| {
        matches!(e, CoreEvent::Speakers { listeners, speakers }
            if listeners.contains(&id) && speakers.iter().any(|(p, _)| *p == speaker))
    })
}

fn team(name: &str) -> Option<TeamId> {
    Some(TeamId::new(name).expect("a valid team"))
}

/// Forget what every client of both shards received and was told so far.
fn forget(s: &mut Shards) {
    for sim in [&mut s.a, &mut s.b] {
        sim.events.clear();
        for c in &mut sim.clients {
            c.pcm_by_csrc.clear();
        }
    }
}

/// A talker on shard A whispers to one listener on shard B: that one hears it (slot and audio), the other
/// listener on B and the one on A neither hear it nor are told it speaks. Then it talks to its team (one
/// listener on B shares it), then to the room (everyone); each change applies on B.
#[test]
fn a_whisper_or_a_team_talk_across_shards_reaches_only_whom_it_is_for() {
    let mut s = Shards::new(
        RoomSettings::forward(3),
        &[(440.0, 0.3), (550.0, 0.0)],
        &[(660.0, 0.0), (770.0, 0.0)],
    );
    let a440 = s.a.clients[0].id;
    let (b660, b770) = (s.b.clients[0].id, s.b.clients[1].id);
    let now = s.a.now;
    s.a.core.set_team(now, a440, team("red")).expect("A's");
    let now = s.b.now;
    s.b.core.set_team(now, b770, team("red")).expect("B's");
    s.b.core.set_team(now, b660, team("blue")).expect("B's");
    let now = s.a.now;
    s.a.core
        .set_talk_target(now, a440, TalkTarget::Whisper(vec![b660]))
        .expect("a remote participant may be whispered to");
    // What was said to the room while the shards connected is not the whisper's.
    s.run_for(Duration::from_millis(500));
    forget(&mut s);
    s.run_for(Duration::from_secs(3));

    let whisperer = speaker(&s.a, 0);
    assert_eq!(hears(&s.b, 0, &whisperer), vec![440.0], "the whispered-to");
    assert!(
        s.b.clients[1].pcm(whisperer.ssrc).is_empty(),
        "B's other listener"
    );
    assert!(!slotted(&s.b, 1).contains(&a440));
    assert!(
        !told_of(&s.b, 1, a440),
        "B's other listener told of the whisper"
    );
    assert!(
        s.a.clients[1].pcm(whisperer.ssrc).is_empty(),
        "A's listener"
    );
    assert!(!told_of(&s.a, 1, a440), "A's listener told of the whisper");
    assert!(s.b.core.stats().trunk.voice_changes >= 1);

    // Team talk: only B's red listener.
    forget(&mut s);
    let now = s.a.now;
    s.a.core
        .set_talk_target(now, a440, TalkTarget::Team)
        .expect("A's");
    s.run_for(Duration::from_secs(3));
    assert_eq!(hears(&s.b, 1, &whisperer), vec![440.0], "the team mate");
    assert!(told_of(&s.b, 1, a440));
    let b660_pcm = s.b.clients[0].pcm(whisperer.ssrc);
    // At most the tail of the whisper (packets in flight when the target changed).
    assert!(
        b660_pcm.len() < 48_000 / 5,
        "the other team heard {}",
        b660_pcm.len()
    );
    assert!(
        s.a.clients[1].pcm(whisperer.ssrc).is_empty(),
        "A's listener, no team"
    );

    // To the room: everyone.
    let now = s.a.now;
    s.a.core
        .set_talk_target(now, a440, TalkTarget::Room)
        .expect("A's");
    s.run_for(Duration::from_secs(3));
    assert_eq!(hears(&s.b, 0, &whisperer), vec![440.0]);
    assert_eq!(hears(&s.b, 1, &whisperer), vec![440.0]);
    assert_eq!(hears(&s.a, 1, &whisperer), vec![440.0]);
}

/// A mixed room: a whisper from A to one listener on B is in that listener's own mix only; B's other
/// listener's (shared) mix has no trace of it. A volume B's listener gives the remote talker applies there,
/// and is kept when the talker is withdrawn and imported again.
#[test]
fn a_mixed_room_mixes_a_remote_whisper_only_for_its_listener_and_keeps_volumes_for_remote_talkers()
{
    let mut s = Shards::new(
        RoomSettings::mix(MixSettings::default()),
        &[(440.0, 0.2), (550.0, 0.0)],
        &[(660.0, 0.0), (770.0, 0.0)],
    );
    let a440 = s.a.clients[0].id;
    let b660 = s.b.clients[0].id;
    let now = s.a.now;
    s.a.core
        .set_talk_target(now, a440, TalkTarget::Whisper(vec![b660]))
        .expect("A's");
    s.run_for(Duration::from_secs(4));
    let tone = |sim: &Sim, i: usize| {
        let played = &sim.clients[i].mix.played;
        let tail = &played[played.len().saturating_sub(SAMPLE_RATE as usize * 2)..];
        if tail.len() < SAMPLE_RATE as usize / 2 {
            // Sent nothing to mix: silence.
            return Vec::new();
        }
        ToneAnalysis::analyze(tail, SAMPLE_RATE, &[440.0, 550.0, 660.0, 770.0]).present_default()
    };
    assert_eq!(tone(&s.b, 0), vec![440.0], "the whispered-to");
    assert_eq!(tone(&s.b, 1), Vec::<f32>::new(), "B's other listener");
    assert_eq!(tone(&s.a, 1), Vec::<f32>::new(), "A's listener");

    // B's other listener silences the talker, which then talks to the room: everyone else hears it.
    let b770 = s.b.clients[1].id;
    let now = s.b.now;
    s.b.core
        .set_volume(now, b770, a440, Volume::SILENT)
        .expect("a volume for a remote talker");
    let now = s.a.now;
    s.a.core
        .set_talk_target(now, a440, TalkTarget::Room)
        .expect("A's");
    s.run_for(Duration::from_secs(4));
    assert_eq!(tone(&s.b, 0), vec![440.0]);
    assert_eq!(tone(&s.a, 1), vec![440.0]);
    assert_eq!(tone(&s.b, 1), Vec::<f32>::new(), "silenced on B");

    // Gone from B (muted: withdrawn, or expired) and imported again: the volume still holds.
    let room = s.b.room.clone();
    s.a.core.set_muted(a440, true).expect("A's");
    s.run_for(Duration::from_millis(2_500));
    assert!(!s.b.core.room_members(&room).contains(&a440), "gone from B");
    s.a.core.set_muted(a440, false).expect("A's");
    s.run_for(Duration::from_secs(4));
    assert!(
        s.b.core.room_members(&room).contains(&a440),
        "imported again"
    );
    assert_eq!(tone(&s.b, 0), vec![440.0]);
    assert_eq!(tone(&s.b, 1), Vec::<f32>::new(), "still silenced on B");
}

/// A spatial room split over two shards: A's talker is placed next to one of B's listeners and far from
/// the other; only the near one hears it. It walks over to the other: the hearing follows.
#[test]
fn a_remote_speakers_position_travels_and_listeners_hear_it_by_distance() {
    let spatial = SpatialSettings {
        audible_distance: 20.0,
        conversational_distance: 2.0,
        fade_intensity: 1.0,
        fade_model: FadeModel::Linear,
        max_audible: 4,
    };
    let mut s = Shards::new(
        RoomSettings::forward(3).with_spatial(spatial),
        &[(440.0, 0.3)],
        &[(660.0, 0.0), (770.0, 0.0)],
    );
    let place = |sim: &mut Sim, i: usize, x: f64| {
        let (now, id) = (sim.now, sim.clients[i].id);
        let at = Position::new(x, 0.0, 0.0, 0.0).expect("in the world");
        sim.core.set_position(now, id, at).expect("a spatial room");
        sim.drain_core();
    };
    place(&mut s.b, 0, 0.0);
    place(&mut s.b, 1, 100.0);
    place(&mut s.a, 0, 1.0);
    s.run_for(Duration::from_millis(500));
    forget(&mut s);
    s.run_for(Duration::from_secs(3));
    let talker = speaker(&s.a, 0);
    assert_eq!(hears(&s.b, 0, &talker), vec![440.0], "the near listener");
    assert!(
        s.b.clients[1].pcm(talker.ssrc).is_empty(),
        "the far listener"
    );
    assert!(!told_of(&s.b, 1, s.a.clients[0].id));

    // The talker walks over to the other listener.
    place(&mut s.a, 0, 99.0);
    s.run_for(Duration::from_millis(500));
    forget(&mut s);
    s.run_for(Duration::from_secs(3));
    assert_eq!(hears(&s.b, 1, &talker), vec![440.0], "now near");
    assert!(s.b.clients[0].pcm(talker.ssrc).is_empty(), "now far");
}
