#![no_main]
// Room-protocol WebSocket frames from two joined clients into the engine,
// time passing in between; the harness is shared with a stable unit test that
// replays seeds/room_ws (sfu_core::fuzzing::tests).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sfu_core::fuzzing::room_ws(data));
