//! What the kernel knows about an instance's listening socket: the length of its accept
//! queue (its *backlog*, the `listen(2)` argument capped by `net.core.somaxconn`) and how many
//! connections wait in it now.
//!
//! The router uses the backlog to bound the new connections it opens to an instance at once
//! (see `slipway_router::Backend::limit_new_connections`): Python's stdlib servers and
//! Django's `runserver` listen with a backlog of 5, and a burst of more connection attempts
//! than that overflows the queue; the kernel then drops the SYNs and the client retries after
//! 1 s, 3 s, 7 s.
//!
//! The answer comes from the `NETLINK_SOCK_DIAG` interface (`inet_diag`, what `ss -l` shows
//! as Recv-Q and Send-Q): one dump request for the listening TCP sockets of the address
//! family, whose replies carry `idiag_rqueue` (connections waiting to be accepted) and
//! `idiag_wqueue` (the backlog). The messages are the fixed C layouts of
//! `linux/inet_diag.h` and `linux/netlink.h`, written and read field by field here; a
//! netlink crate would add four dependencies for these two structs.

use std::io;
use std::net::SocketAddr;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// The accept queue of a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    /// The most connections the kernel queues before the application accepts them (the
    /// queue is full one above this, as Linux counts).
    pub backlog: u32,
    /// Connections that completed the handshake and wait for `accept(2)`.
    pub queued: u32,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
const IPPROTO_TCP: u8 = 6;
/// `struct nlmsghdr`.
const HEADER: usize = 16;
/// `struct inet_diag_req_v2`.
const REQUEST: usize = 56;
/// `struct inet_diag_msg`, up to and including `idiag_wqueue`.
const MESSAGE_MIN: usize = 64;

/// The accept queue of the TCP socket listening at `addr` (or at the unspecified address of
/// its family on the same port), or `None` when no such socket exists.
///
/// One netlink round trip of a few microseconds plus the dump of the host's listening
/// sockets; call it from the control plane, not from the router's threads.
///
/// An IPv4 address is also found on a dual-stack IPv6 socket listening on `::` (Node's
/// default) or on the address's IPv4-mapped form.
pub fn listen_queue(addr: SocketAddr) -> io::Result<Option<ListenQueue>> {
    match addr {
        SocketAddr::V4(v4) => match dump(AddressFamily::INET, addr)? {
            Some(queue) => Ok(Some(queue)),
            None => {
                let mapped = SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port());
                dump(AddressFamily::INET6, mapped)
            }
        },
        SocketAddr::V6(_) => dump(AddressFamily::INET6, addr),
    }
}

fn dump(family: AddressFamily, addr: SocketAddr) -> io::Result<Option<ListenQueue>> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    rustix::net::connect(&fd, &SocketAddrNetlink::new(0, 0))?;
    rustix::net::send(&fd, &dump_request(family), SendFlags::empty())?;

    let mut found = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let (len, _) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())?;
        if len == 0 {
            return Ok(found);
        }
        match parse_replies(&buf[..len], addr, &mut found)? {
            Parsed::Done => return Ok(found),
            Parsed::More => {}
        }
    }
}

/// The dump request for the listening TCP sockets of `family`.
fn dump_request(family: AddressFamily) -> [u8; HEADER + REQUEST] {
    let mut msg = [0u8; HEADER + REQUEST];
    msg[0..4].copy_from_slice(&((HEADER + REQUEST) as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
    // inet_diag_req_v2: family, protocol, extensions, padding, states, then the socket id,
    // which a dump ignores.
    msg[HEADER] = family.as_raw() as u8;
    msg[HEADER + 1] = IPPROTO_TCP;
    msg[HEADER + 4..HEADER + 8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    msg
}

enum Parsed {
    Done,
    More,
}

/// Walks the netlink messages of one datagram, keeping in `found` the queue of the socket
/// that listens on `addr`'s port at `addr`'s address (preferred) or at the unspecified one.
fn parse_replies(
    mut data: &[u8],
    addr: SocketAddr,
    found: &mut Option<ListenQueue>,
) -> io::Result<Parsed> {
    while data.len() >= HEADER {
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().unwrap());
        if len < HEADER || len > data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed sock_diag reply",
            ));
        }
        let body = &data[HEADER..len];
        match kind {
            NLMSG_DONE => return Ok(Parsed::Done),
            NLMSG_ERROR => {
                let errno = body
                    .get(0..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                    .unwrap_or(0);
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
            }
            SOCK_DIAG_BY_FAMILY if body.len() >= MESSAGE_MIN => {
                let port = u16::from_be_bytes([body[4], body[5]]);
                let rqueue = u32::from_ne_bytes(body[56..60].try_into().unwrap());
                let wqueue = u32::from_ne_bytes(body[60..64].try_into().unwrap());
                if port == addr.port() {
                    let exact = match addr {
                        SocketAddr::V4(a) => body[12..16] == a.ip().octets(),
                        SocketAddr::V6(a) => body[12..28] == a.ip().octets(),
                    };
                    let any = body[12..28].iter().all(|b| *b == 0);
                    if exact || (any && found.is_none()) {
                        *found = Some(ListenQueue {
                            backlog: wqueue,
                            queued: rqueue,
                        });
                    }
                }
            }
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        let next = (len + 3) & !3;
        data = data.get(next..).unwrap_or(&[]);
    }
    Ok(Parsed::More)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn std_listeners_are_found_with_their_backlog() {
        // std's TcpListener listens with a backlog of 128 (capped by net.core.somaxconn).
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let queue = listen_queue(listener.local_addr().unwrap())
            .unwrap()
            .expect("the listener is found");
        assert_eq!(queue.queued, 0);
        assert!(queue.backlog > 5, "{queue:?}");
    }

    #[test]
    fn waiting_connections_are_counted_and_a_closed_port_is_none() {
        let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        rustix::net::bind(&fd, &"127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
        rustix::net::listen(&fd, 5).unwrap();
        let listener = TcpListener::from(fd);
        let addr = listener.local_addr().unwrap();
        let _a = std::net::TcpStream::connect(addr).unwrap();
        let _b = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(
            listen_queue(addr).unwrap(),
            Some(ListenQueue {
                backlog: 5,
                queued: 2
            })
        );
        drop(listener);
        assert_eq!(listen_queue(addr).unwrap(), None);
    }

    #[test]
    fn an_ipv4_address_is_found_on_a_dual_stack_listener() {
        let Ok(listener) = TcpListener::bind("[::]:0") else {
            return; // no IPv6 on this host
        };
        let port = listener.local_addr().unwrap().port();
        let queue = listen_queue(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
        assert!(queue.is_some());
    }
}
