//! Free loopback ports for QEMU's `hostfwd`.
//!
//! The kernel picks a free port when we bind port 0; we release it and hand the number to QEMU. Another
//! process could take it in between (QEMU then fails with "could not set up host forwarding rule",
//! which the VM runner reports), but on loopback with ephemeral ports that window is tiny, and it needs
//! no fixed port ranges that would collide when several VMs run at once.

use anyhow::{Context, Result};
use std::net::{Ipv4Addr, TcpListener};

/// The host address every forwarded port listens on: never exposed beyond this machine.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// `n` distinct free loopback ports (all listeners are held until every port is known, so the kernel
/// cannot hand out the same one twice).
pub fn free_loopback_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| {
            TcpListener::bind((LOOPBACK, 0)).context(
                "cannot bind a TCP port on 127.0.0.1 to find a free one for QEMU's port forwarding",
            )
        })
        .collect::<Result<_>>()?;
    listeners
        .iter()
        .map(|l| {
            Ok(l.local_addr()
                .context("reading the port of a bound loopback socket")?
                .port())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_nonzero_and_bindable_again() {
        let ports = free_loopback_ports(3).unwrap();
        assert_eq!(ports.len(), 3);
        let mut sorted = ports.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 3, "{ports:?}");
        for p in ports {
            assert_ne!(p, 0);
            // Released: QEMU (here: we) can bind it.
            TcpListener::bind((LOOPBACK, p)).unwrap();
        }
    }
}
