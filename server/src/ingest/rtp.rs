//! Plain RTP/Opus into a room, for SIP gateways and engines without WebRTC (docs/broadcast.md, "Plain
//! RTP/Opus"). The admin API creates an endpoint for a room (`rtp_http.rs`): a UDP socket on a port the
//! system picks, and a source participant in the room. Comedia: the first RTP packet's source address is
//! latched, packets from anywhere else are dropped and counted (`foreign_source`). Each Opus packet goes to
//! the room's media worker with the sender's sequence number and timestamp (48 kHz, RFC 7587), so the
//! room's own jitter buffer and loss concealment (a mixed room) or the forwarding path take it as they
//! take a browser's. RTCP on the same port is ignored; anything that is not RTP version 2, or not Opus, is
//! a counted drop. Nothing for `ingest.source_timeout_ms` (before or after the first packet) ends it.
//!
//! An endpoint opened with SRTP (SDES, RFC 4568: the admin API hands out the key) opens every packet with
//! its [`SrtpReceiver`] before anything else looks at it: a packet that fails authentication or is a
//! replay is a counted drop (`srtp_auth`, `srtp_replay`) and latches nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use media_core::sdes::{rtp_header_len, SdesSuite, SrtpError, SrtpReceiver};
use serde::Serialize;
use signaling::media::SourcePacket;
use signaling::SourceEnd;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use super::{Ingest, Kind, Source};

/// The largest datagram read: an Opus packet of 120 ms at 510 kb/s is under 8 KB.
const MAX_DATAGRAM: usize = 8192;

/// An endpoint's id: 64 random bits, hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EndpointId(String);

impl EndpointId {
    fn random() -> EndpointId {
        EndpointId(crate::random::hex(8))
    }

    pub fn parse(s: &str) -> Option<EndpointId> {
        crate::random::is_hex(s, 16).then(|| EndpointId(s.to_owned()))
    }
}

/// An endpoint as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointView {
    pub id: EndpointId,
    pub room: String,
    /// The source participant's id in the room.
    pub sid: String,
    pub name: String,
    /// Where the gateway sends: `ingest.rtp_public_ip` (else the bound address) and the port.
    pub address: String,
    pub port: u16,
    /// The SDES suite its packets are protected with (`AES_CM_128_HMAC_SHA1_80`, …); `None`: plain RTP.
    pub srtp: Option<&'static str>,
}

/// A running endpoint: what the admin API lists, and how it is stopped.
struct Endpoint {
    view: EndpointView,
    stop: mpsc::Sender<oneshot::Sender<()>>,
}

/// The running RTP endpoints.
#[derive(Default)]
pub struct Endpoints {
    table: Mutex<HashMap<EndpointId, Endpoint>>,
}

impl Endpoints {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Endpoint>> {
        // Single inserts and removes: a panic elsewhere cannot leave the map half-changed.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every endpoint, sorted by room then id.
    pub fn list(&self) -> Vec<EndpointView> {
        let mut all: Vec<EndpointView> = self.table().values().map(|e| e.view.clone()).collect();
        all.sort_by(|a, b| (&a.room, &a.id.0).cmp(&(&b.room, &b.id.0)));
        all
    }

    /// Ends endpoint `id` (its source leaves the room); `false` if there is none.
    pub async fn stop(&self, id: &EndpointId) -> bool {
        let Some(stop) = self.table().get(id).map(|e| e.stop.clone()) else {
            return false;
        };
        let (done, stopped) = oneshot::channel();
        if stop.send(done).await.is_err() {
            return false;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), stopped).await;
        true
    }
}

/// Why an endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot bind an RTP port: {0}")]
    Bind(std::io::Error),
}

/// Opens an endpoint for `source` (already in its room as `name`): binds its socket and runs it in a task.
/// With `srtp`, its packets are SRTP opened by the receiver.
pub async fn open(
    ingest: &Arc<Ingest>,
    source: Source,
    name: String,
    srtp: Option<(SdesSuite, SrtpReceiver)>,
) -> Result<EndpointView, OpenError> {
    let bind = SocketAddr::new(ingest.config.rtp_bind_ip, 0);
    let socket = match UdpSocket::bind(bind).await {
        Ok(socket) => socket,
        Err(e) => {
            source.leave(SourceEnd::Failed).await;
            return Err(OpenError::Bind(e));
        }
    };
    let port = match socket.local_addr() {
        Ok(local) => local.port(),
        Err(e) => {
            source.leave(SourceEnd::Failed).await;
            return Err(OpenError::Bind(e));
        }
    };
    let address = ingest
        .config
        .rtp_public_ip
        .unwrap_or(ingest.config.rtp_bind_ip)
        .to_string();
    let view = EndpointView {
        id: EndpointId::random(),
        room: source.member.room().to_owned(),
        sid: source.member.sid().to_owned(),
        name,
        address,
        port,
        srtp: srtp.as_ref().map(|(suite, _)| suite.as_str()),
    };
    let (stop, stops) = mpsc::channel(1);
    ingest.rtp.table().insert(
        view.id.clone(),
        Endpoint {
            view: view.clone(),
            stop,
        },
    );
    info!(room = %view.room, sid = %view.sid, port, srtp = view.srtp, "RTP endpoint opened");
    tokio::spawn(run(
        Arc::clone(ingest),
        view.id.clone(),
        socket,
        source,
        srtp.map(|(_, receiver)| receiver),
        stops,
    ));
    Ok(view)
}

/// An RTP packet's parts that matter here.
#[derive(Debug, PartialEq, Eq)]
struct Rtp<'a> {
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    payload: &'a [u8],
}

/// What a datagram on the port is.
#[derive(Debug, PartialEq, Eq)]
enum Datagram<'a> {
    Rtp(Rtp<'a>),
    /// RTCP (payload types 200–204 in the second byte): ignored.
    Rtcp,
    NotRtp,
}

/// RTCP (RFC 5761 §4: payload types 200–204 in the second byte; SRTCP's header is clear too).
fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 12 && data[0] >> 6 == 2 && (200..=204).contains(&data[1])
}

/// RFC 3550 §5.1: version 2, CSRCs, a header extension and padding skipped.
fn parse(data: &[u8]) -> Datagram<'_> {
    if is_rtcp(data) {
        return Datagram::Rtcp;
    }
    let Some(start) = rtp_header_len(data) else {
        return Datagram::NotRtp;
    };
    let mut end = data.len();
    if data[0] & 0x20 != 0 {
        let padding = usize::from(data[data.len() - 1]);
        if padding == 0 || padding > end {
            return Datagram::NotRtp;
        }
        end -= padding;
    }
    if start >= end {
        return Datagram::NotRtp;
    }
    Datagram::Rtp(Rtp {
        payload_type: data[1] & 0x7f,
        seq: u16::from_be_bytes([data[2], data[3]]),
        timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        payload: &data[start..end],
    })
}

/// Receives until the endpoint is stopped, its source removed, or the sender silent too long; leaves.
async fn run(
    ingest: Arc<Ingest>,
    id: EndpointId,
    socket: UdpSocket,
    mut source: Source,
    mut srtp: Option<SrtpReceiver>,
    mut stops: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let silence = Duration::from_millis(ingest.config.source_timeout_ms);
    let mut latched: Option<SocketAddr> = None;
    let mut payload_type: Option<u8> = None;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // An SRTP packet opened: its header and clear payload.
    let mut clear = Vec::with_capacity(MAX_DATAGRAM);
    let mut stopped = None;
    let end = loop {
        let received = tokio::select! {
            end = source.member.removed() => break end,
            stop = stops.recv() => {
                stopped = stop;
                break SourceEnd::Finished;
            }
            received = tokio::time::timeout(silence, socket.recv_from(&mut buf)) => received,
        };
        let (n, from) = match received {
            Ok(Ok(received)) => received,
            // ICMP port unreachable and the like: the next datagram will tell.
            Ok(Err(e)) => {
                debug!(id = %id.0, error = %e, "RTP endpoint receive failed");
                continue;
            }
            Err(_) => {
                ingest.metrics.error(Kind::Rtp, "timeout");
                info!(id = %id.0, silent_ms = silence.as_millis() as u64, "RTP endpoint went silent");
                break SourceEnd::Failed;
            }
        };
        match latched {
            Some(sender) if sender != from => {
                ingest.metrics.error(Kind::Rtp, "foreign_source");
                continue;
            }
            _ => {}
        }
        let data = match &mut srtp {
            Some(receiver) if !is_rtcp(&buf[..n]) => match receiver.open(&buf[..n], &mut clear) {
                Ok(()) => &clear[..],
                Err(e) => {
                    ingest.metrics.error(Kind::Rtp, srtp_label(&e));
                    continue;
                }
            },
            _ => &buf[..n],
        };
        let rtp = match parse(data) {
            Datagram::Rtp(rtp) => rtp,
            Datagram::Rtcp => continue,
            Datagram::NotRtp => {
                ingest.metrics.error(Kind::Rtp, "not_rtp");
                continue;
            }
        };
        // The first stream's payload type is the stream: another one (a comfort-noise or DTMF type
        // a gateway interleaves) is not Opus.
        if payload_type.is_some_and(|pt| pt != rtp.payload_type)
            || media_core::mixer::opus_packet_info(rtp.payload).is_none()
        {
            ingest.metrics.error(Kind::Rtp, "bad_packet");
            continue;
        }
        if latched.is_none() {
            latched = Some(from);
            payload_type = Some(rtp.payload_type);
            ingest.metrics.request(Kind::Rtp, "accepted");
            info!(id = %id.0, %from, payload_type = rtp.payload_type, "RTP endpoint latched its sender");
        }
        let packet = SourcePacket {
            seq: rtp.seq,
            timestamp: rtp.timestamp,
            payload: rtp.payload.into(),
        };
        match source.packets.try_send(packet) {
            Ok(()) => ingest
                .metrics
                .packets
                .with_label_values(&[Kind::Rtp.as_str()])
                .inc(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                ingest.metrics.error(Kind::Rtp, "queue_full");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break SourceEnd::Failed,
        }
    };
    ingest.rtp.table().remove(&id);
    source.leave(end).await;
    if let Some(done) = stopped {
        let _ = done.send(());
    }
}

/// The `error` label of a packet SRTP dropped.
fn srtp_label(e: &SrtpError) -> &'static str {
    match e {
        SrtpError::Malformed => "not_rtp",
        SrtpError::Auth => "srtp_auth",
        SrtpError::Replay => "srtp_replay",
        // An authentic fifth stream: not one the endpoint takes.
        SrtpError::TooManySsrcs => "foreign_source",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(flags: u8, extra: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80 | flags, 111, 0x12, 0x34, 0, 0, 0x03, 0xc0, 1, 2, 3, 4];
        p.extend_from_slice(extra);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn rtp_headers_are_parsed_with_csrcs_extensions_and_padding() {
        let plain = packet(0, &[], &[0xf8, 1, 2]);
        assert_eq!(
            parse(&plain),
            Datagram::Rtp(Rtp {
                payload_type: 111,
                seq: 0x1234,
                timestamp: 960,
                payload: &[0xf8, 1, 2]
            })
        );
        // One CSRC, a one-word extension, two bytes of padding.
        let extra = [9, 9, 9, 9, 0xbe, 0xde, 0, 1, 7, 7, 7, 7];
        let mut full = packet(0x01 | 0x10 | 0x20, &extra, &[0xf8, 5]);
        full.extend_from_slice(&[0, 2]);
        match parse(&full) {
            Datagram::Rtp(rtp) => assert_eq!(rtp.payload, &[0xf8, 5]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_truncation_and_rtcp_are_told_apart() {
        assert_eq!(parse(b"hello, this is not rtp"), Datagram::NotRtp);
        assert_eq!(parse(&[0x80, 111, 0, 0]), Datagram::NotRtp);
        assert_eq!(
            parse(&[0x80, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]),
            Datagram::Rtcp
        );
        // An extension longer than the packet, padding longer than the packet, no payload.
        assert_eq!(
            parse(&packet(0x10, &[0xbe, 0xde, 0, 9], &[])),
            Datagram::NotRtp
        );
        let mut padded = packet(0x20, &[], &[1]);
        padded.push(200);
        assert_eq!(parse(&padded), Datagram::NotRtp);
        assert_eq!(parse(&packet(0, &[], &[])), Datagram::NotRtp);
    }

    #[test]
    fn endpoint_ids_are_sixteen_hex_digits() {
        let id = EndpointId::random();
        assert_eq!(EndpointId::parse(&id.0), Some(id));
        assert!(EndpointId::parse("../../etc/passwd").is_none());
        assert!(EndpointId::parse("0123456789ABCDEF").is_none());
    }
}
