//! Host configuration from an arbitrary TOML file: never panics; an accepted config passes its
//! own validation and its redacted form serialises.
#![no_main]

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use gateway_host::HostConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let figment =
        Figment::from(Serialized::defaults(HostConfig::default())).merge(Toml::string(text));
    if let Ok(config) = HostConfig::from_provider(figment) {
        assert!(config.validate().is_ok());
        let shown = config.redacted().to_string();
        assert!(!shown.is_empty());
    }
});
