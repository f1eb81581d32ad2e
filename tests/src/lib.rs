//! Support for end-to-end tests: start the real `chorus` binary on free loopback ports, talk the signaling
//! protocol over a real WebSocket, and run str0m client peers over real UDP that send Opus tones and decode
//! what they receive per slot.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use media_core::audio;
use media_core::client::{ClientConfig, ClientOutput, ClientPeer};
use serde_json::{json, Value};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use media_core::audio::{FRAME_SAMPLES, SAMPLE_RATE};

/// The `chorus` binary: `$CHORUS_BIN`, else the workspace's debug build (built on demand).
pub fn chorus_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("CHORUS_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let bin = target.join("debug").join("chorus");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "chorus-server", "--bin", "chorus"])
            .current_dir(&root)
            .status()
            .context("running cargo build for the chorus binary")?;
        if !status.success() {
            bail!("cargo build of chorus failed");
        }
    }
    Ok(bin)
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface can bind an ephemeral TCP port")
}

fn free_udp_port() -> u16 {
    StdUdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface can bind an ephemeral UDP port")
}

/// A running `chorus` process, killed on drop.
pub struct Server {
    child: Child,
    pub http: SocketAddr,
    pub media: SocketAddr,
    stderr_path: PathBuf,
}

impl Server {
    /// Start chorus with one media worker on free loopback ports, plus `extra` flags.
    pub async fn start(extra: &[&str]) -> anyhow::Result<Server> {
        Self::start_with_env(extra, &[]).await
    }

    /// Like [`Server::start`], with extra environment variables.
    pub async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Server> {
        let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse()?;
        let media_port = free_udp_port();
        let stderr_path = std::env::temp_dir().join(format!(
            "chorus-test-{}-{}.log",
            std::process::id(),
            http.port()
        ));
        let stderr = std::fs::File::create(&stderr_path)?;
        let child = Command::new(chorus_bin()?)
            .args(["--http-listen", &http.to_string()])
            .args([
                "--media-port-start",
                &media_port.to_string(),
                "--workers",
                "1",
            ])
            .args(extra)
            .env("CHORUS_LOG", "info,str0m=error")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting chorus")?;
        let mut server = Server {
            child,
            http,
            media: format!("127.0.0.1:{media_port}").parse()?,
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "chorus exited during start-up ({status}): {}",
                    server.log_tail()
                );
            }
            if let Ok(body) = server.http_get("/healthz").await {
                if body.0 == 200 {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                bail!("chorus did not become healthy: {}", server.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (e.g. `libc::SIGTERM`) to the server process.
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = i32::try_from(self.child.id())?;
        // SAFETY: kill(2) with a pid this test started and has not reaped yet.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait until the server exits (polling), at most `timeout`; its exit status.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "chorus still running after {timeout:?}: {}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the server process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A minimal HTTP/1.1 GET: (status, body).
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_request(self.http, "GET", path, &[], None).await
    }

    /// An admin API request with `token` as bearer token and an optional JSON body: (status, body).
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        http_request(self.http, method, path, &headers, body).await
    }

    /// Mint an admin token with `chorus token create --admin`.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        let out = Command::new(chorus_bin()?)
            .args(["token", "create", "--admin", "--identity", "e2e-operator"])
            .output()?;
        if !out.status.success() {
            bail!(
                "token create --admin failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    /// The value of one Prometheus sample (`name{labels}` exactly as exposed), 0 if absent.
    pub async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let (_, body) = self.http_get("/metrics").await?;
        Ok(body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(0.0))
    }

    /// Mint a token with `chorus token create`.
    pub fn token(&self, room: &str, identity: &str, extra: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(chorus_bin()?)
            .args(["token", "create", "--room", room, "--identity", identity])
            .args(extra)
            .output()?;
        if !out.status.success() {
            bail!(
                "token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }
}

/// A minimal HTTP/1.1 request to `addr` (JSON body if any): (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(addr).await?;
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or(""));
        s.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("no HTTP status in {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        let body = if text
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(&body)
        } else {
            body
        };
        Ok((status, body))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// A signaling WebSocket connection.
pub struct Signal {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Signal {
    pub async fn connect(url: &str) -> anyhow::Result<Signal> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Signal { ws })
    }

    pub async fn send(&mut self, v: Value) -> anyhow::Result<()> {
        self.ws.send(Message::text(v.to_string())).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, m: Message) -> anyhow::Result<()> {
        self.ws.send(m).await?;
        Ok(())
    }

    /// The next JSON message; `None` when the server closed the socket.
    pub async fn recv(&mut self, timeout: Duration) -> anyhow::Result<Option<Value>> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next())
                .await
                .map_err(|_| anyhow!("no signaling message within {timeout:?}"))?;
            match msg {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Text(t))) => return Ok(Some(serde_json::from_str(t.as_str())?)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    // A reset after a fatal error counts as closed.
                    let _ = e;
                    return Ok(None);
                }
            }
        }
    }

    /// Skip messages until the server's close frame: its code and reason (`None` if the socket ended
    /// without one).
    pub async fn close_frame(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<(u16, String)>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.ws.next())
                .await
                .map_err(|_| anyhow!("no close frame within {timeout:?}"))?;
            match msg {
                Some(Ok(Message::Close(frame))) => {
                    return Ok(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())))
                }
                None | Some(Err(_)) => return Ok(None),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Receive until a message of `kind` arrives (others are skipped).
    pub async fn expect(&mut self, kind: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await? {
                Some(v) if v["type"] == kind => return Ok(v),
                Some(_) => continue,
                None => bail!("socket closed while waiting for {kind}"),
            }
        }
    }

    /// Join and return the `joined` message.
    pub async fn join(&mut self, token: &str, room: &str) -> anyhow::Result<Value> {
        self.send(json!({"type": "join", "protocol": 1, "token": token, "room": room}))
            .await?;
        let v = self
            .recv(Duration::from_secs(5))
            .await?
            .context("closed before joined")?;
        if v["type"] != "joined" {
            bail!("expected joined, got {v}");
        }
        Ok(v)
    }
}

/// What a client has heard, per slot and per CSRC.
#[derive(Default)]
pub struct Heard {
    /// Decoded PCM per CSRC (the speaker's original SSRC).
    pub pcm_by_csrc: HashMap<u32, Vec<f32>>,
    /// Packets per slot.
    pub packets_by_slot: HashMap<usize, u64>,
    /// (slot, seq, timestamp, csrc) of every packet in arrival order.
    pub packets: Vec<(usize, u64, u32, Option<u32>)>,
}

/// A str0m client peer over a real UDP socket that sends a tone and decodes what it receives.
pub struct AudioClient {
    pub heard: Arc<Mutex<Heard>>,
    pub mic_ssrc: Option<u32>,
    pub connected: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl AudioClient {
    /// Negotiate through `signal` (already joined with `slots` slots) and run media in a task, sending a
    /// sine of `freq_hz` at `amplitude` (0.0 sends nothing).
    pub async fn start(
        signal: &mut Signal,
        slots: usize,
        freq_hz: f32,
        amplitude: f32,
    ) -> anyhow::Result<AudioClient> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let local = socket.local_addr()?;
        let (mut peer, offer) = ClientPeer::new(
            Instant::now(),
            ClientConfig {
                local_addr: local,
                slots,
                publish: amplitude > 0.0,
                red: 0,
            },
        )?;
        signal.send(json!({"type": "offer", "sdp": offer})).await?;
        let answer = signal.expect("answer", Duration::from_secs(5)).await?;
        peer.accept_answer(answer["sdp"].as_str().context("answer without sdp")?)?;
        let heard = Arc::new(Mutex::new(Heard::default()));
        let (conn_tx, conn_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mic_ssrc = peer.mic_ssrc();
        let task = tokio::spawn(run_media(
            peer,
            socket,
            heard.clone(),
            conn_tx,
            stop_rx,
            freq_hz,
            amplitude,
        ));
        Ok(AudioClient {
            heard,
            mic_ssrc,
            connected: conn_rx,
            stop: stop_tx,
            task,
        })
    }

    pub async fn wait_connected(&mut self, timeout: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(timeout, self.connected.wait_for(|c| *c))
            .await
            .map_err(|_| anyhow!("media did not connect within {timeout:?}"))??;
        Ok(())
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}

async fn run_media(
    mut peer: ClientPeer,
    socket: UdpSocket,
    heard: Arc<Mutex<Heard>>,
    connected: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
    freq_hz: f32,
    amplitude: f32,
) -> anyhow::Result<()> {
    let mut encoder =
        opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
    let mut decoders: HashMap<u32, opus::Decoder> = HashMap::new();
    let mut tone = audio::ToneGenerator::new(f64::from(freq_hz), amplitude, SAMPLE_RATE);
    let mut pcm = vec![0f32; FRAME_SAMPLES];
    let mut decoded = vec![0f32; FRAME_SAMPLES * 6];
    let mut packet = vec![0u8; 1500];
    let mut buf = vec![0u8; 2048];
    let mut frame_tick = tokio::time::interval(Duration::from_millis(20));
    frame_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next: Instant;
    loop {
        // Drain the peer.
        loop {
            match peer.poll_output()? {
                ClientOutput::Timeout(t) => {
                    next = t;
                    break;
                }
                ClientOutput::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                ClientOutput::Connected => {
                    let _ = connected.send(true);
                }
                ClientOutput::Disconnected => bail!("media disconnected"),
                ClientOutput::Audio(a) => {
                    let mut h = heard
                        .lock()
                        .expect("the heard lock is never poisoned: no panics while held");
                    *h.packets_by_slot.entry(a.slot).or_default() += 1;
                    h.packets.push((a.slot, a.seq, a.timestamp, a.csrc));
                    if let Some(csrc) = a.csrc {
                        let dec = decoders.entry(csrc).or_insert_with(|| {
                            opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)
                                .expect("an Opus decoder for 48 kHz mono can be created")
                        });
                        if let Ok(n) = dec.decode_float(&a.payload, &mut decoded, false) {
                            h.pcm_by_csrc
                                .entry(csrc)
                                .or_default()
                                .extend_from_slice(&decoded[..n]);
                        }
                    }
                }
            }
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r?;
                peer.handle_datagram(Instant::now(), from, &buf[..n])?;
            }
            _ = frame_tick.tick(), if amplitude > 0.0 && peer.is_connected() => {
                tone.fill(&mut pcm);
                let level = audio::audio_level_from_samples(&pcm);
                let n = encoder.encode_float(&pcm, &mut packet)?;
                peer.send_audio(Instant::now(), &packet[..n], FRAME_SAMPLES as u32, level)?;
            }
            _ = tokio::time::sleep_until(next.into()) => {
                peer.handle_timeout(Instant::now())?;
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}
