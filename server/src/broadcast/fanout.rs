//! The fan-out of one mount: one task writes every page to every listener taken before hyper (`raw.rs`),
//! straight to the listener's non-blocking socket.
//!
//! Icecast serves its listeners from one thread that sends each new block to every client; so does this,
//! with less per listener: a listener is its socket, its connection's permit and a [`Feed`] — what is left
//! of the buffer it is writing (a slice of a shared page, no copy), the number of the next page, and its
//! ICY state. Pages are written in one pass of the task per page (one wake-up per page, not one per
//! listener), each listener with one `writev` of whatever it has pending: what is left of the page before,
//! the ICY blocks due, the new pages. A listener is written every [`Cadence::pages`] pages
//! (`broadcast.listener_write_ms`), on its own phase, so each pass writes a share of the listeners and
//! each listener gets that many pages per system call. A socket that takes less is *blocked*: it is not offered the next pages but
//! waits for writability (the task is woken by its readiness, the others are not held up), then gets all it
//! missed in one `writev`. A blocked listener whose next page has left the ring — it is
//! `broadcast.listener_queue_pages` behind live — is dropped, counted and logged. Nothing is allocated per
//! listener per page.
//!
//! The task lives while the mount has listeners of its own; `hand_over` starts one when there is none.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::{Arc, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, warn};

use super::listener::Icy;
use super::{Broadcasts, Mount, Page};
use crate::conn::Permit;

/// Buffers handed to one `writev` at most (a listener that missed more writes again at once).
const MAX_IOV: usize = 64;

/// How often the fan-out looks for listeners whose client hung up while nothing was written to them (a
/// mount with no audio yet): a read-readiness check each, a syscall only for those the kernel flagged.
const HANGUP_CHECK: Duration = Duration::from_secs(1);

/// A listener whose request head `raw.rs` read and admitted.
pub(crate) struct Arrival {
    pub(super) stream: TcpStream,
    pub(super) permit: Permit,
    /// The response head (status line and headers) to write before the stream.
    pub(super) head: Bytes,
    pub(super) icy: bool,
}

/// Hands `arrival` to `mount`'s fan-out, started if it has none. The listener counts from now.
pub(super) fn hand_over(broadcasts: &Arc<Broadcasts>, mount: &Arc<Mount>, arrival: Arrival) {
    broadcasts.listener_joined(mount);
    let mut slot = mount.fanout.lock().unwrap_or_else(PoisonError::into_inner);
    let arrival = match slot.as_ref() {
        Some(tx) => match tx.send(arrival) {
            Ok(()) => return,
            Err(mpsc::error::SendError(arrival)) => arrival,
        },
        None => arrival,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    // The receiver is alive: it is moved into the task below.
    let _ = tx.send(arrival);
    *slot = Some(tx);
    // Under the pager's lock (pages are published under it): the ring starts with the last page published
    // and the receiver has every page after it.
    let (pages, ring, headers) = {
        let pager = mount.lock_pager();
        let mut ring = Ring {
            pages: VecDeque::with_capacity(broadcasts.config.listener_queue_pages),
            capacity: broadcasts.config.listener_queue_pages,
            next: pager.next_number,
        };
        for page in pager.recent.iter().cloned() {
            ring.push(page);
        }
        (mount.pages.subscribe(), ring, pager.headers.clone())
    };
    let cadence = Cadence {
        pages: broadcasts.config.pages_per_write(),
    };
    let fanout = Fanout {
        broadcasts: broadcasts.clone(),
        mount: mount.clone(),
        headers,
        ring,
        cadence,
        phases: (0..cadence.pages).map(|_| Vec::new()).collect(),
        blocked: 0,
        scratch: Vec::with_capacity(MAX_IOV),
    };
    tokio::spawn(fanout.run(rx, pages));
}

/// One listener of the fan-out.
struct Listener {
    id: u64,
    stream: TcpStream,
    _permit: Permit,
    feed: Feed,
    /// Its socket took less than it was offered: it is written again once writable, not on new pages.
    blocked: bool,
}

/// The pages a fan-out keeps: the last `listener_queue_pages`, numbered in order.
struct Ring {
    pages: VecDeque<Page>,
    capacity: usize,
    /// The number the next page will have.
    next: u64,
}

impl Ring {
    fn get(&self, number: u64) -> Option<&Bytes> {
        let oldest = self.pages.front()?.number;
        let i = usize::try_from(number.checked_sub(oldest)?).ok()?;
        self.pages.get(i).map(|p| &p.bytes)
    }

    /// The oldest page still kept: a listener that needs one before it is a queue behind.
    fn oldest(&self) -> u64 {
        self.pages.front().map_or(self.next, |p| p.number)
    }

    /// Where a new listener starts: `pages` pages back from the newest (its first audio at once, enough to
    /// play until its next write), as far as the ring goes; else the next page to come.
    fn start(&self, pages: u64) -> u64 {
        match self.pages.back() {
            Some(newest) => newest
                .number
                .saturating_sub(pages.saturating_sub(1))
                .max(self.oldest()),
            None => self.next,
        }
    }

    /// Keeps `page`; returns whether pages were missed before it (the fan-out itself fell behind).
    fn push(&mut self, page: Page) -> bool {
        let gap = page.number != self.next && !self.pages.is_empty();
        if gap {
            self.pages.clear();
        }
        if self.pages.len() == self.capacity {
            self.pages.pop_front();
        }
        self.next = page.number + 1;
        self.pages.push_back(page);
        gap
    }
}

/// When listeners are written: every `pages` pages, each on its phase (the pass of page `n` writes the
/// listeners whose phase is `n % pages`).
#[derive(Clone, Copy, Debug)]
struct Cadence {
    pages: u64,
}

impl Cadence {
    /// Whether a listener of `phase` is due after a pass that received pages `first..=last`.
    fn due(self, phase: u64, first: u64, last: u64) -> bool {
        last - first + 1 >= self.pages || (first..=last).any(|n| n % self.pages == phase)
    }
}

/// What one listener has to write, in order: its response head, an ICY block under way, the rest of the
/// audio buffer it is in (the header pages, then a page), then the ring from page `next` on — with an ICY
/// block after every `metaint` audio bytes when it asked for them. All slices of shared buffers.
#[derive(Clone, Debug)]
struct Feed {
    head: Bytes,
    meta: Bytes,
    current: Bytes,
    next: u64,
    icy: Option<Icy>,
}

impl Feed {
    /// The next contiguous piece to write (a cheap reference-counted slice), if any.
    fn piece(&self, ring: &Ring) -> Option<Bytes> {
        if !self.head.is_empty() {
            return Some(self.head.clone());
        }
        if !self.meta.is_empty() {
            return Some(self.meta.clone());
        }
        let audio = if self.current.is_empty() {
            ring.get(self.next)?.clone()
        } else {
            self.current.clone()
        };
        Some(match &self.icy {
            Some(icy) => audio.slice(..icy.room().min(audio.len())),
            None => audio,
        })
    }

    /// `n` bytes (at most the length of [`Feed::piece`]) went out; `meta` is the mount's ICY block now.
    fn consume(&mut self, n: usize, ring: &Ring, meta: &Bytes) {
        if !self.head.is_empty() {
            self.head.advance(n);
            return;
        }
        if !self.meta.is_empty() {
            self.meta.advance(n);
            return;
        }
        if self.current.is_empty() {
            self.current = ring.get(self.next).cloned().unwrap_or_default();
            self.next += 1;
        }
        self.current.advance(n);
        if let Some(block) = self.icy.as_mut().and_then(|icy| icy.after(n, meta)) {
            self.meta = block;
        }
    }

    /// Without ICY (`icy` is `None`), what is pending as borrowed slices into `iov`, as many as fit: the
    /// head, the rest of the current buffer, then the ring's pages from `next` on. The slices used and
    /// their bytes. No reference count moves (see [`write_listener`]).
    fn pending_plain<'a>(&'a self, ring: &'a Ring, iov: &mut [IoSlice<'a>]) -> (usize, usize) {
        debug_assert!(self.icy.is_none() && self.meta.is_empty());
        let (mut used, mut bytes) = (0, 0);
        let buffered = [&self.head, &self.current].into_iter().map(|b| &b[..]);
        let pages = (self.next..).map_while(|n| ring.get(n).map(|p| &p[..]));
        for piece in buffered.chain(pages).filter(|p| !p.is_empty()) {
            let Some(slot) = iov.get_mut(used) else { break };
            *slot = IoSlice::new(piece);
            used += 1;
            bytes += piece.len();
        }
        (used, bytes)
    }

    /// Without ICY: `n` bytes of [`Feed::pending_plain`] went out. Pages written whole are passed by
    /// number; only a page written in part is kept (a slice of it).
    fn consume_plain(&mut self, mut n: usize, ring: &Ring) {
        for buffer in [&mut self.head, &mut self.current] {
            let k = buffer.len().min(n);
            buffer.advance(k);
            n -= k;
        }
        while n > 0 {
            let Some(page) = ring.get(self.next) else {
                debug_assert!(false, "wrote {n} bytes past the pending pages");
                return;
            };
            self.next += 1;
            if n < page.len() {
                self.current = page.slice(n..);
                return;
            }
            n -= page.len();
        }
    }
}

/// What woke the fan-out.
enum Wake {
    Arrival(Option<Arrival>),
    Page(Result<Page, RecvError>),
    Writable(At),
    HangupCheck,
}

/// Where a listener is: its phase (the pages after which it is written: those whose number is this modulo
/// [`Cadence::pages`]) and its place in that phase's list.
#[derive(Clone, Copy, Debug)]
struct At {
    phase: usize,
    index: usize,
}

struct Fanout {
    broadcasts: Arc<Broadcasts>,
    mount: Arc<Mount>,
    headers: Bytes,
    ring: Ring,
    cadence: Cadence,
    /// The listeners, one list per phase: a pass looks only at the lists whose phase is due (and at the
    /// others only while some listener is blocked), so a listener costs nothing in the passes between its
    /// writes.
    phases: Vec<Vec<Listener>>,
    /// Listeners whose socket was full ([`Listener::blocked`]); while there is none, neither the passes nor
    /// the wait for writability look at a listener that is not due.
    blocked: usize,
    /// The pieces of one `writev` (reused: no allocation per write).
    scratch: Vec<Bytes>,
}

impl Fanout {
    async fn run(
        mut self,
        mut arrivals: mpsc::UnboundedReceiver<Arrival>,
        mut pages: broadcast::Receiver<Page>,
    ) {
        let mut hangups = tokio::time::interval(HANGUP_CHECK);
        hangups.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = tokio::select! {
                biased;
                arrival = arrivals.recv() => Wake::Arrival(arrival),
                page = pages.recv() => Wake::Page(page),
                at = writable(&self.phases, self.blocked) => Wake::Writable(at),
                _ = hangups.tick() => Wake::HangupCheck,
            };
            match wake {
                Wake::Arrival(Some(arrival)) => self.add(arrival),
                // The mount's slot holds the sender while the task runs.
                Wake::Arrival(None) => {}
                Wake::Page(Ok(page)) => {
                    let first = page.number;
                    self.page(page);
                    // Pages that came meanwhile go out in the same pass.
                    loop {
                        match pages.try_recv() {
                            Ok(page) => self.page(page),
                            Err(TryRecvError::Lagged(missed)) => self.lagged(missed),
                            Err(_) => break,
                        }
                    }
                    let last = self.ring.next - 1;
                    self.write_all(first.min(last), last);
                }
                Wake::Page(Err(RecvError::Lagged(missed))) => self.lagged(missed),
                Wake::Page(Err(RecvError::Closed)) => {}
                Wake::Writable(at) => {
                    let meta = self.mount.meta();
                    let sent = self.write(at, &meta);
                    self.broadcasts.count_sent(&self.mount, sent);
                }
                Wake::HangupCheck => self.check_hangups(),
            }
            if self.phases.iter().all(Vec::is_empty) {
                let mut slot = self
                    .mount
                    .fanout
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match arrivals.try_recv() {
                    Ok(arrival) => {
                        drop(slot);
                        self.add(arrival);
                    }
                    Err(_) => {
                        *slot = None;
                        return;
                    }
                }
            }
        }
    }

    fn add(&mut self, arrival: Arrival) {
        let id = self
            .broadcasts
            .next_listener
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        debug!(room = %self.mount.room, listener = id, icy = arrival.icy, "broadcast listener connected");
        let metaint = self.broadcasts.config.icy_metaint_bytes;
        let phase = usize::try_from(id % self.cadence.pages)
            .expect("a phase is below the pages per write, a usize");
        let list = &mut self.phases[phase];
        list.push(Listener {
            id,
            stream: arrival.stream,
            _permit: arrival.permit,
            feed: Feed {
                head: arrival.head,
                meta: Bytes::new(),
                current: self.headers.clone(),
                next: self.ring.start(self.cadence.pages),
                icy: arrival.icy.then(|| Icy::new(metaint)),
            },
            blocked: false,
        });
        let at = At {
            phase,
            index: list.len() - 1,
        };
        let meta = self.mount.meta();
        let sent = self.write(at, &meta);
        self.broadcasts.count_sent(&self.mount, sent);
    }

    fn page(&mut self, page: Page) {
        let number = page.number;
        if self.ring.push(page) {
            // The task fell a whole ring behind the pager: its listeners skip to this page.
            for l in self.phases.iter_mut().flatten() {
                if l.feed.next < number {
                    l.feed.next = number;
                }
            }
        }
    }

    fn lagged(&mut self, missed: u64) {
        warn!(room = %self.mount.room, missed, "broadcast fan-out fell behind: its listeners skip pages");
    }

    /// A pass over every listener after pages `first..=last`: the ready ones whose phase is due are
    /// written, the blocked ones a queue behind are dropped.
    fn write_all(&mut self, first: u64, last: u64) {
        let meta = self.mount.meta();
        let oldest = self.ring.oldest();
        let mut sent = 0;
        for phase in 0..self.phases.len() {
            let due = self.cadence.due(phase as u64, first, last);
            if !due && self.blocked == 0 {
                continue;
            }
            let mut index = 0;
            while index < self.phases[phase].len() {
                let at = At { phase, index };
                let l = &self.phases[phase][index];
                if !l.blocked {
                    if !due {
                        index += 1;
                        continue;
                    }
                    let before = self.phases[phase].len();
                    sent += self.write(at, &meta);
                    if self.phases[phase].len() < before {
                        continue; // removed: another one is at `index` now
                    }
                } else if l.feed.next < oldest {
                    let behind = self.ring.next - l.feed.next;
                    self.broadcasts.count_slow(&self.mount, l.id, behind);
                    self.remove(at);
                    continue;
                }
                index += 1;
            }
        }
        self.broadcasts.count_sent(&self.mount, sent);
    }

    /// Writes what listener `i` has pending, as far as its socket takes it; removes it if its connection
    /// is gone. The bytes written.
    fn write(&mut self, at: At, meta: &Bytes) -> usize {
        let l = &mut self.phases[at.phase][at.index];
        let was_blocked = l.blocked;
        let result = write_listener(l, &self.ring, meta, &mut self.scratch);
        match (was_blocked, l.blocked) {
            (false, true) => self.blocked += 1,
            (true, false) => self.blocked -= 1,
            _ => {}
        }
        match result {
            Ok(sent) => sent,
            Err((sent, e)) => {
                debug!(room = %self.mount.room, listener = l.id, error = %e, "broadcast listener gone");
                self.remove(at);
                sent
            }
        }
    }

    fn remove(&mut self, at: At) {
        // Order does not matter: every listener of a phase is written in each of its passes.
        let gone = self.phases[at.phase].swap_remove(at.index);
        if gone.blocked {
            self.blocked -= 1;
        }
        drop(gone);
        self.broadcasts.listener_left(&self.mount);
    }

    /// Listeners whose client closed its end (the kernel flagged the socket readable): gone. Bytes a client
    /// sends after its request are read and ignored.
    fn check_hangups(&mut self) {
        let mut buf = [0u8; 256];
        for phase in 0..self.phases.len() {
            let mut index = 0;
            while index < self.phases[phase].len() {
                let at = At { phase, index };
                let l = &self.phases[phase][index];
                match l.stream.try_read(&mut buf) {
                    Ok(0) => {
                        debug!(room = %self.mount.room, listener = l.id, "broadcast listener hung up");
                        self.remove(at);
                        continue;
                    }
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                        self.remove(at);
                        continue;
                    }
                    _ => {}
                }
                index += 1;
            }
        }
    }
}

/// Resolves with a blocked listener whose socket can take data again; never while none is blocked
/// (`blocked`), without looking at a listener.
async fn writable(phases: &[Vec<Listener>], blocked: usize) -> At {
    if blocked == 0 {
        return std::future::pending().await;
    }
    poll_fn(|cx| {
        for (phase, list) in phases.iter().enumerate() {
            for (index, l) in list.iter().enumerate() {
                if l.blocked && l.stream.poll_write_ready(cx).is_ready() {
                    return Poll::Ready(At { phase, index });
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// One listener's `writev`s until it has nothing pending or its socket is full. `Err`: its connection
/// failed (with what was written before).
///
/// Without ICY, the pending slices are borrowed straight into the `iovec`s ([`Feed::pending_plain`]: no
/// reference count moves per write); with it, they are gathered into `scratch` first (its blocks fall
/// inside the audio). A `writev` that took everything there was is the last, without another look.
fn write_listener(
    l: &mut Listener,
    ring: &Ring,
    meta: &Bytes,
    scratch: &mut Vec<Bytes>,
) -> Result<usize, (usize, io::Error)> {
    let plain = l.feed.icy.is_none();
    let mut sent = 0;
    loop {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let (used, pending) = if plain {
            l.feed.pending_plain(ring, &mut iov)
        } else {
            gather(&l.feed, ring, meta, scratch);
            for (slot, piece) in iov.iter_mut().zip(scratch.iter()) {
                *slot = IoSlice::new(piece);
            }
            (scratch.len(), scratch.iter().map(Bytes::len).sum())
        };
        if used == 0 {
            l.blocked = false;
            return Ok(sent);
        }
        match l.stream.try_write_vectored(&iov[..used]) {
            Ok(0) => return Err((sent, io::ErrorKind::WriteZero.into())),
            // In part: the next round's `writev` meets the full socket and arms its writability.
            Ok(n) => {
                sent += n;
                if plain {
                    l.feed.consume_plain(n, ring);
                } else {
                    commit(&mut l.feed, scratch, n, ring, meta);
                }
                if n == pending && used < MAX_IOV {
                    l.blocked = false;
                    return Ok(sent);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                l.blocked = true;
                return Ok(sent);
            }
            Err(e) => return Err((sent, e)),
        }
    }
}

/// The pieces `feed` has pending (at most [`MAX_IOV`]) into `scratch`, without consuming them.
fn gather(feed: &Feed, ring: &Ring, meta: &Bytes, scratch: &mut Vec<Bytes>) {
    scratch.clear();
    let mut probe = feed.clone();
    while scratch.len() < MAX_IOV {
        let Some(piece) = probe.piece(ring) else {
            break;
        };
        probe.consume(piece.len(), ring, meta);
        scratch.push(piece);
    }
}

/// `n` bytes of the gathered `pieces` were written: `feed` moves past them.
fn commit(feed: &mut Feed, pieces: &[Bytes], n: usize, ring: &Ring, meta: &Bytes) {
    let mut left = n;
    for piece in pieces {
        if left == 0 {
            break;
        }
        let k = piece.len().min(left);
        feed.consume(k, ring, meta);
        left -= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(pages: &[Bytes], capacity: usize) -> Ring {
        let mut ring = Ring {
            pages: VecDeque::new(),
            capacity,
            next: 0,
        };
        for (number, bytes) in pages.iter().enumerate() {
            ring.push(Page {
                number: number as u64,
                bytes: bytes.clone(),
            });
        }
        ring
    }

    /// Splits an ICY stream (metadata every `metaint` body bytes) into its body and its titles.
    fn unweave(stream: &[u8], metaint: usize) -> (Vec<u8>, Vec<String>) {
        let (mut body, mut titles, mut at) = (Vec::new(), Vec::new(), 0);
        while at < stream.len() {
            let n = metaint.min(stream.len() - at);
            body.extend_from_slice(&stream[at..at + n]);
            at += n;
            let Some(&blocks) = stream.get(at) else { break };
            let len = blocks as usize * 16;
            let block = &stream[at + 1..at + 1 + len];
            if len > 0 {
                let text = String::from_utf8_lossy(block);
                let title = text
                    .strip_prefix("StreamTitle='")
                    .and_then(|t| t.split_once("';"))
                    .map(|(t, _)| t.to_owned())
                    .expect("a block is a StreamTitle");
                assert!(
                    block[13 + title.len() + 2..].iter().all(|b| *b == 0),
                    "zero padding"
                );
                titles.push(title);
            }
            at += 1 + len;
        }
        (body, titles)
    }

    /// Writes of every size, cut anywhere (inside a page, an ICY block, the response head): the
    /// stream is the head, then the body with a block after every `metaint` bytes — the title in full when
    /// it changed, a zero byte otherwise — and the body is the header pages and the pages whole, in order.
    #[test]
    fn icy_blocks_fall_every_metaint_bytes_across_partial_writes() {
        let pages: Vec<Bytes> = (0..12u8)
            .map(|i| Bytes::from(vec![i; 37 + i as usize * 11]))
            .collect();
        let ring = ring_of(&pages, 32);
        let headers = Bytes::from_static(b"HEADERS-PAGES");
        for metaint in [1, 7, 64, 1000] {
            for cut in [1, 2, 5, 16, 33, 100, 4096] {
                let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n");
                let mut feed = Feed {
                    head: head.clone(),
                    meta: Bytes::new(),
                    current: headers.clone(),
                    next: 0,
                    icy: Some(Icy::new(metaint)),
                };
                let (alice, bob) = (
                    super::super::icy_metadata("Alice"),
                    super::super::icy_metadata("Bob"),
                );
                let mut out = Vec::new();
                let mut scratch = Vec::new();
                loop {
                    // The title changes once the first block (Alice) is out.
                    let switch = head.len() + 2 * metaint + 40;
                    let meta = if out.len() < switch { &alice } else { &bob };
                    gather(&feed, &ring, meta, &mut scratch);
                    if scratch.is_empty() {
                        break;
                    }
                    let all: Vec<u8> = scratch.iter().flat_map(|p| p.iter().copied()).collect();
                    let n = cut.min(all.len());
                    out.extend_from_slice(&all[..n]);
                    commit(&mut feed, &scratch, n, &ring, meta);
                }
                assert!(out.starts_with(&head));
                let (body, titles) = unweave(&out[head.len()..], metaint);
                let mut expected = headers.to_vec();
                for p in &pages {
                    expected.extend_from_slice(p);
                }
                assert_eq!(body, expected, "metaint {metaint}, writes of {cut}");
                // A title is sent again only when it changed: Alice, then Bob where a block is written
                // after the change (the body is 1,183 bytes; one long write takes the title of its time).
                if metaint <= 64 && cut <= 100 {
                    assert_eq!(
                        titles,
                        ["Alice", "Bob"],
                        "metaint {metaint}, writes of {cut}"
                    );
                } else {
                    assert_eq!(titles.first().map(String::as_str), Some("Alice"));
                    assert!(titles.len() <= 2 && titles.get(1).is_none_or(|t| t == "Bob"));
                }
            }
        }
    }

    /// The borrowed path of a listener without ICY, with writes of every size cut anywhere (inside the
    /// head, the header pages, a page) and more pages pending than one `writev` takes: the stream is the
    /// head, the header pages, then every page whole and in order, as the general path writes it.
    #[test]
    fn a_plain_listener_gets_every_byte_in_order_across_partial_writes() {
        let pages: Vec<Bytes> = (0..MAX_IOV as u32 + 9)
            .map(|i| Bytes::from(vec![i as u8; 5 + (i as usize * 7) % 41]))
            .collect();
        let ring = ring_of(&pages, pages.len());
        let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n");
        let headers = Bytes::from_static(b"HEADERS-PAGES");
        let mut expected = [head.to_vec(), headers.to_vec()].concat();
        pages.iter().for_each(|p| expected.extend_from_slice(p));
        for cut in [1, 2, 5, 16, 33, 100, 4096, usize::MAX] {
            let mut feed = Feed {
                head: head.clone(),
                meta: Bytes::new(),
                current: headers.clone(),
                next: 0,
                icy: None,
            };
            let mut out = Vec::new();
            loop {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let (used, bytes) = feed.pending_plain(&ring, &mut iov);
                assert_eq!(bytes, iov[..used].iter().map(|s| s.len()).sum::<usize>());
                if used == 0 {
                    break;
                }
                let all: Vec<u8> = iov[..used].iter().flat_map(|s| s.iter().copied()).collect();
                let n = cut.min(all.len());
                out.extend_from_slice(&all[..n]);
                feed.consume_plain(n, &ring);
            }
            assert_eq!(out, expected, "writes of {cut}");
            assert_eq!(feed.next, pages.len() as u64);
        }
    }

    #[test]
    fn a_listener_starts_on_the_newest_page_and_a_gap_restarts_the_ring() {
        let pages: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![i; 3])).collect();
        let mut ring = ring_of(&pages, 3);
        assert_eq!((ring.oldest(), ring.start(1), ring.next), (2, 4, 5));
        assert_eq!(ring.start(2), 3, "two pages at once");
        assert_eq!(ring.start(9), 2, "as far back as the ring goes");
        assert!(ring.get(1).is_none(), "left the ring");
        assert!(!ring.push(Page {
            number: 5,
            bytes: Bytes::from_static(b"x")
        }));
        assert!(
            ring.push(Page {
                number: 9,
                bytes: Bytes::from_static(b"y")
            }),
            "pages 6..9 missed"
        );
        assert_eq!((ring.oldest(), ring.start(3)), (9, 9));
        let empty = ring_of(&[], 3);
        assert_eq!(empty.start(3), 0, "the first page to come");
    }

    /// Every listener is written once every `pages` pages whatever its phase, also when a pass takes
    /// several pages at once; with one page per write, after every page.
    #[test]
    fn each_phase_is_due_once_per_cadence() {
        let cadence = Cadence { pages: 3 };
        for phase in 0..3 {
            let due: Vec<u64> = (0..12).filter(|&n| cadence.due(phase, n, n)).collect();
            assert_eq!(
                due,
                vec![phase, phase + 3, phase + 6, phase + 9],
                "phase {phase}"
            );
        }
        assert!(
            cadence.due(2, 3, 5),
            "a pass of three pages writes everyone"
        );
        assert!(cadence.due(1, 3, 4) && cadence.due(0, 3, 4) && !cadence.due(2, 3, 4));
        let every = Cadence { pages: 1 };
        assert!((0..5).all(|n| every.due(0, n, n)));
    }
}
