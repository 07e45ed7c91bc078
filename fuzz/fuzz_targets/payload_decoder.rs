#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_fuzz::targets::payload_decoder(data));
