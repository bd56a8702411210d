//! `Invite::decode`: a token pasted into `devmesh join`. What decodes
//! encodes back to a token that decodes to the same invite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::Invite;

fuzz_target!(|token: &str| {
    if let Ok(invite) = Invite::decode(token) {
        let again = Invite::decode(&invite.encode()).expect("an encoded invite decodes");
        assert_eq!(again, invite);
    }
});
