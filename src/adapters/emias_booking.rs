//! Booking in the city-wide MIS: [`Mis`] for [`EmiasClient`].

use futures_util::future::BoxFuture;

use super::emias::{EmiasClient, EmiasError};
use crate::codec::xml::dom::escape_text as esc;
use crate::services::mis::{Mis, MisBooking, MisError};

fn mis_error(e: EmiasError) -> MisError {
    match e {
        EmiasError::Fault { code, message }
            if matches!(
                code.as_str(),
                "SLOT_TAKEN" | "SLOT_WITHDRAWN" | "BAD_REQUEST"
            ) =>
        {
            MisError::Refused { code, message }
        }
        other => MisError::Unavailable(other.to_string()),
    }
}

impl Mis for EmiasClient {
    fn book(&self, b: MisBooking) -> BoxFuture<'_, Result<String, MisError>> {
        Box::pin(async move {
            let mut inner = format!(
                "<SlotId>{}</SlotId><ClientRef>{}</ClientRef><Channel>{}</Channel>",
                esc(&b.slot_external_id),
                esc(&b.client_ref),
                b.channel.as_str()
            );
            if let Some(p) = &b.patient.policy {
                inner.push_str(&format!("<Policy>{}</Policy>", p.digits()));
            }
            if let Some(s) = &b.patient.snils {
                inner.push_str(&format!("<Snils>{}</Snils>", s.digits()));
            }
            if let Some(d) = b.patient.birth_date {
                inner.push_str(&format!("<BirthDate>{d}</BirthDate>"));
            }
            let el = self
                .call_op("CreateAppointment", &inner)
                .await
                .map_err(mis_error)?;
            el.child_text("AppointmentId")
                .map(str::to_string)
                .ok_or_else(|| MisError::Unavailable("answer without AppointmentId".into()))
        })
    }

    fn cancel<'a>(
        &'a self,
        external_id: Option<&'a str>,
        client_ref: &'a str,
    ) -> BoxFuture<'a, Result<(), MisError>> {
        Box::pin(async move {
            let inner = match external_id {
                Some(id) => format!("<AppointmentId>{}</AppointmentId>", esc(id)),
                None => format!("<ClientRef>{}</ClientRef>", esc(client_ref)),
            };
            // `Cancelled` false means there was nothing to cancel: the goal holds.
            self.call_op("CancelAppointment", &inner)
                .await
                .map(|_| ())
                .map_err(mis_error)
        })
    }
}
