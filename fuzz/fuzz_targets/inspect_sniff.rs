//! The inspector's capture over the bytes of a tunnel: chunks from the
//! consumer and from the backend, in any order ([`devmesh_fuzz::chunks`];
//! secrets kept when the first byte is odd), then the close.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use mesh_proxy::inspect::sniff::{Capture, Ends};

fuzz_target!(|data: &[u8]| {
    let Some((&secrets, data)) = data.split_first() else {
        return;
    };
    let mut capture = Capture::new(Ends {
        service: "api".into(),
        version: "1.0.0".into(),
        provider: "A".into(),
        consumer: "B".into(),
        secrets: secrets % 2 == 1,
    });
    let mut now = SystemTime::UNIX_EPOCH;
    for (from_consumer, bytes) in devmesh_fuzz::chunks(data) {
        now += Duration::from_millis(1);
        if from_consumer {
            capture.on_consumer(bytes, now);
        } else {
            let _ = capture.on_backend(bytes, now);
        }
    }
    let _ = capture.on_close(now);
});
