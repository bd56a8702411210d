//! A NAT lab made of Linux network namespaces, for `cargo xtask netlab`,
//! `cargo xtask bench` and the end-to-end tests.
//!
//! A [`Lab`] builds, from a [`LabSpec`]:
//!
//! - an "internet": one namespace holding a bridge on `203.0.113.0/24`;
//! - public hosts on that bridge at `203.0.113.10`, `.11`, … ([`Lab::public`]);
//! - home networks: home `i` has a router namespace with its WAN at
//!   `203.0.113.(20+i)` and its LAN bridge at `198.18.i.1/24`, doing NAT
//!   ([`Nat`]) and optionally dropping forwarded UDP, adding latency or
//!   forgetting UDP mappings early ([`HomeSpec::udp_timeout`]); its hosts
//!   sit at `198.18.i.(10+j)` on that bridge, so they see each other's
//!   multicast (mDNS) ([`Lab::home_host`]); two hosts of one home are two
//!   machines behind the same NAT;
//! - with [`LabSpec::ipv6`], dual stack: the internet is also
//!   `2001:db8::/64` (public hosts `::10+k`, routers `::20+i`), home `i`'s
//!   LAN is `2001:db8:1:i::/64` (hosts `::10+j`), routed without NAT and
//!   without filtering ([`Host::addr6`]).
//!
//! The routers are stateful firewalls: nothing comes in from the internet
//! over IPv4 unless it belongs to a connection that a home host opened; the
//! rest is dropped or, with [`Firewall::Reject`] (OpenWrt's default),
//! answered with a TCP reset or ICMP port-unreachable. Homes have no route
//! to each other's `198.18.x` networks, and routers do not hairpin (a host
//! sending to its own router's WAN address reaches the router, not the
//! mapping's host). [`Lab::block_direct`] and [`Lab::isolate`] cut paths
//! while a lab runs.
//!
//! Every name carries a per-lab prefix (`dml<pid>x<counter>`), so several labs
//! can exist at once, in one process or several. Dropping the [`Lab`], also
//! while a test panics, kills the processes started with [`Lab::spawn`] (and
//! anything else left inside its namespaces) and deletes the namespaces.
//! Namespaces left by a process that died without cleaning up (SIGKILL) are
//! swept by the next [`Lab::new`].
//!
//! Building a lab needs root and the `ip`, `iptables` and `tc` tools (and
//! `ip6tables` for a dual-stack lab that drops UDP or is cut); tests
//! should check [`Lab::available`] first and skip with the reason otherwise.
//!
//! ```no_run
//! use devmesh_netlab::{HomeSpec, Lab, LabSpec, Nat};
//! use std::{net::TcpStream, time::Duration};
//!
//! if let Err(reason) = Lab::available() {
//!     eprintln!("skipping: {reason}");
//!     return Ok(());
//! }
//! let _serial = Lab::exclusive(); // optional: one heavy lab test at a time
//! let lab = Lab::new(LabSpec {
//!     public_hosts: 1,
//!     homes: vec![HomeSpec { nat: Nat::EndpointIndependent, hosts: 2, ..HomeSpec::default() }],
//!     latency: Some(Duration::from_millis(40)),
//!     ipv6: false,
//! })?;
//! let relay = lab.public(0).clone();
//! // A process inside the relay's namespace, killed when `lab` drops.
//! let mut cmd = lab.command(&relay, "python3");
//! cmd.args(["-m", "http.server", "8000"]);
//! let pid = lab.spawn(&relay, cmd)?;
//! // Code of this process inside a home host's namespace.
//! let alice = lab.home_host(0, 0);
//! let connected = alice.in_netns(|| {
//!     TcpStream::connect_timeout(&(relay.addr, 8000).into(), Duration::from_secs(5)).is_ok()
//! })?;
//! lab.kill(pid); // e.g. simulate a crash
//! # let _ = connected;
//! # Ok::<(), anyhow::Error>(())
//! ```

mod delay;
mod paths;

use std::{
    collections::HashMap,
    ffi::OsStr,
    fmt,
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use nix::{
    sched::CloneFlags,
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// How a home router translates addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nat {
    /// `MASQUERADE`: Linux keeps the host's source port when it is free, so
    /// one local port maps to the same public port for every destination
    /// (hole punching works).
    #[default]
    EndpointIndependent,
    /// `MASQUERADE --random-fully`: every new connection gets a random
    /// public port (a "symmetric" NAT; hole punching fails).
    RandomPorts,
}

/// What a home router does with unsolicited packets from the internet
/// (those that answer no connection a home host opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firewall {
    /// Drops them silently (most consumer routers).
    #[default]
    Drop,
    /// Answers them: a TCP reset for TCP, ICMP port-unreachable for the
    /// rest, as OpenWrt's default firewall does (`REJECT` on wan input and
    /// forward). An early hole-punching packet from the other side then
    /// comes back as an error instead of vanishing.
    Reject,
}

/// One home network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeSpec {
    /// The router's NAT.
    pub nat: Nat,
    /// Drop all UDP the router would forward between the LAN and the
    /// internet (QUIC fails, TCP passes). Traffic inside the LAN (mDNS) is
    /// not affected.
    pub block_udp: bool,
    /// How many hosts on the LAN (at most 200).
    pub hosts: usize,
    /// What the router does with unsolicited packets from the internet.
    pub firewall: Firewall,
    /// How long the router keeps a UDP mapping without traffic (conntrack's
    /// `nf_conntrack_udp_timeout` and `_stream`, per router namespace);
    /// `None` keeps the kernel's (30 s before a reply, 120 s after).
    pub udp_timeout: Option<Duration>,
}

impl Default for HomeSpec {
    /// One host behind an endpoint-independent NAT that drops what it did
    /// not ask for.
    fn default() -> Self {
        Self {
            nat: Nat::EndpointIndependent,
            block_udp: false,
            hosts: 1,
            firewall: Firewall::Drop,
            udp_timeout: None,
        }
    }
}

/// What a [`Lab`] contains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabSpec {
    /// Hosts directly on the internet, at `203.0.113.(10+i)` (at most 10).
    pub public_hosts: usize,
    /// Home networks (at most 200).
    pub homes: Vec<HomeSpec>,
    /// Delay added to every packet leaving each home router towards the
    /// internet (so a home-to-public round trip gets this much longer, and a
    /// home-to-home one twice as much). Change it later with
    /// [`Lab::set_latency`].
    pub latency: Option<Duration>,
    /// Dual stack: besides IPv4, every host gets a global IPv6 address
    /// from the documentation prefix `2001:db8::/32` ([`Host::addr6`]),
    /// routed without NAT; the routers forward IPv6 without filtering it
    /// (the LAN is reachable from the internet over IPv6, as with ISPs
    /// that leave inbound IPv6 open).
    pub ipv6: bool,
}

/// A machine of the lab: a network namespace with one IPv4 address, and
/// one IPv6 address in a dual-stack lab.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host {
    /// The namespace's name, for `ip netns exec`.
    pub netns: String,
    /// The host's address (a router's is its WAN address).
    pub addr: Ipv4Addr,
    /// The host's global IPv6 address when [`LabSpec::ipv6`] is set (a
    /// router's is its WAN address).
    pub addr6: Option<Ipv6Addr>,
}

impl Host {
    /// Runs `f` on a new thread that has entered this host's network
    /// namespace, and returns its result (a panic in `f` is resumed here).
    ///
    /// Sockets created inside `f` stay in the namespace wherever they are
    /// used afterwards, and threads spawned inside `f` (a Tokio runtime's
    /// workers, say) start in it, so
    /// `host.in_netns(|| std::net::TcpListener::bind("0.0.0.0:80"))` gives a
    /// listener on the host's address.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let ns = open_netns(&self.netns)?;
        thread::scope(|scope| {
            let worker = thread::Builder::new()
                .name(format!("netlab-{}", self.netns))
                .spawn_scoped(scope, move || -> anyhow::Result<T> {
                    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
                        .context("entering the network namespace")?;
                    Ok(f())
                })
                .context("spawning a thread")?;
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// A running lab; dropping it tears everything down.
///
/// `Lab` is `Send + Sync`: one lab can be used from several threads, and
/// several labs can exist at once.
pub struct Lab {
    prefix: String,
    public: Vec<Host>,
    routers: Vec<Host>,
    homes: Vec<Vec<Host>>,
    /// Namespaces created so far, in creation order.
    namespaces: Vec<String>,
    /// Processes started by [`Lab::spawn`] and not yet killed.
    processes: Mutex<HashMap<u32, Child>>,
    /// Latency currently set per home.
    shaping: Mutex<HashMap<usize, Shaping>>,
    /// Whether hosts have IPv6 addresses too.
    ipv6: bool,
}

/// How latency is added on one router's WAN.
enum Shaping {
    /// `tc qdisc … netem delay`.
    Netem,
    /// The kernel has no `sch_netem`: an NFQUEUE rule and a delay thread.
    Queue(delay::Delayer),
}

/// The WAN interface of routers and the only interface of hosts.
const ETH: &str = "eth0";
/// The bridge in the internet namespace and in each router.
const BRIDGE: &str = "br0";
/// The NFQUEUE number of the delay line (per router namespace).
const QUEUE: u16 = 0;
const QUEUE_NUM: &str = "0";
/// How long [`Drop`] lets processes exit after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(2);

impl Lab {
    /// `Ok` when labs can be built here; otherwise why not (not root, a tool
    /// missing, namespaces not permitted), for a test to print and skip.
    pub fn available() -> Result<(), String> {
        static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
        AVAILABLE.get_or_init(probe).clone()
    }

    /// Serialises heavy lab tests: hold the guard for the test's duration.
    /// Labs work concurrently without it; it only keeps load (and timing
    /// noise) down. A panic while holding it does not poison it.
    pub fn exclusive() -> MutexGuard<'static, ()> {
        static EXCLUSIVE: Mutex<()> = Mutex::new(());
        EXCLUSIVE.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds the lab (typically in a few hundred milliseconds). On error,
    /// whatever was already created is removed.
    pub fn new(spec: LabSpec) -> anyhow::Result<Lab> {
        ensure!(spec.public_hosts <= 10, "at most 10 public hosts");
        ensure!(spec.homes.len() <= 200, "at most 200 homes");
        for (i, home) in spec.homes.iter().enumerate() {
            ensure!(home.hosts <= 200, "home {i}: at most 200 hosts");
        }
        Lab::available().map_err(|reason| anyhow::anyhow!("network lab unavailable: {reason}"))?;
        sweep_stale();

        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "dml{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            prefix,
            public: Vec::new(),
            routers: Vec::new(),
            homes: Vec::new(),
            namespaces: Vec::new(),
            processes: Mutex::new(HashMap::new()),
            shaping: Mutex::new(HashMap::new()),
            ipv6: spec.ipv6,
        };
        let started = Instant::now();
        lab.build(&spec)
            .with_context(|| format!("building network lab {}", lab.prefix))?;
        tracing::debug!(lab = %lab.prefix, elapsed = ?started.elapsed(), "network lab ready");
        Ok(lab)
    }

    fn build(&mut self, spec: &LabSpec) -> anyhow::Result<()> {
        let internet = self.add_netns("inet")?;
        ip(&[
            "-n",
            &internet,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", &internet, "link", "set", BRIDGE, "up"])?;

        for k in 0..spec.public_hosts {
            let ns = self.add_netns(&format!("pub{k}"))?;
            let addr = Ipv4Addr::new(203, 0, 113, 10 + small(k));
            attach(&ns, ETH, &internet, &format!("pub{k}"))?;
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", ETH])?;
            let addr6 = spec.ipv6.then(|| public6(k));
            if let Some(addr6) = addr6 {
                add6(&ns, addr6, ETH)?;
            }
            ip(&["-n", &ns, "link", "set", ETH, "up"])?;
            self.public.push(Host {
                netns: ns,
                addr,
                addr6,
            });
        }

        for (i, home) in spec.homes.iter().enumerate() {
            let router = self.add_netns(&format!("rtr{i}"))?;
            let wan = Ipv4Addr::new(203, 0, 113, 20 + small(i));
            attach(&router, ETH, &internet, &format!("rtr{i}"))?;
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("{wan}/24"),
                "dev",
                ETH,
            ])?;
            let wan6 = spec.ipv6.then(|| router6(i));
            if let Some(wan6) = wan6 {
                add6(&router, wan6, ETH)?;
            }
            ip(&["-n", &router, "link", "set", ETH, "up"])?;
            ip(&[
                "-n",
                &router,
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ])?;
            let lan = Ipv4Addr::new(198, 18, small(i), 1);
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("{lan}/24"),
                "dev",
                BRIDGE,
            ])?;
            if spec.ipv6 {
                add6(&router, lan6(i, 1), BRIDGE)?;
            }
            ip(&["-n", &router, "link", "set", BRIDGE, "up"])?;
            let router_host = Host {
                netns: router.clone(),
                addr: wan,
                addr6: wan6,
            };
            // /proc/sys/net is the namespace of whoever opens it.
            router_host
                .in_netns(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?
                .context("enabling forwarding")?;
            if spec.ipv6 {
                router_host
                    .in_netns(|| std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1"))?
                    .context("enabling IPv6 forwarding")?;
            }
            let mut masquerade = vec![
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                ETH,
                "-j",
                "MASQUERADE",
            ];
            if home.nat == Nat::RandomPorts {
                masquerade.push("--random-fully");
            }
            iptables(&router, &masquerade)?;
            if home.block_udp {
                for dir in ["-o", "-i"] {
                    let rule = ["-A", "FORWARD", dir, ETH, "-p", "udp", "-j", "DROP"];
                    iptables(&router, &rule)?;
                    if spec.ipv6 {
                        ip6tables(&router, &rule)?;
                    }
                }
            }
            // Like a home router: from the internet, only what answers a
            // connection from inside passes, both through the router
            // (FORWARD) and to it (INPUT). Unsolicited packets are dropped
            // or, with `Firewall::Reject`, answered with a TCP reset or an
            // ICMP port-unreachable. Either way the packet itself goes no
            // further, so conntrack confirms no entry for an early
            // hole-punching packet (which would make the NAT pick another
            // port for the host's own packet).
            for chain in ["FORWARD", "INPUT"] {
                iptables(
                    &router,
                    &[
                        "-A",
                        chain,
                        "-i",
                        ETH,
                        "-m",
                        "conntrack",
                        "--ctstate",
                        "ESTABLISHED,RELATED",
                        "-j",
                        "ACCEPT",
                    ],
                )?;
                match home.firewall {
                    Firewall::Drop => {
                        iptables(&router, &["-A", chain, "-i", ETH, "-j", "DROP"])?;
                    }
                    Firewall::Reject => {
                        iptables(
                            &router,
                            &[
                                "-A",
                                chain,
                                "-i",
                                ETH,
                                "-p",
                                "tcp",
                                "-j",
                                "REJECT",
                                "--reject-with",
                                "tcp-reset",
                            ],
                        )?;
                        iptables(
                            &router,
                            &[
                                "-A",
                                chain,
                                "-i",
                                ETH,
                                "-j",
                                "REJECT",
                                "--reject-with",
                                "icmp-port-unreachable",
                            ],
                        )?;
                    }
                }
            }
            if let Some(timeout) = home.udp_timeout {
                // Per namespace; present once the rules above loaded
                // conntrack.
                let secs = timeout.as_secs().max(1).to_string();
                router_host
                    .in_netns(|| {
                        for key in [
                            "nf_conntrack_udp_timeout",
                            "nf_conntrack_udp_timeout_stream",
                        ] {
                            std::fs::write(format!("/proc/sys/net/netfilter/{key}"), &secs)?;
                        }
                        Ok::<_, std::io::Error>(())
                    })?
                    .context("setting the UDP mapping timeout")?;
            }

            let mut hosts = Vec::new();
            for j in 0..home.hosts {
                let ns = self.add_netns(&format!("h{i}-{j}"))?;
                let addr = Ipv4Addr::new(198, 18, small(i), 10 + small(j));
                attach(&ns, ETH, &router, &format!("h{j}"))?;
                ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", ETH])?;
                ip(&["-n", &ns, "link", "set", ETH, "up"])?;
                ip(&[
                    "-n",
                    &ns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &lan.to_string(),
                ])?;
                let addr6 = spec.ipv6.then(|| lan6(i, 0x10 + u16::from(small(j))));
                if let Some(addr6) = addr6 {
                    add6(&ns, addr6, ETH)?;
                    ip(&[
                        "-n",
                        &ns,
                        "-6",
                        "route",
                        "add",
                        "default",
                        "via",
                        &lan6(i, 1).to_string(),
                    ])?;
                }
                hosts.push(Host {
                    netns: ns,
                    addr,
                    addr6,
                });
            }
            self.routers.push(router_host);
            self.homes.push(hosts);
        }

        if spec.ipv6 {
            // The internet is one IPv6 link; each home's /64 is routed to
            // its router's WAN address, from every other host there.
            for (i, router) in self.routers.iter().enumerate() {
                let prefix = format!("{}/64", lan6(i, 0));
                let via = router6(i).to_string();
                let others = self
                    .public
                    .iter()
                    .chain(self.routers.iter().filter(|r| r.netns != router.netns));
                for other in others {
                    ip(&[
                        "-n",
                        &other.netns,
                        "-6",
                        "route",
                        "add",
                        &prefix,
                        "via",
                        &via,
                    ])?;
                }
            }
        }

        if let Some(latency) = spec.latency {
            for home in 0..self.routers.len() {
                self.set_latency(home, Some(latency))?;
            }
        }
        Ok(())
    }

    /// Creates namespace `<prefix>-<suffix>` with `lo` up, and remembers it
    /// for cleanup.
    fn add_netns(&mut self, suffix: &str) -> anyhow::Result<String> {
        let name = format!("{}-{suffix}", self.prefix);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// This lab's name prefix (`dml<pid>x<counter>`), shared by all its
    /// namespaces.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// All namespaces of the lab (the internet, public hosts, routers, home
    /// hosts).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Public host `i`, at `203.0.113.(10+i)`. Panics when out of range.
    pub fn public(&self, i: usize) -> &Host {
        &self.public[i]
    }

    /// Host `host` of home `home`, at `198.18.home.(10+host)`. Panics when
    /// out of range.
    pub fn home_host(&self, home: usize, host: usize) -> &Host {
        &self.homes[home][host]
    }

    /// The router of home `home`: its namespace, and its WAN address
    /// `203.0.113.(20+home)` (what the internet sees as the source of the
    /// home's traffic). Panics when out of range.
    pub fn router(&self, home: usize) -> &Host {
        &self.routers[home]
    }

    /// The WAN address of home `home`'s router. Panics when out of range.
    pub fn router_wan(&self, home: usize) -> Ipv4Addr {
        self.routers[home].addr
    }

    /// A command running `program` inside `host`'s namespace
    /// (`ip netns exec <netns> <program>`); add arguments, environment and
    /// stdio as usual, then `.output()` it or hand it to [`Lab::spawn`].
    pub fn command(&self, host: &Host, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(&host.netns).arg(program);
        cmd
    }

    /// Starts `cmd`, which must come from [`Lab::command`] for `host`, and
    /// tracks it: it is stopped when the lab drops (SIGTERM, SIGKILL after
    /// 2 s). Returns its pid, which is the program's own (`ip netns exec`
    /// execs it).
    pub fn spawn(&self, host: &Host, mut cmd: Command) -> anyhow::Result<u32> {
        let args: Vec<&OsStr> = cmd.get_args().take(3).collect();
        ensure!(
            cmd.get_program() == "ip"
                && args
                    == [
                        OsStr::new("netns"),
                        OsStr::new("exec"),
                        OsStr::new(&host.netns)
                    ],
            "spawn takes a command from Lab::command for {}, not {:?}",
            host.netns,
            cmd
        );
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let pid = child.id();
        tracing::debug!(pid, netns = %host.netns, "spawned {cmd:?}");
        lock(&self.processes).insert(pid, child);
        Ok(pid)
    }

    /// Kills a process started by [`Lab::spawn`] now (SIGKILL, like a crash)
    /// and reaps it. Does nothing for other pids.
    pub fn kill(&self, pid: u32) {
        let child = lock(&self.processes).remove(&pid);
        match child {
            Some(mut child) => {
                if let Err(error) = child.kill() {
                    tracing::debug!(pid, %error, "kill");
                }
                if let Err(error) = child.wait() {
                    tracing::warn!(pid, %error, "waiting for a killed process");
                }
            }
            None => tracing::warn!(pid, "kill: not a running process of this lab"),
        }
    }

    /// Sets (or with `None` removes) the delay added to packets leaving home
    /// `home`'s router towards the internet.
    ///
    /// Uses `tc … netem`; on kernels built without `sch_netem` it falls back
    /// to queueing the packets to a thread of this process (NFQUEUE) that
    /// releases them after the delay.
    pub fn set_latency(&self, home: usize, latency: Option<Duration>) -> anyhow::Result<()> {
        let router = &self.routers[home].netns;
        let mut shaping = lock(&self.shaping);
        match (latency, shaping.remove(&home)) {
            (Some(delay), Some(Shaping::Queue(queue))) => {
                queue.set_delay(delay);
                shaping.insert(home, Shaping::Queue(queue));
            }
            (Some(delay), _) => {
                let netem = format!("{}us", delay.as_micros());
                let args = [
                    "tc", "qdisc", "replace", "dev", ETH, "root", "netem", "delay", &netem,
                ];
                match exec(router, &args) {
                    Ok(_) => {
                        shaping.insert(home, Shaping::Netem);
                    }
                    Err(error) => {
                        tracing::debug!("netem unavailable, delaying in user space: {error:#}");
                        let queue = delay::Delayer::start(router, QUEUE, delay)?;
                        iptables(router, &nfqueue_rule("-A"))?;
                        shaping.insert(home, Shaping::Queue(queue));
                    }
                }
            }
            (None, Some(Shaping::Netem)) => {
                exec(router, &["tc", "qdisc", "del", "dev", ETH, "root"])?;
            }
            (None, Some(Shaping::Queue(queue))) => {
                let removed = iptables(router, &nfqueue_rule("-D"));
                drop(queue);
                removed?;
            }
            (None, None) => {}
        }
        Ok(())
    }
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("public", &self.public)
            .field("routers", &self.routers)
            .field("homes", &self.homes)
            .finish_non_exhaustive()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Delay threads first: they release what they hold, and the rule's
        // --queue-bypass lets packets through once they are gone.
        lock(&self.shaping).clear();

        let mut children: Vec<Child> = lock(&self.processes)
            .drain()
            .map(|(_, child)| child)
            .collect();
        for child in &children {
            signal(child.id(), Signal::SIGTERM);
        }
        let deadline = Instant::now() + TERM_GRACE;
        while !children.is_empty() && Instant::now() < deadline {
            children.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
            thread::sleep(Duration::from_millis(20));
        }
        for mut child in children {
            tracing::debug!(pid = child.id(), "no exit after SIGTERM, killing");
            let _ = child.kill();
            let _ = child.wait();
        }

        // Anything else inside (children of spawned processes, commands
        // started with `command` and never waited for).
        kill_inside(&self.namespaces);
        for ns in self.namespaces.iter().rev() {
            if let Err(error) = ip(&["netns", "delete", ns]) {
                tracing::warn!("removing network lab namespace: {error:#}");
            }
        }
        tracing::debug!(lab = %self.prefix, "network lab removed");
    }
}

/// Creates a veth pair: `name` in `ns`, `peer` in `bridge_ns`, where it joins
/// the bridge and goes up.
fn attach(ns: &str, name: &str, bridge_ns: &str, peer: &str) -> anyhow::Result<()> {
    ip(&[
        "-n", ns, "link", "add", name, "type", "veth", "peer", "name", peer, "netns", bridge_ns,
    ])?;
    ip(&["-n", bridge_ns, "link", "set", peer, "master", BRIDGE, "up"])?;
    Ok(())
}

fn nfqueue_rule(op: &str) -> Vec<&str> {
    vec![
        "-t",
        "mangle",
        op,
        "POSTROUTING",
        "-o",
        ETH,
        "-j",
        "NFQUEUE",
        "--queue-num",
        QUEUE_NUM,
        "--queue-bypass",
    ]
}

/// Public host `k`'s IPv6 address, `2001:db8::10+k` (hex).
fn public6(k: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(small(k)))
}

/// Router `i`'s IPv6 WAN address, `2001:db8::20+i` (hex).
fn router6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20 + u16::from(small(i)))
}

/// Address `last` of home `i`'s IPv6 LAN `2001:db8:1:i::/64` (the router
/// is `::1`, hosts `::10+j`, hex).
fn lan6(i: usize, last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, u16::from(small(i)), 0, 0, 0, last)
}

/// Adds an IPv6 address to `dev` in `ns`, usable at once (no duplicate
/// address detection).
fn add6(ns: &str, addr: Ipv6Addr, dev: &str) -> anyhow::Result<()> {
    ip(&[
        "-n",
        ns,
        "-6",
        "addr",
        "add",
        &format!("{addr}/64"),
        "dev",
        dev,
        "nodad",
    ])?;
    Ok(())
}

/// An index already checked to be small, as an address octet.
fn small(i: usize) -> u8 {
    u8::try_from(i).expect("indices are checked against the spec limits")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn open_netns(name: &str) -> anyhow::Result<File> {
    let path = netns_path(name);
    File::open(&path).with_context(|| format!("opening {}", path.display()))
}

/// Runs `cmd` to completion; its stdout, or an error naming it with its
/// stderr.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    tracing::trace!("running {cmd:?}");
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// Runs `args` inside namespace `ns`.
fn exec(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

fn iptables(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    // -w: the xtables lock is shared by all namespaces.
    run(Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-w"])
        .args(args))
}

fn ip6tables(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip")
        .args(["netns", "exec", ns, "ip6tables", "-w"])
        .args(args))
}

fn signal(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), signal);
    }
}

/// The pids of processes inside namespace `ns`.
fn pids_inside(ns: &str) -> Vec<u32> {
    match ip(&["netns", "pids", ns]) {
        Ok(out) => out
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// SIGKILLs every process inside `namespaces`, waiting (bounded) until
/// they are gone.
fn kill_inside(namespaces: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pids: Vec<u32> = namespaces.iter().flat_map(|ns| pids_inside(ns)).collect();
        if pids.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(?pids, "processes survive in network lab namespaces");
            return;
        }
        for &pid in &pids {
            signal(pid, Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes namespaces of labs whose process no longer exists.
fn sweep_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    let stale: Vec<String> = list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            let Some(rest) = name.strip_prefix("dml") else {
                return false;
            };
            let Some((pid, _)) = rest.split_once('x') else {
                return false;
            };
            pid.parse::<u32>()
                .is_ok_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists())
        })
        .map(str::to_owned)
        .collect();
    if stale.is_empty() {
        return;
    }
    tracing::info!(
        count = stale.len(),
        "removing network lab namespaces left by dead processes"
    );
    kill_inside(&stale);
    for ns in &stale {
        let _ = ip(&["netns", "delete", ns]);
    }
}

/// Checks root, the tools, and that a namespace can be created.
fn probe() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".into());
    }
    for (tool, flag) in [("ip", "-V"), ("iptables", "-V"), ("tc", "-V")] {
        match Command::new(tool).arg(flag).stdin(Stdio::null()).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => {
                return Err(format!(
                    "`{tool} {flag}` failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            Err(error) => return Err(format!("`{tool}` not found ({error})")),
        }
    }
    let name = format!("dml{}xprobe", std::process::id());
    ip(&["netns", "add", &name])
        .map_err(|error| format!("cannot create a network namespace: {error:#}"))?;
    let nat = iptables(&name, &["-t", "nat", "-L", "-n"]);
    let _ = ip(&["netns", "delete", &name]);
    nat.map_err(|error| format!("iptables NAT does not work in a namespace: {error:#}"))?;
    Ok(())
}
