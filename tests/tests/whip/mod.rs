//! WHIP publishers and WHEP listeners (docs/broadcast.md, "WHIP and WHEP") over HTTP with a str0m client
//! (Debian's simple-whip-client cannot run on Debian 12: its libsoup2 and libnice's libsoup3 abort in one
//! process): a publisher is heard by the room and leaves on `DELETE`; a listener hears a mixed room, and
//! every talker of a forwarding room (its mix, one encode shared by the players); bad
//! requests get their statuses; a publisher that never connects leaves at the connect timeout.

use std::time::Duration;

use anyhow::Context;
use chorus_tests::{http_exchange, AudioClient, MediaOptions, Mic, Server, SAMPLE_RATE};
use media_core::audio::ToneAnalysis;

use super::{join, SECONDS};

const PUBLISHER_TONE: f32 = 523.0;

fn publisher() -> MediaOptions {
    MediaOptions {
        slots: 0,
        mic: Mic::Tone {
            freq_hz: PUBLISHER_TONE,
            amplitude: 0.3,
        },
        via: None,
        play_slot: None,
        red: 0,
    }
}

fn listener() -> MediaOptions {
    MediaOptions {
        slots: 1,
        mic: Mic::Off,
        via: None,
        play_slot: None,
        red: 0,
    }
}

/// The tones present in the one stream `client` heard the most of (its last three quarters).
fn tones_heard(client: &AudioClient, candidates: &[f32]) -> anyhow::Result<Vec<f32>> {
    let heard = client.heard.lock().expect("heard lock");
    let pcm = heard
        .pcm_by_csrc
        .values()
        .max_by_key(|p| p.len())
        .context("nothing heard")?;
    anyhow::ensure!(
        pcm.len() > SAMPLE_RATE as usize,
        "heard only {} samples",
        pcm.len()
    );
    Ok(ToneAnalysis::analyze(&pcm[pcm.len() / 4..], SAMPLE_RATE, candidates).present_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_whip_a_publisher_is_heard_by_the_room_and_leaves_on_delete() -> anyhow::Result<()>
{
    let _alone = chorus_tests::real_time_call().await;
    let server = Server::start(&[]).await?;
    let mut bob = join(&server, "stage", "bob", 0.0, 0.0).await?;
    bob.client
        .wait_connected(SECONDS)
        .await
        .map_err(|e| e.context(server.log_tail()))?;
    let token = server.token("stage", "obs", &["--name", "OBS"])?;
    let (mut whip, created) =
        AudioClient::http_offer(server.http, "/whip/stage", &token, false, publisher())
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    assert_eq!(created.header("content-type"), Some("application/sdp"));
    assert_eq!(created.header("access-control-allow-origin"), Some("*"));
    assert!(created.header("etag").is_some(), "{created:?}");
    let location = created.header("location").context("Location")?.to_owned();
    assert!(location.starts_with("/whip/stage/"), "{location}");
    for line in ["a=ice-lite", "a=end-of-candidates", "a=recvonly"] {
        assert!(created.body.contains(line), "{line}: {}", created.body);
    }
    whip.wait_connected(SECONDS)
        .await
        .map_err(|e| e.context(server.log_tail()))?;

    // A participant like any other: joined with its token's name, listed, heard.
    let joined = bob.signal.expect("participant_joined", SECONDS).await?;
    assert_eq!(joined["participant"]["name"], "OBS");
    let sid = joined["participant"]["sid"]
        .as_str()
        .context("sid")?
        .to_owned();
    let admin = server.admin_token()?;
    let (status, body) = server
        .admin(
            "GET",
            "/admin/v1/rooms/stage/participants",
            Some(&admin),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body)?;
    assert!(
        listed.to_string().contains(&sid),
        "the publisher is listed: {listed}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        tones_heard(&bob.client, &[PUBLISHER_TONE, 440.0])?,
        vec![PUBLISHER_TONE]
    );
    // It hears nothing (a publisher is sent no audio).
    assert!(whip.heard.lock().expect("heard lock").packets.is_empty());
    assert_eq!(
        server.metric("chorus_whip_sessions{kind=\"whip\"}").await?,
        1.0
    );

    // DELETE ends it: bob sees it leave; the resource is gone.
    let r = http_exchange(server.http, "DELETE", &location, &[], None).await?;
    assert_eq!(r.status, 200, "{r:?}");
    let left = bob.signal.expect("participant_left", SECONDS).await?;
    assert_eq!(
        (left["sid"].as_str(), left["reason"].as_str()),
        (Some(sid.as_str()), Some("left"))
    );
    let r = http_exchange(server.http, "DELETE", &location, &[], None).await?;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        server.metric("chorus_whip_sessions{kind=\"whip\"}").await?,
        0.0
    );
    assert_eq!(
        server
            .metric("chorus_whip_sessions_ended_total{kind=\"whip\",reason=\"deleted\"}")
            .await?,
        1.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_whep_a_listener_hears_a_mixed_room() -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let server = Server::start(&["--room-mode", "mix"]).await?;
    let mut alice = join(&server, "show", "alice", 440.0, 0.3).await?;
    alice
        .client
        .wait_connected(SECONDS)
        .await
        .map_err(|e| e.context(server.log_tail()))?;
    let token = server.token("show", "viewer", &[])?;
    let (mut whep, created) =
        AudioClient::http_offer(server.http, "/whep/show", &token, true, listener())
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    assert!(created.body.contains("a=sendonly"), "{}", created.body);
    whep.wait_connected(SECONDS)
        .await
        .map_err(|e| e.context(server.log_tail()))?;
    let joined = alice.signal.expect("participant_joined", SECONDS).await?;
    assert_eq!(joined["participant"]["name"], "viewer");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tones_heard(&whep, &[440.0, PUBLISHER_TONE])?, vec![440.0]);
    let location = created.header("location").context("Location")?;
    assert!(location.starts_with("/whep/show/"), "{location}");
    // The WHIP endpoint does not know WHEP sessions.
    let whip_path = location.replacen("/whep/", "/whip/", 1);
    let r = http_exchange(server.http, "DELETE", &whip_path, &[], None).await?;
    assert_eq!(r.status, 404, "{r:?}");
    let r = http_exchange(server.http, "DELETE", location, &[], None).await?;
    assert_eq!(r.status, 200, "{r:?}");
    Ok(())
}

/// A WHEP player in a forwarding room hears everyone (the room's mix from its forward mixer), not one
/// slot; two players share one encode per tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_whep_players_hear_every_talker_of_a_forwarding_room() -> anyhow::Result<()> {
    let _alone = chorus_tests::real_time_call().await;
    let server = Server::start(&["--room-mode", "forward"]).await?;
    let mut alice = join(&server, "panel", "alice", 440.0, 0.3).await?;
    let mut carol = join(&server, "panel", "carol", 660.0, 0.3).await?;
    for p in [&mut alice, &mut carol] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    let mut players = Vec::new();
    for viewer in ["viewer-1", "viewer-2"] {
        let token = server.token("panel", viewer, &[])?;
        let options = MediaOptions {
            play_slot: Some(0),
            ..listener()
        };
        let (mut player, created) =
            AudioClient::http_offer(server.http, "/whep/panel", &token, true, options)
                .await
                .map_err(|e| e.context(server.log_tail()))?;
        assert_eq!(
            created.body.matches("m=audio").count(),
            1,
            "{}",
            created.body
        );
        player
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
        players.push(player);
    }
    let ticks_before = server.metric("chorus_mixer_ticks_total").await?;
    let encoded_before = server.metric("chorus_mixer_frames_encoded_total").await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ticks = server.metric("chorus_mixer_ticks_total").await? - ticks_before;
    let encoded = server.metric("chorus_mixer_frames_encoded_total").await? - encoded_before;
    for player in &players {
        let pcm = {
            let heard = player.heard.lock().expect("heard lock");
            heard.ear.as_ref().map(|e| e.rtp_time()).unwrap_or_default()
        };
        anyhow::ensure!(
            pcm.len() > 2 * SAMPLE_RATE as usize,
            "a player heard {} samples\n{}",
            pcm.len(),
            server.log_tail()
        );
        let a = ToneAnalysis::analyze(&pcm[SAMPLE_RATE as usize..], SAMPLE_RATE, &[440.0, 660.0]);
        assert_eq!(a.present_default(), vec![440.0, 660.0], "{a:?}");
    }
    // One shared encode per tick for both players (not one each).
    assert!(ticks > 100.0, "{ticks} mixer ticks");
    assert!(
        encoded <= ticks * 1.05,
        "{encoded} frames encoded in {ticks} ticks"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_refuses_bad_requests_with_their_statuses() -> anyhow::Result<()> {
    // A publisher that never connects is dropped at the connect timeout (2 s here).
    let config = std::env::temp_dir().join(format!("chorus-whip-{}.toml", std::process::id()));
    std::fs::write(&config, "[media]\nconnect_timeout_ms = 2000\n")?;
    let server = Server::start(&["--config", &config.to_string_lossy()]).await?;
    let _ = std::fs::remove_file(&config);
    let token = server.token("stage", "obs", &[])?;
    let auth = format!("Bearer {token}");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let (_, offer) = media_core::client::ClientPeer::new(
        std::time::Instant::now(),
        media_core::client::ClientConfig {
            local_addr: socket.local_addr()?,
            slots: 0,
            publish: true,
            red: 0,
        },
    )?;
    let post = |path: &'static str,
                headers: Vec<(&'static str, String)>,
                body: Option<(&'static str, String)>| {
        let addr = server.http;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            http_exchange(
                addr,
                "POST",
                path,
                &h,
                body.as_ref().map(|(t, b)| (*t, b.as_str())),
            )
            .await
        }
    };
    let sdp = |s: &str| Some(("application/sdp", s.to_owned()));
    let bearer = |t: &str| vec![("Authorization", format!("Bearer {t}"))];

    // No token, a bad token: 401 with a Bearer challenge.
    let r = post("/whip/stage", vec![], sdp(&offer)).await?;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{r:?}"
    );
    let r = post("/whip/stage", bearer("not-a-token"), sdp(&offer)).await?;
    assert_eq!(r.status, 401, "{r:?}");
    // Another room's token, a token that may not publish: 403.
    let r = post(
        "/whip/elsewhere",
        vec![("Authorization", auth.clone())],
        sdp(&offer),
    )
    .await?;
    assert_eq!(r.status, 403, "{r:?}");
    let listen_only = server.token("stage", "ears", &["--no-publish"])?;
    let r = post("/whip/stage", bearer(&listen_only), sdp(&offer)).await?;
    assert_eq!(r.status, 403, "{r:?}");
    // Wrong content type, garbage, no audio.
    let r = post(
        "/whip/stage",
        bearer(&token),
        Some(("application/json", "{}".into())),
    )
    .await?;
    assert_eq!(r.status, 415, "{r:?}");
    let r = post(
        "/whip/stage",
        bearer(&token),
        sdp("m=audio this is not sdp"),
    )
    .await?;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("bad_sdp"), "{r:?}");
    let video_only = offer.replace("m=audio", "m=video");
    let r = post("/whip/stage", bearer(&token), sdp(&video_only)).await?;
    assert_eq!(r.status, 422, "{r:?}");
    // Unknown resources: 404; OPTIONS: the methods and CORS.
    let r = http_exchange(
        server.http,
        "DELETE",
        "/whip/stage/0123456789abcdef0123456789abcdef",
        &[],
        None,
    )
    .await?;
    assert_eq!(r.status, 404, "{r:?}");
    let r = http_exchange(server.http, "DELETE", "/whip/stage/../../admin", &[], None).await?;
    assert_eq!(r.status, 404, "{r:?}");
    let r = http_exchange(server.http, "OPTIONS", "/whip/stage", &[], None).await?;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
    assert!(r
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("Authorization")));

    // A real session: PATCH needs If-Match; a trickle fragment is 204; the wrong ETag 412.
    // With a video m-line besides the audio: the video is rejected (port 0), the audio answered.
    let bundled: String = offer
        .lines()
        .map(|l| match l.strip_prefix("a=group:BUNDLE") {
            Some(mids) => format!("a=group:BUNDLE{mids} v\r\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let with_video = format!(
        "{bundled}m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:v\r\na=sendonly\r\n\
         a=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n"
    );
    let r = post("/whip/stage", bearer(&token), sdp(&with_video)).await?;
    assert_eq!(r.status, 201, "{r:?}\n{}", server.log_tail());
    assert!(r.body.contains("m=video 0 "), "{}", r.body);
    assert!(r.body.contains("a=recvonly"), "{}", r.body);
    let location = r.header("location").context("Location")?.to_owned();
    let etag = r.header("etag").context("ETag")?.to_owned();
    let frag = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
    let patch = |headers: Vec<(&'static str, String)>, frag: &'static str| {
        let (addr, location) = (server.http, location.clone());
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            http_exchange(
                addr,
                "PATCH",
                &location,
                &h,
                Some(("application/trickle-ice-sdpfrag", frag)),
            )
            .await
        }
    };
    assert_eq!(patch(vec![], frag).await?.status, 428);
    let stale = vec![("If-Match", "\"nope\"".to_owned())];
    assert_eq!(patch(stale, frag).await?.status, 412);
    assert_eq!(
        patch(vec![("If-Match", etag.clone())], frag).await?.status,
        204
    );
    // New credentials: an ICE restart, answered with the server's new ones and a new ETag.
    let restart = "a=ice-ufrag:rst1\r\na=ice-pwd:restartedpasswordrestarted\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
    let r = patch(vec![("If-Match", "*".into())], restart).await?;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/trickle-ice-sdpfrag")
    );
    for line in [
        "a=ice-lite",
        "a=ice-ufrag:",
        "a=ice-pwd:",
        "a=candidate:",
        "a=end-of-candidates",
    ] {
        assert!(r.body.contains(line), "{line}: {}", r.body);
    }
    assert_ne!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(
        patch(vec![("If-Match", etag.clone())], frag).await?.status,
        412
    );

    // Nobody connects: the participant leaves at the connect timeout, the resource with it.
    let admin = server.admin_token()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // The room goes with its last participant (404), or is listed without it.
        let (_, body) = server
            .admin(
                "GET",
                "/admin/v1/rooms/stage/participants",
                Some(&admin),
                None,
            )
            .await?;
        if !body.contains("\"sid\"") {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the publisher stayed: {body}\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = http_exchange(server.http, "DELETE", &location, &[], None).await?;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        server
            .metric("chorus_whip_sessions_ended_total{kind=\"whip\",reason=\"ice_failed\"}")
            .await?,
        1.0
    );
    for (result, n) in [
        ("unauthorized", 2.0),
        ("forbidden", 2.0),
        ("unsupported_media_type", 1.0),
        ("bad_sdp", 1.0),
        ("no_audio", 1.0),
        ("created", 1.0),
    ] {
        let sample = format!("chorus_whip_requests_total{{kind=\"whip\",result=\"{result}\"}}");
        assert_eq!(server.metric(&sample).await?, n, "{sample}");
    }
    Ok(())
}
