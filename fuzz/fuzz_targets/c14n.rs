//! Exclusive XML canonicalization: never panics, and is idempotent (canonical output
//! canonicalizes to itself).

#![no_main]

use libfuzzer_sys::fuzz_target;
use medgate::codec::xml::c14n::{canonicalize, Selection};
use medgate::codec::xml::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(once) = canonicalize(data, &Selection::default(), &limits) else {
        return;
    };
    let twice = canonicalize(&once, &Selection::default(), &limits).unwrap_or_else(|e| {
        panic!(
            "canonical output is refused: {e}\noutput: {:?}",
            String::from_utf8_lossy(&once)
        )
    });
    assert!(
        once == twice,
        "not idempotent:\nonce:  {:?}\ntwice: {:?}",
        String::from_utf8_lossy(&once),
        String::from_utf8_lossy(&twice)
    );
});
