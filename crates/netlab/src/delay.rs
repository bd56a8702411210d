//! A delay line in user space, for kernels built without `sch_netem`.
//!
//! An iptables rule (`-j NFQUEUE --queue-bypass`) hands the packets to a
//! netlink queue; a thread inside the router's namespace reads their ids
//! (metadata only, never the payload) and, once each is old enough, accepts
//! it with a batch verdict (which also accepts every older packet). Packets
//! are released in arrival order. When the thread is gone, the rule lets
//! packets through undelayed.

use std::{
    collections::VecDeque,
    io::{self, Read},
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sched::CloneFlags,
};
use socket2::{Domain, Protocol, Socket, Type};

const AF_NETLINK: i32 = 16;
const NETLINK_NETFILTER: i32 = 12;
const NLMSG_HDRLEN: usize = 16;
/// `struct nfgenmsg`.
const NFGEN_HDRLEN: usize = 4;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
/// Accept packets undelayed rather than drop them when the queue is full.
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
/// Hand over GSO packets whole (we never look at payloads).
const NFQA_CFG_F_GSO: u32 = 4;
const NF_ACCEPT: u32 = 1;
const ENOBUFS: i32 = 105;
/// Packets the kernel may hold for us before failing open.
const QUEUE_MAXLEN: u32 = 16384;
/// How often the thread checks whether it should stop.
const POLL: Duration = Duration::from_millis(50);

/// A running delay line; dropping it stops the thread, releasing what it
/// holds.
pub(crate) struct Delayer {
    delay_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Delayer {
    /// Binds NFQUEUE `queue` inside namespace `netns` and starts delaying
    /// its packets by `delay`.
    pub(crate) fn start(netns: &str, queue: u16, delay: Duration) -> anyhow::Result<Delayer> {
        let ns = crate::open_netns(netns)?;
        let delay_us = Arc::new(AtomicU64::new(micros(delay)));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("netlab-delay-{netns}"))
            .spawn({
                let delay_us = Arc::clone(&delay_us);
                let stop = Arc::clone(&stop);
                move || {
                    let socket = match bind(ns, queue) {
                        Ok(socket) => socket,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    delay_loop(&socket, queue, &delay_us, &stop);
                }
            })
            .context("spawning the delay thread")?;
        let mut delayer = Delayer {
            delay_us,
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(delayer),
            Ok(Err(error)) => Err(error.context(format!("binding NFQUEUE {queue} in {netns}"))),
            Err(_) => {
                // Do not wait for a thread that may be stuck.
                delayer.stop.store(true, Ordering::Release);
                delayer.thread = None;
                bail!("the delay thread for {netns} did not start")
            }
        }
    }

    /// Changes the delay of packets arriving from now on.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.delay_us.store(micros(delay), Ordering::Release);
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn micros(delay: Duration) -> u64 {
    u64::try_from(delay.as_micros()).unwrap_or(u64::MAX)
}

/// Opens a netfilter netlink socket inside `ns` and binds it to `queue`.
fn bind(ns: std::fs::File, queue: u16) -> anyhow::Result<Socket> {
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).context("entering the router's namespace")?;
    let socket = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_NETFILTER)),
    )
    .context("opening a netfilter netlink socket")?;
    // Best effort: more room for notifications under load (capped by
    // net.core.rmem_max).
    let _ = socket.set_recv_buffer_size(8 << 20);
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;

    // struct nfqnl_msg_config_cmd { u8 command; u8 pad; be16 pf }
    request(
        &socket,
        1,
        queue,
        &[(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])],
    )
    .context("NFQNL_CFG_CMD_BIND")?;
    // struct nfqnl_msg_config_params { be32 copy_range; u8 copy_mode } (packed)
    let mut params = 0u32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_META);
    let flags = (NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO).to_be_bytes();
    request(
        &socket,
        2,
        queue,
        &[
            (NFQA_CFG_PARAMS, &params),
            (NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAXLEN.to_be_bytes()),
            (NFQA_CFG_MASK, &flags),
            (NFQA_CFG_FLAGS, &flags),
        ],
    )
    .context("configuring the queue")?;
    Ok(socket)
}

/// A netfilter-queue netlink message.
fn message(kind: u16, flags: u16, seq: u32, queue: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
    msg.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    // struct nfgenmsg { u8 family (AF_UNSPEC); u8 version (NFNETLINK_V0); be16 res_id }
    msg.extend_from_slice(&[0, 0]);
    msg.extend_from_slice(&queue.to_be_bytes());
    for (kind, payload) in attrs {
        let len = u16::try_from(4 + payload.len()).expect("attributes are a few bytes");
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg.resize(align(msg.len()), 0);
    }
    let len = u32::try_from(msg.len()).expect("messages are a few bytes");
    msg[..4].copy_from_slice(&len.to_ne_bytes());
    msg
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// The netlink messages in a datagram: (type, payload after the header).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = usize::try_from(u32_at(buf, at)?).ok()?;
        let kind = u16_at(buf, at + 4)?;
        let payload = buf.get(at + NLMSG_HDRLEN..at.checked_add(len)?)?;
        at += align(len).max(NLMSG_HDRLEN);
        Some((kind, payload))
    })
}

/// Sends a request and waits for its acknowledgement.
fn request(socket: &Socket, seq: u32, queue: u16, attrs: &[(u16, &[u8])]) -> anyhow::Result<()> {
    socket.send(&message(
        NFQNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        queue,
        attrs,
    ))?;
    let mut buf = vec![0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let n = (&*socket)
            .read(&mut buf)
            .context("waiting for the kernel's answer")?;
        for (kind, payload) in messages(&buf[..n]) {
            if kind == NLMSG_ERROR {
                // struct nlmsgerr { i32 error; struct nlmsghdr request; }
                let code = u32_at(payload, 0).map_or(0, |code| code.cast_signed());
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(-code).into());
                }
                return Ok(());
            }
        }
    }
    bail!("no answer from the kernel")
}

/// The id of each queued packet announced in a datagram.
fn packet_ids(buf: &[u8]) -> impl Iterator<Item = u32> + '_ {
    messages(buf)
        .filter(|(kind, _)| *kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)
        .filter_map(|(_, payload)| {
            let mut at = NFGEN_HDRLEN;
            while at + 4 <= payload.len() {
                let len = usize::from(u16_at(payload, at)?);
                let kind = u16_at(payload, at + 2)? & 0x3fff;
                if len < 4 {
                    return None;
                }
                if kind == NFQA_PACKET_HDR {
                    // struct nfqnl_msg_packet_hdr { be32 packet_id; ... }
                    let id = payload.get(at + 4..at + 8)?;
                    return Some(u32::from_be_bytes(id.try_into().ok()?));
                }
                at += align(len);
            }
            None
        })
}

/// Accepts packet `id` and every packet queued before it.
fn release(socket: &Socket, queue: u16, id: u32) {
    // struct nfqnl_msg_verdict_hdr { be32 verdict; be32 id }
    let mut verdict = NF_ACCEPT.to_be_bytes().to_vec();
    verdict.extend_from_slice(&id.to_be_bytes());
    let msg = message(
        NFQNL_MSG_VERDICT_BATCH,
        NLM_F_REQUEST,
        0,
        queue,
        &[(NFQA_VERDICT_HDR, &verdict)],
    );
    if let Err(error) = socket.send(&msg) {
        tracing::warn!(%error, "netlab delay line: sending a verdict");
    }
}

fn delay_loop(socket: &Socket, queue: u16, delay_us: &AtomicU64, stop: &AtomicBool) {
    if let Err(error) = socket.set_nonblocking(true) {
        tracing::warn!(%error, "netlab delay line: set_nonblocking");
        return;
    }
    let mut pending: VecDeque<(Instant, u32)> = VecDeque::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let now = Instant::now();
        let mut due = None;
        while let Some(&(at, id)) = pending.front() {
            if !stopping && at > now {
                break;
            }
            due = Some(id);
            pending.pop_front();
        }
        if let Some(id) = due {
            release(socket, queue, id);
        }
        if stopping {
            return;
        }
        // poll(2), unlike SO_RCVTIMEO, is not rounded to scheduler ticks.
        let wait = pending
            .front()
            .map_or(POLL, |(at, _)| at.saturating_duration_since(now).min(POLL));
        let wait_ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(wait_ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "netlab delay line: poll");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        // Drain what is there (bounded, so releases are not starved).
        for _ in 0..64 {
            match (&*socket).read(&mut buf) {
                Ok(n) => {
                    let delay = Duration::from_micros(delay_us.load(Ordering::Acquire));
                    let arrived = Instant::now();
                    pending.extend(packet_ids(&buf[..n]).map(|id| (arrived + delay, id)));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                // Notifications were lost; the next batch verdict accepts
                // those packets too.
                Err(error) if error.raw_os_error() == Some(ENOBUFS) => {}
                Err(error) => {
                    tracing::warn!(%error, "netlab delay line: reading the queue");
                    break;
                }
            }
        }
    }
}
