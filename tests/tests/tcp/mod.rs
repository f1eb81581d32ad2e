//! ICE-TCP against the real binary (issue 12 item 1): clients that misbehave on the worker's TCP port —
//! bad RFC 4571 framing, a connection that never sends STUN (idle or half-open), a client that floods
//! verified STUN requests and never reads the responses — each cost their own connection, counted by
//! reason, while a call on the same worker keeps its audio flowing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_lc_rs::hmac;
use chorus_tests::{Server, Signal, SAMPLE_RATE};
use media_core::audio;
use media_core::client::{ClientConfig, ClientPeer};
use str0m::ice::{StunMessage, TransId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::{join, SECONDS};

const STUN_TIMEOUT_MS: u64 = 1_000;

/// `a=<attribute>:<value>` of the first line that has it.
fn sdp_attr<'a>(sdp: &'a str, attribute: &str) -> anyhow::Result<&'a str> {
    let prefix = format!("a={attribute}:");
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
        .with_context(|| format!("no a={attribute} in {sdp}"))
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let tag = ctx.sign();
    let mut out = [0u8; 20];
    out.copy_from_slice(tag.as_ref());
    out
}

/// One STUN binding request a peer's ICE agent verifies (USERNAME `server:client`, MESSAGE-INTEGRITY under
/// the server's password), RFC 4571-framed.
fn framed_binding_request(username: &str, password: &str) -> anyhow::Result<Vec<u8>> {
    let msg = StunMessage::binding_request(username, TransId::new(), true, 7, 1_845_501_695, false);
    let mut buf = [0u8; 512];
    let n = msg
        .to_bytes(Some(password.as_bytes()), &mut buf, hmac_sha1)
        .map_err(|e| anyhow::anyhow!("STUN encoding: {e:?}"))?;
    let mut out = Vec::with_capacity(n + 2);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&buf[..n]);
    Ok(out)
}

/// Wait until the server closes `stream` (EOF or reset), at most `timeout`.
async fn closed_by_server(stream: &mut TcpStream, timeout: Duration) -> anyhow::Result<()> {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => bail!("the server kept the connection open for {timeout:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => continue,
        }
    }
}

async fn wait_metric(server: &Server, sample: &str, at_least: f64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = server.metric(sample).await?;
        if v >= at_least {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!(
                "{sample} = {v}, expected >= {at_least}: {}",
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tcp_peers_cost_their_connection_and_a_call_on_the_worker_keeps_running(
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("chorus-tcp-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("chorus.toml");
    std::fs::write(
        &config,
        format!("[media]\ntcp_stun_timeout_ms = {STUN_TIMEOUT_MS}\n"),
    )?;
    let server = Server::start(&["--config", &config.to_string_lossy()]).await?;
    // ICE-TCP listens on the UDP port's number by default.
    let tcp: SocketAddr = server.media;

    // A call on the (only) worker.
    let room = "tcp-faults";
    let mut ada = join(&server, room, "ada", 440.0, 0.3).await?;
    let mut bob = join(&server, room, "bob", 660.0, 0.3).await?;
    for p in [&mut ada, &mut bob] {
        p.client
            .wait_connected(SECONDS)
            .await
            .map_err(|e| e.context(server.log_tail()))?;
    }
    let ada_ssrc = ada.client.mic_ssrc.context("ada publishes")?;
    let heard_of_ada = |bob: &super::Participant| {
        bob.client
            .heard
            .lock()
            .expect("no panic while holding the heard lock")
            .pcm_by_csrc
            .get(&ada_ssrc)
            .map_or(0, Vec::len)
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = heard_of_ada(&bob);
    assert!(
        before > 0,
        "bob hears nothing of ada: {}",
        server.log_tail()
    );

    // 1. Bad framing: a zero length, and a length above any datagram.
    for bad in [[0u8, 0], [0x05, 0xdd]] {
        let mut s = TcpStream::connect(tcp).await?;
        s.write_all(&bad).await?;
        closed_by_server(&mut s, Duration::from_secs(3)).await?;
    }

    // 2. A connection that never sends a STUN request (idle, or half-open: the client is gone).
    let mut idle = TcpStream::connect(tcp).await?;
    let opened = Instant::now();
    closed_by_server(&mut idle, Duration::from_millis(STUN_TIMEOUT_MS + 3_000)).await?;
    assert!(
        opened.elapsed() >= Duration::from_millis(STUN_TIMEOUT_MS - 100),
        "closed before the STUN deadline: {:?}",
        opened.elapsed()
    );

    // 3. A real participant's ICE credentials, verified STUN requests as fast as TCP takes them, and no
    //    reading: the responses fill its write queue.
    let token = server.token(room, "cara", &[])?;
    let mut signal = Signal::connect(&server.ws_url()).await?;
    signal.join(&token, room).await?;
    let (_peer, offer) = ClientPeer::new(
        Instant::now(),
        ClientConfig {
            local_addr: "127.0.0.1:9".parse()?,
            slots: 1,
            publish: false,
            red: 0,
        },
    )?;
    let answer = signal.client().offer(&offer, SECONDS).await?.sdp;
    assert!(
        answer.contains(" tcp ") && answer.contains("tcptype passive"),
        "no passive TCP candidate in {answer}"
    );
    let username = format!(
        "{}:{}",
        sdp_attr(&answer, "ice-ufrag")?,
        sdp_attr(&offer, "ice-ufrag")?
    );
    let password = sdp_attr(&answer, "ice-pwd")?.to_owned();
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut flood = socket.connect(tcp).await?;
    let mut batch = Vec::new();
    for _ in 0..500 {
        batch.extend(framed_binding_request(&username, &password)?);
    }
    let mut sent = 0;
    let flooding = Instant::now();
    while flooding.elapsed() < Duration::from_secs(10) {
        match tokio::time::timeout(Duration::from_secs(1), flood.write_all(&batch)).await {
            Ok(Ok(())) => sent += 500,
            // Reset or closed by the server (or its window closed: it stopped reading).
            Ok(Err(_)) | Err(_) => break,
        }
        if server
            .metric("chorus_tcp_connections_closed_total{reason=\"slow_reader\"}")
            .await?
            >= 1.0
        {
            break;
        }
    }
    let slow = wait_metric(
        &server,
        "chorus_tcp_connections_closed_total{reason=\"slow_reader\"}",
        1.0,
    )
    .await
    .with_context(|| format!("after {sent} STUN requests"))?;
    drop(flood);

    let bad = wait_metric(
        &server,
        "chorus_tcp_connections_closed_total{reason=\"bad_frame\"}",
        2.0,
    )
    .await?;
    let no_stun = wait_metric(
        &server,
        "chorus_tcp_connections_closed_total{reason=\"no_stun\"}",
        1.0,
    )
    .await?;
    assert_eq!((bad, no_stun, slow), (2.0, 1.0, 1.0));
    // Nothing left open.
    let deadline = Instant::now() + SECONDS;
    while server.metric("chorus_tcp_connections").await? != 0.0 {
        if Instant::now() > deadline {
            bail!("ICE-TCP connections still open: {}", server.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The call on the same worker never stopped: bob still hears ada, as ada.
    let during = heard_of_ada(&bob);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = heard_of_ada(&bob);
    assert!(
        after - during >= SAMPLE_RATE as usize * 3 / 2,
        "bob heard {} samples of ada in 2 s after the faults (from {before} before them)",
        after - during
    );
    let pcm = {
        let heard = bob
            .client
            .heard
            .lock()
            .expect("no panic while holding the heard lock");
        heard.pcm_by_csrc[&ada_ssrc][during..].to_vec()
    };
    let analysis = audio::ToneAnalysis::analyze(&pcm, SAMPLE_RATE, &[440.0, 660.0]);
    assert_eq!(analysis.present_default(), vec![440.0], "{analysis:?}");
    assert!(ada.client.connected.borrow().to_owned());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
