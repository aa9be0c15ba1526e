//! Network bring-up: `lo`, then the first Ethernet interface by DHCP.
//!
//! The client speaks DHCP over an ordinary UDP socket bound to the interface (`SO_BINDTODEVICE`,
//! `SO_BROADCAST`) with the BROADCAST flag set, so replies reach it before the interface has an
//! address; QEMU's user network, dnsmasq and cloud DHCP servers all honour the flag. The lease is
//! applied with interface ioctls ([`iface`]) and renewed at T1 for as long as the agent runs.
//! There is no resolver configuration: nothing in the guest resolves names.

pub mod dhcp;
pub mod iface;

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::log;
use dhcp::{ClientMessage, MessageType, ServerMessage};

const DHCP_CLIENT_PORT: u16 = 68;
const DHCP_SERVER_PORT: u16 = 67;
/// How long to wait for the NIC driver to register an interface after module load.
const IFACE_WAIT: Duration = Duration::from_secs(10);
/// Per-attempt reply timeouts: RFC 2131 §4.1 suggests 4 s doubling; QEMU answers in milliseconds.
const ATTEMPT_TIMEOUTS: [Duration; 4] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];
/// Pause before starting over when a whole acquisition failed.
const RETRY_PAUSE: Duration = Duration::from_secs(10);
/// Lease time assumed when the server gives none (RFC 2131 has no default; one hour is cautious).
const DEFAULT_LEASE: Duration = Duration::from_secs(3600);

/// An acquired lease: what gets configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub mtu: Option<u16>,
    pub lease_time: Duration,
    pub renewal_time: Duration,
}

impl Lease {
    fn from_ack(ack: &ServerMessage, server: Ipv4Addr) -> Result<Self> {
        if ack.yiaddr.is_unspecified() {
            bail!("DHCPACK from {server} assigns no address");
        }
        let lease_time = ack.lease_time.unwrap_or(DEFAULT_LEASE);
        Ok(Lease {
            addr: ack.yiaddr,
            netmask: ack.subnet_mask.unwrap_or_else(|| classful_mask(ack.yiaddr)),
            router: ack.router,
            server: ack.server_id.unwrap_or(server),
            mtu: ack.mtu,
            lease_time,
            // RFC 2131 §4.4.5: T1 defaults to half the lease.
            renewal_time: ack.renewal_time.unwrap_or(lease_time / 2),
        })
    }

    fn prefix_len(&self) -> u32 {
        u32::from(self.netmask).count_ones()
    }
}

/// RFC 2132 §3.3 leaves the mask optional; fall back to the class of the address.
fn classful_mask(addr: Ipv4Addr) -> Ipv4Addr {
    match addr.octets()[0] {
        0..=127 => Ipv4Addr::new(255, 0, 0, 0),
        128..=191 => Ipv4Addr::new(255, 255, 0, 0),
        _ => Ipv4Addr::new(255, 255, 255, 0),
    }
}

/// Sends and receives DHCP datagrams (a socket in the guest, a script in tests).
pub trait Channel {
    fn send(&mut self, packet: &[u8]) -> Result<()>;
    /// The next datagram, or `None` once `deadline` passes.
    fn recv(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>>;
}

/// A UDP socket on port 68 bound to one interface.
pub struct UdpChannel {
    socket: UdpSocket,
    iface: String,
}

impl UdpChannel {
    pub fn open(iface: &str) -> Result<Self> {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT))
            .context("binding UDP port 68 for DHCP (is another DHCP client running?)")?;
        socket
            .set_broadcast(true)
            .context("setting SO_BROADCAST on the DHCP socket")?;
        bind_to_device(&socket, iface)?;
        Ok(UdpChannel {
            socket,
            iface: iface.to_string(),
        })
    }
}

fn bind_to_device(socket: &UdpSocket, iface: &str) -> Result<()> {
    let name = iface.as_bytes();
    // SAFETY: setsockopt reads `name.len()` bytes from a live slice.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("binding the DHCP socket to {iface} (SO_BINDTODEVICE)"));
    }
    Ok(())
}

impl Channel for UdpChannel {
    fn send(&mut self, packet: &[u8]) -> Result<()> {
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT);
        self.socket
            .send_to(packet, to)
            .with_context(|| format!("broadcasting DHCP request on {}", self.iface))?;
        Ok(())
    }

    fn recv(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>> {
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Ok(None);
        };
        self.socket
            .set_read_timeout(Some(left))
            .context("setting DHCP socket timeout")?;
        let mut buf = vec![0u8; 1500];
        match self.socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(Some(Vec::new())),
            Err(e) => Err(e).with_context(|| format!("receiving DHCP reply on {}", self.iface)),
        }
    }
}

/// One DHCP client conversation state: our identity and transaction id.
pub struct Client<C: Channel> {
    channel: C,
    mac: [u8; 6],
    xid: u32,
}

impl<C: Channel> Client<C> {
    pub fn new(channel: C, mac: [u8; 6], xid: u32) -> Self {
        Client { channel, mac, xid }
    }

    /// DISCOVER → OFFER → REQUEST → ACK, with retransmission; NAK starts over.
    pub fn acquire(&mut self) -> Result<Lease> {
        for (attempt, timeout) in ATTEMPT_TIMEOUTS.iter().enumerate() {
            self.xid = self.xid.wrapping_add(1);
            let discover = self.message(MessageType::Discover, Ipv4Addr::UNSPECIFIED, None, None);
            self.channel.send(&discover)?;
            let Some(offer) = self.await_reply(&[MessageType::Offer], *timeout)? else {
                log!(
                    "DHCP: no offer (attempt {} of {})",
                    attempt + 1,
                    ATTEMPT_TIMEOUTS.len()
                );
                continue;
            };
            let Some(server) = offer.server_id else {
                log!("DHCP: ignoring an offer without server identifier");
                continue;
            };
            let request = self.message(
                MessageType::Request,
                Ipv4Addr::UNSPECIFIED,
                Some(offer.yiaddr),
                Some(server),
            );
            self.channel.send(&request)?;
            match self.await_reply(&[MessageType::Ack, MessageType::Nak], *timeout)? {
                Some(ack) if ack.kind == MessageType::Ack => return Lease::from_ack(&ack, server),
                Some(_) => log!("DHCP: server {server} declined the request (NAK); starting over"),
                None => log!("DHCP: no answer to the request (attempt {})", attempt + 1),
            }
        }
        bail!("no DHCP lease after {} attempts", ATTEMPT_TIMEOUTS.len())
    }

    /// RENEWING/REBINDING: REQUEST with `ciaddr` set and no option 50/54 (RFC 2131 §4.3.2).
    pub fn renew(&mut self, lease: &Lease) -> Result<Option<Lease>> {
        self.xid = self.xid.wrapping_add(1);
        let request = self.message(MessageType::Request, lease.addr, None, None);
        self.channel.send(&request)?;
        match self.await_reply(&[MessageType::Ack, MessageType::Nak], ATTEMPT_TIMEOUTS[1])? {
            Some(ack) if ack.kind == MessageType::Ack => {
                Lease::from_ack(&ack, lease.server).map(Some)
            }
            Some(_) => bail!("DHCP server refused to renew {} (NAK)", lease.addr),
            None => Ok(None),
        }
    }

    fn message(
        &self,
        kind: MessageType,
        ciaddr: Ipv4Addr,
        requested_ip: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
    ) -> Vec<u8> {
        ClientMessage {
            kind,
            xid: self.xid,
            mac: self.mac,
            ciaddr,
            requested_ip,
            server_id,
        }
        .encode()
    }

    /// Waits for a reply of one of `kinds` to our xid and MAC; other traffic is skipped.
    fn await_reply(
        &mut self,
        kinds: &[MessageType],
        timeout: Duration,
    ) -> Result<Option<ServerMessage>> {
        let deadline = Instant::now() + timeout;
        while let Some(packet) = self.channel.recv(deadline)? {
            let Ok(msg) = ServerMessage::parse(&packet) else {
                continue;
            };
            if msg.xid == self.xid && msg.chaddr == self.mac && kinds.contains(&msg.kind) {
                return Ok(Some(msg));
            }
        }
        Ok(None)
    }
}

/// Applies a lease: address, netmask, MTU, default route.
fn apply(iface: &str, lease: &Lease) -> Result<()> {
    iface::set_ipv4(iface, lease.addr, lease.netmask)?;
    if let Some(mtu) = lease.mtu {
        iface::set_mtu(iface, mtu)?;
    }
    if let Some(gw) = lease.router {
        iface::add_default_route(iface, gw)?;
    }
    Ok(())
}

/// A transaction id: unpredictable enough that replies to another client are not taken for ours.
fn new_xid(mac: &[u8; 6]) -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut b))
        .is_ok()
    {
        return u32::from_ne_bytes(b);
    }
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (now.tv_nsec as u32) ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
}

/// Waits for the first Ethernet interface to appear (the NIC module may still be probing).
fn wait_for_interface(sys_class_net: &Path) -> Result<String> {
    let deadline = Instant::now() + IFACE_WAIT;
    loop {
        if let Some(name) = iface::first_ethernet(sys_class_net)? {
            return Ok(name);
        }
        if Instant::now() >= deadline {
            bail!(
                "no Ethernet interface in {} after {IFACE_WAIT:?} (is the NIC driver, e.g. virtio_net, loaded?)",
                sys_class_net.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Brings up `lo` and the first Ethernet interface, then keeps the lease renewed. Runs forever on
/// its own thread; failures are logged and retried.
pub fn run(sys_class_net: &Path) {
    if let Err(e) = iface::set_up("lo") {
        log!("network: {e:#}");
    }
    let name = loop {
        match wait_for_interface(sys_class_net) {
            Ok(n) => break n,
            Err(e) => log!("network: {e:#}"),
        }
    };
    loop {
        if let Err(e) = configure_and_maintain(&name) {
            log!("network: {e:#}; retrying in {RETRY_PAUSE:?}");
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// Acquires a lease on `name`, applies it and renews it until renewal fails past the lease time.
fn configure_and_maintain(name: &str) -> Result<()> {
    iface::set_up(name)?;
    let mac = iface::hw_addr(name)?;
    let mut client = Client::new(UdpChannel::open(name)?, mac, new_xid(&mac));
    let mut lease = client.acquire()?;
    apply(name, &lease)?;
    log!(
        "network: {name} {}/{} gateway {} (DHCP server {}, lease {}s)",
        lease.addr,
        lease.prefix_len(),
        lease.router.map_or("none".to_string(), |g| g.to_string()),
        lease.server,
        lease.lease_time.as_secs()
    );
    loop {
        let expires = Instant::now() + lease.lease_time;
        std::thread::sleep(lease.renewal_time);
        let renewed = loop {
            match client.renew(&lease) {
                Ok(Some(l)) => break l,
                Ok(None) if Instant::now() < expires => continue,
                Ok(None) => bail!("lease on {} expired without renewal", lease.addr),
                Err(e) => return Err(e),
            }
        };
        if renewed.addr != lease.addr
            || renewed.netmask != lease.netmask
            || renewed.router != lease.router
        {
            log!(
                "network: renewal changed the lease to {}/{}",
                renewed.addr,
                renewed.prefix_len()
            );
            apply(name, &renewed)?;
        }
        lease = renewed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// Plays a DHCP server: answers each client message via `respond`, records what was sent.
    struct Script<F: FnMut(&[u8]) -> Vec<Vec<u8>>> {
        respond: F,
        sent: Vec<Vec<u8>>,
        pending: VecDeque<Vec<u8>>,
    }

    impl<F: FnMut(&[u8]) -> Vec<Vec<u8>>> Channel for &mut Script<F> {
        fn send(&mut self, packet: &[u8]) -> Result<()> {
            self.sent.push(packet.to_vec());
            let replies = (self.respond)(packet);
            self.pending.extend(replies);
            Ok(())
        }
        fn recv(&mut self, _deadline: Instant) -> Result<Option<Vec<u8>>> {
            Ok(self.pending.pop_front())
        }
    }

    /// A server reply with the fields a lease needs, for the given request packet.
    fn reply(req: &[u8], kind: u8, xid_delta: u32) -> Vec<u8> {
        let xid = u32::from_be_bytes(req[4..8].try_into().unwrap()).wrapping_add(xid_delta);
        let mut v = vec![2, 1, 6, 0];
        v.extend(xid.to_be_bytes());
        v.extend([
            0, 0, 0x80, 0, 0, 0, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2, 0, 0, 0, 0,
        ]);
        v.extend(&req[28..44]);
        v.extend([0u8; 192]);
        v.extend([
            99, 130, 83, 99, 53, 1, kind, 54, 4, 10, 0, 2, 2, 51, 4, 0, 1, 0x51, 0x80,
        ]);
        v.extend([1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2, 255]);
        v
    }

    fn msg_type(p: &[u8]) -> u8 {
        assert_eq!(&p[240..242], &[53, 1]);
        p[242]
    }

    #[test]
    fn full_exchange_yields_lease() {
        let mut script = Script {
            respond: |req: &[u8]| match msg_type(req) {
                1 => vec![b"garbage".to_vec(), reply(req, 2, 1), reply(req, 2, 0)],
                3 => vec![reply(req, 5, 0)],
                t => panic!("unexpected message type {t}"),
            },
            sent: vec![],
            pending: VecDeque::new(),
        };
        let lease = Client::new(&mut script, MAC, 100).acquire().unwrap();
        assert_eq!(
            lease,
            Lease {
                addr: Ipv4Addr::new(10, 0, 2, 15),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                server: Ipv4Addr::new(10, 0, 2, 2),
                mtu: None,
                lease_time: Duration::from_secs(86400),
                renewal_time: Duration::from_secs(43200),
            }
        );
        assert_eq!(lease.prefix_len(), 24);
        assert_eq!(script.sent.len(), 2);
        // The REQUEST names the offered address and the server (options 50, 54).
        let req = &script.sent[1];
        assert!(req.windows(6).any(|w| w == [50, 4, 10, 0, 2, 15]));
        assert!(req.windows(6).any(|w| w == [54, 4, 10, 0, 2, 2]));
    }

    #[test]
    fn nak_starts_over_and_silence_gives_up() {
        let mut naks = 0;
        let mut script = Script {
            respond: |req: &[u8]| match msg_type(req) {
                1 => vec![reply(req, 2, 0)],
                _ => {
                    naks += 1;
                    vec![reply(req, 6, 0)]
                }
            },
            sent: vec![],
            pending: VecDeque::new(),
        };
        let e = Client::new(&mut script, MAC, 1).acquire().unwrap_err();
        assert!(e.to_string().contains("no DHCP lease"), "{e}");
        assert_eq!(script.sent.len(), 2 * ATTEMPT_TIMEOUTS.len());
        drop(script);
        assert_eq!(naks, ATTEMPT_TIMEOUTS.len());
    }

    #[test]
    fn renew_sets_ciaddr_without_option_50() {
        let mut script = Script {
            respond: |req: &[u8]| vec![reply(req, 5, 0)],
            sent: vec![],
            pending: VecDeque::new(),
        };
        let lease = Lease {
            addr: Ipv4Addr::new(10, 0, 2, 15),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            router: None,
            server: Ipv4Addr::new(10, 0, 2, 2),
            mtu: None,
            lease_time: Duration::from_secs(60),
            renewal_time: Duration::from_secs(30),
        };
        let renewed = Client::new(&mut script, MAC, 5)
            .renew(&lease)
            .unwrap()
            .unwrap();
        assert_eq!(renewed.addr, lease.addr);
        let req = &script.sent[0];
        assert_eq!(&req[12..16], &[10, 0, 2, 15], "ciaddr");
        assert!(
            !req[240..].windows(2).any(|w| w == [50, 4]),
            "no requested-IP option"
        );
    }

    #[test]
    fn classful_fallback() {
        assert_eq!(
            classful_mask(Ipv4Addr::new(10, 1, 2, 3)),
            Ipv4Addr::new(255, 0, 0, 0)
        );
        assert_eq!(
            classful_mask(Ipv4Addr::new(172, 16, 0, 1)),
            Ipv4Addr::new(255, 255, 0, 0)
        );
        assert_eq!(
            classful_mask(Ipv4Addr::new(192, 168, 0, 1)),
            Ipv4Addr::new(255, 255, 255, 0)
        );
    }
}
