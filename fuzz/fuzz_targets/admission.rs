//! The `/devmesh/auth/1` handshake messages as the node's codec reads
//! them: the first byte picks the challenge (even) or the answer (odd).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::admission;

fuzz_target!(|data: &[u8]| {
    let Some((&which, message)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let _ = admission::decode_request(message);
    } else {
        let _ = admission::decode_response(message);
    }
});
