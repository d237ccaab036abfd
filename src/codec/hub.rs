//! Answers of the portal booking hub (HubService-style SOAP 1.1, WSDL in `schemas/hub/`),
//! spelled as the buses spell them (`GetSpesialityList`, `GetAvaibleAppointments`). In
//! answers `IdAppointment` is a slot (as on the buses) and `IdClaim` is a booking.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::NaiveDate;

use super::xml::dom::escape_text as esc;
use crate::model::booking::Appointment;
use crate::model::organization::Organization;
use crate::model::referral::Referral;
use crate::model::schedule::{Practitioner, Slot};
use crate::model::time::instant_secs;

/// Target namespace of the hub service.
pub const NS: &str = "http://tempuri.org/";

/// Names of the specialties the simulated region uses (reference book 1066); others are
/// shown by code.
fn specialty_name(code: &str) -> String {
    match code {
        "27" => "Therapist".into(),
        "49" => "General practitioner".into(),
        "76" => "Cardiologist".into(),
        "39" => "Neurologist".into(),
        "93" => "Ophthalmologist".into(),
        "20" => "Surgeon".into(),
        other => format!("Specialty {other}"),
    }
}

/// `<Op>Response><Op>Result>{inner}<Success>true</Success></…>`.
fn answer(op: &str, inner: &str) -> String {
    format!(
        r#"<{op}Response xmlns="{NS}"><{op}Result>{inner}<Success>true</Success></{op}Result></{op}Response>"#
    )
}

/// `GetLPUList`: the clinics.
pub fn lpu_list(orgs: &[Organization]) -> String {
    let mut list = String::from("<ListLPU>");
    for o in orgs {
        let _ = write!(
            list,
            "<Clinic><IdLPU>{}</IdLPU><LPUFullName>{}</LPUFullName><LPUShortName>{}</LPUShortName><District>{}</District><Address>{}</Address></Clinic>",
            esc(o.oid.as_str()), esc(&o.name), esc(&o.short_name), esc(&o.district), esc(&o.address)
        );
    }
    list.push_str("</ListLPU>");
    answer("GetLPUList", &list)
}

/// `CheckPatient`: the patient's pseudonymous id.
pub fn check_patient(id: &str) -> String {
    answer("CheckPatient", &format!("<IdPat>{}</IdPat>", esc(id)))
}

/// `GetSpesialityList`: specialties with their free slot counts.
pub fn speciality_list(counts: &[(String, i64)]) -> String {
    let mut list = String::from("<ListSpesiality>");
    for (code, n) in counts {
        let _ = write!(
            list,
            "<Spesiality><IdSpesiality>{}</IdSpesiality><NameSpesiality>{}</NameSpesiality><CountFreeTicket>{n}</CountFreeTicket></Spesiality>",
            esc(code),
            esc(&specialty_name(code))
        );
    }
    list.push_str("</ListSpesiality>");
    answer("GetSpesialityList", &list)
}

/// `GetDoctorList`: doctors with their free slot counts.
pub fn doctor_list<'a>(doctors: impl Iterator<Item = (&'a Practitioner, i64)>) -> String {
    let mut list = String::from("<ListDoctor>");
    for (d, n) in doctors {
        let _ = write!(
            list,
            "<Doctor><IdDoc>{}</IdDoc><Name>{} {}</Name><Room>{}</Room><CountFreeTicket>{n}</CountFreeTicket></Doctor>",
            esc(&d.id),
            esc(&d.family),
            esc(&d.given),
            esc(&d.room),
        );
    }
    list.push_str("</ListDoctor>");
    answer("GetDoctorList", &list)
}

/// `GetAvailableDates`: days with free slots and their counts.
pub fn available_dates(days: &BTreeMap<NaiveDate, usize>) -> String {
    let mut list = String::from("<ListDate>");
    for (day, n) in days {
        let _ = write!(
            list,
            "<AvailableDate><Date>{day}</Date><CountFreeTicket>{n}</CountFreeTicket></AvailableDate>"
        );
    }
    list.push_str("</ListDate>");
    answer("GetAvailableDates", &list)
}

/// `GetAvaibleAppointments`: free slots.
pub fn available_appointments(slots: &[Slot]) -> String {
    appointments_answer("GetAvaibleAppointments", slots)
}

/// `GetAvaibleAppointmentsByReferral`: free slots of a referral's target open to referrals.
pub fn appointments_by_referral(slots: &[Slot]) -> String {
    appointments_answer("GetAvaibleAppointmentsByReferral", slots)
}

/// The free-slot list answered by `op`.
fn appointments_answer(op: &str, slots: &[Slot]) -> String {
    let mut list = String::with_capacity(64 + slots.len() * 150);
    list.push_str("<ListAppointments>");
    for s in slots {
        let _ = write!(
            list,
            "<Appointment><IdAppointment>{}</IdAppointment><VisitStart>{}</VisitStart><VisitEnd>{}</VisitEnd></Appointment>",
            esc(&s.id),
            instant_secs(s.start_at),
            instant_secs(s.end_at)
        );
    }
    list.push_str("</ListAppointments>");
    answer(op, &list)
}

/// `CheckReferral`: a referral's state, target, referring clinic and validity.
pub fn referral(r: &Referral) -> String {
    let claim = r
        .appointment_id
        .as_deref()
        .map(|a| format!("<IdClaim>{}</IdClaim>", esc(a)))
        .unwrap_or_default();
    answer(
        "CheckReferral",
        &format!(
            "<Referral><IdReferral>{}</IdReferral><Status>{}</Status><IdLPU>{}</IdLPU><IdLPUFrom>{}</IdLPUFrom><Profile>{}</Profile><Kind>{}</Kind><Diagnosis>{}</Diagnosis><ValidUntil>{}</ValidUntil>{claim}</Referral>",
            esc(&r.id),
            r.status.as_str(),
            esc(r.target_org.as_str()),
            esc(r.requester_org.as_str()),
            esc(&r.profile),
            r.kind.as_str(),
            esc(r.diagnosis.as_str()),
            instant_secs(r.valid_until),
        ),
    )
}

/// The claim (booking) fields of an appointment.
fn claim(a: &Appointment) -> String {
    format!(
        "<IdClaim>{}</IdClaim><IdAppointment>{}</IdAppointment><IdLPU>{}</IdLPU><IdDoc>{}</IdDoc><VisitStart>{}</VisitStart><Status>{}</Status>",
        esc(&a.id),
        esc(a.slot_id.as_deref().unwrap_or("")),
        esc(a.org.as_str()),
        esc(&a.practitioner_id),
        instant_secs(a.start_at),
        a.status.as_str()
    )
}

/// `SetAppointment`: the booking made.
pub fn set_appointment(a: &Appointment) -> String {
    answer("SetAppointment", &claim(a))
}

/// `CreateClaimForRefusal`: the booking cancelled.
pub fn claim_for_refusal(a: &Appointment) -> String {
    answer("CreateClaimForRefusal", &claim(a))
}

/// `GetPatientHistory`: a patient's bookings.
pub fn patient_history(rows: &[Appointment]) -> String {
    let mut list = String::from("<ListHistoryVisit>");
    for a in rows {
        let _ = write!(list, "<HistoryVisit>{}</HistoryVisit>", claim(a));
    }
    list.push_str("</ListHistoryVisit>");
    answer("GetPatientHistory", &list)
}
