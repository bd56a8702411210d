//! The front door's routing: request heads as hyper's parser (httparse)
//! reads them, then `route::target_cached` on the URI, `Host` and
//! `X-DevMesh-Service` and `route::by_path` over a fixed set of services,
//! as `front/pipeline.rs` does. The heads that follow one another in the
//! input share one connection's host cache, and the cached answer is
//! always the uncached one.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;
use mesh_proxy::route::{self, HostCache, Target};

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static SNAPSHOT: mesh_core::Snapshot = devmesh_fuzz::snapshot();
    }
    let mut cache = HostCache::default();
    let mut rest = data;
    for _ in 0..4 {
        let mut parsed = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut parsed);
        let Ok(httparse::Status::Complete(len)) = req.parse(rest) else {
            return;
        };
        rest = &rest[len..];
        let Some(Ok(uri)) = req.path.map(Uri::try_from) else {
            continue;
        };
        let mut headers = HeaderMap::new();
        for h in req.headers.iter() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                headers.append(name, value);
            }
        }
        let target = route::target_cached(&uri, &headers, &mut cache);
        assert_eq!(target, route::target(&uri, &headers));
        SNAPSHOT.with(|snapshot| match &target {
            Target::Explicit(_) => {}
            Target::Service(name) => {
                let _ = route::by_path(snapshot, uri.path(), Some(name));
            }
            Target::Unnamed => {
                let _ = route::by_path(snapshot, uri.path(), None);
            }
        });
    }
});
