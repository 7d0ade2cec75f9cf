//! Human output of `status` (one block per connection) and `list` (a table).

use std::fmt::Write as _;

use super::status_model::{ConnStatus, Report, RouteOut, StateKind};

pub fn render_status(r: &Report, now: u64) -> String {
    if r.connections.is_empty() {
        return "no connection is up\n".to_owned();
    }
    let blocks: Vec<String> = r.connections.iter().map(|c| block(c, now)).collect();
    blocks.join("\n")
}

fn block(c: &ConnStatus, now: u64) -> String {
    let mut s = String::new();
    let kind = c.kind.map(|k| format!(" ({k})")).unwrap_or_default();
    match (&c.state, &c.stale_reason) {
        (StateKind::Stale, Some(why)) => {
            let _ = writeln!(s, "{}{kind}: STALE: {why}", c.name);
            let _ = writeln!(s, "  clean up with: vpn-ns down {}", c.name);
        }
        (st, _) => {
            let _ = writeln!(s, "{}{kind}: {}", c.name, st.as_str());
        }
    }
    let mut row = |k: &str, v: String| {
        if !v.is_empty() {
            let _ = writeln!(s, "  {k:<10} {v}");
        }
    };
    row(
        "namespace",
        match (&c.netns, c.isolated) {
            (_, false) => "none (netns-isolate = false: host namespace)".to_owned(),
            (Some(ns), true) if c.netns_exists => ns.clone(),
            (Some(ns), true) => format!("{ns} (not present)"),
            (None, true) => String::new(),
        },
    );
    if let Some(d) = &c.device {
        let mtu = c.mtu.map(|m| format!(", mtu {m}")).unwrap_or_default();
        let gone = match c.device_present {
            Some(true) => "",
            Some(false) => " (missing)",
            None => " (not checked)",
        };
        row("device", format!("{d}{mtu}{gone}"));
    }
    row(
        "addresses",
        c.addresses
            .iter()
            .map(|a| match a.peer {
                Some(p) => format!("{} peer {p}", a.local),
                None => a.local.clone(),
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    let routes: Vec<String> = c.routes.iter().map(route_text).collect();
    row("routes", routes.join(&format!("\n  {:<10} ", "")));
    let mut dns = c.dns.servers.join(", ");
    if !c.dns.search.is_empty() {
        let _ = write!(dns, "; search {}", c.dns.search.join(" "));
    }
    row("dns", dns);
    let procs: Vec<String> = c
        .processes
        .iter()
        .map(|p| format!("{} {} {}", p.pid, p.user, p.command))
        .collect();
    row("processes", procs.join(&format!("\n  {:<10} ", "")));
    if let (Some(rx), Some(tx)) = (c.rx_bytes, c.tx_bytes) {
        row("traffic", format!("rx {}, tx {}", bytes(rx), bytes(tx)));
    }
    if let (Some(t), Some(secs)) = (&c.up_since, c.since) {
        row(
            "up since",
            format!("{t} ({} ago)", ago(now.saturating_sub(secs))),
        );
    }
    if let Some(p) = c.vpn_pid {
        row("vpn pid", p.to_string());
    }
    for p in c.wireguard_peers.iter().flatten() {
        let hs = match p.latest_handshake_age {
            Some(a) => format!("handshake {} ago", ago(a)),
            None => "no handshake yet".to_owned(),
        };
        let ep = p.endpoint.as_deref().unwrap_or("(no endpoint)");
        row(
            "peer",
            format!(
                "{} {ep}, {hs}, rx {}, tx {}",
                p.public_key,
                bytes(p.rx_bytes),
                bytes(p.tx_bytes)
            ),
        );
    }
    if let Some(k) = &c.keeper {
        if k.running {
            let rss = k
                .rss_kib
                .map(|r| format!(", RSS {r} KiB"))
                .unwrap_or_default();
            row("keeper", format!("pid {}{rss}", k.pid));
            row("watching", k.watching.join(&format!("\n  {:<10} ", "")));
        } else {
            row(
                "keeper",
                format!(
                    "none: UNATTENDED (keeper pid {} is gone; the connection still works, but nothing watches it; `vpn-ns up {}` starts a new keeper)",
                    k.pid, c.name
                ),
            );
        }
        for (i, p) in k.published.iter().enumerate() {
            let what = match &p.error {
                Some(e) => format!("{}: NOT LISTENING: {e}", p.rule),
                None => format!("{} ({} open, {} total)", p.rule, p.active, p.total),
            };
            row(if i == 0 { "published" } else { "" }, what);
        }
        if let Some(t) = &k.lease_expires {
            let state = if k.lease_expired {
                " (EXPIRED: address removed)"
            } else {
                ""
            };
            row("lease", format!("expires {t}{state}"));
        }
    }
    if let Some(why) = &c.vpn_gone {
        row("vpn gone", why.clone());
    }
    if c.persistent {
        row("options", "netns-persistent".to_owned());
    }
    s
}

fn route_text(r: &RouteOut) -> String {
    let mut s = match r.dest.as_str() {
        "0.0.0.0/0" | "::/0" => "default".to_owned(),
        d => d.to_owned(),
    };
    if let Some(g) = r.gateway {
        let _ = write!(s, " via {g}");
    }
    if let Some(d) = &r.dev {
        let _ = write!(s, " dev {d}");
    }
    if let Some(m) = r.metric {
        let _ = write!(s, " metric {m}");
    }
    s
}

pub fn render_list(r: &Report, now: u64) -> String {
    if r.connections.is_empty() {
        return "no connection is configured or up\n".to_owned();
    }
    let header = [
        "NAME", "TYPE", "STATE", "NETNS", "DEVICE", "ADDRESS", "PROCS", "UP",
    ];
    let rows: Vec<[String; 8]> = r
        .connections
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                c.kind.map_or("-".to_owned(), |k| k.to_string()),
                c.state.as_str().to_owned(),
                match (&c.netns, c.isolated) {
                    (_, false) => "(host)".to_owned(),
                    (Some(ns), true) => ns.clone(),
                    (None, true) => "-".to_owned(),
                },
                c.device
                    .clone()
                    .filter(|_| c.device_present != Some(false))
                    .unwrap_or_else(|| "-".to_owned()),
                c.addresses
                    .first()
                    .map_or("-".to_owned(), |a| a.local.clone()),
                match c.state {
                    StateKind::Down => "-".to_owned(),
                    _ => c.processes.len().to_string(),
                },
                c.since
                    .map_or("-".to_owned(), |s| ago(now.saturating_sub(s))),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// 1536 -> "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// 3725 -> "1h 2m".
pub fn ago(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}
