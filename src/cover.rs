//! With `netns-isolate = false` the VPN's pushed routes go into the host's own table.
//! A hostile server can then take the host's whole traffic without a default route:
//! four /2 routes cover everything. Refused: any route shorter than /8, and any set
//! whose union covers a /1 (half of an address family).

use std::net::IpAddr;

use crate::spec::IpNet;

/// Routes shorter than this are refused outright.
pub const MIN_PREFIX: u8 = 8;

/// Why a set of routes is too wide for the host's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TooWide {
    /// One route shorter than /8.
    Prefix(IpNet),
    /// These routes together cover `half`, a /1.
    Union { half: IpNet, parts: Vec<IpNet> },
}

/// The first and last address of `n`, as integers of its family.
fn range(n: &IpNet) -> (u128, u128) {
    let (start, bits) = match n.network().addr() {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
        IpAddr::V6(a) => (u128::from(a), 128u32),
    };
    let host_bits = bits - u32::from(n.prefix());
    let size_minus_1 = match host_bits {
        128 => u128::MAX,
        h => (1u128 << h) - 1,
    };
    (start, start + size_minus_1)
}

fn halves(v4: bool) -> [IpNet; 2] {
    let parse = |s: &str| s.parse::<IpNet>().expect("constant /1");
    match v4 {
        true => [parse("0.0.0.0/1"), parse("128.0.0.0/1")],
        false => [parse("::/1"), parse("8000::/1")],
    }
}

/// Whether the union of `nets` (one family) contains all of `half`.
fn union_covers(nets: &[IpNet], half: &IpNet) -> bool {
    let (lo, hi) = range(half);
    let mut spans: Vec<(u128, u128)> = nets.iter().map(range).collect();
    spans.sort_unstable();
    let mut next = lo;
    for (s, e) in spans {
        if e < next {
            continue;
        }
        if s > next {
            return false;
        }
        if e >= hi {
            return true;
        }
        next = e + 1;
    }
    false
}

/// Every reason `routes` are too wide for the host's table; empty when they are fine.
pub fn too_wide(routes: &[IpNet], min_prefix: u8) -> Vec<TooWide> {
    let mut out: Vec<TooWide> = routes
        .iter()
        .filter(|r| r.prefix() < min_prefix)
        .map(|r| TooWide::Prefix(*r))
        .collect();
    for v4 in [true, false] {
        let fam: Vec<IpNet> = routes
            .iter()
            .filter(|r| r.is_ipv4() == v4)
            .copied()
            .collect();
        for half in halves(v4) {
            if union_covers(&fam, &half) {
                let parts = fam
                    .iter()
                    .filter(|r| half.covers(r) || r.covers(&half))
                    .copied()
                    .collect();
                out.push(TooWide::Union { half, parts });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn too_wide_default(routes: &[IpNet]) -> Vec<TooWide> {
        too_wide(routes, MIN_PREFIX)
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ordinary_vpn_routes_pass() {
        assert!(
            too_wide_default(&nets(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])).is_empty()
        );
        assert!(too_wide_default(&nets(&["fd00::/8", "2001:db8::/32"])).is_empty());
        assert!(too_wide_default(&[]).is_empty());
    }

    #[test]
    fn four_quarters_are_refused() {
        let r = too_wide_default(&nets(&[
            "0.0.0.0/2",
            "64.0.0.0/2",
            "128.0.0.0/2",
            "192.0.0.0/2",
        ]));
        assert_eq!(
            r.iter().filter(|w| matches!(w, TooWide::Prefix(_))).count(),
            4
        );
        assert_eq!(
            r.iter()
                .filter(|w| matches!(w, TooWide::Union { .. }))
                .count(),
            2
        );
    }

    #[test]
    fn the_minimum_prefix_is_configurable() {
        let r = nets(&["10.0.0.0/8", "10.1.0.0/16"]);
        assert!(too_wide(&r, 8).is_empty());
        assert_eq!(too_wide(&r, 12).len(), 1, "the /8 is shorter than /12");
        assert_eq!(too_wide(&r, 24).len(), 2);
        // The /1 union rule holds whatever the prefix says.
        assert_eq!(too_wide(&nets(&["0.0.0.0/2", "64.0.0.0/2"]), 1).len(), 1);
    }

    #[test]
    fn short_prefixes_are_refused() {
        assert_eq!(
            too_wide_default(&nets(&["10.0.0.0/7"])),
            vec![TooWide::Prefix("10.0.0.0/7".parse().unwrap())]
        );
        assert_eq!(too_wide_default(&nets(&["2000::/4"])).len(), 1);
    }

    #[test]
    fn a_union_of_slash_8s_covering_half_is_refused() {
        let all: Vec<String> = (0..128).map(|i| format!("{i}.0.0.0/8")).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let r = too_wide_default(&nets(&refs));
        let TooWide::Union { half, parts } = &r[0] else {
            panic!("{r:?}")
        };
        assert_eq!(half.to_string(), "0.0.0.0/1");
        assert_eq!(parts.len(), 128);
        // One /8 missing: not the whole half.
        assert!(too_wide_default(&nets(&refs[1..])).is_empty());
        // Split and overlapping pieces count too.
        let mut split = nets(&refs[2..]);
        split.extend(nets(&[
            "0.0.0.0/9",
            "0.128.0.0/9",
            "1.0.0.0/8",
            "1.2.0.0/16",
        ]));
        assert_eq!(too_wide_default(&split).len(), 1);
    }
}
