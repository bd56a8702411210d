//! Cutting and restoring paths between homes while a lab runs.

use crate::{ETH, Lab, ip6tables, iptables, lan6};

impl Lab {
    /// Blocks (or with `blocked = false` restores) the direct path between
    /// homes `a` and `b`: each router drops what it would forward to the
    /// other's WAN address (and, in a dual-stack lab, to the other's IPv6
    /// LAN). Paths through other hosts of the internet, a relay's among
    /// them, stay open, so two members there stay relayed and their hole
    /// punches fail until the path is restored. Panics when a home is out
    /// of range.
    pub fn block_direct(&self, a: usize, b: usize, blocked: bool) -> anyhow::Result<()> {
        let op = if blocked { "-I" } else { "-D" };
        for (from, to) in [(a, b), (b, a)] {
            let router = &self.router(from).netns;
            let wan = self.router_wan(to).to_string();
            iptables(router, &[op, "FORWARD", "-d", &wan, "-j", "DROP"])?;
            if self.ipv6 {
                let lan = format!("{}/64", lan6(to, 0));
                ip6tables(router, &[op, "FORWARD", "-d", &lan, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Cuts (or with `cut = false` restores) home `home` off the internet:
    /// its router drops everything it would forward between the LAN and
    /// the WAN, both ways, IPv6 included, as when the home's uplink goes
    /// down. Connections through it stall (their conntrack entries stay, so
    /// they may resume once restored); the LAN keeps working. Panics when
    /// the home is out of range.
    pub fn isolate(&self, home: usize, cut: bool) -> anyhow::Result<()> {
        let op = if cut { "-I" } else { "-D" };
        let router = &self.router(home).netns;
        for dir in ["-i", "-o"] {
            let rule = [op, "FORWARD", dir, ETH, "-j", "DROP"];
            iptables(router, &rule)?;
            if self.ipv6 {
                ip6tables(router, &rule)?;
            }
        }
        Ok(())
    }
}
