//! Profile parsing of arbitrary bytes: never panics; an accepted profile has a valid id and
//! keeps the file's JSON, and a set of accepted profiles loads.
#![no_main]

use gateway_host::{is_valid_id, Profile, ProfileSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(profile) = Profile::from_slice(bytes, "fuzz.json") {
        assert!(is_valid_id(&profile.id), "accepted id {:?}", profile.id);
        assert!(!profile.gateway_id.is_empty());
        let set = ProfileSet::from_profiles([profile], |_| true);
        assert_eq!(set.len(), 1);
    }
});
