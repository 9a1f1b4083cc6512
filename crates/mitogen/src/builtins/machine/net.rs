//! Network interfaces and their addresses, from `getifaddrs(3)` (glibc and
//! musl ask the kernel over netlink: no program, no file) and each one's
//! hardware address from `/sys/class/net`.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Address, Interface};

/// Every interface of the context's network namespace, in the kernel's
/// order, each with its addresses; empty when `getifaddrs` fails.
pub(super) fn interfaces() -> Vec<Interface> {
    let mut out: Vec<Interface> = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `getifaddrs` fills `list` with a linked list it allocated,
    // which is only read below and then freed once, by `freeifaddrs`.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return out;
    }
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is an element of the list, alive until
        // `freeifaddrs`; its name is a NUL-terminated string and its
        // address and netmask, when not null, point to `sockaddr`s of the
        // family they say (for AF_INET and AF_INET6, the only ones read).
        let (name, flags, address) = unsafe {
            let ifa = &*node;
            node = ifa.ifa_next;
            if ifa.ifa_name.is_null() {
                continue;
            }
            let name = CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
            let address = ip(ifa.ifa_addr).map(|addr| Address {
                ip: addr,
                prefix: ip(ifa.ifa_netmask).map_or(0, prefix_len),
            });
            (name, ifa.ifa_flags, address)
        };
        let i = match out.iter().position(|i| i.name == name) {
            Some(i) => i,
            None => {
                out.push(Interface {
                    mac: mac(&name),
                    name,
                    up: flags & libc::IFF_UP as u32 != 0,
                    addresses: Vec::new(),
                });
                out.len() - 1
            }
        };
        out[i].addresses.extend(address);
    }
    // SAFETY: the list `getifaddrs` made, freed once; no reference into it
    // is left (names and addresses were copied).
    unsafe { libc::freeifaddrs(list) };
    out
}

/// The IP address of a `sockaddr`, when it is one.
///
/// # Safety
/// `sa` is null or points to a `sockaddr` whose family says its real type.
unsafe fn ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    match i32::from((*sa).sa_family) {
        libc::AF_INET => {
            let sin = &*sa.cast::<libc::sockaddr_in>();
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            let sin6 = &*sa.cast::<libc::sockaddr_in6>();
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// The prefix length of a netmask (its leading one bits).
fn prefix_len(mask: IpAddr) -> u8 {
    let ones = match mask {
        IpAddr::V4(m) => u32::from(m).leading_ones(),
        IpAddr::V6(m) => u128::from(m).leading_ones(),
    };
    u8::try_from(ones).unwrap_or(0)
}

/// The hardware address of an interface, unless it has none (all zeros, as
/// `lo`'s) or the name could walk out of `/sys/class/net`.
fn mac(name: &str) -> Option<String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).ok()?;
    let mac = text.trim();
    let zero = mac.chars().all(|c| c == '0' || c == ':');
    (!mac.is_empty() && !zero).then(|| mac.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_become_prefixes() {
        assert_eq!(prefix_len("255.255.255.0".parse().unwrap()), 24);
        assert_eq!(prefix_len("255.255.255.255".parse().unwrap()), 32);
        assert_eq!(prefix_len("ffff:ffff:ffff:ffff::".parse().unwrap()), 64);
        assert_eq!(prefix_len("0.0.0.0".parse().unwrap()), 0);
    }

    #[test]
    fn loopback_is_found() {
        let all = interfaces();
        let lo = all
            .iter()
            .find(|i| i.name == "lo")
            .expect("an lo interface");
        assert!(lo.up);
        assert!(lo.mac.is_none());
        assert!(lo
            .addresses
            .iter()
            .any(|a| a.ip == IpAddr::V4(Ipv4Addr::LOCALHOST) && a.prefix == 8));
    }
}
