//! Playout (docs/broadcast.md, "Playout") with the real binary, real tools and Rust WebRTC clients: a
//! speech WAV made by espeak-ng and an MP3 made by ffmpeg, listed in an .m3u with a garbage file and a
//! missing one, played into a room — a listener hears the speech, then the tone, for their durations, and
//! the bad items are skipped and counted; names outside the media directory get their typed errors; hold
//! music (Ogg/Opus, passed through) plays while a mixed room has one person, stops when a second joins and
//! resumes when they leave; an announcement lowers a talker by `duck_db` in another listener's mix and
//! restores it afterwards. Real-time: named `real_udp_` so they run one at a time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use chorus_tests::{AudioClient, MediaOptions, Mic, Server, Signal, SAMPLE_RATE};
use media_core::audio::{goertzel_power, ToneAnalysis};
use serde_json::{json, Value};

use super::{ffmpeg_pcm, SECONDS};

mod hold;

const MP3_TONE: f32 = 660.0;
const HOLD_TONE: f32 = 880.0;
const TALKER_TONE: f32 = 440.0;
const CHIME_TONE: f32 = 1000.0;

/// A media directory of this test's own, with a config file that points playout at it.
struct Media {
    base: PathBuf,
    dir: PathBuf,
    config: PathBuf,
}

impl Drop for Media {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn media(name: &str) -> anyhow::Result<Media> {
    let base = std::env::temp_dir().join(format!("chorus-playout-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join("media");
    std::fs::create_dir_all(&dir)?;
    let config = base.join("chorus.toml");
    std::fs::write(
        &config,
        format!("[playout]\nmedia_dir = \"{}\"\n", dir.display()),
    )?;
    Ok(Media { base, dir, config })
}

async fn start(media: &Media) -> anyhow::Result<Server> {
    Server::start(&["--config", media.config.to_str().context("UTF-8 path")?]).await
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program} (scripts/test.sh installs it)"))?;
    ensure!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A tone file made by ffmpeg: `codec` into `path`.
async fn tone_file(path: &Path, freq: f32, seconds: f32, codec: &[&str]) -> anyhow::Result<()> {
    let source = format!("sine=frequency={freq}:duration={seconds}");
    let mut args = vec![
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &source,
    ];
    args.extend_from_slice(codec);
    let out = path.to_str().context("UTF-8 path")?;
    args.push(out);
    run("ffmpeg", &args).await
}

/// A server whose media folder holds one Ogg/Opus tone file (`freq` Hz for `seconds`), with its admin
/// token; the folder lives as long as the returned [`Media`].
async fn start_with_tone(
    name: &str,
    file: &str,
    freq: f32,
    seconds: f32,
) -> anyhow::Result<(Media, Server, String)> {
    let media = media(name)?;
    let ogg_opus = ["-c:a", "libopus", "-b:a", "48k", "-f", "ogg"];
    tone_file(&media.dir.join(file), freq, seconds, &ogg_opus).await?;
    let server = start(&media).await?;
    let admin = server.admin_token()?;
    Ok((media, server, admin))
}

/// A listener with no microphone that plays its first slot (a mixed room's mix) like a browser.
async fn listener(
    server: &Server,
    room: &str,
    identity: &str,
) -> anyhow::Result<(Signal, AudioClient)> {
    participant(server, room, identity, Mic::Off, Some(0)).await
}

async fn participant(
    server: &Server,
    room: &str,
    identity: &str,
    mic: Mic,
    play_slot: Option<usize>,
) -> anyhow::Result<(Signal, AudioClient)> {
    let token = server.token(room, identity, &[])?;
    let mut signal = Signal::connect(&server.ws_url()).await?;
    signal.join(&token, room).await?;
    let options = MediaOptions {
        slots: 1,
        mic,
        via: None,
        play_slot,
        red: 0,
    };
    let mut client = AudioClient::start_with(&mut signal, options).await?;
    client
        .wait_connected(SECONDS)
        .await
        .map_err(|e| e.context(server.log_tail()))?;
    Ok((signal, client))
}

/// What the client's ear got from the server, in RTP time (silence where nothing was sent).
fn heard(client: &AudioClient) -> Vec<f32> {
    let heard = client.heard.lock().expect("heard lock");
    heard.ear.as_ref().map(|e| e.rtp_time()).unwrap_or_default()
}

/// Waits until `signal` sees `participant_joined` for a participant named `name`; returns its sid.
async fn joined_named(signal: &mut Signal, name: &str) -> anyhow::Result<String> {
    loop {
        let v = signal.expect("participant_joined", SECONDS).await?;
        if v["participant"]["name"] == name {
            return Ok(v["participant"]["sid"].as_str().context("sid")?.to_owned());
        }
    }
}

/// Which 20 ms blocks of `pcm` hold `freq` as their main tone.
fn blocks_with(pcm: &[f32], freq: f32) -> Vec<bool> {
    pcm.chunks(960)
        .map(|b| {
            let a = ToneAnalysis::analyze(b, SAMPLE_RATE, &[freq]);
            a.is_present(freq, 0.5)
        })
        .collect()
}

fn rms(pcm: &[f32]) -> f32 {
    (pcm.iter().map(|s| s * s).sum::<f32>() / pcm.len().max(1) as f32).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_playout_a_playlist_plays_speech_then_an_mp3_and_skips_bad_items(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let media = media("list")?;
    let speech = media.dir.join("welcome.wav");
    run(
        "espeak-ng",
        &[
            "-w",
            speech.to_str().context("UTF-8")?,
            "Welcome to the show.",
        ],
    )
    .await?;
    tone_file(
        &media.dir.join("tone.mp3"),
        MP3_TONE,
        1.0,
        &["-ar", "44100", "-c:a", "libmp3lame", "-b:a", "96k"],
    )
    .await?;
    std::fs::write(
        media.dir.join("garbage.mp3"),
        "this is not an mp3 file at all\n".repeat(200),
    )?;
    std::fs::write(
        media.dir.join("show.m3u"),
        "#EXTM3U\nwelcome.wav\ngarbage.mp3\ngone.wav\ntone.mp3\n",
    )?;
    std::fs::write(media.base.join("secret.wav"), b"RIFF")?;
    std::os::unix::fs::symlink(media.base.join("secret.wav"), media.dir.join("link.wav"))?;
    std::fs::write(media.dir.join("notes.txt"), b"hi")?;
    let wav_seconds = ffmpeg_pcm(&speech, None).await?.len() as f64 / f64::from(SAMPLE_RATE);

    let server = start(&media).await?;
    let admin = server.admin_token()?;
    server
        .create_room(&json!({"name": "radio", "mode": "forward", "slots": 1}))
        .await?;
    let post = |room: &str, body: Value| {
        let path = format!("/admin/v1/rooms/{room}/playback");
        let (server, admin) = (&server, admin.clone());
        async move {
            server
                .admin("POST", &path, Some(&admin), Some(&body.to_string()))
                .await
        }
    };
    // Names that are not plain files in the media directory: typed errors, nothing plays.
    for (body, status, code) in [
        (json!({"files": ["../secret.wav"]}), 400, "media_bad_name"),
        (json!({"files": ["/etc/passwd"]}), 400, "media_bad_name"),
        (json!({"files": ["link.wav"]}), 403, "media_outside"),
        (json!({"files": ["nope.wav"]}), 404, "media_not_found"),
        (json!({"files": ["notes.txt"]}), 422, "media_unsupported"),
        (json!({"files": []}), 400, "bad_request"),
        (
            json!({"files": ["tone.mp3"], "playlist": "show.m3u"}),
            400,
            "bad_request",
        ),
    ] {
        let (s, reply) = post("radio", body.clone()).await?;
        assert_eq!(s, status, "{body}: {reply}");
        assert!(reply.contains(code), "{body}: {reply}");
    }
    let (s, reply) = post("nowhere", json!({"files": ["tone.mp3"]})).await?;
    assert_eq!(
        (s, reply.contains("room_not_found")),
        (404, true),
        "{reply}"
    );

    let (mut signal, bob) = listener(&server, "radio", "bob").await?;
    let (s, reply) = post(
        "radio",
        json!({"playlist": "show.m3u", "name": "Radio Chorus"}),
    )
    .await?;
    assert_eq!(s, 201, "{reply}");
    let started: Value = serde_json::from_str(&reply)?;
    assert_eq!(
        started["items"],
        json!(["welcome.wav", "garbage.mp3", "gone.wav", "tone.mp3"])
    );
    let sid = joined_named(&mut signal, "Radio Chorus").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, reply) = server
        .admin("GET", "/admin/v1/rooms/radio/playback", Some(&admin), None)
        .await?;
    let playing: Value = serde_json::from_str(&reply)?;
    assert_eq!((s, &playing["state"]), (200, &json!("playing")), "{reply}");
    assert_eq!(playing["current"], "welcome.wav");
    assert_eq!(playing["sid"], sid.as_str());
    // It leaves when the list is over.
    let left = signal
        .expect("participant_left", Duration::from_secs(8))
        .await?;
    assert_eq!(left["sid"], sid.as_str());
    let (_, reply) = server
        .admin("GET", "/admin/v1/rooms/radio/playback", Some(&admin), None)
        .await?;
    let done: Value = serde_json::from_str(&reply)?;
    assert_eq!(done["state"], "finished", "{reply}");
    assert_eq!(
        (done["played"].as_u64(), done["skipped"].as_u64()),
        (Some(2), Some(2)),
        "{reply}\n{}",
        server.log_tail()
    );
    let (s, _) = server
        .admin(
            "DELETE",
            "/admin/v1/rooms/radio/playback",
            Some(&admin),
            None,
        )
        .await?;
    assert_eq!(s, 404, "nothing runs to stop");
    for (reason, n) in [("undecodable", 1.0), ("not_found", 1.0)] {
        let sample = format!("chorus_playout_items_skipped_total{{reason=\"{reason}\"}}");
        assert_eq!(server.metric(&sample).await?, n, "{sample}");
    }
    assert_eq!(
        server
            .metric("chorus_playout_items_played_total{format=\"wav\"}")
            .await?,
        1.0
    );

    // What bob heard: the speech for the WAV's duration, then the tone for its second, in order.
    let pcm = heard(&bob);
    let tone = blocks_with(&pcm, MP3_TONE);
    let onset = tone
        .iter()
        .position(|&t| t)
        .context("bob never heard the tone")?;
    let onset_s = onset as f64 * 0.02;
    assert!(
        (onset_s - wav_seconds).abs() < 0.12,
        "the tone began {onset_s:.2} s in; the speech lasts {wav_seconds:.2} s"
    );
    let tone_s = tone.iter().filter(|&&t| t).count() as f64 * 0.02;
    assert!(
        (0.85..=1.1).contains(&tone_s),
        "the tone lasted {tone_s:.2} s"
    );
    let speech_part = &pcm[..onset * 960];
    assert!(
        rms(speech_part) > 0.02,
        "the speech is quiet: {}",
        rms(speech_part)
    );
    assert!(
        !tone[..onset].iter().any(|&t| t),
        "the tone before the speech ended"
    );
    drop(signal);
    bob.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_playout_hold_music_plays_for_one_person_and_stops_for_two() -> anyhow::Result<()>
{
    let _alone = chorus_tests::real_time_call().await;
    let (_media, server, admin) = start_with_tone("hold", "hold.opus", HOLD_TONE, 2.0).await?;
    let room = server
        .create_room(&json!({"name": "lobby", "mode": "mix", "hold_music": "hold.opus"}))
        .await?;
    assert_eq!(room["hold_music"], "hold.opus");

    let (_signal, alice) = listener(&server, "lobby", "alice").await?;
    // It joins once alice is in (before or after her `joined`: the admin API says).
    let deadline = Instant::now() + SECONDS;
    loop {
        let (_, reply) = server
            .admin(
                "GET",
                "/admin/v1/rooms/lobby/participants",
                Some(&admin),
                None,
            )
            .await?;
        if reply.contains("\"Hold music\"") {
            break;
        }
        ensure!(Instant::now() < deadline, "no hold music in {reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before_bob = heard(&alice).len();
    let (mut bob_signal, bob) = participant(
        &server,
        "lobby",
        "bob",
        Mic::Tone {
            freq_hz: TALKER_TONE,
            amplitude: 0.3,
        },
        None,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let with_bob = heard(&alice).len();
    bob_signal.send(json!({"type": "leave"})).await?;
    bob.stop().await?;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let after_bob = heard(&alice).len();
    let pcm = heard(&alice);
    ensure!(
        pcm.len() > (started.elapsed().as_secs_f64() * 0.8 * 48_000.0) as usize,
        "alice heard {} samples in {:?} (bob at {before_bob}, left at {with_bob}, end {after_bob})\n{}",
        pcm.len(),
        started.elapsed(),
        server.log_tail()
    );
    let tones = [HOLD_TONE, TALKER_TONE];
    let alone = ToneAnalysis::analyze(&pcm[24_000..before_bob], SAMPLE_RATE, &tones);
    // From half a second after bob connected: bob only (the hold music stopped at his join).
    let together = ToneAnalysis::analyze(&pcm[before_bob + 24_000..with_bob], SAMPLE_RATE, &tones);
    let again = ToneAnalysis::analyze(&pcm[with_bob + 48_000..after_bob], SAMPLE_RATE, &tones);
    let report = format!("alone {alone:?}\nwith bob {together:?}\nafter {again:?}");
    assert_eq!(alone.present_default(), vec![HOLD_TONE], "{report}");
    assert_eq!(together.present_default(), vec![TALKER_TONE], "{report}");
    assert!(together.relative(HOLD_TONE) < 0.01, "{report}");
    assert_eq!(again.present_default(), vec![HOLD_TONE], "{report}");
    alice.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_playout_an_announcement_ducks_a_talker_in_the_mix_and_restores_it(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (_media, server, admin) = start_with_tone("duck", "chime.opus", CHIME_TONE, 1.5).await?;
    server
        .create_room(&json!({"name": "hall", "mode": "mix"}))
        .await?;
    let (_alice_signal, alice) = participant(
        &server,
        "hall",
        "alice",
        Mic::Tone {
            freq_hz: TALKER_TONE,
            amplitude: 0.2,
        },
        None,
    )
    .await?;
    let (mut signal, bob) = listener(&server, "hall", "bob").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let body = json!({"file": "chime.opus", "duck_db": -12}).to_string();
    let (s, reply) = server
        .admin(
            "POST",
            "/admin/v1/rooms/hall/announce",
            Some(&admin),
            Some(&body),
        )
        .await?;
    assert_eq!(s, 201, "{reply}");
    let (s, reply) = server
        .admin(
            "POST",
            "/admin/v1/rooms/hall/announce",
            Some(&admin),
            Some(&body),
        )
        .await?;
    assert_eq!(
        (s, reply.contains("announcement_playing")),
        (409, true),
        "{reply}"
    );
    let sid = joined_named(&mut signal, "Announcement").await?;
    loop {
        let left = signal.expect("participant_left", SECONDS).await?;
        if left["sid"] == sid.as_str() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pcm = heard(&bob);
    let chime = blocks_with(&pcm, CHIME_TONE);
    let first = chime
        .iter()
        .position(|&c| c)
        .context("bob never heard the chime")?;
    let last = chime.iter().rposition(|&c| c).context("the chime")?;
    let at = |block: usize| block * 960;
    let power =
        |from: usize, to: usize| goertzel_power(&pcm[at(from)..at(to)], TALKER_TONE, SAMPLE_RATE);
    ensure!(
        first > 50 && at(last + 50) < pcm.len(),
        "the chime is at blocks {first}..{last} of {}",
        pcm.len() / 960
    );
    let before = power(first - 50, first - 10);
    let during = power(first + 15, last - 15);
    let after = power(last + 25, last + 50);
    let db = |p: f32| 10.0 * (p / before).log10();
    assert!(
        (db(during) + 12.0).abs() <= 1.5,
        "alice under the announcement: {:.1} dB",
        db(during)
    );
    assert!(
        db(after).abs() <= 1.5,
        "alice afterwards: {:.1} dB",
        db(after)
    );
    alice.stop().await?;
    bob.stop().await?;
    Ok(())
}
