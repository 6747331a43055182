//! (c) The zap-range binner against its model: after every added range the
//! 16 entries must be exactly the model's merged list, or one full zap once
//! the model needs more than 15 variable entries.

#![no_main]

use libfuzzer_sys::fuzz_target;
use memslots::ZapBins;
use memslots_fuzz::gfn;
use memslots_fuzz::zap_model::ZapModel;

fuzz_target!(|data: &[u8]| {
    let mut u = arbitrary::Unstructured::new(data);
    let mut bins = ZapBins::new();
    let mut model = ZapModel::default();
    // `Unstructured` yields defaults once drained, so stop on empty input.
    while !u.is_empty() {
        let (Ok(start), Ok(end)) = (gfn(&mut u), gfn(&mut u)) else { return };
        bins.add(start..end);
        model.add(start..end);
        assert_eq!(bins.zaps().collect::<Vec<_>>(), model.zaps(), "after adding {start:#x}..{end:#x}");
        assert_eq!(bins.is_full(), model.full);
        assert_eq!(bins.is_empty(), model.zaps().is_empty());
    }
});
