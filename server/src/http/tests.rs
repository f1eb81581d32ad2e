//! A WebSocket's buffers after a large message: what each participant's connection keeps for its life.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Cursor, Read, Write};

use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::{WS_READ_BUFFER_BYTES, WS_WRITE_BUFFER_BYTES};

/// Counts, per thread, the heap bytes allocated and not yet freed, so a test on one thread can see what a
/// value it owns keeps (other tests run on other threads and do not disturb the count).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // During a thread's teardown the counter may be gone; nothing measures then.
    let _ = LIVE.try_with(|l| l.set(l.get() + n));
}

fn live() -> isize {
    LIVE.with(Cell::get)
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged; the
// bookkeeping touches only a thread-local integer.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// A client's bytes to read, and a sink for what the server writes (counted, not kept).
struct Pipe {
    input: Cursor<Vec<u8>>,
    written: usize,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.input.read(buf)? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A client's text frame: masked (with a zero key, so the payload reads as itself), 16-bit length.
fn client_text_frame(len: usize) -> Vec<u8> {
    let len16 = u16::try_from(len).expect("a test frame fits a 16-bit length");
    let mut f = vec![0x81, 0x80 | 126];
    f.extend_from_slice(&len16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend(std::iter::repeat_n(b'o', len));
    f
}

#[test]
fn a_connection_keeps_no_large_buffer_after_a_large_message_either_way() {
    // The server's own settings (http.rs), on a socket whose client sends one 20 KB message (an offer is a
    // few KiB; a long one must not cost its size for the connection's life).
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES);
    // Then two short messages and one of 3 KB, longer than the read size (1 KiB) and cut by the reads
    // before it: the buffer grows for it, and goes back to the read size once it is read.
    let mut input = client_text_frame(20_000);
    for len in [1_000, 1_000, 3_000] {
        input.extend(client_text_frame(len));
    }
    let pipe = Pipe {
        input: Cursor::new(input),
        written: 0,
    };
    let mut ws = WebSocket::from_raw_socket(pipe, Role::Server, Some(config));
    let idle = live();

    // A `joined` listing a room of 1,000 is about 60 KB.
    let joined: String = "p".repeat(60_000);
    ws.send(Message::Text(joined.into()))
        .expect("the pipe takes every byte");
    assert!(ws.get_ref().written > 60_000);
    let after_send = live() - idle;
    assert!(
        after_send < 1024,
        "after sending 60 KB the connection keeps {after_send} bytes more than idle"
    );

    let got = ws.read().expect("the client's frame is whole in the pipe");
    assert_eq!(got.len(), 20_000);
    drop(got);
    let after_read = live() - idle;
    assert!(
        after_read < 1024,
        "after reading 20 KB the connection keeps {after_read} bytes more than idle"
    );

    for len in [1_000, 1_000, 3_000] {
        let got = ws
            .read()
            .expect("the client's frames are whole in the pipe");
        assert_eq!(got.len(), len);
    }
    let after_straddle = live() - idle;
    assert!(
        after_straddle < 1024,
        "after a message the read size cut in two the connection keeps {after_straddle} bytes more than idle"
    );
}
