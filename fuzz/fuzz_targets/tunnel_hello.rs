//! The hello frames of tunnel streams, as `tunnel::read_frame` reads them:
//! the first byte picks the frame, the rest is the stream.
//!
//! - 0: the `/devmesh/http/1` hello a provider reads (`provider.rs`)
//! - 1: the provider's reply a consumer reads
//! - 2: the `/devmesh/tcp/1` hello, with the version requirement the
//!   provider parses from it
#![no_main]

use devmesh_fuzz::block_on;
use libfuzzer_sys::fuzz_target;
use mesh_proxy::{tcp, tunnel};

fuzz_target!(|data: &[u8]| {
    let Some((&which, mut stream)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let _ = block_on(tunnel::read_frame::<_, tunnel::Hello>(&mut stream));
        }
        1 => {
            let _ = block_on(tunnel::read_frame::<_, tunnel::HelloReply>(&mut stream));
        }
        _ => {
            let hello = block_on(tunnel::read_frame::<_, tcp::Hello>(&mut stream));
            if let Some(require) = hello.ok().and_then(|h| h.require) {
                if let Ok(req) = semver::VersionReq::parse(&require) {
                    let _ = req.matches(&semver::Version::new(15, 2, 0));
                }
            }
        }
    }
});
