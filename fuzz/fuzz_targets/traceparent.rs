//! `TraceParent::parse`, of the `traceparent` header of requests at the
//! front door and in tunnels. What parses writes back as a version-00
//! value that parses to the same trace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proxy::trace::TraceParent;

fuzz_target!(|value: &[u8]| {
    if let Ok(parent) = TraceParent::parse(value) {
        let again = TraceParent::parse(&parent.to_bytes()).expect("a written traceparent parses");
        assert_eq!(again, parent);
    }
});
