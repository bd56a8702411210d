//! The data phase of a `/devmesh/tcp/1` stream as `tcp::frames::decode`
//! reads it into the TCP side: length-prefixed frames, a zero length for
//! the end. What it reports moved is what the TCP side got.
#![no_main]

use devmesh_fuzz::block_on;
use libfuzzer_sys::fuzz_target;
use mesh_proxy::tcp::frames;

fuzz_target!(|stream: &[u8]| {
    let mut tcp = Vec::new();
    if let Ok(moved) = block_on(frames::decode(stream, &mut tcp)) {
        assert_eq!(moved, tcp.len() as u64);
    }
});
