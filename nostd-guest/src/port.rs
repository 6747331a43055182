//! Port IO to the host: text on the console port, timing markers, halt.
//!
//! The host (tests/nostd_guest.rs) reads every `out` as a VM exit: bytes to
//! [`CONSOLE`] are the report, a write to [`MARKER`] makes the host note the
//! time.

use core::arch::asm;
use core::fmt;

/// The console port: one byte of text per `out`.
pub const CONSOLE: u16 = 0xe9;
/// The marker port: the host notes the time of each write.
pub const MARKER: u16 = 0x30;

/// Marker written when the timed lookup loop starts.
pub const BENCH_START: u32 = 1;
/// Marker written when the timed lookup loop ends.
pub const BENCH_END: u32 = 2;

fn out8(port: u16, value: u8) {
    // SAFETY: G3: port IO has no effect on memory; the host handles the exit.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// Writes `value` to the marker port. Without `nomem`, the compiler keeps
/// memory accesses (the timed lookups) on their side of the marker.
pub fn marker(value: u32) {
    // SAFETY: G3, as in `out8`.
    unsafe { asm!("out dx, eax", in("dx") MARKER, in("eax") value, options(nostack, preserves_flags)) };
}

/// Text to the host, one line per report.
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|byte| out8(CONSOLE, byte));
        Ok(())
    }
}

/// Prints a line to the host console.
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::port::Console, $($arg)*);
    }};
}

/// Stops this vCPU for good: interrupts off, so `hlt` exits to the host.
pub fn halt() -> ! {
    loop {
        // SAFETY: G3: `cli; hlt` stops this vCPU and touches no memory.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
