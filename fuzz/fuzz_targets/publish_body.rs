//! See push_server::fuzzing::publish_body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push_server::fuzzing::publish_body(data));
