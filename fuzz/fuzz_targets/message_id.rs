//! See push_server::fuzzing::message_id.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push_server::fuzzing::message_id(data));
