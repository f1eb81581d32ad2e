//! Recordings (docs/broadcast.md, "Recording") with the real binary and ffmpeg: a mixed room where Alice
//! speaks (a tone, a pause, a tone) recorded as a mix and as her own stream; the files listed, served
//! with ranges, decoded by ffmpeg with the right length and the tone; the side file's timeline; a
//! `kill -9` during a recording loses at most its last page, and the next start marks it interrupted and
//! enforces retention (the oldest goes); bad ids, ranges, rooms and participants get their errors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chorus_tests::{AudioClient, MediaOptions, Mic, Server, Signal, SAMPLE_RATE};
use media_core::audio::ToneAnalysis;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TONE: f32 = 660.0;
const OTHER_TONES: [f32; 3] = [440.0, 660.0, 880.0];

/// A fresh recording directory and a config file enabling recording into it (plus `extra` lines).
fn setup(name: &str, extra: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let base = std::env::temp_dir().join(format!("chorus-rec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join("recordings");
    std::fs::create_dir_all(&base)?;
    let config = base.join("chorus.toml");
    std::fs::write(
        &config,
        format!(
            "[recording]\nenabled = true\ndir = \"{}\"\n{extra}\n",
            dir.display()
        ),
    )?;
    Ok((base, config))
}

async fn start(config: &Path) -> anyhow::Result<Server> {
    Server::start(&["--config", config.to_str().context("UTF-8 path")?]).await
}

/// A raw HTTP/1.1 GET with headers: (status, head, body bytes).
async fn fetch(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(server.http).await?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        server.http
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await??;
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("a response head")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("a status")?;
    Ok((status, head, buf[end + 4..].to_vec()))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A file decoded by ffmpeg (mono, 48 kHz), as samples in -1..1.
async fn ffmpeg_decode(file: &Path) -> anyhow::Result<Vec<f32>> {
    crate::ffmpeg_pcm(file, None)
        .await
        .with_context(|| format!("decoding {}", file.display()))
}

fn seconds(pcm: &[f32]) -> f64 {
    pcm.len() as f64 / f64::from(SAMPLE_RATE)
}

/// `secs` of the tone at 0.3, as PCM to speak.
fn tone(secs: f32) -> Vec<f32> {
    let n = (secs * SAMPLE_RATE as f32) as usize;
    (0..n)
        .map(|i| 0.3 * (std::f32::consts::TAU * TONE * i as f32 / SAMPLE_RATE as f32).sin())
        .collect()
}

/// A room of `mode` made through the admin API, and Alice in it with `mic`; her sid.
async fn room_with_alice(
    server: &Server,
    room: &str,
    mic: Mic,
) -> anyhow::Result<(Signal, AudioClient, String)> {
    server
        .create_room(&json!({"name": room, "mode": "mix"}))
        .await?;
    let token = server.token(room, "alice", &["--name", "Alice"])?;
    let mut signal = Signal::connect(&server.ws_url()).await?;
    let joined = signal.join(&token, room).await?;
    let sid = joined["participant"]["sid"]
        .as_str()
        .context("sid")?
        .to_owned();
    let options = MediaOptions {
        slots: 1,
        mic,
        via: None,
        play_slot: None,
        red: 0,
    };
    let mut client = AudioClient::start_with(&mut signal, options).await?;
    client
        .wait_connected(Duration::from_secs(5))
        .await
        .map_err(|e| e.context(server.log_tail()))?;
    Ok((signal, client, sid))
}

fn json_of(body: &str) -> anyhow::Result<Value> {
    serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_recording_a_mix_and_a_participant_listed_served_with_ranges_and_decoded(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (base, config) = setup("mix", "")?;
    let server = start(&config).await?;
    let admin = server.admin_token()?;
    let (_signal, client, sid) = room_with_alice(&server, "show", Mic::Speech).await?;

    // Bad input first: a room that does not exist, a participant who is not there, bad bodies.
    let post = |room: &str, body: &str| {
        let (path, body) = (
            format!("/admin/v1/rooms/{room}/recordings"),
            body.to_owned(),
        );
        let (server, admin) = (&server, admin.clone());
        async move { server.admin("POST", &path, Some(&admin), Some(&body)).await }
    };
    let (status, reply) = post("nowhere", "{}").await?;
    assert_eq!(status, 404, "{reply}");
    assert!(reply.contains("room_not_found"), "{reply}");
    let (status, reply) = post("show", r#"{"participant": "PA_000000000bad"}"#).await?;
    assert_eq!(status, 404, "{reply}");
    assert!(reply.contains("participant_not_found"), "{reply}");
    let (status, reply) = post("show", r#"{"participant": 7}"#).await?;
    assert_eq!(status, 400, "{reply}");

    // The mix and Alice's own stream.
    let (status, reply) = post("show", "{}").await?;
    assert_eq!(status, 201, "{reply}");
    let mix = json_of(&reply)?;
    assert_eq!(mix["state"], "recording");
    assert_eq!(mix["kind"], "mix");
    let (status, reply) = post("show", "{}").await?;
    assert_eq!(status, 409, "the mix is recorded already: {reply}");
    assert!(reply.contains("recording_exists"), "{reply}");
    let (status, reply) = post("show", &json!({"participant": sid}).to_string()).await?;
    assert_eq!(status, 201, "{reply}");
    let own = json_of(&reply)?;
    assert_eq!(own["kind"], "participant");
    assert_eq!(own["participant"], sid.as_str());
    let started = Instant::now();

    // Alice: 1 s of tone, 1 s of silence (DTX: nothing sent), 1 s of tone.
    let mut speech = tone(1.0);
    speech.extend(std::iter::repeat_n(0.0, SAMPLE_RATE as usize));
    speech.extend(tone(1.0));
    client.speak(Arc::from(speech), 0)?;
    client.wait_spoken(Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, reply) = server
        .admin(
            "DELETE",
            "/admin/v1/rooms/show/recordings",
            Some(&admin),
            None,
        )
        .await?;
    let recorded_for = started.elapsed().as_secs_f64();
    assert_eq!(status, 200, "{reply}");
    let stopped = json_of(&reply)?;
    assert_eq!(
        stopped["recordings"].as_array().map(Vec::len),
        Some(2),
        "{stopped}"
    );

    let (status, reply) = server
        .admin("GET", "/admin/v1/recordings", Some(&admin), None)
        .await?;
    assert_eq!(status, 200, "{reply}");
    let list = json_of(&reply)?;
    let find = |id: &Value| -> anyhow::Result<Value> {
        list["recordings"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == *id))
            .cloned()
            .with_context(|| format!("{id} listed in {list}"))
    };
    let mix = find(&mix["id"])?;
    let own = find(&own["id"])?;
    for r in [&mix, &own] {
        assert_eq!(r["state"], "stopped", "{r}");
        assert_eq!(r["stop_reason"], "request", "{r}");
        assert!(
            r["ended_at_ms"].as_u64() >= r["started_at_ms"].as_u64(),
            "{r}"
        );
    }
    // The mix runs from the start to the stop, silence included; Alice's own stream from her first
    // packet to her last, the pause filled.
    let mix_secs = mix["duration_ms"].as_f64().context("duration")? / 1000.0;
    assert!(
        (mix_secs - recorded_for).abs() < 0.5,
        "the mix recorded {mix_secs} s of {recorded_for} s"
    );
    let own_secs = own["duration_ms"].as_f64().context("duration")? / 1000.0;
    assert!(
        (2.7..=3.4).contains(&own_secs),
        "Alice's stream: {own_secs} s"
    );

    // The file: whole, ranges, If-Range, a range past the end, a malformed one.
    let id = mix["id"].as_str().context("id")?;
    let bearer = format!("Bearer {admin}");
    let auth = ("Authorization", bearer.as_str());
    let audio = format!("/admin/v1/recordings/{id}/audio");
    let (status, head, whole) = fetch(&server, &audio, &[auth]).await?;
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("audio/ogg"));
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    assert_eq!(whole.len() as u64, mix["bytes"].as_u64().context("bytes")?);
    assert_eq!(&whole[..4], b"OggS");
    let etag = header(&head, "etag").context("an ETag")?.to_owned();
    let (status, head, part) = fetch(&server, &audio, &[auth, ("Range", "bytes=100-199")]).await?;
    assert_eq!(status, 206, "{head}");
    assert_eq!(part, whole[100..200]);
    let content_range = format!("bytes 100-199/{}", whole.len());
    assert_eq!(header(&head, "content-range"), Some(content_range.as_str()));
    let (status, _, tail) = fetch(&server, &audio, &[auth, ("Range", "bytes=-10")]).await?;
    assert_eq!(status, 206);
    assert_eq!(tail, whole[whole.len() - 10..]);
    let if_range = [auth, ("Range", "bytes=0-9"), ("If-Range", etag.as_str())];
    let (status, _, first) = fetch(&server, &audio, &if_range).await?;
    assert_eq!((status, first.as_slice()), (206, &whole[..10]));
    let stale = [auth, ("Range", "bytes=0-9"), ("If-Range", "\"other\"")];
    let (status, _, all) = fetch(&server, &audio, &stale).await?;
    assert_eq!(
        (status, all.len()),
        (200, whole.len()),
        "If-Range did not match"
    );
    let past = format!("bytes={}-", whole.len());
    let (status, head, body) = fetch(&server, &audio, &[auth, ("Range", past.as_str())]).await?;
    assert_eq!(status, 416, "{head}");
    let unsatisfied = format!("bytes */{}", whole.len());
    assert_eq!(header(&head, "content-range"), Some(unsatisfied.as_str()));
    assert!(String::from_utf8_lossy(&body).contains("range_not_satisfiable"));
    let (status, _, _) = fetch(&server, &audio, &[auth, ("Range", "bytes=oops")]).await?;
    assert_eq!(status, 416, "a malformed range");
    let (status, _, _) = fetch(&server, &audio, &[]).await?;
    assert_eq!(status, 401, "admin-token protected");
    for bad in ["0000000000000000dead", "nonsense", "..%2F..%2Fetc%2Fpasswd"] {
        let (status, head, _) = fetch(
            &server,
            &format!("/admin/v1/recordings/{bad}/audio"),
            &[auth],
        )
        .await?;
        assert_eq!(status, 404, "{bad}: {head}");
    }

    // ffmpeg decodes both files: the right length, the tone.
    let file = base.join("mix.opus");
    std::fs::write(&file, &whole)?;
    let pcm = ffmpeg_decode(&file).await?;
    assert!(
        (seconds(&pcm) - mix_secs).abs() < 0.1,
        "ffmpeg decoded {} s of a {mix_secs} s recording",
        seconds(&pcm)
    );
    let analysis = ToneAnalysis::analyze(&pcm, SAMPLE_RATE, &OTHER_TONES);
    assert_eq!(analysis.present_default(), vec![TONE], "{analysis:?}");
    let own_id = own["id"].as_str().context("id")?;
    let own_file = base.join("recordings").join(format!("{own_id}.opus"));
    let pcm = ffmpeg_decode(&own_file).await?;
    assert!(
        (seconds(&pcm) - own_secs).abs() < 0.1,
        "{} s",
        seconds(&pcm)
    );
    // Tone, pause, tone: the middle second is silent, the others are not.
    let second = |k: usize| &pcm[k * SAMPLE_RATE as usize..(k + 1) * SAMPLE_RATE as usize];
    let energy = |s: &[f32]| s.iter().map(|x| x * x).sum::<f32>() / s.len() as f32;
    assert!(energy(&second(0)[4800..]) > 0.01, "the first tone");
    assert!(energy(&second(1)[9600..38400]) < 1e-4, "the pause");
    assert!(energy(&second(2)[..38400]) > 0.01, "the second tone");

    // The side file: who was there, who spoke when (the mix: two spurts, the pause between them).
    let (status, reply) = server
        .admin(
            "GET",
            &format!("/admin/v1/recordings/{id}/metadata"),
            Some(&admin),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{reply}");
    let meta = json_of(&reply)?;
    assert_eq!(meta["format"], "chorus-recording/1");
    assert_eq!(meta["room"], "show");
    assert_eq!(meta["participants"][0]["name"], "Alice", "{meta}");
    let timeline = meta["timeline"].as_array().context("timeline")?;
    assert_eq!(timeline.len(), 2, "two spurts: {meta}");
    for s in timeline {
        assert_eq!(s["name"], "Alice");
        let ms = s["end_ms"].as_u64().unwrap_or(0) - s["start_ms"].as_u64().unwrap_or(0);
        assert!((800..=1300).contains(&ms), "a spurt of about 1 s: {s}");
    }
    // The static part is in the file's OpusTags too, as ffprobe reads them.
    let probe = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream_tags", "-of", "json"])
        .arg(&file)
        .output()
        .await?;
    let tags = json_of(&String::from_utf8_lossy(&probe.stdout))?;
    let tags = &tags["streams"][0]["tags"];
    assert_eq!(tags["CHORUS_ROOM"], "show", "{tags}");
    assert_eq!(tags["CHORUS_RECORDING"], id, "{tags}");
    assert_eq!(tags["CHORUS_KIND"], "mix", "{tags}");
    assert_eq!(
        tags["CHORUS_PRESENT"],
        format!("{sid} Alice").as_str(),
        "{tags}"
    );

    // Deleting removes the files; the id is then unknown.
    let (status, _) = server
        .admin(
            "DELETE",
            &format!("/admin/v1/recordings/{own_id}"),
            Some(&admin),
            None,
        )
        .await?;
    assert_eq!(status, 204);
    assert!(!own_file.exists());
    let (status, reply) = server
        .admin(
            "GET",
            &format!("/admin/v1/recordings/{own_id}"),
            Some(&admin),
            None,
        )
        .await?;
    assert_eq!(status, 404, "{reply}");
    assert!(reply.contains("recording_not_found"));
    assert_eq!(
        server
            .metric("chorus_recordings_started_total{kind=\"mix\"}")
            .await?,
        1.0
    );
    assert_eq!(server.metric("chorus_recordings_active").await?, 0.0);
    client.stop().await?;
    drop(server);
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_recording_a_kill_9_loses_at_most_the_last_page_and_retention_deletes_the_oldest(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (base, config) = setup("kill", "")?;
    let mut server = start(&config).await?;
    let admin = server.admin_token()?;
    let tone = Mic::Tone {
        freq_hz: TONE,
        amplitude: 0.3,
    };
    let (_signal, client, _) = room_with_alice(&server, "live", tone).await?;
    let path = "/admin/v1/rooms/live/recordings";
    // An older recording, ended.
    let (status, reply) = server.admin("POST", path, Some(&admin), Some("{}")).await?;
    assert_eq!(status, 201, "{reply}");
    let older = json_of(&reply)?["id"].as_str().context("id")?.to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, reply) = server.admin("DELETE", path, Some(&admin), None).await?;
    assert_eq!(status, 200, "{reply}");
    // The one the crash cuts.
    let (status, reply) = server.admin("POST", path, Some(&admin), Some("{}")).await?;
    assert_eq!(status, 201, "{reply}");
    let started = Instant::now();
    let cut = json_of(&reply)?["id"].as_str().context("id")?.to_owned();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    server.signal(libc::SIGKILL)?;
    let ran = started.elapsed().as_secs_f64();
    server.wait_exit(Duration::from_secs(5)).await?;
    client.stop().await.ok();

    let dir = base.join("recordings");
    let cut_file = dir.join(format!("{cut}.opus"));
    let pcm = ffmpeg_decode(&cut_file).await?;
    let kept = seconds(&pcm);
    eprintln!("kill -9 after {ran:.2} s of recording: {kept:.2} s decodable");
    assert!(
        kept >= ran - 1.0 - 0.25 && kept <= ran + 0.1,
        "{kept} s kept of {ran} s recorded before the kill: at most the last page (1 s) lost"
    );
    let analysis = ToneAnalysis::analyze(&pcm[pcm.len() / 3..], SAMPLE_RATE, &OTHER_TONES);
    assert_eq!(analysis.present_default(), vec![TONE], "{analysis:?}");

    // The next start: the cut recording is marked interrupted with what it holds; retention (total size
    // over the limit) deletes the oldest ended recording and keeps the newer.
    let older_bytes = std::fs::metadata(dir.join(format!("{older}.opus")))?.len();
    let cut_bytes = std::fs::metadata(&cut_file)?.len();
    std::fs::write(
        &config,
        format!(
            "[recording]\nenabled = true\ndir = \"{}\"\nretention_max_total_bytes = {}\n",
            dir.display(),
            cut_bytes + older_bytes / 2
        ),
    )?;
    let server = start(&config).await?;
    let (status, reply) = server
        .admin("GET", "/admin/v1/recordings", Some(&admin), None)
        .await?;
    assert_eq!(status, 200, "{reply}");
    let list = json_of(&reply)?;
    let recordings = list["recordings"].as_array().context("recordings")?;
    assert_eq!(recordings.len(), 1, "the oldest deleted: {list}");
    let r = &recordings[0];
    assert_eq!(r["id"], cut.as_str());
    assert_eq!(r["state"], "interrupted", "{r}");
    assert_eq!(r["stop_reason"], "crash", "{r}");
    let ms = r["duration_ms"].as_f64().context("duration")?;
    assert!((ms / 1000.0 - kept).abs() < 0.05, "{r} vs {kept} s decoded");
    assert!(!dir.join(format!("{older}.opus")).exists());
    assert!(!dir.join(format!("{older}.json")).exists());
    assert_eq!(
        server
            .metric("chorus_recordings_deleted_total{reason=\"size\"}")
            .await?,
        1.0
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
