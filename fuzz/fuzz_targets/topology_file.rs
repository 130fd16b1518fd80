#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eddy::fuzzing::topology_file(data));
