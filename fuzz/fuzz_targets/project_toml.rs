//! `Project::parse`, of a `devmesh.toml`, and the error it shows (which
//! quotes the source around the key at fault).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|source: &str| {
    if let Err(e) = mesh_config::Project::parse(std::path::Path::new("devmesh.toml"), source) {
        let _ = e.to_string();
    }
});
