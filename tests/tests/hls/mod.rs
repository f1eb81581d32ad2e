//! HLS (docs/broadcast.md, "HLS") with a player we did not write: ffmpeg plays a room's
//! `/hls/{room}/index.m3u8` while a Rust WebRTC client talks a tone in the room, and hears the tone at its
//! level with no gap across segment boundaries; the playlist and segments carry what an origin behind a
//! CDN needs; bad requests get their status. A room whose last member leaves goes on as silence; a room
//! closed and made again is a discontinuity, numbered on by the clock.

use std::time::Duration;

use anyhow::{ensure, Context};
use chorus_tests::{Server, SAMPLE_RATE};
use media_core::audio::{rms_dbov, ToneAnalysis};

use crate::broadcast::{header, open_listener, read_for, server_with_talker, OTHER_TONES, TONE};

/// 1 s segments (the shortest whole target duration): the test waits less for each.
const CONFIG: &str = "[hls]\nsegment_ms = 1000\nwindow_segments = 4";

/// A GET with `headers` on a connection the server closes after it: (status, head, body).
async fn get(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    let (mut s, head, mut body) = open_listener(server, path, &all, None).await?;
    body.extend(read_for(&mut s, Duration::from_secs(10)).await?);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("a status")?;
    Ok((status, head, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_hls_ffmpeg_plays_the_mix_without_gaps_and_caches_are_told_the_truth(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    // A protected room (the default): HLS takes the listener mounts' tokens.
    let (server, _signal, client, config) =
        server_with_talker("show", &format!("public = false\n{CONFIG}")).await?;
    let token = server.token("show", "viewer", &["--no-publish"])?;

    // ffmpeg plays the live playlist (the first request waits for the first segment): four seconds span
    // at least three segment boundaries.
    let url = format!("http://{}/hls/show/index.m3u8?token={token}", server.http);
    let pcm = crate::ffmpeg_pcm(&url, Some(4))
        .await
        .with_context(|| server.log_tail())?;
    ensure!(
        pcm.len() >= 3 * SAMPLE_RATE as usize,
        "ffmpeg decoded {} samples",
        pcm.len()
    );
    // Past the decoder's first packets: Alice's tone, nothing else, at her level (0.3 ≈ −13.5 dBov).
    let audio = &pcm[SAMPLE_RATE as usize / 10..];
    let analysis = ToneAnalysis::analyze(audio, SAMPLE_RATE, &OTHER_TONES);
    assert_eq!(analysis.present_default(), vec![TONE], "{analysis:?}");
    assert!(
        (-20.0..-9.0).contains(&analysis.total_dbov),
        "level {analysis:?}"
    );
    // Continuity: no 10 ms stretch anywhere (segment boundaries included) is quieter than the tone by
    // 10 dB — a missing or repeated-silence packet would be.
    let quiet: Vec<usize> = audio
        .chunks_exact(480)
        .enumerate()
        .filter(|(_, w)| rms_dbov(w) < analysis.total_dbov - 10.0)
        .map(|(i, _)| i * 10)
        .collect();
    assert!(quiet.is_empty(), "quiet stretches at ms {quiet:?}");

    // The playlist: a live media playlist of fMP4 segments, the token carried to every URI.
    let path = format!("/hls/show/index.m3u8?token={token}");
    let (status, head, body) = get(&server, &path, &[]).await?;
    assert_eq!(status, 200, "{head}");
    let text = String::from_utf8(body)?;
    assert_eq!(
        header(&head, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&head, "cache-control"), Some("private, max-age=1"));
    for tag in [
        "#EXT-X-TARGETDURATION:1\n",
        "#EXT-X-MEDIA-SEQUENCE:",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXTINF:1.000,\n",
    ] {
        assert!(text.contains(tag), "{tag} in {text}");
    }
    assert!(text.contains(&format!("#EXT-X-MAP:URI=\"init.mp4?token={token}\"")));
    let segments: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(".m4s"))
        .collect();
    assert!(segments.len() >= 3, "{text}");
    let first: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .context("a media sequence")?
        .parse()?;
    assert_eq!(segments[0], format!("{first}.m4s?token={token}"));

    // A segment: immutable, its ETag honoured with a 304.
    let seg_path = format!("/hls/show/{}", segments[segments.len() - 1]);
    let (status, head, body) = get(&server, &seg_path, &[]).await?;
    assert_eq!(status, 200, "{head}");
    assert_eq!(&body[4..8], b"moof");
    assert_eq!(
        header(&head, "cache-control"),
        Some("private, max-age=86400, immutable")
    );
    assert!(header(&head, "last-modified").is_some());
    let etag = header(&head, "etag").context("an ETag")?.to_owned();
    let (status, _, body) = get(&server, &seg_path, &[("If-None-Match", &etag)]).await?;
    assert_eq!((status, body.len()), (304, 0));

    // Bad input.
    let bad = [
        ("/hls/show/index.m3u8".to_owned(), 401, "no token"),
        (
            "/hls/show/index.m3u8?token=not-a-token".to_owned(),
            401,
            "a bad token",
        ),
        (
            format!("/hls/nowhere/index.m3u8?token={token}"),
            404,
            "an unknown room",
        ),
        (
            format!("/hls/show/1.m4s?token={token}"),
            404,
            "a segment long gone",
        ),
        (
            format!("/hls/show/{}.m4s?token={token}", first + 1000),
            404,
            "a segment not yet made",
        ),
        (
            format!("/hls/show/index.mp4?token={token}"),
            404,
            "no such file",
        ),
        (
            format!(
                "/hls/show/index.m3u8?token={token}&_HLS_msn={}",
                first + 100
            ),
            400,
            "_HLS_msn far ahead",
        ),
        (
            format!("/hls/show/index.m3u8?token={token}&_HLS_msn=x"),
            400,
            "a malformed _HLS_msn",
        ),
        (
            format!("/hls/show/index.m3u8?token={token}&_HLS_part=0"),
            400,
            "_HLS_part alone",
        ),
    ];
    for (path, expected, what) in bad {
        let (status, head, _) = get(&server, &path, &[]).await?;
        assert_eq!(status, expected, "{what}: {head}");
    }
    // A blocking reload for the next segment returns once it is complete, with it.
    let last: u64 = segments[segments.len() - 1]
        .split('.')
        .next()
        .context("a number")?
        .parse()?;
    let path = format!("/hls/show/index.m3u8?token={token}&_HLS_msn={}", last + 1);
    let (status, _, body) = get(&server, &path, &[]).await?;
    assert_eq!(status, 200);
    let text = String::from_utf8(body)?;
    assert!(text.contains(&format!("\n{}.m4s?", last + 1)));

    // LL-HLS (500 ms parts by default): the newest segments' parts, then the open one's, and a hint at
    // the next part, whose request waits until it is made.
    assert!(
        text.contains("#EXT-X-PART-INF:PART-TARGET=0.500\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "#EXT-X-PART:DURATION=0.500,URI=\"{}.1.m4s?token={token}\",INDEPENDENT=YES\n",
            last + 1
        )),
        "{text}"
    );
    let hint = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .and_then(|l| l.strip_suffix('"'))
        .context("a preload hint")?;
    let (status, head, body) = get(&server, &format!("/hls/show/{hint}"), &[]).await?;
    assert_eq!(status, 200, "{head}");
    assert_eq!(&body[4..8], b"moof");
    let (hint_msn, hint_part) = hint
        .split('.')
        .take(2)
        .map(str::parse::<u64>)
        .collect::<Result<Vec<_>, _>>()
        .map(|v| (v[0], v[1]))?;
    // A blocking reload for the part after it.
    let path = format!(
        "/hls/show/index.m3u8?token={token}&_HLS_msn={hint_msn}&_HLS_part={}",
        hint_part + 1
    );
    let (status, _, body) = get(&server, &path, &[]).await?;
    assert_eq!(status, 200);
    let text = String::from_utf8(body)?;
    let next = if hint_part == 0 {
        format!("{hint_msn}.1.m4s")
    } else {
        format!("{}.0.m4s", hint_msn + 1)
    };
    assert!(
        text.contains(&format!("URI=\"{next}?token=")),
        "{next} in {text}"
    );
    let (status, _, _) = get(
        &server,
        &format!("/hls/show/{}.0.m4s?token={token}", hint_msn + 50),
        &[],
    )
    .await?;
    assert_eq!(status, 404, "a part far ahead is not waited for");

    assert!(server.metric("chorus_hls_segments_total").await? >= 4.0);
    assert!(
        server
            .metric("chorus_hls_requests_total{kind=\"playlist\"}")
            .await?
            >= 3.0
    );
    assert!(
        server
            .metric("chorus_hls_refused_total{reason=\"unauthorized\"}")
            .await?
            >= 2.0
    );
    assert!(
        server
            .metric("chorus_hls_bytes_total{kind=\"segment\"}")
            .await?
            > 0.0
    );
    assert_eq!(server.metric("chorus_hls_streams").await?, 1.0);
    client.stop().await?;
    let _ = std::fs::remove_file(config);
    Ok(())
}

/// The playlist's segment numbers, and the index of the first one after an `EXT-X-DISCONTINUITY`.
fn numbers(text: &str) -> anyhow::Result<(Vec<u64>, Option<usize>)> {
    let mut numbers = Vec::new();
    let mut discontinuity = None;
    for line in text.lines() {
        if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = Some(numbers.len());
        } else if !line.starts_with('#') {
            numbers.push(line.trim_end_matches(".m4s").parse()?);
        }
    }
    Ok((numbers, discontinuity))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_hls_a_room_left_empty_goes_on_and_a_closed_one_is_a_discontinuity(
) -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let (server, signal, client, config) =
        server_with_talker("talk", &format!("public = true\n{CONFIG}")).await?;
    let playlist = || async {
        let (status, _, body) = get(&server, "/hls/talk/index.m3u8", &[]).await?;
        ensure!(status == 200, "playlist: {status}");
        Ok::<_, anyhow::Error>(String::from_utf8(body)?)
    };
    // The stream starts with the first playlist request.
    let (seen, _) = numbers(&playlist().await?)?;
    let last = *seen.last().context("a segment")?;

    // Alice leaves: the empty room goes on as silence, without a discontinuity.
    client.stop().await?;
    drop(signal);
    // Two segments on (the most a blocking reload may ask ahead).
    let path = format!("/hls/talk/index.m3u8?_HLS_msn={}", last + 2);
    let (status, _, body) = get(&server, &path, &[]).await?;
    assert_eq!(status, 200);
    let text = String::from_utf8(body)?;
    let (seen, discontinuity) = numbers(&text)?;
    assert_eq!(discontinuity, None, "{text}");
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{text}");

    // The room is closed, and made again 2.5 s later where Alice talks again: a discontinuity, the
    // numbers jump with the clock over the break.
    let admin = server.admin_token()?;
    let (status, reply) = server
        .admin("DELETE", "/admin/v1/rooms/talk", Some(&admin), None)
        .await?;
    ensure!(
        status == 204 || status == 200,
        "closing the room: {status} {reply}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server
        .create_room(&serde_json::json!({"name": "talk", "mode": "mix"}))
        .await?;
    let token = server.token("talk", "alice", &["--name", "Alice"])?;
    let mut signal = chorus_tests::Signal::connect(&server.ws_url()).await?;
    let joined = signal.join(&token, "talk").await?;
    let slots = joined["room"]["slots"].as_u64().context("slots")? as usize;
    let mut client = chorus_tests::AudioClient::start(&mut signal, slots, TONE, 0.3).await?;
    client.wait_connected(Duration::from_secs(5)).await?;
    let mut text = String::new();
    for _ in 0..20 {
        text = playlist().await?;
        // A complete segment after the discontinuity.
        let (seen, discontinuity) = numbers(&text)?;
        if discontinuity.is_some_and(|d| d < seen.len()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (seen, discontinuity) = numbers(&text)?;
    let at = discontinuity.with_context(|| format!("a discontinuity in {text}"))?;
    ensure!(
        at > 0 && at < seen.len(),
        "segments around the discontinuity: {text}"
    );
    assert!(seen.windows(2).all(|w| w[1] > w[0]), "{text}");
    assert!(
        seen[at] >= seen[at - 1] + 3,
        "the numbers followed the clock over the break: {text}"
    );
    // The first segment after the break, behind the init segment, is a file ffmpeg decodes: Alice again.
    let (status, _, mut file) = get(&server, "/hls/talk/init.mp4", &[]).await?;
    assert_eq!(status, 200);
    let (status, _, segment) = get(&server, &format!("/hls/talk/{}.m4s", seen[at]), &[]).await?;
    assert_eq!(status, 200);
    file.extend_from_slice(&segment);
    let path = std::env::temp_dir().join(format!("chorus-hls-{}.mp4", std::process::id()));
    std::fs::write(&path, &file)?;
    let pcm = crate::ffmpeg_pcm(&path, None).await;
    let _ = std::fs::remove_file(&path);
    let pcm = pcm?;
    assert!(
        pcm.len() >= SAMPLE_RATE as usize * 9 / 10,
        "{} samples",
        pcm.len()
    );
    let analysis =
        ToneAnalysis::analyze(&pcm[SAMPLE_RATE as usize / 10..], SAMPLE_RATE, &OTHER_TONES);
    assert_eq!(analysis.present_default(), vec![TONE], "{analysis:?}");
    client.stop().await?;
    let _ = std::fs::remove_file(config);
    Ok(())
}
