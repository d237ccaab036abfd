//! The SOAP envelope reader: any bytes give a request or an error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use medgate::codec::soap::parse_request;
use medgate::codec::xml::Limits;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_request(data, &Limits::default()) {
        // What the SOAP edge reads next: the operation's name and fields, WS-Addressing.
        let _ = req.operation.child_text("IdDistrict");
        let _ = req.version.content_type();
        let _ = (req.wsa_action, req.wsa_message_id);
    }
});
