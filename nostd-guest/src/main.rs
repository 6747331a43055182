//! A bare-metal test kernel for `memslots`: two vCPUs share one slot map,
//! vCPU 0 changes it, vCPU 1 looks slots up and checks every answer, and
//! both report over port IO before they halt (tests/nostd_guest.rs loads
//! and runs it under KVM).
//!
//! The host enters `_start` in 64-bit mode with the first 4 GiB identity
//! mapped, a stack per vCPU in RSP and the vCPU's index in RDI.
//!
//! # Invariants the `unsafe` code relies on
//!
//! - **G1** vCPU 0 hands `HEAP` to the allocator once, before anything
//!   allocates; vCPU 1 allocates only after it read the shared state vCPU 0
//!   published after that (Acquire, `shared::wait`).
//! - **G2** The shared state is leaked once by `shared::publish` and never
//!   mutated except through its own synchronized types (atomics, the slot
//!   map's handles).
//! - **G3** Port IO and `cli; hlt` touch no guest memory: they exit to the
//!   host, which only reads the registers.

#![no_std]
#![no_main]

extern crate alloc;

mod bench;
mod layout;
mod port;
mod reader;
mod shared;
mod writer;
mod zaps;

use core::ptr::addr_of_mut;

use linked_list_allocator::LockedHeap;

// The entry point: RSP is 16-byte aligned, so after the call it is as a
// function expects.
core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".globl _start",
    "_start:",
    "call {main}",
    "ud2",
    main = sym main,
);

/// The heap: a static array, handed to the allocator by vCPU 0 before
/// anything allocates.
const HEAP_SIZE: usize = 4 << 20;
static mut HEAP: [u8; HEAP_SIZE] = [0; HEAP_SIZE];

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

extern "C" fn main(vcpu: u64) -> ! {
    match vcpu {
        0 => {
            // vCPU 1 waits for `shared::publish`, so this runs first.
            // SAFETY: G1: once, before any allocation; nothing else uses `HEAP`.
            unsafe { ALLOCATOR.lock().init(addr_of_mut!(HEAP).cast(), HEAP_SIZE) };
            writer::run(shared::publish());
        }
        1 => reader::run(shared::wait()),
        _ => report!("vcpu{vcpu} has no part"),
    }
    port::halt()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    report!("panic: {info}");
    port::halt()
}
