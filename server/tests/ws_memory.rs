//! What an open signaling WebSocket costs the server's heap (issue 15): tungstenite's default read buffer
//! (128 KiB per connection) was the largest part of a participant's memory; `server/src/http.rs` sizes it
//! for signaling messages. A real server runs in-process; a counting global allocator sees every byte it
//! keeps for N open sessions, and a message five times the read buffer still arrives whole.
//!
//! The client side is a raw WebSocket over a `TcpStream` (no buffers of its own beyond a few bytes), so
//! what the counter sees is the server's.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use chorus::{Config, Server, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Sessions opened for the measurement.
const SESSIONS: usize = 32;

/// What one open signaling session may keep on the server's heap: 9,991 bytes with the 4 KiB read buffer,
/// 136,967 with tungstenite's default (128 KiB) in a debug build.
const MAX_SESSION_BYTES: isize = 32 * 1024;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket client with nothing but the socket: the RFC 6455 handshake, masked text frames out
/// (with a zero masking key, which leaves the payload as it is), unmasked frames in.
struct RawWs(TcpStream);

impl RawWs {
    async fn connect(addr: SocketAddr) -> RawWs {
        let mut s = TcpStream::connect(addr).await.expect("the server listens");
        s.write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("the request is written");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte)
                .await
                .expect("the server answers the upgrade");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawWs(s)
    }

    async fn send_text(&mut self, text: &str) {
        let len = text.len();
        let mut frame = vec![0x81];
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(
                &u16::try_from(len)
                    .expect("a test frame under 64 KiB")
                    .to_be_bytes(),
            );
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(text.as_bytes());
        self.0
            .write_all(&frame)
            .await
            .expect("the frame is written");
    }

    async fn recv_text(&mut self) -> String {
        let mut head = [0u8; 2];
        self.0.read_exact(&mut head).await.expect("a frame comes");
        assert_eq!(head[0], 0x81, "a final text frame");
        let len = match head[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                self.0.read_exact(&mut n).await.expect("a length");
                usize::from(u16::from_be_bytes(n))
            }
            127 => panic!("a signaling reply over 64 KiB"),
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        self.0.read_exact(&mut payload).await.expect("the payload");
        String::from_utf8(payload).expect("a text frame is UTF-8")
    }

    /// A protocol ping before `join`, padded with `padding` spaces (still valid JSON), answered with the
    /// session's typed error: the session runs and has parsed the whole message.
    async fn ping(&mut self, id: u32, padding: usize) {
        self.send_text(&format!(
            "{{\"type\":\"ping\",\"id\":{id}}}{}",
            " ".repeat(padding)
        ))
        .await;
        let reply = tokio::time::timeout(TIMEOUT, self.recv_text())
            .await
            .expect("the answer comes in time");
        assert!(
            reply.starts_with("{\"type\":\"error\",\"code\":\"not_joined\""),
            "{reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_signaling_session_keeps_little_of_the_servers_heap() {
    let mut config = Config::default();
    config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.media.port_start = 0;
    config.media.workers = 1;
    let server = Server::bind(config).await.expect("binds on free ports");
    let addr = server.http_addr();
    let shutdown = Shutdown::new();
    let serving = tokio::spawn(server.serve(shutdown.clone()));

    // Warm up what the first connection initialises once, outside the measurement.
    let mut first = RawWs::connect(addr).await;
    first.ping(1, 0).await;
    // A message five times the read buffer (valid JSON: trailing whitespace) arrives whole.
    first.ping(2, 20 * 1024).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let before = LIVE.load(Ordering::Relaxed);
    let mut open = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let mut ws = RawWs::connect(addr).await;
        ws.ping(i as u32, 0).await;
        open.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_session = (LIVE.load(Ordering::Relaxed) - before) / SESSIONS as isize;
    println!("{per_session} heap bytes per open signaling session");
    assert!(
        per_session < MAX_SESSION_BYTES,
        "an open signaling session keeps {per_session} bytes"
    );

    drop(open);
    drop(first);
    assert!(shutdown.drain());
    tokio::time::timeout(TIMEOUT, serving)
        .await
        .expect("the server drains")
        .expect("the server task does not panic")
        .expect("the server stops without error");
}
