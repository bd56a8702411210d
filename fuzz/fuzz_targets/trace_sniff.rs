//! The provider's trace sniffer over the bytes of a tunnel: chunks from
//! the consumer (whose `traceparent` it rewrites in place) and from the
//! backend, in any order ([`devmesh_fuzz::chunks`]), then the close.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use mesh_proxy::trace::sniff::Sniffer;

fuzz_target!(|data: &[u8]| {
    let mut sniffer = Sniffer::new("api".into(), "consumer".into());
    let mut now = SystemTime::UNIX_EPOCH;
    for (from_consumer, bytes) in devmesh_fuzz::chunks(data) {
        now += Duration::from_millis(1);
        if from_consumer {
            let mut bytes = bytes.to_vec();
            sniffer.on_consumer(&mut bytes, now);
        } else {
            let _ = sniffer.on_backend(bytes, now);
        }
    }
    let _ = sniffer.on_close(now);
});
