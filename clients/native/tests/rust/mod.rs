//! Two SDK clients and one browser-like client in a room: A sends 440 Hz as 16 kHz i16, the
//! `AudioClient` 660 Hz; B (48 kHz f32 out) hears both mixed and each on its own, the `AudioClient`
//! hears A. Then mute and leave, as the others see them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_native::{Client, Config, Event, Microphone, Speaker};
use chorus_tests::{Server, SAMPLE_RATE};
use media_core::audio::{f32_to_i16, ToneGenerator};

use crate::{audio_client, tones_in, wait_connected, wait_event, SECONDS};

/// A game's capture callback: every 10 ms, the samples of a `freq_hz` tone due by then, as i16.
fn capture(mic: Microphone, rate_hz: u32, freq_hz: f64, stop: Arc<AtomicBool>) {
    let mut samples = vec![0i16; rate_hz as usize];
    capture_with(mic, rate_hz, freq_hz, stop, move |mic, pcm| {
        for (s, f) in samples.iter_mut().zip(pcm) {
            *s = f32_to_i16(*f);
        }
        mic.push_i16(&samples[..pcm.len()]);
    });
}

/// A game's capture thread, paced by the clock: every 10 ms until `stop`, `deliver` is told how many
/// samples (at `rate_hz`) fell due since its previous call.
fn paced(rate_hz: u32, stop: &AtomicBool, mut deliver: impl FnMut(usize)) {
    let start = Instant::now();
    let mut delivered = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * f64::from(rate_hz)) as usize;
        deliver(due - delivered);
        delivered = due;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A game's capture callback: every 10 ms, the samples of a `freq_hz` tone due by then, given to `push`.
fn capture_with(
    mut mic: Microphone,
    rate_hz: u32,
    freq_hz: f64,
    stop: Arc<AtomicBool>,
    mut push: impl FnMut(&mut Microphone, &[f32]),
) {
    let mut tone = ToneGenerator::new(freq_hz, 0.3, rate_hz);
    let mut pcm = vec![0.0f32; rate_hz as usize];
    paced(rate_hz, &stop, |mut due| {
        while due > 0 {
            let n = due.min(pcm.len());
            tone.fill(&mut pcm[..n]);
            push(&mut mic, &pcm[..n]);
            due -= n;
        }
    });
}

/// What a game's playback callback pulled: the mix and two participants' streams.
#[derive(Default)]
struct Pulled {
    mixed: Vec<f32>,
    by_sid: Vec<(String, Vec<f32>)>,
}

/// A game's playback callback: every 10 ms, what is due of the mix and of each of `sids`.
fn playback(
    mut speaker: Speaker,
    rate_hz: u32,
    sids: Vec<String>,
    stop: Arc<AtomicBool>,
) -> Pulled {
    let mut pulled = Pulled {
        by_sid: sids.into_iter().map(|s| (s, Vec::new())).collect(),
        ..Pulled::default()
    };
    let start = Instant::now();
    let mut done = 0usize;
    let mut buf = vec![0.0f32; rate_hz as usize];
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * f64::from(rate_hz)) as usize;
        let n = (due - done).min(buf.len());
        let got = speaker
            .pull_mixed(&mut buf[..n])
            .expect("mixed output is on");
        pulled.mixed.extend_from_slice(&buf[..got]);
        for (sid, pcm) in &mut pulled.by_sid {
            // Unknown until the slot map names the participant.
            if let Ok(got) = speaker.pull_participant(sid, &mut buf[..n]) {
                pcm.extend_from_slice(&buf[..got]);
            }
        }
        done += n;
        std::thread::sleep(Duration::from_millis(10));
    }
    pulled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_and_a_browser_like_client_hear_each_other() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let room = "native";
    let url = server.ws_url();
    let (_carol_signal, mut carol, carol_sid) = audio_client(&server, room, "carol", 660.0).await?;
    carol.wait_connected(SECONDS).await?;

    let mut ada = Client::new(Config {
        input_rate_hz: 16_000,
        // A second of ring: the SDK's network thread keeps up on a loaded 2-core test machine too (the
        // no-drop check below is about the SDK, not the scheduler).
        buffer_ms: 1_000,
        ..Config::default()
    })?;
    let mut bob = Client::new(Config {
        output_rate_hz: 48_000,
        ..Config::default()
    })?;
    ada.connect(&url, &server.token(room, "ada", &[])?, Some(room))?;
    bob.connect(&url, &server.token(room, "bob", &[])?, None)?;
    let (ada, bob, mut ada_seen, mut bob_seen, ada_sid) = tokio::task::spawn_blocking(move || {
        let (mut ada_seen, mut bob_seen) = (Vec::new(), Vec::new());
        let ada_sid = wait_connected(&ada, &mut ada_seen)?;
        wait_connected(&bob, &mut bob_seen)?;
        anyhow::Ok((ada, bob, ada_seen, bob_seen, ada_sid))
    })
    .await??;
    let mut ada = ada;
    let mut bob = bob;

    // Three seconds of audio through the game-side handles.
    let stop = Arc::new(AtomicBool::new(false));
    let mic = ada
        .take_microphone()
        .expect("a new client has its microphone");
    let speaker = bob.take_speaker().expect("a new client has its speaker");
    let capture_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || capture(mic, 16_000, 440.0, stop))
    };
    let playback_thread = {
        let stop = stop.clone();
        let sids = vec![ada_sid.clone(), carol_sid.clone()];
        std::thread::spawn(move || playback(speaker, 48_000, sids, stop))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    capture_thread
        .join()
        .expect("the capture thread does not panic");
    let pulled = playback_thread
        .join()
        .expect("the playback thread does not panic");

    assert!(
        pulled.mixed.len() > SAMPLE_RATE as usize,
        "bob pulled only {} mixed samples; stats {:?}",
        pulled.mixed.len(),
        bob.stats()
    );
    let (present, analysis) = tones_in(&pulled.mixed, 48_000);
    assert_eq!(present, vec![440.0, 660.0], "bob's mix: {analysis:?}");
    for ((sid, pcm), freq) in pulled.by_sid.iter().zip([440.0, 660.0]) {
        assert!(
            pcm.len() > SAMPLE_RATE as usize,
            "bob pulled only {} samples of {sid}",
            pcm.len()
        );
        let (present, analysis) = tones_in(pcm, 48_000);
        assert_eq!(present, vec![freq], "bob hears {sid} as {analysis:?}");
        assert!(analysis.relative(freq) > 0.5, "{sid}: {analysis:?}");
    }
    {
        let heard = carol
            .heard
            .lock()
            .expect("no panic while holding the heard lock");
        // Bob publishes nothing: Carol hears Ada alone.
        let streams: Vec<_> = heard.pcm_by_csrc.values().collect();
        assert_eq!(streams.len(), 1, "carol hears {} streams", streams.len());
        assert!(streams[0].len() > SAMPLE_RATE as usize);
        let (present, analysis) = tones_in(streams[0], SAMPLE_RATE);
        assert_eq!(present, vec![440.0], "carol hears ada as {analysis:?}");
    }
    let ada_stats = ada.stats();
    assert!(ada_stats.frames_sent > 100, "{ada_stats:?}");
    assert_eq!(ada_stats.mic_dropped, 0, "{ada_stats:?}");

    // Mute: the others are told, nothing more is sent. Leave: left, closed, and the others see it.
    let (ada, bob) = tokio::task::spawn_blocking(move || {
        ada.set_muted(true)?;
        let sid = ada_sid.clone();
        wait_event(&bob, &mut bob_seen, SECONDS, |e| {
            matches!(e, Event::ParticipantMuted { sid: s, muted: true } if *s == sid).then_some(())
        })?;
        let sent = ada.stats().frames_sent;
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ada.stats().frames_sent, sent, "a muted client sends");
        // Bob was told about both others and the slots they are in.
        let slots_named = |sid: &str| {
            bob_seen.iter().any(
                |e| matches!(e, Event::Slots(s) if s.iter().any(|s| s.sid.as_deref() == Some(sid))),
            )
        };
        assert!(slots_named(&ada_sid), "{bob_seen:#?}");
        assert!(slots_named(&carol_sid), "{bob_seen:#?}");
        ada.leave()?;
        wait_event(&ada, &mut ada_seen, SECONDS, |e| {
            matches!(e, Event::Left { .. }).then_some(())
        })?;
        wait_event(&ada, &mut ada_seen, SECONDS, |e| {
            (*e == Event::ConnectionState(chorus_native::ConnectionState::Closed)).then_some(())
        })?;
        wait_event(&bob, &mut bob_seen, SECONDS, |e| {
            matches!(e, Event::ParticipantLeft { sid: s, reason } if *s == ada_sid && reason == "left")
                .then_some(())
        })?;
        anyhow::Ok((ada, bob))
    })
    .await??;
    drop((ada, bob));
    carol.stop().await?;
    Ok(())
}

/// A TCP proxy in front of the signaling port whose connections can be cut (no close frame: 1006).
struct CuttableProxy {
    url: String,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(ws_url: &str) -> anyhow::Result<CuttableProxy> {
        let upstream = ws_url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .expect("a ws:// url with a host")
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/ws", listener.local_addr()?);
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = {
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections
                        .lock()
                        .expect("no panic while holding the connections lock")
                        .push(task);
                }
            })
        };
        Ok(CuttableProxy {
            url,
            connections,
            accept,
        })
    }

    /// Drop every open connection (both sockets close without a WebSocket close frame).
    fn cut(&self) {
        for task in self
            .connections
            .lock()
            .expect("no panic while holding the connections lock")
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// A lost signaling connection is rejoined on its own: `Reconnecting`, then joined and connected again
/// as a new session, and the others hear the client again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_rejoined_and_heard_again() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let room = "rejoin";
    let proxy = CuttableProxy::start(&server.ws_url()).await?;
    let (_carol_signal, mut carol, carol_sid) = audio_client(&server, room, "carol", 660.0).await?;
    carol.wait_connected(SECONDS).await?;
    // dave listens; ada whispers to carol (set before connecting), so dave never hears her, before or
    // after her rejoin (the SDK sends the whisper again).
    let mut dave = Client::new(Config::default())?;
    dave.connect(&server.ws_url(), &server.token(room, "dave", &[])?, None)?;
    let mut dave = tokio::task::spawn_blocking(move || {
        wait_connected(&dave, &mut Vec::new())?;
        anyhow::Ok(dave)
    })
    .await??;
    let mut ada = Client::new(Config {
        input_rate_hz: 24_000,
        buffer_ms: 1_000,
        ..Config::default()
    })?;
    ada.talk_to(chorus_native::TalkTarget::Whisper(vec![carol_sid]))?;
    ada.connect(&proxy.url, &server.token(room, "ada", &[])?, Some(room))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mic = ada
        .take_microphone()
        .expect("a new client has its microphone");
    let capture_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || capture(mic, 24_000, 440.0, stop))
    };
    let dave_ear = {
        let (speaker, stop) = (dave.take_speaker().expect("a speaker"), stop.clone());
        std::thread::spawn(move || crate::loudness(speaker, stop))
    };
    let (ada, mut seen, first_sid) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let sid = wait_connected(&ada, &mut seen)?;
        anyhow::Ok((ada, seen, sid))
    })
    .await??;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let streams_before = carol
        .heard
        .lock()
        .expect("no panic while holding the heard lock")
        .pcm_by_csrc
        .len();
    assert_eq!(streams_before, 1, "carol hears ada");

    proxy.cut();
    let (ada, second_sid) = tokio::task::spawn_blocking(move || {
        let attempt = wait_event(&ada, &mut seen, SECONDS, |e| match e {
            Event::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        })?;
        assert_eq!(attempt, 1);
        let sid = wait_connected(&ada, &mut seen)?;
        anyhow::Ok((ada, sid))
    })
    .await??;
    assert_ne!(first_sid, second_sid, "the rejoined session is a new one");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    capture_thread
        .join()
        .expect("the capture thread does not panic");
    // dave hears carol's 660 Hz, never ada's 440 Hz: before the cut nor after the rejoin.
    let (_, dave_pcm) = dave_ear.join().expect("dave's playback does not panic");
    let (before, after) = dave_pcm.split_at(dave_pcm.len() / 2);
    for (when, pcm) in [("before the cut", before), ("after the rejoin", after)] {
        let analysis = media_core::audio::ToneAnalysis::analyze(pcm, SAMPLE_RATE, &crate::TONES);
        assert_eq!(
            analysis.present_default(),
            vec![660.0],
            "dave {when}: {analysis:?}"
        );
    }
    {
        // The rejoined session's microphone is a new stream, and it is ada's tone.
        let heard = carol
            .heard
            .lock()
            .expect("no panic while holding the heard lock");
        let tones: Vec<Vec<f32>> = heard
            .pcm_by_csrc
            .values()
            .filter(|pcm| pcm.len() > SAMPLE_RATE as usize / 2)
            .map(|pcm| tones_in(pcm, SAMPLE_RATE).0)
            .collect();
        assert_eq!(
            tones,
            vec![vec![440.0], vec![440.0]],
            "carol hears {tones:?}"
        );
    }
    drop((ada, dave));
    carol.stop().await?;
    Ok(())
}

mod fec;
mod moderation;
mod paths;
mod ptt;
mod spatial;
mod stereo;
mod talk;
