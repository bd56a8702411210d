//! Builds real labs; needs root, `ip`, `iptables`, `tc` and `python3`, and
//! skips (printing why) otherwise.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use devmesh_netlab::{HomeSpec, Host, Lab, LabSpec, Nat};

/// Answers every TCP connection and UDP datagram on each port given with
/// the peer address it sees, as `ip:port`.
const WHOAMI: &str = r#"
import socket, sys, threading
def tcp(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        c, (ip, p) = s.accept()
        c.sendall(f"{ip}:{p}\n".encode())
        c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        _, (ip, p) = s.recvfrom(2048)
        s.sendto(f"{ip}:{p}".encode(), (ip, p))
for port in sys.argv[1:]:
    threading.Thread(target=tcp, args=(int(port),)).start()
    threading.Thread(target=udp, args=(int(port),)).start()
"#;

const PORT: u16 = 7000;
const TIMEOUT: Duration = Duration::from_secs(5);

fn skip() -> bool {
    if let Err(reason) = Lab::available() {
        eprintln!("skipping: {reason}");
        return true;
    }
    match Command::new("python3")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => false,
        _ => {
            eprintln!("skipping: python3 is needed for the test servers");
            true
        }
    }
}

fn eim(hosts: usize) -> HomeSpec {
    HomeSpec {
        nat: Nat::EndpointIndependent,
        block_udp: false,
        hosts,
        ..HomeSpec::default()
    }
}

/// Starts the whoami server on `host`, on `ports`, and waits until it
/// answers (from inside its namespace).
fn start_whoami(lab: &Lab, host: &Host, ports: &[u16]) -> u32 {
    let mut cmd = lab.command(host, "python3");
    cmd.arg("-c")
        .arg(WHOAMI)
        .args(ports.iter().map(u16::to_string));
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let pid = lab.spawn(host, cmd).expect("spawn the whoami server");
    let deadline = Instant::now() + Duration::from_secs(15);
    for &port in ports {
        while host
            .in_netns(|| whoami_tcp(host.addr, port))
            .expect("enter netns")
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "whoami server on {} did not start",
                host.netns
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
    pid
}

/// Connects over TCP and returns the address the server saw.
fn whoami_tcp(addr: Ipv4Addr, port: u16) -> std::io::Result<SocketAddr> {
    whoami_tcp_within(addr, port, TIMEOUT)
}

fn whoami_tcp_within(addr: Ipv4Addr, port: u16, timeout: Duration) -> std::io::Result<SocketAddr> {
    let mut stream = TcpStream::connect_timeout(&SocketAddrV4::new(addr, port).into(), timeout)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut seen = String::new();
    stream.read_to_string(&mut seen)?;
    seen.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad answer {seen:?}")))
}

/// Sends UDP from `socket` to `addr:port` (three tries) and returns the
/// address the server saw, or `None` when nothing came back.
fn whoami_udp(socket: &UdpSocket, addr: Ipv4Addr, port: u16) -> Option<SocketAddr> {
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("set timeout");
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        socket.send_to(b"?", (addr, port)).expect("send");
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            assert_eq!(from, SocketAddrV4::new(addr, port).into());
            return std::str::from_utf8(&buf[..n]).ok()?.parse().ok();
        }
    }
    None
}

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        })
        .unwrap_or(false)
}

fn all_pids(lab: &Lab) -> Vec<u32> {
    lab.namespaces()
        .iter()
        .flat_map(|ns| {
            let out = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .expect("ip netns pids");
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Asserts that nothing of a dropped lab remains.
fn assert_gone(namespaces: &[String], pids: &[u32]) {
    assert!(!namespaces.is_empty() && !pids.is_empty());
    let list = netns_list();
    for ns in namespaces {
        assert!(
            !list
                .lines()
                .any(|line| line.split_whitespace().next() == Some(ns)),
            "{ns} survives: {list}"
        );
    }
    for &pid in pids {
        assert!(!alive(pid), "process {pid} survives");
    }
}

/// Connect time (best of five) from `from` to the whoami server.
fn connect_rtt(from: &Host, to: Ipv4Addr) -> Duration {
    from.in_netns(|| {
        (0..5)
            .map(|_| {
                let start = Instant::now();
                let stream =
                    TcpStream::connect_timeout(&SocketAddrV4::new(to, PORT).into(), TIMEOUT);
                let elapsed = start.elapsed();
                stream.expect("connect");
                elapsed
            })
            .min()
            .expect("five samples")
    })
    .expect("enter netns")
}

#[test]
fn nat_hides_homes_and_keeps_them_apart() {
    if skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        public_hosts: 1,
        homes: vec![eim(2), eim(1)],
        latency: None,
        ipv6: false,
    })
    .expect("lab");
    let relay = lab.public(0);
    assert_eq!(relay.addr, Ipv4Addr::new(203, 0, 113, 10));
    assert_eq!(lab.router_wan(1), Ipv4Addr::new(203, 0, 113, 21));
    assert_eq!(lab.home_host(1, 0).addr, Ipv4Addr::new(198, 18, 1, 10));
    start_whoami(&lab, relay, &[PORT]);

    // The relay sees each home's router, not the host.
    for (home, host) in [(0, 0), (0, 1), (1, 0)] {
        let seen = lab
            .home_host(home, host)
            .in_netns(|| whoami_tcp(relay.addr, PORT))
            .expect("netns");
        assert_eq!(
            seen.expect("connect through NAT").ip(),
            lab.router_wan(home)
        );
    }

    // A server in home 1 is reachable on its LAN...
    let inside = lab.home_host(1, 0);
    start_whoami(&lab, inside, &[PORT]);
    let neighbour = lab
        .home_host(0, 1)
        .in_netns(|| whoami_tcp(lab.home_host(0, 0).addr, PORT));
    assert!(
        neighbour.expect("netns").is_err(),
        "nothing listens on host 0.0"
    );
    // ...but neither from another home (no route)...
    let from_home0 = lab
        .home_host(0, 0)
        .in_netns(|| whoami_tcp(inside.addr, PORT))
        .expect("netns");
    let error = from_home0.expect_err("home 0 reached home 1's LAN directly");
    eprintln!("home 0 -> 198.18.1.10: {error}");
    assert_ne!(
        error.kind(),
        std::io::ErrorKind::TimedOut,
        "the router should answer 'unreachable'"
    );
    // ...nor from the internet, even with a route to the LAN (the router
    // only lets in what answers a connection from inside).
    let route = lab
        .command(relay, "ip")
        .args([
            "route",
            "add",
            "198.18.1.0/24",
            "via",
            &lab.router_wan(1).to_string(),
        ])
        .status()
        .expect("ip route");
    assert!(route.success());
    let from_internet = relay
        .in_netns(|| whoami_tcp_within(inside.addr, PORT, Duration::from_secs(1)))
        .expect("netns");
    let error = from_internet.expect_err("the internet reached home 1's LAN");
    eprintln!("relay -> 198.18.1.10 via router 1: {error}");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::TimedOut,
        "the router should drop silently"
    );
    // The router's own WAN address has nothing listening.
    let wan = relay
        .in_netns(|| whoami_tcp(lab.router_wan(1), PORT))
        .expect("netns");
    assert!(wan.is_err());
}

#[test]
fn eim_keeps_ports_and_random_ports_does_not() {
    if skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        public_hosts: 1,
        homes: vec![
            eim(1),
            HomeSpec {
                nat: Nat::RandomPorts,
                block_udp: false,
                hosts: 1,
                ..HomeSpec::default()
            },
        ],
        latency: None,
        ipv6: false,
    })
    .expect("lab");
    let relay = lab.public(0);
    start_whoami(&lab, relay, &[PORT, PORT + 1]);

    let mappings = |home: usize| {
        lab.home_host(home, 0)
            .in_netns(|| {
                let socket = UdpSocket::bind("0.0.0.0:40000").expect("bind");
                [PORT, PORT + 1]
                    .map(|port| whoami_udp(&socket, relay.addr, port).expect("UDP answer"))
            })
            .expect("netns")
    };
    let wan = |home: usize| SocketAddr::from((lab.router_wan(home), 40000));
    // Same public port for both destinations, and it is the local port.
    assert_eq!(mappings(0), [wan(0), wan(0)]);
    // A fresh random port per destination.
    let [a, b] = mappings(1);
    assert_eq!((a.ip(), b.ip()), (wan(1).ip(), wan(1).ip()));
    assert_ne!(
        a.port(),
        b.port(),
        "--random-fully gave one port to two destinations (1 in 64k)"
    );
}

#[test]
fn block_udp_drops_udp_but_not_tcp() {
    if skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        public_hosts: 1,
        homes: vec![
            HomeSpec {
                nat: Nat::EndpointIndependent,
                block_udp: true,
                hosts: 1,
                ..HomeSpec::default()
            },
            eim(1),
        ],
        latency: None,
        ipv6: false,
    })
    .expect("lab");
    let relay = lab.public(0);
    start_whoami(&lab, relay, &[PORT]);
    let udp = |home: usize| {
        lab.home_host(home, 0)
            .in_netns(|| {
                whoami_udp(
                    &UdpSocket::bind("0.0.0.0:0").expect("bind"),
                    relay.addr,
                    PORT,
                )
            })
            .expect("netns")
    };
    assert_eq!(udp(0), None, "UDP passed a block_udp router");
    assert_eq!(udp(1).map(|seen| seen.ip()), Some(lab.router_wan(1).into()));
    let tcp = lab
        .home_host(0, 0)
        .in_netns(|| whoami_tcp(relay.addr, PORT))
        .expect("netns");
    assert_eq!(
        tcp.expect("TCP through a block_udp router").ip(),
        lab.router_wan(0)
    );
}

#[test]
fn multicast_stays_on_the_home_lan() {
    if skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        public_hosts: 0,
        homes: vec![eim(2), eim(1)],
        latency: None,
        ipv6: false,
    })
    .expect("lab");
    let group = Ipv4Addr::new(224, 0, 0, 251);
    let listen = |host: &Host| {
        host.in_netns(|| {
            let socket = UdpSocket::bind("0.0.0.0:5353").expect("bind");
            socket
                .join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)
                .expect("join");
            socket
                .set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            socket
        })
        .expect("netns")
    };
    let neighbour = listen(lab.home_host(0, 1));
    let stranger = listen(lab.home_host(1, 0));
    let sender = lab
        .home_host(0, 0)
        .in_netns(|| UdpSocket::bind("0.0.0.0:0").expect("bind"))
        .expect("netns");

    let mut buf = [0u8; 64];
    let deadline = Instant::now() + TIMEOUT;
    let from = loop {
        sender.send_to(b"hello mdns", (group, 5353)).expect("send");
        if let Ok((n, from)) = neighbour.recv_from(&mut buf) {
            assert_eq!(&buf[..n], b"hello mdns");
            break from;
        }
        assert!(
            Instant::now() < deadline,
            "multicast did not reach the neighbour"
        );
    };
    assert_eq!(from.ip(), lab.home_host(0, 0).addr);
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "multicast crossed into another home"
    );
}

#[test]
fn latency_slows_connects_and_can_change() {
    if skip() {
        return;
    }
    let _serial = Lab::exclusive();
    let lab = Lab::new(LabSpec {
        public_hosts: 1,
        homes: vec![eim(1), eim(1)],
        latency: Some(Duration::from_millis(40)),
        ipv6: false,
    })
    .expect("lab");
    let relay = lab.public(0);
    start_whoami(&lab, relay, &[PORT]);

    let slow = connect_rtt(lab.home_host(0, 0), relay.addr);
    assert!(
        slow >= Duration::from_millis(40),
        "40 ms latency, connect took {slow:?}"
    );
    assert!(slow < Duration::from_millis(500), "connect took {slow:?}");

    eprintln!("connect with 40 ms: {slow:?}");
    lab.set_latency(1, None).expect("remove latency");
    let fast = connect_rtt(lab.home_host(1, 0), relay.addr);
    eprintln!("connect without latency: {fast:?}");
    assert!(
        fast < Duration::from_millis(20),
        "no latency, connect took {fast:?}"
    );

    lab.set_latency(0, Some(Duration::from_millis(100)))
        .expect("change latency");
    let slower = connect_rtt(lab.home_host(0, 0), relay.addr);
    eprintln!("connect with 100 ms: {slower:?}");
    assert!(
        slower >= Duration::from_millis(100),
        "100 ms latency, connect took {slower:?}"
    );

    lab.set_latency(0, None).expect("remove latency");
    let fast = connect_rtt(lab.home_host(0, 0), relay.addr);
    assert!(
        fast < Duration::from_millis(20),
        "latency removed, connect took {fast:?}"
    );

    // Bulk data still flows through a delayed router.
    lab.set_latency(0, Some(Duration::from_millis(40)))
        .expect("set latency");
    let mut sink = lab.command(relay, "python3");
    sink.args(["-c", "import socket\ns=socket.create_server(('0.0.0.0',7100))\nwhile True:\n c,_=s.accept()\n n=0\n while (d:=c.recv(65536)): n+=len(d)\n c.sendall(str(n).encode()); c.close()"]);
    lab.spawn(relay, sink).expect("spawn sink");
    let bulk_started = Instant::now();
    let sent = lab
        .home_host(0, 0)
        .in_netns(|| {
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut stream = loop {
                match TcpStream::connect_timeout(
                    &SocketAddrV4::new(relay.addr, 7100).into(),
                    TIMEOUT,
                ) {
                    Ok(stream) => break stream,
                    Err(error) => assert!(Instant::now() < deadline, "sink did not start: {error}"),
                }
                thread::sleep(Duration::from_millis(50));
            };
            stream
                .set_write_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let chunk = vec![7u8; 1 << 20];
            for _ in 0..16 {
                stream.write_all(&chunk).expect("write");
            }
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).expect("read");
            answer
        })
        .expect("netns");
    assert_eq!(sent, (16u32 << 20).to_string());
    eprintln!("16 MiB through 40 ms in {:?}", bulk_started.elapsed());
}

#[test]
fn drop_removes_namespaces_and_processes() {
    if skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        public_hosts: 1,
        homes: vec![eim(1)],
        latency: Some(Duration::from_millis(5)),
        ipv6: false,
    })
    .expect("lab");
    start_whoami(&lab, lab.public(0), &[PORT]);
    // A process that ignores SIGTERM, and one that leaves a grandchild.
    let mut stubborn = lab.command(lab.home_host(0, 0), "sh");
    stubborn.args(["-c", "trap '' TERM; sleep 600"]);
    lab.spawn(lab.home_host(0, 0), stubborn).expect("spawn");
    let mut parent = lab.command(lab.router(0), "sh");
    parent.args(["-c", "sleep 600 & sleep 600"]);
    let parent = lab.spawn(lab.router(0), parent).expect("spawn");
    // Killing one now works, and it is reaped.
    let mut victim = lab.command(lab.public(0), "sleep");
    victim.arg("600");
    let victim = lab.spawn(lab.public(0), victim).expect("spawn");
    lab.kill(victim);
    assert!(!alive(victim));

    let namespaces = lab.namespaces().to_vec();
    assert_eq!(namespaces.len(), 4, "{namespaces:?}");
    assert!(namespaces.iter().all(|ns| ns.starts_with(lab.prefix())));
    let deadline = Instant::now() + TIMEOUT;
    let pids = loop {
        let pids = all_pids(&lab);
        if pids.len() >= 5 || Instant::now() > deadline {
            break pids;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(pids.len() >= 5 && pids.contains(&parent), "{pids:?}");
    let list = netns_list();
    assert!(namespaces.iter().all(|ns| list.contains(ns.as_str())));

    let started = Instant::now();
    drop(lab);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "drop took {:?}",
        started.elapsed()
    );
    assert_gone(&namespaces, &pids);
}

#[test]
fn panicking_test_still_cleans_up() {
    if skip() {
        return;
    }
    let mut leftovers = (Vec::new(), Vec::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new(LabSpec {
            public_hosts: 1,
            homes: vec![eim(1)],
            latency: None,
            ipv6: false,
        })
        .expect("lab");
        let mut cmd = lab.command(lab.home_host(0, 0), "sleep");
        cmd.arg("600");
        let pid = lab.spawn(lab.home_host(0, 0), cmd).expect("spawn");
        leftovers = (lab.namespaces().to_vec(), vec![pid]);
        panic!("deliberate panic with a live lab");
    }));
    assert!(result.is_err());
    assert_gone(&leftovers.0, &leftovers.1);
}

#[test]
fn labs_run_side_by_side() {
    if skip() {
        return;
    }
    thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let lab = Lab::new(LabSpec {
                        public_hosts: 1,
                        homes: vec![eim(1)],
                        latency: None,
                        ipv6: false,
                    })
                    .expect("lab");
                    start_whoami(&lab, lab.public(0), &[PORT]);
                    let seen = lab
                        .home_host(0, 0)
                        .in_netns(|| whoami_tcp(lab.public(0).addr, PORT))
                        .expect("netns");
                    assert_eq!(seen.expect("connect").ip(), lab.router_wan(0));
                    lab.prefix().to_owned()
                })
            })
            .collect();
        let mut prefixes: Vec<String> = workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect();
        prefixes.sort();
        prefixes.dedup();
        assert_eq!(prefixes.len(), 3);
    });
}

#[test]
fn spawn_rejects_commands_for_other_hosts() {
    if skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        public_hosts: 2,
        homes: vec![],
        latency: None,
        ipv6: false,
    })
    .expect("lab");
    assert!(lab.spawn(lab.public(0), Command::new("sleep")).is_err());
    assert!(
        lab.spawn(lab.public(0), lab.command(lab.public(1), "sleep"))
            .is_err()
    );
}

/// Set in the child process of `labs_of_dead_processes_are_swept`.
const ABORT_CHILD: &str = "DEVMESH_NETLAB_ABORT_CHILD";

/// In the child process: builds a lab, prints its prefix and dies without
/// cleaning up. Otherwise does nothing.
#[test]
fn child_builds_a_lab_and_aborts() {
    if std::env::var_os(ABORT_CHILD).is_none() {
        return;
    }
    let lab = Lab::new(LabSpec {
        public_hosts: 1,
        homes: vec![eim(1)],
        latency: None,
        ipv6: false,
    })
    .expect("lab");
    let mut cmd = lab.command(lab.home_host(0, 0), "sleep");
    // Not our stdout: the parent reads it to its end.
    cmd.arg("600").stdout(Stdio::null()).stderr(Stdio::null());
    let pid = lab.spawn(lab.home_host(0, 0), cmd).expect("spawn");
    println!("\nLEFTOVER {} {pid}", lab.prefix());
    std::io::stdout().flush().expect("flush");
    std::process::abort();
}

#[test]
fn labs_of_dead_processes_are_swept() {
    if skip() {
        return;
    }
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_builds_a_lab_and_aborts",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ABORT_CHILD, "1")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run the child");
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (prefix, pid) = stdout
        .lines()
        .find_map(|line| line.strip_prefix("LEFTOVER ")?.split_once(' '))
        .unwrap_or_else(|| panic!("no LEFTOVER line in {stdout:?}"));
    let pid: u32 = pid.parse().expect("pid");
    let leftovers = || -> Vec<String> {
        netns_list()
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|ns| ns.starts_with(&format!("{prefix}-")))
            .map(str::to_owned)
            .collect()
    };
    // Intact, unless a lab test running alongside has swept them already.
    let left = leftovers();
    assert!(
        left.len() == 4 || left.is_empty(),
        "the aborted child left {left:?}"
    );
    assert!(
        left.is_empty() || alive(pid),
        "the child's sleep should outlive it"
    );

    let _lab = Lab::new(LabSpec::default()).expect("lab");
    assert_eq!(leftovers(), Vec::<String>::new());
    assert!(!alive(pid), "the child's sleep survives the sweep");
}
