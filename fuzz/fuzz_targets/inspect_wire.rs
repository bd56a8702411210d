//! The `/devmesh/inspect/1` messages as `inspect::wire::read` reads them:
//! the first byte picks the question (even) or the answer (odd).
#![no_main]

use devmesh_fuzz::block_on;
use libfuzzer_sys::fuzz_target;
use mesh_proxy::inspect::wire::{self, Answer, Ask};

fuzz_target!(|data: &[u8]| {
    let Some((&which, mut stream)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(ask) = block_on(wire::read::<_, Ask>(&mut stream, wire::MAX_ASK)) {
            let _ = ask.valid();
        }
    } else {
        let _ = block_on(wire::read::<_, Answer>(&mut stream, wire::MAX_ANSWER));
    }
});
