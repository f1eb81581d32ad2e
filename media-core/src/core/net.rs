//! Network paths: which local candidate, over which transport, a datagram came in on or goes out of.
//!
//! A worker may offer several host candidates: its UDP socket, more UDP addresses (development mode's
//! non-loopback interface), and a passive ICE-TCP listener (RFC 6544). The core stays sans-IO: every
//! datagram input names its [`NetPath`] and every [`NetTransmit`] names the local candidate and transport
//! to send it from; the server owns the sockets (and, for TCP, the RFC 4571 framing).

use std::net::SocketAddr;

use str0m::net::{Protocol, TcpType};
use str0m::Candidate;

/// How a datagram travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    /// ICE-TCP: datagrams framed with a 2-byte length (RFC 4571) on a TCP connection.
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }

    pub(crate) fn protocol(self) -> Protocol {
        match self {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        }
    }

    /// The transport of a str0m protocol; `None` for the TLS variants Chorus never offers.
    pub(crate) fn from_protocol(p: Protocol) -> Option<Transport> {
        match p {
            Protocol::Udp => Some(Transport::Udp),
            Protocol::Tcp => Some(Transport::Tcp),
            Protocol::SslTcp | Protocol::Tls => None,
        }
    }
}

/// One end-to-end path: the transport, the local candidate address (as advertised), and the remote
/// address. For TCP the remote address names one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetPath {
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl NetPath {
    pub fn udp(local: SocketAddr, remote: SocketAddr) -> Self {
        NetPath {
            transport: Transport::Udp,
            local,
            remote,
        }
    }

    pub fn tcp(local: SocketAddr, remote: SocketAddr) -> Self {
        NetPath {
            transport: Transport::Tcp,
            local,
            remote,
        }
    }
}

/// A host candidate the worker offers: an address it receives on (as advertised) and its transport. TCP
/// candidates are passive: the client connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalCandidate {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl LocalCandidate {
    pub fn udp(addr: SocketAddr) -> Self {
        LocalCandidate {
            transport: Transport::Udp,
            addr,
        }
    }

    pub fn tcp(addr: SocketAddr) -> Self {
        LocalCandidate {
            transport: Transport::Tcp,
            addr,
        }
    }

    /// The ICE candidate: a UDP host candidate, or a passive TCP host candidate (RFC 6544 §4.5).
    pub(crate) fn ice(&self) -> Result<Candidate, String> {
        match self.transport {
            Transport::Udp => Candidate::host(self.addr, "udp"),
            Transport::Tcp => Candidate::builder()
                .tcp()
                .host(self.addr)
                .tcptype(TcpType::Passive)
                .build(),
        }
        .map_err(|e| format!("candidate {}: {e}", self.addr))
    }
}

/// Put candidates in the order they are offered: UDP first (ICE gives UDP host candidates the highest type
/// preference, 126, and TCP host candidates 90), each transport's in configuration order (its local
/// preference falls with each further candidate of the same kind). Stable: the first UDP candidate stays
/// the primary one.
pub fn offer_order(candidates: &mut [LocalCandidate]) {
    candidates.sort_by_key(|c| match c.transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    });
}

/// A datagram to send from a local candidate over its transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetTransmit {
    pub transport: Transport,
    /// The local candidate address to send from (as advertised; the server maps it to its socket).
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

impl NetTransmit {
    pub fn path(&self) -> NetPath {
        NetPath {
            transport: self.transport,
            local: self.source,
            remote: self.destination,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_candidates_come_first_in_configuration_order() {
        let a: SocketAddr = "127.0.0.1:7882".parse().expect("literal");
        let b: SocketAddr = "192.168.1.5:7882".parse().expect("literal");
        let mut c = vec![
            LocalCandidate::tcp(a),
            LocalCandidate::udp(a),
            LocalCandidate::udp(b),
        ];
        offer_order(&mut c);
        assert_eq!(
            c,
            vec![
                LocalCandidate::udp(a),
                LocalCandidate::udp(b),
                LocalCandidate::tcp(a)
            ]
        );
        let tcp = LocalCandidate::tcp(a).ice().expect("a TCP host candidate");
        assert_eq!(tcp.tcptype(), Some(TcpType::Passive));
        assert_eq!(tcp.proto(), Protocol::Tcp);
        let udp = LocalCandidate::udp(a).ice().expect("a UDP host candidate");
        assert!(udp.prio() > tcp.prio());
    }
}
