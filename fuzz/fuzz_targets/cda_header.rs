//! CDA header validation: any bytes give a header or an error naming a path, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use medgate::codec::cda::read_header;
use medgate::codec::xml::Limits;

fuzz_target!(|data: &[u8]| {
    match read_header(data, &Limits::default()) {
        Ok(h) => {
            // The header's identifiers are valid by construction: printing them must work.
            let _ = (h.patient_snils.formatted(), h.author_snils.to_string());
            let _ = h.custodian.is_organization();
        }
        Err(e) => assert!(
            e.path.starts_with("ClinicalDocument"),
            "error path {:?} does not start at the root",
            e.path
        ),
    }
});
