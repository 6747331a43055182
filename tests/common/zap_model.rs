//! The zap binner's reference model.

use std::ops::Range;

use memslots::{FIXED_MTRR_GFNS, FULL_ZAP, GFN_LIMIT};

/// The model: an unbounded list of merged ranges; the bins must equal it
/// until it would need a 16th variable entry, and be full from then on.
#[derive(Default)]
pub struct ZapModel {
    pub fixed: bool,
    pub full: bool,
    pub merged: Vec<Range<u64>>,
}

impl ZapModel {
    pub fn add(&mut self, r: Range<u64>) {
        let (mut s, e) = (r.start, r.end.min(GFN_LIMIT));
        if s >= e || self.full {
            return;
        }
        if s < 0x100 {
            self.fixed = true;
            s = 0x100;
        }
        if s >= e {
            return;
        }
        let mut all = std::mem::take(&mut self.merged);
        all.push(s..e);
        all.sort_by_key(|r| r.start);
        for r in all {
            match self.merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => self.merged.push(r),
            }
        }
        if self.merged.len() > 15 {
            *self = ZapModel { full: true, ..ZapModel::default() };
        }
    }

    pub fn zaps(&self) -> Vec<Range<u64>> {
        if self.full {
            return vec![FULL_ZAP];
        }
        self.fixed.then_some(FIXED_MTRR_GFNS).into_iter().chain(self.merged.iter().cloned()).collect()
    }
}
