//! `Namespace::open` of a sealed record, then `Announcement::verify` of
//! what opens: the path of every record that arrives by gossip or sync.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::record::Announcement;

fuzz_target!(|data: &[u8]| {
    let namespace = devmesh_fuzz::namespace();
    if let Ok(plain) = namespace.open(data) {
        let _ = Announcement::verify(&plain, namespace.name());
    }
});
