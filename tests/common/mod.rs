#![allow(dead_code)] // each test binary uses its own part of the helpers

pub mod agree;
pub mod model;
pub mod rng;
pub mod zap_model;

use proptest::test_runner::Config;

/// `cases` property-test cases, or a handful under miri, which runs each case
/// thousands of times slower. Miri's isolation also forbids the file that
/// records failures, so it is not used there.
pub fn proptest_config(cases: u32) -> Config {
    if cfg!(miri) {
        Config { cases: 4, failure_persistence: None, ..Config::default() }
    } else {
        Config { cases, ..Config::default() }
    }
}
