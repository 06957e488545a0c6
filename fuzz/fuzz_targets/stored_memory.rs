//! Any text as a stored `value`: memory or a decode error, never a panic; and what decodes
//! encodes back to something that decodes to the same memory, stably.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_chat::memory::Memory;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(memory) = Memory::decode(text) {
        let encoded = memory.encode();
        let again = Memory::decode(&encoded).expect("our own encoding decodes");
        assert_eq!(again, memory);
        assert_eq!(again.encode(), encoded);
    }
});
