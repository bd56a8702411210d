//! `Announcement::verify` on the plaintext envelope: what a member that
//! knows the namespace secret could seal and send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::record::Announcement;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Announcement::verify(data, devmesh_fuzz::NAMESPACE) {
        // What is accepted is within the bounds verify promises.
        a.validate().expect("a verified announcement validates");
        let _ = a.ttl();
    }
});
