//! DHCPv4 messages (RFC 2131, options RFC 2132): just what a client needs for one lease.
//!
//! Client messages set the BROADCAST flag: the client's UDP socket cannot receive a unicast reply to
//! an address the interface does not have yet, so the server must broadcast its OFFER and ACK.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Result};

/// BOOTP `op` values.
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// `htype` for Ethernet, `hlen` for a MAC.
const HTYPE_ETHERNET: u8 = 1;
const HLEN_ETHERNET: u8 = 6;
/// `flags` bit asking the server to broadcast its reply.
const FLAG_BROADCAST: u16 = 0x8000;
/// RFC 2131 §3: options start with this cookie (99.130.83.99).
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header: op … file, before the cookie.
const FIXED_LEN: usize = 236;
/// Offsets in the fixed header.
const OFF_XID: usize = 4;
const OFF_FLAGS: usize = 10;
const OFF_CIADDR: usize = 12;
const OFF_YIADDR: usize = 16;
const OFF_CHADDR: usize = 28;
/// Minimum BOOTP message size (RFC 951); some servers drop shorter requests.
const MIN_MESSAGE: usize = 300;

/// Option codes (RFC 2132).
const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_MTU: u8 = 26;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMETER_LIST: u8 = 55;
const OPT_MAX_MESSAGE_SIZE: u8 = 57;
const OPT_RENEWAL_TIME: u8 = 58;
const OPT_CLIENT_ID: u8 = 61;
const OPT_END: u8 = 255;

/// What we accept: a full Ethernet frame's worth of DHCP.
const MAX_MESSAGE_SIZE: u16 = 1500;

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<Self> {
        use MessageType::*;
        [Discover, Offer, Request, Decline, Ack, Nak, Release]
            .into_iter()
            .find(|t| *t as u8 == v)
    }
}

/// A client message to build.
#[derive(Debug, Clone)]
pub struct ClientMessage {
    pub kind: MessageType,
    pub xid: u32,
    pub mac: [u8; 6],
    /// Our current address when renewing (`ciaddr`); unspecified otherwise.
    pub ciaddr: Ipv4Addr,
    /// Option 50, for a REQUEST in the SELECTING state.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54, for a REQUEST in the SELECTING state.
    pub server_id: Option<Ipv4Addr>,
}

impl ClientMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![0u8; FIXED_LEN];
        p[0] = BOOTREQUEST;
        p[1] = HTYPE_ETHERNET;
        p[2] = HLEN_ETHERNET;
        p[OFF_XID..OFF_XID + 4].copy_from_slice(&self.xid.to_be_bytes());
        p[OFF_FLAGS..OFF_FLAGS + 2].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
        p[OFF_CIADDR..OFF_CIADDR + 4].copy_from_slice(&self.ciaddr.octets());
        p[OFF_CHADDR..OFF_CHADDR + 6].copy_from_slice(&self.mac);
        p.extend_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, self.kind as u8]);
        // Client identifier: hardware type + MAC (RFC 2132 §9.14).
        p.extend_from_slice(&[OPT_CLIENT_ID, 7, HTYPE_ETHERNET]);
        p.extend_from_slice(&self.mac);
        if let Some(ip) = self.requested_ip {
            p.extend_from_slice(&[OPT_REQUESTED_IP, 4]);
            p.extend_from_slice(&ip.octets());
        }
        if let Some(ip) = self.server_id {
            p.extend_from_slice(&[OPT_SERVER_ID, 4]);
            p.extend_from_slice(&ip.octets());
        }
        p.extend_from_slice(&[OPT_MAX_MESSAGE_SIZE, 2]);
        p.extend_from_slice(&MAX_MESSAGE_SIZE.to_be_bytes());
        p.extend_from_slice(&[
            OPT_PARAMETER_LIST,
            6,
            OPT_SUBNET_MASK,
            OPT_ROUTER,
            OPT_DNS,
            OPT_MTU,
            OPT_LEASE_TIME,
            OPT_RENEWAL_TIME,
        ]);
        p.push(OPT_END);
        if p.len() < MIN_MESSAGE {
            p.resize(MIN_MESSAGE, OPT_PAD);
        }
        p
    }
}

/// A server reply (OFFER, ACK or NAK), with the options a lease needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMessage {
    pub kind: MessageType,
    pub xid: u32,
    pub chaddr: [u8; 6],
    pub yiaddr: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub lease_time: Option<Duration>,
    pub renewal_time: Option<Duration>,
}

impl ServerMessage {
    /// Parses a BOOTREPLY; rejects anything truncated or malformed.
    pub fn parse(p: &[u8]) -> Result<Self> {
        if p.len() < FIXED_LEN + MAGIC_COOKIE.len() {
            bail!(
                "DHCP message of {} bytes is shorter than the fixed header",
                p.len()
            );
        }
        if p[0] != BOOTREPLY {
            bail!("not a BOOTREPLY (op {})", p[0]);
        }
        if p[1] != HTYPE_ETHERNET || p[2] != HLEN_ETHERNET {
            bail!("hardware type {}/{} is not Ethernet", p[1], p[2]);
        }
        if p[FIXED_LEN..FIXED_LEN + 4] != MAGIC_COOKIE {
            bail!("missing DHCP magic cookie");
        }
        let ip = |off: usize| Ipv4Addr::new(p[off], p[off + 1], p[off + 2], p[off + 3]);
        let mut msg = ServerMessage {
            kind: MessageType::Nak,
            xid: u32::from_be_bytes([p[OFF_XID], p[OFF_XID + 1], p[OFF_XID + 2], p[OFF_XID + 3]]),
            chaddr: [0; 6],
            yiaddr: ip(OFF_YIADDR),
            server_id: None,
            subnet_mask: None,
            router: None,
            dns: Vec::new(),
            mtu: None,
            lease_time: None,
            renewal_time: None,
        };
        msg.chaddr.copy_from_slice(&p[OFF_CHADDR..OFF_CHADDR + 6]);
        let mut kind = None;
        for (code, data) in Options::new(&p[FIXED_LEN + MAGIC_COOKIE.len()..]) {
            let data = data?;
            match code {
                OPT_MESSAGE_TYPE => kind = data.first().copied().and_then(MessageType::from_u8),
                OPT_SERVER_ID => msg.server_id = first_ip(data),
                OPT_SUBNET_MASK => msg.subnet_mask = first_ip(data),
                OPT_ROUTER => msg.router = first_ip(data),
                OPT_DNS => {
                    msg.dns = data
                        .chunks_exact(4)
                        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                        .collect()
                }
                OPT_MTU => msg.mtu = data.try_into().ok().map(u16::from_be_bytes),
                OPT_LEASE_TIME => msg.lease_time = seconds(data),
                OPT_RENEWAL_TIME => msg.renewal_time = seconds(data),
                _ => {}
            }
        }
        msg.kind = match kind {
            Some(k) => k,
            None => bail!("DHCP reply without a valid message type (option 53)"),
        };
        Ok(msg)
    }
}

fn first_ip(data: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = data.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn seconds(data: &[u8]) -> Option<Duration> {
    let b: [u8; 4] = data.try_into().ok()?;
    Some(Duration::from_secs(u64::from(u32::from_be_bytes(b))))
}

/// Iterator over `(code, data)` of an option area; stops at END, yields an error on truncation.
struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Options<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Options { rest }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u8, Result<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&code, tail) = self.rest.split_first()?;
            match code {
                OPT_PAD => self.rest = tail,
                OPT_END => {
                    self.rest = &[];
                    return None;
                }
                _ => {
                    let Some((&len, tail)) = tail.split_first() else {
                        self.rest = &[];
                        return Some((
                            code,
                            Err(anyhow::anyhow!("option {code} has no length byte")),
                        ));
                    };
                    let len = usize::from(len);
                    if tail.len() < len {
                        self.rest = &[];
                        return Some((code, Err(anyhow::anyhow!("option {code} is truncated"))));
                    }
                    self.rest = &tail[len..];
                    return Some((code, Ok(&tail[..len])));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A DISCOVER laid out field by field from RFC 2131 §2 figure 1 and RFC 2132, written out by hand.
    fn expected_discover() -> Vec<u8> {
        let mut v = vec![
            0x01, 0x01, 0x06, 0x00, // op BOOTREQUEST, htype 1, hlen 6, hops 0
            0xde, 0xad, 0xbe, 0xef, // xid
            0x00, 0x00, 0x80, 0x00, // secs 0, flags BROADCAST
        ];
        v.extend([0u8; 16]); // ciaddr yiaddr siaddr giaddr
        v.extend(MAC);
        v.extend([0u8; 10]); // chaddr padding
        v.extend([0u8; 64 + 128]); // sname, file
        v.extend([0x63, 0x82, 0x53, 0x63]); // magic cookie
        v.extend([53, 1, 1]); // DHCPDISCOVER
        v.extend([61, 7, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]); // client id
        v.extend([57, 2, 0x05, 0xdc]); // max size 1500
        v.extend([55, 6, 1, 3, 6, 26, 51, 58]); // parameter request list
        v.push(255);
        v.resize(300, 0);
        v
    }

    #[test]
    fn discover_matches_hand_written_bytes() {
        let msg = ClientMessage {
            kind: MessageType::Discover,
            xid: 0xdeadbeef,
            mac: MAC,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested_ip: None,
            server_id: None,
        };
        assert_eq!(msg.encode(), expected_discover());
    }

    #[test]
    fn request_carries_requested_ip_and_server_id() {
        let msg = ClientMessage {
            kind: MessageType::Request,
            xid: 1,
            mac: MAC,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested_ip: Some(Ipv4Addr::new(10, 0, 2, 15)),
            server_id: Some(Ipv4Addr::new(10, 0, 2, 2)),
        };
        let p = msg.encode();
        let opts = &p[240..];
        assert_eq!(&opts[..3], &[53, 1, 3]);
        assert_eq!(&opts[12..18], &[50, 4, 10, 0, 2, 15]);
        assert_eq!(&opts[18..24], &[54, 4, 10, 0, 2, 2]);
    }

    /// An OFFER as QEMU's user-mode network (libslirp bootp.c) sends it to a guest, written by hand:
    /// yiaddr 10.0.2.15, siaddr 10.0.2.2, options type, server id, lease time 86400, mask, router,
    /// DNS 10.0.2.3, end.
    fn slirp_offer(xid: u32) -> Vec<u8> {
        let mut v = vec![0x02, 0x01, 0x06, 0x00];
        v.extend(xid.to_be_bytes());
        v.extend([0, 0, 0x80, 0]);
        v.extend([0, 0, 0, 0]); // ciaddr
        v.extend([10, 0, 2, 15]); // yiaddr
        v.extend([10, 0, 2, 2]); // siaddr
        v.extend([0, 0, 0, 0]); // giaddr
        v.extend(MAC);
        v.extend([0u8; 10]);
        v.extend([0u8; 192]);
        v.extend([99, 130, 83, 99]);
        v.extend([53, 1, 2]);
        v.extend([54, 4, 10, 0, 2, 2]);
        v.extend([51, 4, 0x00, 0x01, 0x51, 0x80]);
        v.extend([1, 4, 255, 255, 255, 0]);
        v.extend([3, 4, 10, 0, 2, 2]);
        v.extend([6, 4, 10, 0, 2, 3]);
        v.push(255);
        v.resize(548, 0);
        v
    }

    #[test]
    fn parses_slirp_offer() {
        let m = ServerMessage::parse(&slirp_offer(0x01020304)).unwrap();
        assert_eq!(m.kind, MessageType::Offer);
        assert_eq!(m.xid, 0x01020304);
        assert_eq!(m.chaddr, MAC);
        assert_eq!(m.yiaddr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(m.server_id, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(m.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(m.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(m.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(m.lease_time, Some(Duration::from_secs(86400)));
        assert_eq!(m.mtu, None);
    }

    #[test]
    fn rejects_malformed_replies() {
        let good = slirp_offer(7);
        assert!(
            ServerMessage::parse(&good[..200]).is_err(),
            "truncated header"
        );
        let mut req = good.clone();
        req[0] = 1;
        assert!(ServerMessage::parse(&req).is_err(), "BOOTREQUEST");
        let mut cookie = good.clone();
        cookie[236] = 0;
        assert!(ServerMessage::parse(&cookie).is_err(), "cookie");
        // Option 54 claims 4 bytes but the packet ends after 2.
        let mut trunc = good[..240].to_vec();
        trunc.extend([53, 1, 2, 54, 4, 10, 0]);
        let e = ServerMessage::parse(&trunc).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let mut no_type = good[..240].to_vec();
        no_type.push(255);
        assert!(ServerMessage::parse(&no_type).is_err(), "no message type");
    }

    #[test]
    fn parses_mtu_and_renewal() {
        let mut p = slirp_offer(1)[..240].to_vec();
        p.extend([
            53, 1, 5, 26, 2, 0x05, 0xb4, 58, 4, 0, 0, 0x0e, 0x10, 0, 0, 255,
        ]);
        let m = ServerMessage::parse(&p).unwrap();
        assert_eq!(m.kind, MessageType::Ack);
        assert_eq!(m.mtu, Some(1460));
        assert_eq!(m.renewal_time, Some(Duration::from_secs(3600)));
    }
}
