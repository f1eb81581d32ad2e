//! Listeners of a room another node hosts (a cluster): this node relays the owner's mount, once for all
//! its listeners, instead of answering 404 — so a room's audience spreads over every node while its mix is
//! encoded once, on the node that hosts the room (docs/broadcast.md, "Listeners on every node").
//!
//! The first listener of such a room locates its owner (`Cluster::owner_elsewhere`, the room claims in
//! Redis), and the relay opens one listener connection to the owner's mount, with an access token for the
//! room signed with the API keys the nodes share, asking for ICY metadata. Its Ogg pages are read back into
//! Opus packets (`ogg_reader`, every page's CRC and both Opus headers checked) and paged again on a local
//! mount with this node's own serial number and page counter, granule positions carried over: a listener
//! here gets a stream of its own node, so the relay can reconnect (to a new owner after a drain or a crash)
//! without the listeners seeing a new stream. The owner's ICY title follows, and so does its `public` flag
//! (on its response, [`PUBLIC_HEADER`]). From there the local mount is like any other: the fan-out, the
//! bounded queues, the counters.
//!
//! The relay ends once the mount has had no listener for [`RELAY_IDLE`], or when the owner cannot be
//! reached again; it then removes its mount (the next listener starts a new relay).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use super::listener::PUBLIC_HEADER;
use super::ogg::PRE_SKIP;
use super::ogg_reader::{OggError, OggItem, OggReader};
use super::{Broadcasts, Mount, FRAME_SAMPLES};
use crate::state::AppState;

/// How long a relayed mount lives with no listener (a listener reconnecting finds it running).
const RELAY_IDLE: Duration = Duration::from_secs(5);
/// How long the owner may take to answer with the stream's header pages.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The owner's stream sending nothing this long is a lost upstream (a mount pages every `page_ms`).
const STALL: Duration = Duration::from_secs(5);
/// Attempts to reach the owner again (re-located each time, 1 s apart) once its stream ended.
const RECONNECTS: u32 = 5;
/// Lifetime of the access token the relay presents to the owner.
const TOKEN_TTL_SECS: u64 = 300;

/// Why a mount could not be relayed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    #[error("not a mount of a valid room name")]
    NoMount,
    #[error("no other live node hosts the room")]
    NoOwner,
    #[error("the cluster's shared state does not answer")]
    ClusterUnavailable,
    #[error("the owner's mount did not answer: {0}")]
    Upstream(String),
    #[error("the owner's stream: {0}")]
    Stream(#[from] OggError),
    #[error("the owner's stream is not a mono Ogg/Opus mount")]
    Format,
    #[error("no API key to sign the request to the owner")]
    NoKey,
}

impl RelayError {
    /// The `result` label of `chorus_broadcast_relays_total`.
    fn label(&self) -> &'static str {
        match self {
            RelayError::NoMount | RelayError::NoOwner => "no_owner",
            RelayError::ClusterUnavailable => "cluster_unavailable",
            RelayError::Upstream(_) => "upstream_failed",
            RelayError::Stream(_) | RelayError::Format => "bad_stream",
            RelayError::NoKey => "no_key",
        }
    }
}

/// Makes sure mount file `file` (`{room}.opus`) of a room another node hosts is relayed here: returns once
/// its mount exists (started now, or by another listener before).
pub(super) async fn ensure(state: &Arc<AppState>, file: &str) -> Result<(), RelayError> {
    let broadcasts = &state.broadcasts;
    let room = file
        .strip_suffix(".opus")
        .filter(|r| signaling::auth::is_valid_room_name(r))
        .ok_or(RelayError::NoMount)?;
    // One start at a time: listeners arriving together wait for the first one's relay.
    let _one = broadcasts.relay_start.lock().await;
    if broadcasts.mount(room).is_some() {
        return Ok(());
    }
    let upstream = match Upstream::connect(state, room).await {
        Ok(upstream) => upstream,
        Err(e) => {
            broadcasts
                .metrics
                .relays
                .with_label_values(&[e.label()])
                .inc();
            return Err(e);
        }
    };
    let (mount, made) = broadcasts.mount_or_make(room, true);
    if made {
        broadcasts
            .metrics
            .relays
            .with_label_values(&["started"])
            .inc();
        info!(room, owner = %upstream.owner, "relaying another node's mount");
        upstream.apply(&mount);
        tokio::spawn(pump(state.clone(), mount, upstream));
    }
    Ok(())
}

/// One connection to the owner's mount.
struct Upstream {
    owner: String,
    response: reqwest::Response,
    public: bool,
    icy: Option<IcySplit>,
    reader: OggReader,
    /// Audio bytes of the last chunk (reused).
    body: Vec<u8>,
}

impl Upstream {
    /// Locates `room`'s owner and opens its mount; returns once the stream's two headers are read and are
    /// this server's mount format (what the local mount's own header pages say).
    async fn connect(state: &AppState, room: &str) -> Result<Upstream, RelayError> {
        let cluster = state.cluster.as_ref().ok_or(RelayError::NoOwner)?;
        let owner = cluster
            .owner_elsewhere(room)
            .await
            .map_err(|_| RelayError::ClusterUnavailable)?
            .filter(|o| !o.admin_url.is_empty())
            .ok_or(RelayError::NoOwner)?;
        let keys = state.signaling.api_keys();
        let key = keys.key_ids().next().ok_or(RelayError::NoKey)?.to_owned();
        let identity = format!("relay-{}", cluster.id());
        let claims = signaling::auth::Claims::valid_for(room, &identity, TOKEN_TTL_SECS);
        let token = keys.sign(&key, &claims).map_err(|_| RelayError::NoKey)?;
        let url = format!("{}/live/{room}.opus", owner.admin_url);
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let request = cluster
            .http()
            .get(&url)
            .bearer_auth(token)
            .header("icy-metadata", "1")
            .send();
        let response = tokio::time::timeout_at(deadline, request)
            .await
            .map_err(|_| RelayError::Upstream("timed out".into()))?
            .map_err(|e| RelayError::Upstream(e.without_url().to_string()))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(RelayError::Upstream(format!(
                "status {}",
                response.status()
            )));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let public = header(PUBLIC_HEADER).as_deref() == Some("1");
        let icy = header("icy-metaint")
            .and_then(|m| m.parse::<usize>().ok())
            .filter(|m| *m > 0)
            .map(IcySplit::new);
        let mut upstream = Upstream {
            owner: owner.id,
            response,
            public,
            icy,
            reader: OggReader::default(),
            body: Vec::new(),
        };
        loop {
            match upstream.reader.next_item() {
                Some(Ok(OggItem::Headers { channels, pre_skip })) => {
                    if (channels, pre_skip) != (1, PRE_SKIP) {
                        return Err(RelayError::Format);
                    }
                    return Ok(upstream);
                }
                Some(Ok(OggItem::Audio { .. })) => return Err(RelayError::Format),
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
            let chunk = tokio::time::timeout_at(deadline, upstream.chunk())
                .await
                .map_err(|_| RelayError::Upstream("no header pages in time".into()))??;
            if chunk.is_none() {
                return Err(RelayError::Upstream("the stream ended".into()));
            }
        }
    }

    /// The owner's `public` flag onto the local mount.
    fn apply(&self, mount: &Mount) {
        mount
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .public = Some(self.public);
    }

    /// Reads the next chunk into the Ogg reader (ICY blocks taken out); the last title in it, if any.
    /// `Ok(None)`: the stream ended.
    async fn chunk(&mut self) -> Result<Option<Option<String>>, RelayError> {
        let Some(chunk) = self
            .response
            .chunk()
            .await
            .map_err(|e| RelayError::Upstream(e.without_url().to_string()))?
        else {
            return Ok(None);
        };
        let title = match &mut self.icy {
            Some(icy) => {
                self.body.clear();
                let title = icy.split(&chunk, &mut self.body);
                self.reader.push(&self.body);
                title
            }
            None => {
                self.reader.push(&chunk);
                None
            }
        };
        Ok(Some(title))
    }
}

/// Granule positions of the local mount: the owner's, moved so that a reconnection continues the stream.
#[derive(Debug, Default)]
struct Granules {
    /// The local granule of the last page published.
    last: Option<u64>,
    /// (local, owner's) granule of the first page of the current connection.
    base: Option<(u64, u64)>,
}

impl Granules {
    /// The local granule of a page the owner stamped `owner` that carries `frames` 20 ms frames.
    fn map(&mut self, owner: u64, frames: u64) -> u64 {
        let (local, at) = *self.base.get_or_insert_with(|| {
            let local = match self.last {
                Some(last) => last + frames * FRAME_SAMPLES,
                None => owner,
            };
            (local, owner)
        });
        let mapped = local + owner.saturating_sub(at);
        // Never backwards: a player would take it for a broken stream.
        let mapped = self.last.map_or(mapped, |last| mapped.max(last + 1));
        self.last = Some(mapped);
        mapped
    }

    /// A new connection: the next page continues from the last one.
    fn reconnected(&mut self) {
        self.base = None;
    }
}

/// Pages the owner's stream onto `mount` until the relay ends; then removes the mount.
async fn pump(state: Arc<AppState>, mount: Arc<Mount>, mut upstream: Upstream) {
    let broadcasts = state.broadcasts.clone();
    let mut granules = Granules::default();
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut idle_since: Option<Instant> = None;
    let reason = 'relay: loop {
        match run(
            &broadcasts,
            &mount,
            &mut upstream,
            &mut granules,
            &mut packets,
            &mut idle_since,
        )
        .await
        {
            Ended::Idle => break 'relay "no listeners",
            Ended::Upstream(e) => {
                debug!(room = %mount.room, error = %e, "the relayed stream ended; reconnecting");
                packets.clear();
                granules.reconnected();
                for attempt in 1..=RECONNECTS {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if mount.listeners_now.load(Ordering::Relaxed) == 0 {
                        break 'relay "no listeners";
                    }
                    match Upstream::connect(&state, &mount.room).await {
                        Ok(next) => {
                            next.apply(&mount);
                            upstream = next;
                            continue 'relay;
                        }
                        Err(e) => {
                            debug!(room = %mount.room, attempt, error = %e, "relay reconnect failed")
                        }
                    }
                }
                warn!(room = %mount.room, "the relayed mount's owner cannot be reached: relay ended");
                break 'relay "owner unreachable";
            }
        }
    };
    info!(room = %mount.room, reason, "relay ended");
    broadcasts
        .metrics
        .relays
        .with_label_values(&["ended"])
        .inc();
    mount.relayed.store(false, Ordering::Relaxed);
    broadcasts.remove_mount(&mount);
}

/// Why one connection's relaying stopped.
enum Ended {
    Idle,
    Upstream(RelayError),
}

/// Relays one connection: pages out as they complete, titles as they change, until the mount has been
/// idle for [`RELAY_IDLE`] or the stream ends, fails or stalls.
async fn run(
    broadcasts: &Broadcasts,
    mount: &Mount,
    upstream: &mut Upstream,
    granules: &mut Granules,
    packets: &mut Vec<Vec<u8>>,
    idle_since: &mut Option<Instant>,
) -> Ended {
    let recent_pages = broadcasts.config.pages_per_write();
    loop {
        while let Some(item) = upstream.reader.next_item() {
            match item {
                Ok(OggItem::Audio {
                    packet,
                    granule,
                    last,
                }) => {
                    packets.push(packet);
                    if let (true, Some(owner)) = (last, granule) {
                        let local = granules.map(owner, packets.len() as u64);
                        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
                        let mut pager = mount.lock_pager();
                        let bytes = pager.stream.audio_page(local, &refs);
                        mount.publish(&mut pager, bytes, recent_pages);
                        drop(pager);
                        packets.clear();
                    }
                }
                // A chained stream's next link: the same format or the relay stops.
                Ok(OggItem::Headers { channels, pre_skip }) => {
                    if (channels, pre_skip) != (1, PRE_SKIP) {
                        return Ended::Upstream(RelayError::Format);
                    }
                }
                Err(e) => return Ended::Upstream(e.into()),
            }
        }
        if mount.listeners_now.load(Ordering::Relaxed) > 0 {
            *idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= RELAY_IDLE {
            return Ended::Idle;
        }
        match timeout(STALL, upstream.chunk()).await {
            Ok(Ok(Some(title))) => {
                if let Some(title) = title {
                    mount.set_meta(&title);
                }
            }
            Ok(Ok(None)) => {
                return Ended::Upstream(RelayError::Upstream("the stream ended".into()))
            }
            Ok(Err(e)) => return Ended::Upstream(e),
            Err(_) => return Ended::Upstream(RelayError::Upstream("the stream stalled".into())),
        }
    }
}

/// Takes an ICY stream apart: the body, and the metadata block after every `metaint` body bytes.
#[derive(Debug)]
struct IcySplit {
    metaint: usize,
    /// Body bytes until the next block's length byte.
    until: usize,
    /// Bytes of the block under way still to come, and what came of it.
    left: usize,
    block: Vec<u8>,
}

impl IcySplit {
    fn new(metaint: usize) -> Self {
        IcySplit {
            metaint,
            until: metaint,
            left: 0,
            block: Vec::new(),
        }
    }

    /// Appends the body bytes of `data` to `body`; the title of the last block completed in it, if any.
    fn split(&mut self, mut data: &[u8], body: &mut Vec<u8>) -> Option<String> {
        let mut title = None;
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.block.extend_from_slice(&data[..n]);
                self.left -= n;
                data = &data[n..];
                if self.left == 0 {
                    title = stream_title(&self.block).or(title);
                    self.until = self.metaint;
                }
            } else if self.until == 0 {
                self.left = usize::from(data[0]) * 16;
                self.block.clear();
                data = &data[1..];
                if self.left == 0 {
                    self.until = self.metaint;
                }
            } else {
                let n = self.until.min(data.len());
                body.extend_from_slice(&data[..n]);
                self.until -= n;
                data = &data[n..];
            }
        }
        title
    }
}

/// The title of an ICY block (`StreamTitle='…';`, zero-padded).
fn stream_title(block: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(block);
    let rest = text.strip_prefix("StreamTitle='")?;
    let (title, _) = rest.split_once("';")?;
    Some(title.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::icy_metadata;

    /// An ICY stream cut anywhere gives back its body whole and each title.
    #[test]
    fn icy_blocks_are_taken_out_of_a_stream_cut_anywhere() {
        let metaint = 10;
        let body: Vec<u8> = (0..55u8).collect();
        let mut stream = Vec::new();
        for (i, piece) in body.chunks(metaint).enumerate() {
            stream.extend_from_slice(piece);
            if piece.len() == metaint {
                match i {
                    0 => stream.extend_from_slice(&icy_metadata("Ada")),
                    3 => stream.extend_from_slice(&icy_metadata("Bob O'Neil")),
                    _ => stream.push(0),
                }
            }
        }
        for cut in [1, 3, 7, 16, 1000] {
            let mut split = IcySplit::new(metaint);
            let (mut out, mut titles) = (Vec::new(), Vec::new());
            for chunk in stream.chunks(cut) {
                if let Some(t) = split.split(chunk, &mut out) {
                    titles.push(t);
                }
            }
            assert_eq!(out, body, "chunks of {cut}");
            assert_eq!(titles.last().map(String::as_str), Some("Bob O’Neil"));
            if cut < 10 {
                assert_eq!(titles, ["Ada", "Bob O’Neil"], "chunks of {cut}");
            }
        }
    }

    /// The local granules follow the owner's within a connection and continue after a reconnection,
    /// whatever the new connection's granules (a restarted owner counts from zero).
    #[test]
    fn granules_continue_across_reconnections_and_never_go_back() {
        let mut g = Granules::default();
        assert_eq!(g.map(10_000, 5), 10_000);
        assert_eq!(g.map(14_800, 5), 14_800);
        g.reconnected();
        assert_eq!(
            g.map(500, 5),
            14_800 + 5 * 960,
            "continues after the last page"
        );
        assert_eq!(g.map(5_300, 5), 14_800 + 5 * 960 + 4_800);
        g.reconnected();
        let before = g.last.expect("a page was mapped");
        assert!(g.map(0, 0) > before);
    }
}
