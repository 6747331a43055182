//! (d) `set_region` with raw integer fields, as an ioctl caller passes them,
//! on a configuration with raw limits: every call gives Ok or an error, never
//! a panic, the model agrees with each result, and the state stays in step.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use memslots::{Config, Error, Memslots};
use memslots_fuzz::agree::{apply, check, Op};
use memslots_fuzz::model::Model;

#[derive(Arbitrary, Debug)]
struct Input {
    address_spaces: u8,
    max_slots: u16,
    max_total_pages: u64,
    calls: Vec<(u32, u32, u64, u64, u64, u32)>,
}

fuzz_target!(|input: Input| {
    // Up to three address spaces keep the state check quick; 0 is refused.
    let config = Config {
        address_spaces: u16::from(input.address_spaces % 4),
        max_slots: input.max_slots,
        max_total_pages: input.max_total_pages,
    };
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
    for &(id, as_id, gpa, size, hva, flags) in input.calls.iter().take(64) {
        apply(&mut w, &mut m, &Op::SetRegion { id, as_id, gpa, size, hva, flags }).unwrap();
    }
    check(&slots, &mut [slots.reader(), slots.device_reader()], &m, &[(0, u64::MAX)], 0).unwrap();
});
