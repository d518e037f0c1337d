//! See push_server::fuzzing::sse_cursor.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push_server::fuzzing::sse_cursor(data));
