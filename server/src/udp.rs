//! Batched UDP sends: one `sendmmsg(2)` for all datagrams one input produced (a forwarded packet fans out to
//! every subscriber), instead of one system call per datagram.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use media_core::peer::Transmit;

/// Datagrams per system call.
const BATCH: usize = 64;

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
        // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths); the fields set below point
        // into `addrs` and `iovecs`, which outlive the sendmmsg call.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_name = addrs[i].as_mut_ptr() as *mut libc::c_void;
        hdr.msg_namelen = len;
        hdr.msg_iov = iovecs[i].as_mut_ptr();
        hdr.msg_iovlen = 1;
        msgs[i].write(libc::mmsghdr {
            msg_hdr: hdr,
            msg_len: 0,
        });
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
