//! See push_server::fuzzing::ws_text_frame.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| push_server::fuzzing::ws_text_frame(data));
