//! The `CapabilityStatement` at `/fhir/metadata`: what this server offers, dated by the
//! build.

use serde_json::{json, Value};

/// The CapabilityStatement of gateway `instance` whose FHIR base is `base`.
pub fn capability_statement(base: &str, instance: &str) -> Value {
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": env!("GATEWAY_BUILD_DATE"),
        "publisher": "medgate",
        "kind": "instance",
        "software": {"name": "medgate", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": format!("medgate gateway {instance}"), "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth"}]}],
                "description": "Bearer token issued by the regional operator"
            },
            "resource": [{
                "type": "Organization",
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": [
                    {"name": "name", "type": "string"},
                    {"name": "_count", "type": "number"}
                ]
            }, {
                "type": "Location",
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": [
                    {"name": "organization", "type": "reference"},
                    {"name": "name", "type": "string"},
                    {"name": "_count", "type": "number"}
                ]
            }, {
                "type": "Practitioner",
                "interaction": [{"code": "search-type"}],
                "searchParam": [{"name": "organization", "type": "reference"}]
            }, {
                "type": "Slot",
                "interaction": [{"code": "search-type"}],
                "searchParam": [
                    {"name": "organization", "type": "reference"},
                    {"name": "practitioner", "type": "reference"},
                    {"name": "schedule", "type": "reference"},
                    {"name": "specialty", "type": "token"},
                    {"name": "start", "type": "date"},
                    {"name": "status", "type": "token"},
                    {"name": "_count", "type": "number"}
                ]
            }, {
                "type": "Schedule",
                "interaction": [{"code": "search-type"}],
                "searchParam": [
                    {"name": "organization", "type": "reference"},
                    {"name": "actor", "type": "reference", "documentation": "Practitioner/<id> or Location/<organization OID>"}
                ]
            }, {
                "type": "PractitionerRole",
                "interaction": [{"code": "search-type"}],
                "searchParam": [
                    {"name": "organization", "type": "reference"},
                    {"name": "specialty", "type": "token"},
                    {"name": "practitioner", "type": "reference"}
                ]
            }, {
                "type": "Appointment",
                "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "create"}, {"code": "update"}],
                "searchParam": [
                    {"name": "patient", "type": "reference", "documentation": "with the :identifier modifier (SNILS or OMS policy)"},
                    {"name": "status", "type": "token"},
                    {"name": "slot", "type": "reference"},
                    {"name": "identifier", "type": "token"}
                ],
                "operation": [
                    {"name": "find", "definition": "http://ihe.net/fhir/ihe.scheduling/OperationDefinition/appointment-find"},
                    {"name": "hold", "definition": "http://ihe.net/fhir/ihe.scheduling/OperationDefinition/appointment-hold"},
                    {"name": "book", "definition": "http://ihe.net/fhir/ihe.scheduling/OperationDefinition/appointment-book"},
                    {"name": "reschedule", "definition": "https://medgate.example/fhir/OperationDefinition/appointment-reschedule"}
                ]
            }, {
                "type": "AuditEvent",
                "interaction": [{"code": "search-type"}],
                "searchParam": [
                    {"name": "patient", "type": "reference", "documentation": "with the :identifier modifier (SNILS or OMS policy)"},
                    {"name": "agent", "type": "reference", "documentation": "the client id"},
                    {"name": "date", "type": "date"},
                    {"name": "request", "type": "token", "documentation": "the request id"}
                ]
            }, {
                "type": "DocumentReference",
                "interaction": [{"code": "create"}, {"code": "read"}]
            }, {
                "type": "ServiceRequest",
                "documentation": "referrals between organizations; acceptance rules at /api/referrals/rules",
                "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
                "searchParam": [
                    {"name": "patient", "type": "token", "documentation": "SYSTEM|VALUE of SNILS or OMS policy"},
                    {"name": "requester", "type": "reference"},
                    {"name": "performer", "type": "reference"},
                    {"name": "status", "type": "token", "documentation": "the referral's state (requested, accepted, ...)"},
                    {"name": "authored", "type": "date"}
                ],
                "operation": [
                    {"name": "book", "definition": "https://medgate.example/fhir/OperationDefinition/servicerequest-book"},
                    {"name": "propose", "definition": "https://medgate.example/fhir/OperationDefinition/servicerequest-propose",
                     "documentation": "a patient's own request (intent proposal) for the attending doctor to confirm"}
                ]
            }, {
                "type": "Task",
                "documentation": "the lifecycle of a referral (same id as its ServiceRequest)",
                "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "update"}],
                "searchParam": [
                    {"name": "owner", "type": "reference"},
                    {"name": "requester", "type": "reference"},
                    {"name": "business-status", "type": "token"},
                    {"name": "patient", "type": "token", "documentation": "SYSTEM|VALUE of SNILS or OMS policy"},
                    {"name": "date", "type": "date"},
                    {"name": "escalated", "type": "token", "documentation": "true: unanswered past the answer time"}
                ]
            }, {
                "type": "Communication",
                "documentation": "citizens' appeals: intake from the portal's complaint service, district chats, phone and reception (channel in medium, topic and kind in category); answered, rerouted and extended by the responsible organization",
                "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
                "searchParam": [
                    {"name": "status", "type": "token", "documentation": "in-progress, completed, or unrouted, open, answered"},
                    {"name": "district", "type": "string"},
                    {"name": "overdue", "type": "token", "documentation": "true: not answered and past the deadline"},
                    {"name": "sent", "type": "date"},
                    {"name": "recipient", "type": "reference"}
                ],
                "operation": [
                    {"name": "answer", "definition": "https://medgate.example/fhir/OperationDefinition/communication-answer"},
                    {"name": "reroute", "definition": "https://medgate.example/fhir/OperationDefinition/communication-reroute"},
                    {"name": "extend", "definition": "https://medgate.example/fhir/OperationDefinition/communication-extend"}
                ]
            }, {
                "type": "CodeSystem",
                "documentation": "the Ministry's reference books (NSI) kept by the nsi-sync job, one per kept version (id <OID>-<version>); concepts inline up to 1,000 codes, else paged with ValueSet/$expand",
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": [
                    {"name": "url", "type": "uri", "documentation": "urn:oid:<OID>"},
                    {"name": "version", "type": "token"}
                ]
            }, {
                "type": "ValueSet",
                "documentation": "a reference book's codes: $expand?url=urn:oid:<OID>[&valueSetVersion=][&filter=][&count=][&offset=]",
                "operation": [
                    {"name": "expand", "definition": "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"}
                ]
            }]
        }]
    })
}
