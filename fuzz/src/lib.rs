//! What the fuzz targets share: the namespace their records are sealed
//! for, the front door's services, and a way to run the decoders that read
//! from a stream over bytes.
//!
//! The targets are in `fuzz_targets/`, one per decoder of network input
//! or configuration parser; `src/bin/seeds.rs` writes their seed corpora
//! (`fuzz/corpus/<target>/seed-*`) with the crates' own encoders. Run
//! them with `cargo xtask fuzz [TARGET] [--time S]`.

use std::future::Future;

use mesh_core::{
    LocalService, Namespace, PeerId, RemoteService, Role, Secret, Snapshot, record::ServiceRecord,
};

/// The namespace every record target seals and verifies for.
pub const NAMESPACE: &str = "team";
/// Its secret, fixed so that the committed seeds stay valid.
pub const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// [`NAMESPACE`] with [`SECRET`]: what a member that knows the secret
/// seals for.
pub fn namespace() -> Namespace {
    let secret = Secret::parse(SECRET).expect("the fixed secret parses");
    Namespace::new(NAMESPACE, Some(&secret))
}

/// The front door's view for the routing target: local and remote
/// services claiming `/`, `/api/`, `/api/v2` and `/v1`.
pub fn snapshot() -> Snapshot {
    let version = semver::Version::new(1, 0, 0);
    let record = |name: &str, routes: &[&str]| ServiceRecord {
        routes: routes.iter().map(|r| (*r).to_owned()).collect(),
        ..ServiceRecord::http(name, version.clone())
    };
    let mut s = Snapshot::empty(PeerId::random(), Role::Member);
    for (name, routes) in [("web", &["/"][..]), ("api", &["/api/"][..])] {
        let local = LocalService {
            record: record(name, routes),
            port: 3000,
            health: None,
            scheme: mesh_core::Scheme::Http,
        };
        s.local.insert(name.to_owned(), local);
    }
    for (name, routes) in [("apiv2", &["/api/v2", "/v1"][..]), ("docs", &[][..])] {
        s.remote.push(RemoteService {
            peer: PeerId::random(),
            record: record(name, routes),
            expires: std::time::Instant::now(),
        });
    }
    s
}

/// Runs a decoder that reads from an in-memory stream: it never waits, so
/// one poll loop without a runtime finishes it.
pub fn block_on<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// The chunks of a tunnel's two directions in `data`: each is a byte
/// whose low bit says the side (1: from the consumer, 0: from the
/// backend), a big-endian `u16` length, then that many bytes (fewer at the
/// end of `data`).
pub fn chunks(mut data: &[u8]) -> impl Iterator<Item = (bool, &[u8])> {
    std::iter::from_fn(move || {
        let [side, hi, lo, rest @ ..] = data else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        let (chunk, after) = rest.split_at(len);
        data = after;
        Some((side & 1 == 1, chunk))
    })
}

/// `chunks` as [`chunks`] reads them.
pub fn encode_chunks(chunks: &[(bool, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (from_consumer, bytes) in chunks {
        out.push(u8::from(*from_consumer));
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}
