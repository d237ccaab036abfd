//! FHIR request parsing: the `DocumentReference` submission reader, then the parsers every
//! edge applies to request text (moments, SNILS, policy numbers, organization OIDs).

#![no_main]

use libfuzzer_sys::fuzz_target;
use medgate::codec::fhir::document::read_submission;
use medgate::model::time::Moment;
use medgate::model::{Oid, PolicyNumber, Snils};

fn identifiers(text: &str) {
    if let Some(m) = Moment::parse(text) {
        assert!(m.end_ms() >= m.ms());
    }
    if let Ok(s) = Snils::parse(text) {
        // The printed forms parse back to the same number.
        assert_eq!(Snils::parse(&s.formatted()).as_ref(), Ok(&s));
        assert_eq!(Snils::parse(&s.digits()).as_ref(), Ok(&s));
        let _ = s.to_string();
    }
    if let Ok(p) = PolicyNumber::parse(text) {
        assert_eq!(p.digits().len(), 16);
        let _ = p.to_string();
    }
    if let Ok(o) = Oid::parse_organization(text) {
        assert!(o.is_organization());
        assert_eq!(Oid::parse(o.as_str()).as_ref(), Ok(&o));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = read_submission(data) {
        // The document service parses these next.
        identifiers(&s.org_oid);
        identifiers(&s.patient_snils);
        identifiers(&s.author_snils);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        identifiers(text);
    }
});
