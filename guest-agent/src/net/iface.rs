//! IPv4 interface configuration through the classic socket ioctls.
//!
//! `SIOCSIFFLAGS`/`SIOCSIFADDR`/`SIOCSIFNETMASK`/`SIOCSIFMTU`/`SIOCADDRT` configure exactly what a
//! DHCP lease describes (one address, one netmask, one default route, an MTU) and need no netlink
//! message encoder, no extra crate and no async runtime. The unsafe code is confined to this module:
//! each ioctl gets a zero-initialised, fully owned request struct.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// `ARPHRD_ETHER` from `<linux/if_arp.h>`, as `/sys/class/net/*/type` reports it.
const ARPHRD_ETHER: u32 = 1;

/// `struct rtentry` from `<net/route.h>` (glibc does not expose it through the libc crate).
/// Field names follow the header; size 120 on x86_64 (checked in the tests against gcc's value).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// An AF_INET datagram socket: the handle the interface ioctls are issued on.
fn control_socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the returned descriptor is owned exactly once below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error())
            .context("creating an AF_INET socket for interface ioctls");
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq_for(name: &str) -> Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        bail!("invalid interface name \"{name}\"");
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and are both plain data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Issues `request` with `arg` on a fresh control socket.
fn ioctl<T>(request: libc::Ioctl, arg: &mut T, what: &str) -> Result<()> {
    let sock = control_socket()?;
    // SAFETY: `arg` is the struct type the kernel expects for `request` (ifreq or rtentry),
    // exclusively borrowed for the duration of the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, arg as *mut T) };
    if rc < 0 {
        return Err(io::Error::last_os_error()).with_context(|| what.to_string());
    }
    Ok(())
}

/// Sets IFF_UP on `name` (for `lo` the kernel then assigns 127.0.0.1/8 itself).
pub fn set_up(name: &str) -> Result<()> {
    let mut req = ifreq_for(name)?;
    ioctl(
        libc::SIOCGIFFLAGS,
        &mut req,
        &format!("reading flags of {name}"),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(libc::SIOCSIFFLAGS, &mut req, &format!("bringing {name} up"))
}

/// The interface's MAC address.
pub fn hw_addr(name: &str) -> Result<[u8; 6]> {
    let mut req = ifreq_for(name)?;
    ioctl(
        libc::SIOCGIFHWADDR,
        &mut req,
        &format!("reading the MAC address of {name}"),
    )?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

/// Assigns `addr` with `netmask` to `name`.
pub fn set_ipv4(name: &str, addr: Ipv4Addr, netmask: Ipv4Addr) -> Result<()> {
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(
        libc::SIOCSIFADDR,
        &mut req,
        &format!("setting address {addr} on {name}"),
    )?;
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr_in(netmask);
    ioctl(
        libc::SIOCSIFNETMASK,
        &mut req,
        &format!("setting netmask {netmask} on {name}"),
    )
}

pub fn set_mtu(name: &str, mtu: u16) -> Result<()> {
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
    ioctl(
        libc::SIOCSIFMTU,
        &mut req,
        &format!("setting MTU {mtu} on {name}"),
    )
}

/// Adds `default via gateway dev name`.
pub fn add_default_route(name: &str, gateway: Ipv4Addr) -> Result<()> {
    let dev = CString::new(name).with_context(|| format!("interface name {name:?}"))?;
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_in(gateway),
        rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        // The kernel only reads the name through this pointer during the ioctl.
        rt_dev: dev.as_ptr() as *mut libc::c_char,
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    match ioctl(
        libc::SIOCADDRT,
        &mut rt,
        &format!("adding default route via {gateway} on {name}"),
    ) {
        // A renewal re-applies the same lease: the route being there already is fine.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .and_then(io::Error::raw_os_error)
                == Some(libc::EEXIST) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The first Ethernet interface (lowest ifindex) under `sys_class_net` (`/sys/class/net`).
pub fn first_ethernet(sys_class_net: &Path) -> Result<Option<String>> {
    let entries = std::fs::read_dir(sys_class_net)
        .with_context(|| format!("listing {} (is sysfs mounted?)", sys_class_net.display()))?;
    let mut found: Vec<(u32, String)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let read_u32 = |file: &str| -> Option<u32> {
            std::fs::read_to_string(entry.path().join(file))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        if read_u32("type") != Some(ARPHRD_ETHER) {
            continue;
        }
        if let Some(index) = read_u32("ifindex") {
            found.push((index, name));
        }
    }
    found.sort();
    Ok(found.into_iter().next().map(|(_, name)| name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtentry_matches_glibc_layout() {
        // gcc on x86_64 glibc: sizeof(struct rtentry) = 120, rt_flags at 56, rt_metric at 80,
        // rt_dev at 88.
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_flags), 56);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_metric), 80);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_dev), 88);
        assert_eq!(std::mem::size_of::<libc::ifreq>(), 40);
    }

    #[test]
    fn sockaddr_in_is_network_order() {
        let sa = sockaddr_in(Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        let bytes: Vec<u8> = sa.sa_data.iter().map(|b| *b as u8).collect();
        assert_eq!(
            &bytes[..6],
            &[0, 0, 10, 0, 2, 15],
            "port 0, then the address"
        );
    }

    #[test]
    fn finds_lowest_ethernet_and_skips_loopback() {
        let dir = tempfile::tempdir().unwrap();
        for (name, ty, index) in [
            ("lo", 772, 1),
            ("eth1", 1, 3),
            ("enp0s3", 1, 2),
            ("sit0", 776, 4),
        ] {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("type"), format!("{ty}\n")).unwrap();
            std::fs::write(d.join("ifindex"), format!("{index}\n")).unwrap();
        }
        assert_eq!(
            first_ethernet(dir.path()).unwrap().as_deref(),
            Some("enp0s3")
        );
    }

    #[test]
    fn loopback_reads_on_this_host() {
        // `lo` exists everywhere and has the all-zero MAC.
        assert_eq!(hw_addr("lo").unwrap(), [0; 6]);
        assert!(ifreq_for("this-name-is-too-long").is_err());
    }
}
