#![no_main]
// roomboxd's TOML config file: parse over the defaults, validate; what loads
// is valid and survives a write and a reload unchanged. The same check replays
// seeds/daemon_config in firmware-app/tests/security.rs on stable.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roombox::config::fuzz_check(data));
