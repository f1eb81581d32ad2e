//! Batched UDP I/O: `recvmmsg(2)` reads up to a batch of datagrams per system call, and one `sendmmsg(2)`
//! sends everything a batch of inputs produced (a forwarded packet fans out to every subscriber), instead of
//! one system call per datagram.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use media_core::peer::Transmit;

/// Datagrams per system call.
const BATCH: usize = 64;

/// Ask for `bytes` of kernel receive and send buffer on `fd` and return what the kernel granted
/// (receive, send). `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` exceed `net.core.rmem_max`/`wmem_max` when the process
/// may (root or CAP_NET_ADMIN); otherwise the plain options give what the limits allow. A worker that fans
/// one packet out to hundreds of subscribers must not lose incoming packets while it sends.
pub fn set_buffer_sizes(fd: RawFd, bytes: usize) -> (usize, usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |force: libc::c_int, plain: libc::c_int| {
        for option in [force, plain] {
            // SAFETY: `fd` is an open socket; the option value is a c_int of the size passed.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    option,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
    };
    set(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF);
    set(libc::SO_SNDBUFFORCE, libc::SO_SNDBUF);
    let get = |option: libc::c_int| {
        let mut granted: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is an open socket; `granted` and `len` are valid for writes of their sizes.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&mut granted as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            usize::try_from(granted).unwrap_or(0)
        } else {
            0
        }
    };
    (get(libc::SO_RCVBUF), get(libc::SO_SNDBUF))
}

/// What a batch send achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendOutcome {
    pub sent: usize,
    /// Datagrams the kernel refused (full buffer, unreachable destination); realtime audio is not retried.
    pub failed: usize,
}

/// Send every datagram in `batch` on the non-blocking UDP socket `fd`.
pub fn send_all(fd: RawFd, batch: &[Transmit]) -> SendOutcome {
    let mut outcome = SendOutcome::default();
    let mut rest = batch;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(BATCH)];
        match send_chunk(fd, chunk) {
            Ok(0) | Err(_) => {
                // The first datagram of the chunk failed: skip it and carry on with the next.
                outcome.failed += 1;
                rest = &rest[1..];
            }
            Ok(n) => {
                outcome.sent += n;
                rest = &rest[n..];
            }
        }
    }
    outcome
}

fn send_chunk(fd: RawFd, chunk: &[Transmit]) -> io::Result<usize> {
    let mut addrs: [MaybeUninit<libc::sockaddr_storage>; BATCH] =
        [const { MaybeUninit::uninit() }; BATCH];
    let mut iovecs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    let mut msgs: [MaybeUninit<libc::mmsghdr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    for (i, t) in chunk.iter().enumerate() {
        let (storage, len) = sockaddr(&t.destination);
        addrs[i].write(storage);
        iovecs[i].write(libc::iovec {
            iov_base: t.contents.as_ptr() as *mut libc::c_void,
            iov_len: t.contents.len(),
        });
        msgs[i].write(mmsghdr(addrs[i].as_mut_ptr(), len, iovecs[i].as_mut_ptr()));
    }
    // SAFETY: the first `chunk.len()` entries of `msgs` are initialised above and point at initialised
    // addresses and iovecs whose buffers (`chunk`) are borrowed for the duration of the call.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            msgs.as_mut_ptr() as *mut libc::mmsghdr,
            chunk.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Buffers for receiving up to [`BATCH`] datagrams per system call, allocated once per worker.
pub struct RecvBatch {
    buffers: Vec<[u8; RECV_BUFFER]>,
    lengths: [usize; BATCH],
    sources: [Option<SocketAddr>; BATCH],
    count: usize,
}

/// Larger than any datagram the core accepts, so an oversized one is seen (and counted) rather than cut.
const RECV_BUFFER: usize = 2048;

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            buffers: vec![[0; RECV_BUFFER]; BATCH],
            lengths: [0; BATCH],
            sources: [None; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// Read whatever is queued on the non-blocking socket `fd`, up to a batch. `Ok(0)`: nothing queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        let mut addrs: [MaybeUninit<libc::sockaddr_storage>; BATCH] =
            [const { MaybeUninit::zeroed() }; BATCH];
        let mut iovecs: [MaybeUninit<libc::iovec>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        let mut msgs: [MaybeUninit<libc::mmsghdr>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        for i in 0..BATCH {
            iovecs[i].write(libc::iovec {
                iov_base: self.buffers[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: RECV_BUFFER,
            });
            let len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msgs[i].write(mmsghdr(addrs[i].as_mut_ptr(), len, iovecs[i].as_mut_ptr()));
        }
        // SAFETY: all BATCH headers are initialised and point at buffers owned by `self` and at `addrs`,
        // which outlive the call; the kernel writes at most iov_len bytes and msg_namelen address bytes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr() as *mut libc::mmsghdr,
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            };
        }
        for i in 0..n as usize {
            // SAFETY: recvmmsg filled the first n headers and their addresses.
            let msg = unsafe { msgs[i].assume_init_ref() };
            self.lengths[i] = (msg.msg_len as usize).min(RECV_BUFFER);
            // SAFETY: the storage was zeroed, then written by the kernel for received datagrams.
            self.sources[i] = from_sockaddr(unsafe { addrs[i].assume_init_ref() });
        }
        self.count = n as usize;
        Ok(self.count)
    }

    /// The datagrams of the last [`recv`](Self::recv) with their sources (unknown address families skipped).
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.count)
            .filter_map(|i| Some((self.sources[i]?, &self.buffers[i][..self.lengths[i]])))
    }
}

/// A message header for one datagram: one iovec, one address of `len` bytes. The caller keeps both
/// pointers valid for the system call that uses the header.
fn mmsghdr(
    addr: *mut libc::sockaddr_storage,
    len: libc::socklen_t,
    iov: *mut libc::iovec,
) -> libc::mmsghdr {
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = addr as *mut libc::c_void;
    hdr.msg_namelen = len;
    hdr.msg_iov = iov;
    hdr.msg_iovlen = 1;
    libc::mmsghdr {
        msg_hdr: hdr,
        msg_len: 0,
    }
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (unspecified) value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod buffer_tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn buffers_grow_at_least_to_the_default_limit() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (rcv, snd) = set_buffer_sizes(socket.as_raw_fd(), 4 << 20);
        // Root gets the full request (doubled by the kernel for bookkeeping); others get rmem_max.
        assert!(rcv >= 200_000 && snd >= 200_000, "{rcv} {snd}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_reaches_every_destination_in_order() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let batch: Vec<Transmit> = (0..150)
            .map(|i| Transmit {
                destination: rx[i % 3].local_addr().unwrap(),
                contents: vec![i as u8; 10 + i],
            })
            .collect();
        let out = send_all(tx.as_raw_fd(), &batch);
        assert_eq!(
            out,
            SendOutcome {
                sent: 150,
                failed: 0
            }
        );
        let mut buf = [0u8; 256];
        for i in 0..150 {
            let (n, _) = rx[i % 3].recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &batch[i].contents[..]);
        }
    }

    #[test]
    fn a_receive_batch_returns_datagrams_with_their_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::default();
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 0);
        for i in 0..100u8 {
            tx.send_to(&vec![i; 1 + i as usize], rx.local_addr().unwrap())
                .unwrap();
        }
        let big = vec![7u8; 1800];
        tx.send_to(&big, rx.local_addr().unwrap()).unwrap();
        let mut seen = Vec::new();
        loop {
            let n = batch.recv(rx.as_raw_fd()).unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= BATCH);
            for (from, data) in batch.datagrams() {
                assert_eq!(from, tx.local_addr().unwrap());
                seen.push(data.to_vec());
            }
        }
        assert_eq!(seen.len(), 101);
        for (i, d) in seen[..100].iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 1 + i]);
        }
        assert_eq!(seen[100], big);
    }

    #[test]
    fn ipv6_destinations_work() {
        let Ok(tx) = UdpSocket::bind("[::1]:0") else {
            return;
        }; // no IPv6 loopback here
        let rx = UdpSocket::bind("[::1]:0").unwrap();
        let batch = vec![Transmit {
            destination: rx.local_addr().unwrap(),
            contents: b"hello".to_vec(),
        }];
        assert_eq!(send_all(tx.as_raw_fd(), &batch).sent, 1);
        let mut buf = [0u8; 16];
        assert_eq!(rx.recv(&mut buf).unwrap(), 5);
    }
}
