//! See push_server::fuzzing::config_yaml.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push_server::fuzzing::config_yaml(data));
