//! AllowedIPs: longest-prefix match from an address to a peer (cryptokey routing).
//! One hash map per prefix length in use, probed from the longest: a lookup costs at
//! most one probe per distinct prefix length, whatever the number of entries (a
//! 2,400-entry config has a handful of lengths).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::spec::IpNet;

#[derive(Debug)]
pub struct AllowedIps<T> {
    /// (prefix length, network bits -> value), longest prefix first.
    v4: Vec<(u8, HashMap<u32, T>)>,
    v6: Vec<(u8, HashMap<u128, T>)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

fn mask4(bits: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask6(bits: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix)))
    }
}

fn slot<K, T>(v: &mut Vec<(u8, HashMap<K, T>)>, prefix: u8) -> &mut HashMap<K, T> {
    let at = match v.binary_search_by(|(p, _)| prefix.cmp(p)) {
        Ok(i) => i,
        Err(i) => {
            v.insert(i, (prefix, HashMap::new()));
            i
        }
    };
    &mut v[at].1
}

impl<T> AllowedIps<T> {
    /// Maps `net` to `value`, returning what it mapped to before (an allowed IP belongs
    /// to one peer: adding it to another takes it away from the first, as in WireGuard).
    pub fn insert(&mut self, net: &IpNet, value: T) -> Option<T> {
        let p = net.prefix();
        match net.addr() {
            IpAddr::V4(a) => slot(&mut self.v4, p).insert(mask4(a.to_bits(), p), value),
            IpAddr::V6(a) => slot(&mut self.v6, p).insert(mask6(a.to_bits(), p), value),
        }
    }

    /// The value of the longest prefix containing `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        match ip {
            IpAddr::V4(a) => {
                let bits = a.to_bits();
                self.v4.iter().find_map(|(p, m)| m.get(&mask4(bits, *p)))
            }
            IpAddr::V6(a) => {
                let bits = a.to_bits();
                self.v6.iter().find_map(|(p, m)| m.get(&mask6(bits, *p)))
            }
        }
    }

    /// Drops every entry whose value fails `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for (_, m) in &mut self.v4 {
            m.retain(|_, v| keep(v));
        }
        for (_, m) in &mut self.v6 {
            m.retain(|_, v| keep(v));
        }
        self.v4.retain(|(_, m)| !m.is_empty());
        self.v6.retain(|(_, m)| !m.is_empty());
    }

    /// Every entry as (network, value), v4 first, longest prefixes first.
    pub fn entries(&self) -> impl Iterator<Item = (IpNet, &T)> {
        let v4 = self.v4.iter().flat_map(|(p, m)| {
            m.iter().map(move |(bits, v)| {
                let net = IpNet::new(IpAddr::V4((*bits).into()), *p).expect("prefix <= 32");
                (net, v)
            })
        });
        let v6 = self.v6.iter().flat_map(|(p, m)| {
            m.iter().map(move |(bits, v)| {
                let net = IpNet::new(IpAddr::V6((*bits).into()), *p).expect("prefix <= 128");
                (net, v)
            })
        });
        v4.chain(v6)
    }

    pub fn len(&self) -> usize {
        self.v4.iter().map(|(_, m)| m.len()).sum::<usize>()
            + self.v6.iter().map(|(_, m)| m.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_per_family() {
        let mut t = AllowedIps::default();
        t.insert(&net("0.0.0.0/0"), 'd');
        t.insert(&net("10.0.0.0/8"), 'a');
        t.insert(&net("10.1.0.0/16"), 'b');
        t.insert(&net("10.1.2.3/32"), 'c');
        t.insert(&net("fd00::/8"), 'x');
        t.insert(&net("fd00:1::/32"), 'y');
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&'c'));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(&'b'));
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(&'a'));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&'d'));
        assert_eq!(t.lookup(ip("fd00:1::5")), Some(&'y'));
        assert_eq!(t.lookup(ip("fd00:2::5")), Some(&'x'));
        assert_eq!(t.lookup(ip("2001:db8::1")), None);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn an_address_belongs_to_one_value_and_retain_removes() {
        let mut t = AllowedIps::default();
        assert_eq!(t.insert(&net("10.0.0.0/8"), 1), None);
        assert_eq!(t.insert(&net("10.0.0.0/8"), 2), Some(1));
        t.insert(&net("::/0"), 1);
        t.retain(|v| *v != 1);
        assert_eq!(t.lookup(ip("10.0.0.1")), Some(&2));
        assert_eq!(t.lookup(ip("::1")), None);
        let all: Vec<String> = t.entries().map(|(n, _)| n.to_string()).collect();
        assert_eq!(all, ["10.0.0.0/8"]);
    }

    #[test]
    fn many_entries_each_found() {
        let mut t = AllowedIps::default();
        for i in 0..2400u32 {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
            t.insert(&IpNet::new(IpAddr::V4(a), 24).unwrap(), i);
        }
        for i in 0..2400u32 {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8) + 7);
            assert_eq!(t.lookup(IpAddr::V4(a)), Some(&i));
        }
        assert_eq!(t.len(), 2400);
    }
}
