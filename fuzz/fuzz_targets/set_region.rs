//! (d) `set_region` with raw integer fields, as an ioctl caller passes them
//! (the packed `slot` field, any flag bits kept with `from_bits_retain`),
//! on a configuration with raw limits: every call gives Ok or an error, never
//! a panic, the model agrees with each result, and the state stays in step.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use memslots::{Config, Error, Flags, Memslots, UserMemoryRegion, GFN_LIMIT};
use memslots_fuzz::agree::{apply, check, Op};
use memslots_fuzz::model::Model;

#[derive(Arbitrary, Debug)]
struct Input {
    address_spaces: u8,
    max_slots: u16,
    max_total_pages: u64,
    calls: Vec<Call>,
}

/// One `KVM_SET_USER_MEMORY_REGION` call's raw fields.
#[derive(Arbitrary, Debug)]
struct Call {
    /// `(as_id << 16) | id`, any value.
    slot: u32,
    /// Any bits, unknown ones included.
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

fuzz_target!(|input: Input| {
    // Up to three address spaces keep the state check quick; 0 is refused.
    let config =
        Config::new(u16::from(input.address_spaces % 4), input.max_slots).with_max_total_pages(input.max_total_pages);
    let slots = match Memslots::new(config) {
        Ok(slots) => slots,
        Err(e) => {
            assert_eq!(e, Error::InvalidConfig);
            assert!(config.address_spaces == 0 || config.max_slots == 0);
            return;
        }
    };
    let mut w = slots.writer().unwrap();
    let mut m = Model::new(config);
    for call in input.calls.iter().take(64) {
        let region = UserMemoryRegion {
            slot: call.slot,
            flags: Flags::from_bits_retain(call.flags),
            guest_phys_addr: call.guest_phys_addr,
            memory_size: call.memory_size,
            userspace_addr: call.userspace_addr,
        };
        apply(&mut w, &mut m, &Op::SetRegion(region)).unwrap();
    }
    let probes = [(0, u64::MAX), (GFN_LIMIT - 0x100, 0x200)];
    check(&slots, &mut [slots.reader(), slots.device_reader()], &m, &probes, 0).unwrap();
});
