//! The sandbox's network namespace starts with `lo` down; init brings it up so that servers
//! the agent starts on loopback for its own tests work. Nothing else is configured: loopback
//! is the whole network.

use std::io;

/// Sets `IFF_UP` on `lo` (init holds `CAP_NET_ADMIN` in its own network namespace).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain datagram socket used only for interface ioctls, closed below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zeroed ifreq is valid; the name fits (3 bytes of 16); SIOCGIFFLAGS and
    // SIOCSIFFLAGS read and write `ifr_ifru.ifru_flags`.
    let r = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(s, libc::SIOCSIFFLAGS, &req);
        }
        r
    };
    let err = io::Error::last_os_error();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(s) };
    if r != 0 { Err(err) } else { Ok(()) }
}

/// Creates the gateway's listening sockets here, inside the sandbox's network namespace, and
/// sends them to the supervisor, which serves them from outside: no helper process runs in
/// the sandbox, and the only way out is through those sockets. `[::1]` is bound too for a
/// granted host loopback port (clients that try `localhost` over IPv6 first), where the
/// namespace has IPv6.
pub fn send_listeners(sock: std::os::fd::RawFd, net: &crate::plan::NetPlan) -> io::Result<()> {
    let mut transparent: Vec<std::os::fd::OwnedFd> = Vec::new();
    for p in &net.transparent_ports {
        transparent.push(std::net::TcpListener::bind(("0.0.0.0", *p))?.into());
        if net.loopback_ports.contains(p)
            && let Ok(l) = std::net::TcpListener::bind(("::1", *p))
        {
            transparent.push(l.into());
        }
    }
    let sockets = super::control::GatewaySockets {
        http: std::net::TcpListener::bind(net.http_proxy)?.into(),
        socks: std::net::TcpListener::bind(net.socks)?.into(),
        dns_udp: std::net::UdpSocket::bind(net.dns)?.into(),
        dns_tcp: std::net::TcpListener::bind(net.dns)?.into(),
        transparent,
    };
    super::control::send(sock, &super::control::Msg::Net, &sockets.to_raw())
}
