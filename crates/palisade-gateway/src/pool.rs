//! Synthetic loopback addresses: the DNS stub answers each allowed name with its own address
//! in 127.77.0.0/16, and the transparent TCP listener maps a connection's destination back to
//! the name. Bounded: a sandbox cannot grow it past [`CAPACITY`] names.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use palisade_policy::HostName;

/// The pool's network: 127.77.0.0/16.
pub const NETWORK: [u8; 2] = [127, 77];
/// How many names the pool holds (host parts 1 to 65534).
pub const CAPACITY: usize = 65_534;

/// The names handed out and their addresses, both ways.
#[derive(Debug, Default)]
pub struct Pool {
    by_name: HashMap<HostName, Ipv4Addr>,
    by_addr: HashMap<Ipv4Addr, HostName>,
}

impl Pool {
    /// The address for `name`, assigning the next free one; `None` when the pool is full.
    pub fn assign(&mut self, name: &HostName) -> Option<Ipv4Addr> {
        if let Some(a) = self.by_name.get(name) {
            return Some(*a);
        }
        if self.by_name.len() >= CAPACITY {
            return None;
        }
        let n = self.by_name.len() + 1;
        let addr = Ipv4Addr::new(NETWORK[0], NETWORK[1], (n >> 8) as u8, n as u8);
        self.by_name.insert(name.clone(), addr);
        self.by_addr.insert(addr, name.clone());
        Some(addr)
    }

    /// The name behind a synthetic address.
    pub fn name_of(&self, addr: Ipv4Addr) -> Option<&HostName> {
        self.by_addr.get(&addr)
    }

    /// How many names were handed out.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_per_name_and_back() {
        let mut p = Pool::default();
        let a = HostName::parse("a.example.com").unwrap();
        let b = HostName::parse("b.example.com").unwrap();
        let (x, y) = (p.assign(&a).unwrap(), p.assign(&b).unwrap());
        assert_ne!(x, y);
        assert_eq!(p.assign(&a), Some(x));
        assert_eq!(p.name_of(y), Some(&b));
        assert_eq!(x.octets()[..2], NETWORK);
        assert_eq!(p.name_of(Ipv4Addr::new(127, 77, 9, 9)), None);
    }

    #[test]
    fn bounded() {
        let mut p = Pool::default();
        for i in 0..CAPACITY {
            assert!(p.assign(&HostName::parse(&format!("h{i}.example.com")).unwrap()).is_some());
        }
        assert_eq!(p.assign(&HostName::parse("one-more.example.com").unwrap()), None);
        let last = p.assign(&HostName::parse(&format!("h{}.example.com", CAPACITY - 1)).unwrap()).unwrap();
        assert_eq!(last, Ipv4Addr::new(127, 77, 255, 254));
    }
}
