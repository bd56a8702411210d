//! Cutting and restoring paths between homes while a lab runs.

use crate::{Lab, iptables};

impl Lab {
    /// Blocks (or with `blocked = false` restores) the direct path between
    /// homes `a` and `b`: each router drops what it would forward to the
    /// other's WAN address. Paths through other hosts of the internet, a
    /// relay's among them, stay open, so two members there stay relayed
    /// and their hole punches fail until the path is restored. Panics when
    /// a home is out of range.
    pub fn block_direct(&self, a: usize, b: usize, blocked: bool) -> anyhow::Result<()> {
        let op = if blocked { "-I" } else { "-D" };
        for (from, to) in [(a, b), (b, a)] {
            let wan = self.router_wan(to).to_string();
            iptables(
                &self.router(from).netns,
                &[op, "FORWARD", "-d", &wan, "-j", "DROP"],
            )?;
        }
        Ok(())
    }
}
