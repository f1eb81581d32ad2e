//! Support for end-to-end tests: start the real `chorus` binary on free loopback ports, talk the signaling
//! protocol over a real WebSocket, and run str0m client peers over real UDP that send Opus tones or speech
//! (encoded like a browser, [`voice`]) and decode what they receive per slot, or play it like a browser.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use media_core::audio;
use media_core::client::{ClientConfig, ClientOutput, ClientPeer};
use serde_json::Value;
use signaling::client::{Client, ClientError};
use signaling::protocol::{ClientMessage, Join, ServerMessage, PROTOCOL_VERSION};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

pub use media_core::audio::{FRAME_SAMPLES, SAMPLE_RATE};

pub mod proxy;
pub mod voice;
use voice::{BrowserEncoder, FRAME};
pub use voice::{Ear, Spoken};

/// Tests that measure real-time behaviour (speech calls scored by PESQ) or load the machine for a long
/// stretch (schemathesis' thousands of requests) take this lock, so that they run one at a time: run side by
/// side on a 2-core machine, a starved speaker or listener wakes late and the scores measure the machine.
static CPU_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Wait for the other CPU-heavy tests of this binary to finish; hold the guard for the whole test.
pub async fn cpu_heavy() -> tokio::sync::MutexGuard<'static, ()> {
    CPU_HEAVY.lock().await
}

/// The real-time calls (`real_udp_` tests: speech scored by PESQ, calls through faults and address changes)
/// run one at a time: each paces its clients by the wall clock, and two of them at once (four clients, two
/// servers, PESQ) on a small CI machine made the speaker's frames up to 45 ms late and cost a clean forward
/// call 0.46 PESQ. `scripts/test.sh` also runs them in a pass of their own, after the rest of the workspace,
/// so no other test shares the machine with them.
static ONE_REAL_TIME_CALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Wait for the other real-time calls of this binary to finish; hold the guard for the whole test.
pub async fn real_time_call() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_REAL_TIME_CALL.lock().await
}

/// The `chorus` binary: `$CHORUS_BIN`, else the workspace's debug build, brought up to date once per test
/// process (`cargo build` of an up-to-date binary takes a moment; a stale one would test yesterday's server).
pub fn chorus_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("CHORUS_BIN") {
        return Ok(PathBuf::from(p));
    }
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join("target"));
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "chorus-server", "--bin", "chorus"])
                .current_dir(&root)
                .status()
                .map_err(|e| format!("running cargo build for the chorus binary: {e}"))?;
            if !status.success() {
                return Err("cargo build of chorus failed".to_owned());
            }
            Ok(target.join("debug").join("chorus"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// A TCP port on the loopback interface that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface can bind an ephemeral TCP port")
}

/// A port number free on the loopback interface for UDP and for TCP a moment ago, other than `avoid`: the
/// server listens for ICE-TCP on its UDP port numbers by default, and the HTTP port picked just before is
/// no longer held.
fn free_media_port(avoid: u16) -> u16 {
    for _ in 0..100 {
        let udp = StdUdpSocket::bind("127.0.0.1:0")
            .expect("the loopback interface can bind an ephemeral UDP port");
        let port = udp
            .local_addr()
            .expect("a bound UDP socket has a local address")
            .port();
        if port != avoid && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on the loopback interface in 100 tries")
}

/// A running `chorus` process, killed on drop.
pub struct Server {
    child: Child,
    pub http: SocketAddr,
    pub media: SocketAddr,
    stderr_path: PathBuf,
}

impl Server {
    /// Start chorus with one media worker (unless `extra` says `--workers`) on free loopback ports, plus
    /// `extra` flags.
    pub async fn start(extra: &[&str]) -> anyhow::Result<Server> {
        Self::start_with_env(extra, &[]).await
    }

    /// Like [`Server::start`], with extra environment variables.
    ///
    /// Ports are picked free a moment before the server binds them, and tests run in parallel: another
    /// test's server (or a client's ephemeral port) may take one in between. A start that fails on an
    /// address in use is tried again on other ports (at most three times); any other failure is returned.
    pub async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Server> {
        let mut attempt = 1;
        loop {
            match Self::try_start(extra, env).await {
                Err(e) if attempt < 3 && e.to_string().contains("Address already in use") => {
                    eprintln!(
                        "chorus start-up lost a port race (attempt {attempt}), retrying: {e:#}"
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn try_start(extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Server> {
        let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse()?;
        let media_port = free_media_port(http.port());
        let stderr_path = std::env::temp_dir().join(format!(
            "chorus-test-{}-{}.log",
            std::process::id(),
            http.port()
        ));
        let stderr = std::fs::File::create(&stderr_path)?;
        let workers: &[&str] = if extra.contains(&"--workers") {
            &[]
        } else {
            &["--workers", "1"]
        };
        let child = Command::new(chorus_bin()?)
            .args(["--http-listen", &http.to_string()])
            .args(["--media-port-start", &media_port.to_string()])
            .args(workers)
            .args(extra)
            .env("CHORUS_LOG", "info,str0m=error")
            // Tests use loopback and addresses of their own network namespaces only: no candidate on the
            // machine's own interfaces (development mode's default, for Firefox on the README's start).
            .env("CHORUS_MEDIA_DEV_LAN_CANDIDATE", "false")
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

    /// The last lines of the server's log, for failure messages, after its error line if it has one (an
    /// error's backtrace alone is longer than the tail and says nothing of the cause).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines.len().saturating_sub(30);
        let error = lines[..tail]
            .iter()
            .position(|l| l.starts_with("Error:") || l.contains("panicked"))
            .map(|i| lines[i..(i + 6).min(tail)].join("\n") + "\n[...]\n")
            .unwrap_or_default();
        error + &lines[tail..].join("\n")
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (e.g. `libc::SIGTERM`) to the server process.
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        // A pid this test started and has not reaped yet.
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id())?)
            .ok_or_else(|| anyhow::anyhow!("pid 0"))?;
        let signal = rustix::process::Signal::from_named_raw(signal)
            .ok_or_else(|| anyhow::anyhow!("unknown signal {signal}"))?;
        rustix::process::kill_process(pid, signal).map_err(|e| anyhow::anyhow!("kill: {e}"))?;
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

    /// `POST /admin/v1/rooms` with `body` (the room's name and settings) under an admin token: the room as
    /// created. Any answer but 201 is an error.
    pub async fn create_room(&self, body: &Value) -> anyhow::Result<Value> {
        let token = self.admin_token()?;
        let (status, reply) = self
            .admin(
                "POST",
                "/admin/v1/rooms",
                Some(&token),
                Some(&body.to_string()),
            )
            .await?;
        anyhow::ensure!(status == 201, "creating {}: {status} {reply}", body["name"]);
        Ok(serde_json::from_str(&reply)?)
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

    /// Polls one sample (as [`metric`](Self::metric)) every 20 ms until it equals `want`; the last value
    /// read if it never did within `timeout`.
    pub async fn metric_becomes(
        &self,
        sample: &str,
        want: f64,
        timeout: Duration,
    ) -> anyhow::Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.metric(sample).await?;
            if value == want || Instant::now() >= deadline {
                return Ok(value);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
    let body = body.map(|b| ("application/json", b));
    let response = http_exchange(addr, method, path, headers, body).await?;
    Ok((response.status, response.body))
}

/// An HTTP response as [`http_exchange`] read it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in order (a repeated header appears once per line).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 request to `addr` with an optional `(content type, body)`: the whole response.
pub async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> anyhow::Result<HttpResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some((content_type, body)) = body {
        request.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.map_or("", |(_, b)| b));
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status in {text:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
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

/// A signaling session for the tests, on the typed client of the protocol ([`signaling::client`]).
///
/// Messages come back as typed [`ServerMessage`]s from [`Signal::client`]; [`Signal::recv`],
/// [`Signal::expect`] and [`Signal::join`] also show them as JSON (re-serialized from the typed value,
/// exactly what the server wrote) so tests can assert on the wire form. [`Signal::send`] and
/// [`Signal::send_raw`] send any frame, also ones a well-behaved client would not.
pub struct Signal {
    client: Client,
}

/// `message` as the JSON the server wrote: serialized as text (floats in their shortest form), then read.
fn wire_json(message: &ServerMessage) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&serde_json::to_string(message)?)?)
}

impl Signal {
    pub async fn connect(url: &str) -> anyhow::Result<Signal> {
        Ok(Signal {
            client: Client::connect(url).await?,
        })
    }

    /// Join through `entry` (any node of a cluster) as the SDKs do, following `redirect`s to the node that
    /// owns the room ([`Client::connect_and_join`]): the session, its `joined` as JSON, and the URL of the
    /// node that admitted it.
    pub async fn join_following(
        entry: &str,
        token: &str,
        room: &str,
    ) -> Result<(Signal, Value, String), ClientError> {
        let session =
            Client::connect_and_join(entry, token, Some(room), None, Duration::from_secs(5))
                .await?;
        let joined = ServerMessage::Joined(session.joined);
        let joined = wire_json(&joined).map_err(|e| ClientError::Decode {
            reason: e.to_string(),
            text: format!("{joined:?}"),
        })?;
        Ok((
            Signal {
                client: session.client,
            },
            joined,
            session.url,
        ))
    }

    /// The typed client of this session.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Send `v` as one text frame, whatever it is (protocol tests send malformed messages).
    pub async fn send(&mut self, v: Value) -> anyhow::Result<()> {
        self.client.send_frame(Message::text(v.to_string())).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, m: Message) -> anyhow::Result<()> {
        self.client.send_frame(m).await?;
        Ok(())
    }

    /// The next message, as JSON; `None` when the server closed the socket.
    pub async fn recv(&mut self, timeout: Duration) -> anyhow::Result<Option<Value>> {
        let received = tokio::time::timeout(timeout, self.client.recv())
            .await
            .map_err(|_| anyhow!("no signaling message within {timeout:?}"))?;
        match received {
            Ok(Some(message)) => Ok(Some(wire_json(&message)?)),
            Ok(None) => Ok(None),
            // A reset after a fatal error counts as closed.
            Err(ClientError::WebSocket(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Skip messages until the server's close frame: its code and reason (`None` if the socket ended
    /// without one).
    pub async fn close_frame(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<(u16, String)>> {
        match self.client.close_frame(timeout).await {
            Ok(close) => Ok(close.map(|c| (c.code, c.reason))),
            Err(ClientError::Timeout(_)) => bail!("no close frame within {timeout:?}"),
            Err(e) => Err(e.into()),
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

    /// Join and return the `joined` message (it must be the first reply).
    pub async fn join(&mut self, token: &str, room: &str) -> anyhow::Result<Value> {
        self.client
            .send(&ClientMessage::Join(Join {
                protocol: PROTOCOL_VERSION,
                token: token.to_owned(),
                room: Some(room.to_owned()),
                name: None,
                team: None,
                listen_only: false,
            }))
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
    /// With [`MediaOptions::play_slot`]: that slot played through a jitter buffer in real time.
    pub ear: Option<Ear>,
}

/// What a client sends into its microphone.
#[derive(Clone, Copy, Debug)]
pub enum Mic {
    /// No microphone (the offer's microphone m-line is inactive).
    Off,
    /// A sine at `amplitude`, Opus-encoded every 20 ms without DTX.
    Tone { freq_hz: f32, amplitude: f32 },
    /// A browser's microphone: silent (nothing sent) until [`AudioClient::speak`] plays PCM into it.
    Speech,
}

/// How an [`AudioClient`] is set up.
#[derive(Clone, Copy, Debug)]
pub struct MediaOptions {
    /// The room's slot count (from `joined`).
    pub slots: usize,
    pub mic: Mic,
    /// Send everything to this address instead of the server's ICE candidate: a proxy in between (the
    /// server's candidate in the answer is replaced, so ICE, DTLS and media all take this path).
    pub via: Option<SocketAddr>,
    /// Play this slot through a jitter buffer in real time and record it ([`Heard::ear`]).
    pub play_slot: Option<usize>,
    /// Offer RED (RFC 2198) and send this many earlier frames with each frame (Chrome: 1); 0: plain Opus.
    pub red: u8,
}

/// Commands to a running client.
enum MediaCommand {
    Speak {
        samples: Arc<[f32]>,
        expected_loss_percent: i32,
    },
    /// Start an ICE restart: the offer comes back.
    RestartIce(tokio::sync::oneshot::Sender<anyhow::Result<String>>),
    /// Apply the server's answer to the restart offer.
    Answer(String, tokio::sync::oneshot::Sender<anyhow::Result<()>>),
}

/// A str0m client peer over a real UDP socket that sends a tone or speech and decodes what it receives.
pub struct AudioClient {
    pub heard: Arc<Mutex<Heard>>,
    /// With [`Mic::Speech`]: what was sent so far.
    pub spoken: Arc<Mutex<Spoken>>,
    pub mic_ssrc: Option<u32>,
    pub connected: watch::Receiver<bool>,
    commands: tokio::sync::mpsc::UnboundedSender<MediaCommand>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// `sdp` with the address of every ICE candidate replaced by `via`.
fn candidates_via(sdp: &str, via: SocketAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if !line.starts_with("a=candidate:") {
            out.push_str(line);
            continue;
        }
        // a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
        let body = line.trim_end_matches(['\r', '\n']);
        let mut fields: Vec<String> = body.split(' ').map(str::to_owned).collect();
        if fields.len() > 5 {
            fields[4] = via.ip().to_string();
            fields[5] = via.port().to_string();
        }
        out.push_str(&fields.join(" "));
        out.push_str(&line[body.len()..]);
    }
    out
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
        let mic = if amplitude > 0.0 {
            Mic::Tone { freq_hz, amplitude }
        } else {
            Mic::Off
        };
        Self::start_with(
            signal,
            MediaOptions {
                slots,
                mic,
                via: None,
                play_slot: None,
                red: 0,
            },
        )
        .await
    }

    /// Negotiate through `signal` (already joined) and run media in a task, as `options` say.
    pub async fn start_with(
        signal: &mut Signal,
        options: MediaOptions,
    ) -> anyhow::Result<AudioClient> {
        Self::start_inner(signal, options, false).await
    }

    /// As [`AudioClient::start_with`], with a client that nominates like Firefox: USE-CANDIDATE only until
    /// it connects, plain consent checks after that ([`ClientPeer::set_nominate_once`]).
    pub async fn start_nominating_once(
        signal: &mut Signal,
        options: MediaOptions,
    ) -> anyhow::Result<AudioClient> {
        Self::start_inner(signal, options, true).await
    }

    async fn start_inner(
        signal: &mut Signal,
        options: MediaOptions,
        nominate_once: bool,
    ) -> anyhow::Result<AudioClient> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let local = socket.local_addr()?;
        let (mut peer, offer) = ClientPeer::new(
            Instant::now(),
            ClientConfig {
                local_addr: local,
                slots: options.slots,
                publish: !matches!(options.mic, Mic::Off),
                red: options.red,
            },
        )?;
        let mut answer = signal
            .client()
            .offer(&offer, Duration::from_secs(5))
            .await?
            .sdp;
        if let Some(via) = options.via {
            answer = candidates_via(&answer, via);
        }
        peer.accept_answer(&answer)?;
        peer.set_nominate_once(nominate_once);
        Ok(Self::run(peer, socket, options))
    }

    /// A WHIP publisher (`whep` false: one sendonly microphone line, sending `options.mic`) or a WHEP
    /// listener (one recvonly line: slot 0) that posts its offer to `path` of the server at `http` with
    /// `token`: the client and the server's `201` response (`Location`, `ETag`, the answer), or the
    /// refusal's response as the error.
    pub async fn http_offer(
        http: SocketAddr,
        path: &str,
        token: &str,
        whep: bool,
        options: MediaOptions,
    ) -> anyhow::Result<(AudioClient, HttpResponse)> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let local = socket.local_addr()?;
        let (mut peer, offer) = if whep {
            ClientPeer::new_receive_only(Instant::now(), local)?
        } else {
            let config = ClientConfig {
                local_addr: local,
                slots: 0,
                publish: true,
                red: options.red,
            };
            ClientPeer::new(Instant::now(), config)?
        };
        let auth = format!("Bearer {token}");
        let headers = [("Authorization", auth.as_str())];
        let response = http_exchange(
            http,
            "POST",
            path,
            &headers,
            Some(("application/sdp", &offer)),
        )
        .await?;
        if response.status != 201 {
            bail!("{} {}", response.status, response.body);
        }
        peer.accept_answer(&response.body)?;
        Ok((Self::run(peer, socket, options), response))
    }

    /// Runs the media of a negotiated peer in a task.
    fn run(mut peer: ClientPeer, socket: UdpSocket, options: MediaOptions) -> AudioClient {
        let heard = Arc::new(Mutex::new(Heard {
            ear: options.play_slot.map(|_| Ear::default()),
            ..Heard::default()
        }));
        let spoken = Arc::new(Mutex::new(Spoken::default()));
        let (conn_tx, conn_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
        let mic_ssrc = peer.mic_ssrc();
        let task = tokio::spawn(
            Media {
                peer,
                socket,
                heard: heard.clone(),
                spoken: spoken.clone(),
                connected: conn_tx,
                options,
                speech: None,
                tone: None,
                decoders: HashMap::new(),
                clock: Instant::now(),
            }
            .run(stop_rx, cmd_rx),
        );
        AudioClient {
            heard,
            spoken,
            mic_ssrc,
            connected: conn_rx,
            commands: cmd_tx,
            stop: stop_tx,
            task,
        }
    }

    pub async fn wait_connected(&mut self, timeout: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(timeout, self.connected.wait_for(|c| *c))
            .await
            .map_err(|_| anyhow!("media did not connect within {timeout:?}"))??;
        Ok(())
    }

    /// With [`Mic::Speech`]: speak `samples` (48 kHz mono) from now on, one frame every 20 ms on a grid
    /// from now, encoded like a browser whose in-band FEC expects `expected_loss_percent`
    /// ([`voice::BrowserEncoder`]); silence (DTX) after them.
    pub fn speak(&self, samples: Arc<[f32]>, expected_loss_percent: i32) -> anyhow::Result<()> {
        self.commands
            .send(MediaCommand::Speak {
                samples,
                expected_loss_percent,
            })
            .map_err(|_| anyhow!("the media task has ended"))
    }

    /// Restart ICE on the running peer (RFC 8445 §9, what a browser's `pc.restartIce()` does): its new
    /// offer goes through `signal`, the answer (new server ICE credentials) back to the peer. Returns the
    /// answer's SDP.
    pub async fn restart_ice(&self, signal: &mut Signal) -> anyhow::Result<String> {
        let (offer_tx, offer_rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(MediaCommand::RestartIce(offer_tx))
            .map_err(|_| anyhow!("the media task has ended"))?;
        let offer = offer_rx.await??;
        let answer = signal
            .client()
            .offer(&offer, Duration::from_secs(5))
            .await?
            .sdp;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(MediaCommand::Answer(answer.clone(), done_tx))
            .map_err(|_| anyhow!("the media task has ended"))?;
        done_rx.await??;
        Ok(answer)
    }

    /// Wait until the PCM given to [`speak`](Self::speak) has all been sent.
    pub async fn wait_spoken(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let finished = self
                .spoken
                .lock()
                .expect("the spoken lock is never poisoned: no panics while held")
                .finished
                .is_some();
            if finished {
                return Ok(());
            }
            if self.task.is_finished() {
                bail!("the media task ended before the speech did");
            }
            if Instant::now() > deadline {
                bail!("the speech was not sent within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}

/// The media task of an [`AudioClient`].
struct Media {
    peer: ClientPeer,
    socket: UdpSocket,
    heard: Arc<Mutex<Heard>>,
    spoken: Arc<Mutex<Spoken>>,
    connected: watch::Sender<bool>,
    options: MediaOptions,
    /// Speech being sent, and the deadline of its next frame.
    speech: Option<(BrowserEncoder, Instant)>,
    /// The tone's generator and encoder, and the deadline of its next frame (from the connection on).
    tone: Option<(audio::ToneGenerator, opus::Encoder, Instant)>,
    decoders: HashMap<u32, opus::Decoder>,
    /// The latest time events were handled at: a kernel arrival time is never taken as earlier (the
    /// peer and the listener see time move forward only).
    clock: Instant,
}

impl Media {
    async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut commands: tokio::sync::mpsc::UnboundedReceiver<MediaCommand>,
    ) -> anyhow::Result<()> {
        chorus_udp::enable(&self.socket, chorus_udp::Ancillary::KernelTimestamp)?;
        let mut batch = chorus_udp::RecvBatch::new(2048);
        loop {
            let mut next = self.drain().await?;
            if let Some((_, due)) = &self.speech {
                next = next.min(*due);
            }
            if let Some((_, _, due)) = &self.tone {
                next = next.min(*due);
            }
            if let Some(due) = self.heard_lock().ear.as_ref().and_then(Ear::next_due) {
                next = next.min(due);
            }
            tokio::select! {
                r = self.socket.readable() => {
                    r?;
                    self.receive_queued(&mut batch).await?;
                }
                _ = tokio::time::sleep_until(next.into()) => {
                    // What reached the socket while this task waited for a core comes first, at its
                    // kernel arrival time: a playout tick must not miss a packet that was there.
                    self.receive_queued(&mut batch).await?;
                    self.on_time().await?;
                }
                Some(command) = commands.recv() => match command {
                    MediaCommand::Speak { samples, expected_loss_percent } => {
                        if !matches!(self.options.mic, Mic::Speech) {
                            bail!("speak() on a client whose microphone is {:?}", self.options.mic);
                        }
                        let encoder = BrowserEncoder::new(samples, expected_loss_percent)?;
                        self.speech = Some((encoder, Instant::now()));
                    }
                    MediaCommand::RestartIce(reply) => {
                        let _ = reply.send(self.peer.restart_ice().map_err(Into::into));
                    }
                    MediaCommand::Answer(mut sdp, reply) => {
                        if let Some(via) = self.options.via {
                            sdp = candidates_via(&sdp, via);
                        }
                        let _ = reply.send(self.peer.accept_answer(&sdp).map_err(Into::into));
                    }
                },
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// Handle every datagram queued on the socket, each at the kernel's receive time (`SO_TIMESTAMPNS`),
    /// not at when this task got round to reading it: a test machine that keeps the task off a core for
    /// 30 ms must not look like 30 ms of network jitter to the listener's jitter buffer. Events in time
    /// order: playout ticks due before an arrival happen first, as in virtual time.
    async fn receive_queued(&mut self, batch: &mut chorus_udp::RecvBatch) -> anyhow::Result<()> {
        loop {
            let read = self.socket.try_io(tokio::io::Interest::READABLE, || {
                match batch.recv(&self.socket)? {
                    0 => Err(std::io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                }
            });
            match read {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let now = Instant::now();
            for datagram in batch.datagrams() {
                let arrival = datagram.arrival.map_or(now, |a| a.min(now)).max(self.clock);
                self.clock = arrival;
                if let Some(ear) = self.heard_lock().ear.as_mut() {
                    ear.play_due(arrival)?;
                }
                self.peer
                    .handle_datagram(arrival, datagram.source, datagram.contents)?;
                // One input, then everything it caused: the peer keeps no queue of unread outputs.
                self.drain().await?;
            }
        }
    }

    fn heard_lock(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.heard
            .lock()
            .expect("the heard lock is never poisoned: no panics while held")
    }

    /// Everything due by now: the peer's timeout, frames to send (each on its 20 ms grid point, so a late
    /// wake-up sends the missed frames at once instead of drifting), playout ticks.
    async fn on_time(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        self.clock = now;
        self.peer.handle_timeout(now)?;
        while let Some((encoder, due)) = self.speech.as_mut().filter(|(_, due)| *due <= now) {
            let deadline = *due;
            *due += FRAME;
            {
                let mut spoken = self
                    .spoken
                    .lock()
                    .expect("the spoken lock is never poisoned: no panics while held");
                let sent = Instant::now();
                spoken.note_lateness(sent.saturating_duration_since(deadline));
                encoder.send_frame(sent, &mut self.peer, &mut spoken)?;
            }
            self.drain().await?;
        }
        while let Some((tone, encoder, due)) = self.tone.as_mut().filter(|(_, _, due)| *due <= now)
        {
            *due += FRAME;
            let mut pcm = [0f32; FRAME_SAMPLES];
            tone.fill(&mut pcm);
            let level = audio::audio_level_from_samples(&pcm);
            let mut packet = [0u8; 1500];
            let n = encoder.encode_float(&pcm, &mut packet)?;
            self.peer
                .send_audio(Instant::now(), &packet[..n], FRAME_SAMPLES as u32, level)?;
            self.drain().await?;
        }
        if let Some(ear) = self.heard_lock().ear.as_mut() {
            ear.play_due(now)?;
        }
        Ok(())
    }

    /// Drain the peer until it asks for a timeout, which is returned.
    async fn drain(&mut self) -> anyhow::Result<Instant> {
        let mut decoded = [0f32; FRAME_SAMPLES * 6];
        loop {
            match self.peer.poll_output()? {
                ClientOutput::Timeout(t) => return Ok(t),
                ClientOutput::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                ClientOutput::Connected => {
                    let _ = self.connected.send(true);
                    if let Mic::Tone { freq_hz, amplitude } = self.options.mic {
                        self.tone = Some((
                            audio::ToneGenerator::new(f64::from(freq_hz), amplitude, SAMPLE_RATE),
                            opus::Encoder::new(
                                SAMPLE_RATE,
                                opus::Channels::Mono,
                                opus::Application::Voip,
                            )?,
                            Instant::now(),
                        ));
                    }
                }
                ClientOutput::Disconnected => bail!("media disconnected"),
                ClientOutput::Audio(a) => {
                    let play_slot = self.options.play_slot;
                    let mut h = self
                        .heard
                        .lock()
                        .expect("the heard lock is never poisoned: no panics while held");
                    *h.packets_by_slot.entry(a.slot).or_default() += 1;
                    h.packets.push((a.slot, a.seq, a.timestamp, a.csrc));
                    if play_slot == Some(a.slot) {
                        if let Some(ear) = h.ear.as_mut() {
                            ear.receive(&a);
                        }
                    }
                    if let Some(csrc) = a.csrc {
                        let dec = self.decoders.entry(csrc).or_insert_with(|| {
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
    }
}
