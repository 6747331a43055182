//! (a) Sequences of writer operations on one to three address spaces, valid
//! and invalid, single calls and batches (committed or refused), against the
//! reference model; after every operation every query must agree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use memslots::{Config, Memslots};
use memslots_fuzz::agree::{apply, check};
use memslots_fuzz::model::Model;
use memslots_fuzz::{probes, step, HVA};

fuzz_target!(|data: &[u8]| {
    let mut u = arbitrary::Unstructured::new(data);
    let Ok(address_spaces) = u.int_in_range(1..=3u16) else { return };
    let Ok(probes) = probes(&mut u) else { return };
    let config = Config::new(address_spaces, 8).with_max_total_pages(2000);
    let slots = Memslots::new(config).unwrap();
    let mut w = slots.writer().unwrap();
    let mut readers = [slots.reader(), slots.device_reader()];
    let mut m = Model::new(config);
    for _ in 0..64 {
        // `Unstructured` yields defaults once drained, so stop on empty input.
        if u.is_empty() {
            return;
        }
        let Ok(op) = step(&mut u, address_spaces, &m) else { return };
        apply(&mut w, &mut m, &op).unwrap();
        check(&slots, &mut readers, &m, &probes, HVA).unwrap();
    }
});
