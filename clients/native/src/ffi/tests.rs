use super::*;
use std::ffi::CStr;

use super::events::{c_events, empty_event, fill};
use crate::Event;
use std::ptr::{null, null_mut};

fn last_error() -> String {
    // SAFETY: chorus_last_error_message returns a NUL-terminated string owned by this thread.
    unsafe { CStr::from_ptr(chorus_last_error_message()) }
        .to_str()
        .expect("the SDK writes UTF-8 messages")
        .to_owned()
}

#[test]
fn null_handles_and_arguments_are_typed_errors() {
    let mut out = [0.0f32; 4];
    // SAFETY: every pointer is null or valid.
    unsafe {
        assert_eq!(
            chorus_client_connect(null_mut(), null(), null(), null()),
            ChorusError::Null
        );
        assert_eq!(last_error(), "the client is null");
        assert_eq!(
            chorus_client_pull_mixed_f32(null_mut(), out.as_mut_ptr(), 4, null_mut()),
            ChorusError::Null
        );
        assert_eq!(chorus_client_set_muted(null_mut(), true), ChorusError::Null);
        assert_eq!(chorus_client_leave(null_mut()), ChorusError::Null);
        assert_eq!(chorus_config_default(null_mut()), ChorusError::Null);
        assert_eq!(chorus_client_free(null_mut()), ChorusError::Ok);

        let client = chorus_client_new(null());
        assert!(!client.is_null());
        assert_eq!(
            chorus_client_connect(client, null(), c"tok".as_ptr(), null()),
            ChorusError::Null
        );
        assert_eq!(last_error(), "url is null");
        assert_eq!(
            chorus_client_push_pcm_f32(client, null(), 10, null_mut()),
            ChorusError::Null
        );
        // Null with no samples is an empty push.
        let mut taken = 7usize;
        assert_eq!(
            chorus_client_push_pcm_f32(client, null(), 0, &mut taken),
            ChorusError::Ok
        );
        assert_eq!(taken, 0);
        assert_eq!(
            chorus_client_poll_event(client, null_mut()),
            ChorusError::Null
        );
        assert_eq!(
            chorus_client_pull_participant_f32(client, null(), out.as_mut_ptr(), 4, null_mut()),
            ChorusError::Null
        );
        assert_eq!(chorus_client_free(client), ChorusError::Ok);
    }
}

#[test]
fn bad_utf8_bad_config_and_state_errors_are_typed() {
    let bad = [0xffu8 as c_char, 0xfe_u8 as c_char, 0];
    // SAFETY: every pointer is null or valid, the client is freed once.
    unsafe {
        let mut config = std::mem::zeroed::<ChorusConfig>();
        assert_eq!(chorus_config_default(&mut config), ChorusError::Ok);
        assert_eq!(config.output_rate_hz, 48_000);
        config.name = bad.as_ptr();
        assert!(chorus_client_new(&config).is_null());
        assert_eq!(last_error(), "config.name is not UTF-8");
        config.name = c"Ada".as_ptr();
        assert!(config.team.is_null() && !config.listen_only);
        config.team = c"red team".as_ptr();
        assert!(chorus_client_new(&config).is_null());
        assert!(
            last_error().contains("team: a team is 1 to 64"),
            "{}",
            last_error()
        );
        assert_eq!(
            {
                config.team = bad.as_ptr();
                chorus_client_new(&config)
            },
            null_mut()
        );
        assert_eq!(last_error(), "config.team is not UTF-8");
        config.team = c"red".as_ptr();
        config.listen_only = true;
        config.input_rate_hz = 44_100;
        assert!(chorus_client_new(&config).is_null());
        assert!(
            last_error().contains("input_rate_hz 44100"),
            "{}",
            last_error()
        );
        config.input_rate_hz = 16_000;
        assert_eq!(config.output_channels, 1, "mono by default");
        config.output_channels = 3;
        assert!(chorus_client_new(&config).is_null());
        assert!(
            last_error().contains("output_channels 3"),
            "{}",
            last_error()
        );
        config.output_channels = 2;
        let client = chorus_client_new(&config);
        assert!(!client.is_null());
        // Stereo: a pull is a whole number of L/R sample frames.
        let mut odd = [1.0f32; 7];
        assert_eq!(
            chorus_client_pull_mixed_f32(client, odd.as_mut_ptr(), 7, null_mut()),
            ChorusError::BadLength
        );
        assert!(last_error().contains("7 samples"), "{}", last_error());
        assert_eq!(odd, [1.0; 7], "nothing pulled");

        assert_eq!(
            chorus_client_connect(
                client,
                c"ws://127.0.0.1:1/ws".as_ptr(),
                bad.as_ptr(),
                null()
            ),
            ChorusError::Utf8
        );
        assert_eq!(last_error(), "token is not UTF-8");
        let mut out = [1.0f32; 8];
        let mut filled = 9usize;
        assert_eq!(
            chorus_client_pull_participant_f32(
                client,
                bad.as_ptr(),
                out.as_mut_ptr(),
                8,
                &mut filled
            ),
            ChorusError::Utf8
        );
        assert_eq!(
            chorus_client_pull_participant_f32(
                client,
                c"PA_x".as_ptr(),
                out.as_mut_ptr(),
                8,
                &mut filled
            ),
            ChorusError::UnknownParticipant
        );
        assert_eq!(
            chorus_client_pull_mixed_f32(client, out.as_mut_ptr(), 8, &mut filled),
            ChorusError::Ok
        );
        assert_eq!(filled, 0);
        assert_eq!(out, [0.0; 8]);
        assert_eq!(chorus_client_leave(client), ChorusError::NotConnected);
        assert_eq!(
            chorus_client_set_position(client, 1.0, 2.0, 0.0, 90.0),
            ChorusError::Ok
        );
        for (x, yaw) in [(f64::NAN, 0.0), (1.0e7, 0.0), (0.0, f64::INFINITY)] {
            assert_eq!(
                chorus_client_set_position(client, x, 0.0, 0.0, yaw),
                ChorusError::BadPosition
            );
        }
        assert!(last_error().contains("finite"), "{}", last_error());
        assert_eq!(
            chorus_client_push_opus(client, [0u8; 2].as_ptr(), 0),
            ChorusError::BadOpus
        );
        let samples = [0i16; 320];
        let mut taken = 0usize;
        assert_eq!(
            chorus_client_push_pcm_i16(client, samples.as_ptr(), samples.len(), &mut taken),
            ChorusError::Ok
        );
        assert_eq!(taken, 320);
        let mut event = empty_event();
        event.kind = ChorusEventKind::Error;
        assert_eq!(
            chorus_client_poll_event(client, &mut event),
            ChorusError::Ok
        );
        assert_eq!(event.kind, ChorusEventKind::None);
        let mut stats = ChorusStats::default();
        assert_eq!(chorus_client_stats(client, &mut stats), ChorusError::Ok);
        assert_eq!(stats.mic_dropped, 0);
        assert_eq!(chorus_client_free(client), ChorusError::Ok);
    }
}

/// Counts this thread's allocations, so a test can show that a call does not allocate.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the counter is a const-initialised thread local
// without a destructor, so touching it never allocates.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: per GlobalAlloc's contract, forwarded.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: per GlobalAlloc's contract, forwarded.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: per GlobalAlloc's contract, forwarded.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn failing_audio_calls_do_not_allocate() {
    // SAFETY: every pointer is null or valid, the client is freed once.
    unsafe {
        let mut config = std::mem::zeroed::<ChorusConfig>();
        assert_eq!(chorus_config_default(&mut config), ChorusError::Ok);
        let client = chorus_client_new(&config);
        assert!(!client.is_null());
        let mut out = [0.0f32; 480];
        let mut filled = 0usize;
        let mut pull_unknown = || {
            chorus_client_pull_participant_f32(
                client,
                c"PA_gone".as_ptr(),
                out.as_mut_ptr(),
                out.len(),
                &mut filled,
            )
        };
        // The first failure on this thread grows the message buffer.
        assert_eq!(pull_unknown(), ChorusError::UnknownParticipant);
        let before = ALLOCATIONS.with(|n| n.get());
        assert!(before > 0, "the counter sees this thread's allocations");
        for _ in 0..100 {
            assert_eq!(pull_unknown(), ChorusError::UnknownParticipant);
            assert_eq!(
                chorus_client_pull_mixed_f32(client, null_mut(), 4, null_mut()),
                ChorusError::Null
            );
        }
        assert_eq!(ALLOCATIONS.with(|n| n.get()) - before, 0);
        assert_eq!(last_error(), "out is null");
        assert_eq!(chorus_client_free(client), ChorusError::Ok);
    }
}

#[test]
fn a_panic_is_a_code_not_an_unwind_across_the_boundary() {
    assert_eq!(guard(|| panic!("boom")), ChorusError::Panic);
    assert_eq!(last_error(), "the SDK panicked: boom");
}

#[test]
fn lists_become_one_event_per_entry_and_strings_are_truncated_safely() {
    let events = c_events(Event::Speaking(vec![
        ("PA_a".into(), 0.5),
        ("PA_b".into(), 0.25),
    ]));
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].index, 1);
    assert_eq!(events[1].count, 2);
    assert_eq!(events[1].level, 0.25);
    assert_eq!(c_events(Event::Speaking(vec![]))[0].count, 0);
    let at = |x| crate::Position::new(x, 2.0, 0.5, 270.0).expect("valid");
    let events = c_events(Event::Positions(vec![
        crate::SpeakerPosition {
            sid: "PA_a".into(),
            position: at(1.0),
        },
        crate::SpeakerPosition {
            sid: "PA_b".into(),
            position: at(-4.0),
        },
    ]));
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.kind == ChorusEventKind::Position));
    assert_eq!((events[1].index, events[1].count), (1, 2));
    assert_eq!(
        (events[1].x, events[1].y, events[1].z, events[1].yaw_deg),
        (-4.0, 2.0, 0.5, 270.0)
    );
    assert_eq!(events[1].sid[..5], [80, 65, 95, 98, 0].map(|b| b as c_char));
    let nobody = c_events(Event::Positions(vec![]));
    assert_eq!((nobody.len(), nobody[0].count), (1, 0));
    assert_eq!(nobody[0].kind, ChorusEventKind::Position);
    let mut field = [1 as c_char; 4];
    fill(&mut field, "aé€");
    // "aé" is 3 bytes: it fits with the NUL; "€" would not.
    assert_eq!(
        field,
        [b'a' as c_char, 0xc3_u8 as c_char, 0xa9_u8 as c_char, 0]
    );
}

#[test]
fn talk_targets_and_volumes_are_checked_with_the_servers_rules_before_anything_is_sent() {
    let bad = [0xffu8 as c_char, 0];
    // SAFETY: every pointer is null or valid, the client is freed once.
    unsafe {
        assert_eq!(chorus_client_talk_to_team(null_mut()), ChorusError::Null);
        assert_eq!(
            chorus_client_set_volume(null_mut(), c"PA_a".as_ptr(), 0),
            ChorusError::Null
        );
        let client = chorus_client_new(null());
        assert!(!client.is_null());
        // Before `connect` the target and volumes are kept for the join.
        assert_eq!(chorus_client_talk_to_room(client), ChorusError::Ok);
        assert_eq!(chorus_client_talk_to_team(client), ChorusError::Ok);
        let sids = [c"PA_a".as_ptr(), c"PA_b".as_ptr()];
        assert_eq!(
            chorus_client_whisper(client, sids.as_ptr(), sids.len()),
            ChorusError::Ok
        );
        assert_eq!(
            chorus_client_whisper(client, sids.as_ptr(), 0),
            ChorusError::BadTarget
        );
        assert_eq!(last_error(), "a whisper names 1 to 64 participants");
        let many = [c"PA_a".as_ptr(); 65];
        assert_eq!(
            chorus_client_whisper(client, many.as_ptr(), many.len()),
            ChorusError::BadTarget
        );
        assert_eq!(
            chorus_client_whisper(client, many.as_ptr(), 64),
            ChorusError::Ok
        );
        assert_eq!(chorus_client_whisper(client, null(), 2), ChorusError::Null);
        let with_null = [c"PA_a".as_ptr(), null()];
        assert_eq!(
            chorus_client_whisper(client, with_null.as_ptr(), 2),
            ChorusError::Null
        );
        assert_eq!(last_error(), "a sid is null");
        let with_bad = [bad.as_ptr()];
        assert_eq!(
            chorus_client_whisper(client, with_bad.as_ptr(), 1),
            ChorusError::Utf8
        );
        for volume in [-50, -1, 0, 12, 50] {
            assert_eq!(
                chorus_client_set_volume(client, c"PA_a".as_ptr(), volume),
                ChorusError::Ok,
                "{volume}"
            );
        }
        for volume in [-51, 51, i32::MIN, i32::MAX] {
            assert_eq!(
                chorus_client_set_volume(client, c"PA_a".as_ptr(), volume),
                ChorusError::BadVolume,
                "{volume}"
            );
        }
        assert_eq!(last_error(), "a volume is a whole number from -50 to 50");
        assert_eq!(
            chorus_client_set_volume(client, null(), 10),
            ChorusError::Null
        );
        assert_eq!(chorus_client_free(client), ChorusError::Ok);
    }
}

#[test]
fn a_servers_refusal_carries_its_code() {
    let events = c_events(Event::Error {
        code: Some("bad_target".into()),
        message: "bad_target: PA_x is not a participant of this room".into(),
    });
    assert_eq!(events[0].kind, ChorusEventKind::Error);
    // SAFETY: `fill` NUL-terminates the fields.
    let (code, text) = unsafe {
        (
            CStr::from_ptr(events[0].code.as_ptr()),
            CStr::from_ptr(events[0].text.as_ptr()),
        )
    };
    assert_eq!(code, c"bad_target");
    assert!(text.to_bytes().starts_with(b"bad_target: PA_x"));
    let own = c_events(Event::Error {
        code: None,
        message: "media: boom".into(),
    });
    assert_eq!(own[0].code[0], 0);
}

/// What an event callback saw, behind its `user` pointer.
#[derive(Default)]
struct Seen {
    client: std::sync::atomic::AtomicPtr<ChorusClient>,
    events: Mutex<Vec<(ChorusEventKind, ChorusConnectionState, Option<String>)>>,
    /// What changing the callback and freeing the client answered from inside the callback.
    from_inside: Mutex<Vec<ChorusError>>,
}

extern "C" fn record(event: *const ChorusEvent, user: *mut std::ffi::c_void) {
    // SAFETY: the test passes a `Seen` that outlives the client, and the SDK a valid event for the call.
    let (seen, event) = unsafe { (&*user.cast::<Seen>(), &*event) };
    let thread = std::thread::current().name().map(str::to_owned);
    let mut events = seen
        .events
        .lock()
        .expect("no panic while holding the events lock");
    if events.is_empty() {
        let client = seen.client.load(std::sync::atomic::Ordering::Acquire);
        // SAFETY: the client is live while its callback runs; both calls refuse from in here.
        let answers = unsafe {
            [
                chorus_client_set_event_callback(client, None, null_mut()),
                chorus_client_free(client),
            ]
        };
        seen.from_inside
            .lock()
            .expect("no panic while holding the lock")
            .extend(answers);
    }
    events.push((event.kind, event.state, thread));
}

/// A callback gets the events on the SDK's `chorus-events` thread instead of the queue; it cannot free the
/// client nor change itself from inside; freeing a client whose join is never answered (a listener that
/// never accepts: the WebSocket upgrade hangs) does not wait for the reply timeout (10 s).
#[test]
fn events_go_to_the_callback_on_the_sdks_thread_and_free_never_waits_for_the_server() {
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = std::ffi::CString::new(format!(
        "ws://{}/ws",
        black_hole.local_addr().expect("bound")
    ))
    .expect("no NUL in a URL");
    let seen = Seen::default();
    let user = std::ptr::from_ref(&seen).cast_mut().cast();
    // SAFETY: every pointer is null or valid; `seen` outlives the client.
    unsafe {
        let client = chorus_client_new(null());
        assert!(!client.is_null());
        seen.client
            .store(client, std::sync::atomic::Ordering::Release);
        assert_eq!(
            chorus_client_set_event_callback(client, Some(record), user),
            ChorusError::Ok
        );
        assert_eq!(
            chorus_client_connect(client, url.as_ptr(), c"token".as_ptr(), null()),
            ChorusError::Ok
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.events.lock().expect("no panic").is_empty() {
            assert!(std::time::Instant::now() < deadline, "no event came");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // In the join now; nothing is queued for polling.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut polled = empty_event();
        assert_eq!(
            chorus_client_poll_event(client, &mut polled),
            ChorusError::Ok
        );
        assert_eq!(polled.kind, ChorusEventKind::None);
        let start = std::time::Instant::now();
        assert_eq!(chorus_client_free(client), ChorusError::Ok);
        let took = start.elapsed();
        // A hang check, not a performance figure: the join's reply timeout is 10 s.
        assert!(
            took < std::time::Duration::from_secs(1),
            "free took {took:?}"
        );
    }
    assert_eq!(
        *seen.from_inside.lock().expect("no panic"),
        [ChorusError::Busy, ChorusError::Busy]
    );
    let events = seen.events.into_inner().expect("no panic");
    let on = Some("chorus-events".to_owned());
    assert_eq!(
        events.first(),
        Some(&(
            ChorusEventKind::ConnectionState,
            ChorusConnectionState::Connecting,
            on.clone()
        ))
    );
    // The free ended the session: its last event still reached the callback, before free returned.
    assert_eq!(
        events.last(),
        Some(&(
            ChorusEventKind::ConnectionState,
            ChorusConnectionState::Closed,
            on
        ))
    );
}

/// Without a callback (or once it is cleared) events are queued for polling.
#[test]
fn a_cleared_callback_leaves_the_events_to_polling() {
    let seen = Seen::default();
    let user = std::ptr::from_ref(&seen).cast_mut().cast();
    // SAFETY: every pointer is null or valid; `seen` outlives the client.
    unsafe {
        let client = chorus_client_new(null());
        assert!(!client.is_null());
        assert_eq!(
            chorus_client_set_event_callback(client, Some(record), user),
            ChorusError::Ok
        );
        assert_eq!(
            chorus_client_set_event_callback(client, None, null_mut()),
            ChorusError::Ok
        );
        assert_eq!(
            chorus_client_set_event_callback(null_mut(), None, null_mut()),
            ChorusError::Null
        );
        // Nothing listens on port 1: the connection is refused, the session ends.
        assert_eq!(
            chorus_client_connect(
                client,
                c"ws://127.0.0.1:1/ws".as_ptr(),
                c"t".as_ptr(),
                null()
            ),
            ChorusError::Ok
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut kinds = Vec::new();
        loop {
            let mut e = empty_event();
            assert_eq!(chorus_client_poll_event(client, &mut e), ChorusError::Ok);
            if e.kind == ChorusEventKind::ConnectionState
                && e.state == ChorusConnectionState::Closed
            {
                break;
            }
            if e.kind != ChorusEventKind::None {
                kinds.push(e.kind);
            }
            assert!(std::time::Instant::now() < deadline, "polled {kinds:?}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(kinds.contains(&ChorusEventKind::Error), "{kinds:?}");
        assert_eq!(chorus_client_free(client), ChorusError::Ok);
    }
    assert!(seen.events.into_inner().expect("no panic").is_empty());
}

#[test]
fn a_participants_team_and_shout_role_reach_the_c_event() {
    let events = c_events(Event::ParticipantJoined(crate::Participant {
        sid: "PA_9a0b1c2d3e4f".into(),
        identity: "carol".into(),
        name: "Carol".into(),
        muted: false,
        team: Some(vocab::TeamId::new("blue").expect("a valid team")),
        shout: true,
    }));
    assert_eq!(events[0].kind, ChorusEventKind::ParticipantJoined);
    // SAFETY: `fill` NUL-terminates the field.
    let team = unsafe { CStr::from_ptr(events[0].team.as_ptr()) };
    assert_eq!(team, c"blue");
    assert!(events[0].shout);
    // A 64-character team (the longest) fits whole.
    let long = "t".repeat(64);
    let events = c_events(Event::ParticipantJoined(crate::Participant {
        sid: String::new(),
        identity: String::new(),
        name: String::new(),
        muted: false,
        team: Some(vocab::TeamId::new(long.clone()).expect("a valid team")),
        shout: false,
    }));
    // SAFETY: as above.
    let team = unsafe { CStr::from_ptr(events[0].team.as_ptr()) };
    assert_eq!(team.to_str().expect("UTF-8"), long);
}

#[test]
fn moderation_checks_its_arguments_before_anything_is_sent() {
    // SAFETY: every pointer is null or valid.
    unsafe {
        let client = chorus_client_new(null());
        assert!(!client.is_null());
        let kick = ChorusModerateAction::Kick as u32;
        assert_eq!(
            chorus_client_moderate(client, c"PA_9a0b1c2d3e4f".as_ptr(), 99, null()),
            ChorusError::BadAction
        );
        assert_eq!(
            chorus_client_moderate(client, null(), kick, null()),
            ChorusError::Null
        );
        assert_eq!(last_error(), "sid is null");
        assert_eq!(
            chorus_client_moderate(client, c"PA_9a0b1c2d3e4f".as_ptr(), kick, null()),
            ChorusError::NotConnected
        );
        assert_eq!(chorus_client_free(client), ChorusError::Ok);
    }
}
