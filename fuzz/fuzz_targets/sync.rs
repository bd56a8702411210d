//! The `/devmesh/sync/2` messages as the node's codec reads them: the
//! first byte picks the request (even) or the response (odd).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::sync;

fuzz_target!(|data: &[u8]| {
    let Some((&which, message)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let _ = sync::decode_request(message);
    } else {
        let _ = sync::decode_response(message);
    }
});
