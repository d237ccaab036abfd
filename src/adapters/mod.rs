//! Adapters: the implementations of the services' ports for each external system (the city
//! MIS, FHIR clinic systems, the document registry, the notification webhook, the peer
//! gateways of other regions). Contracts
//! and sample messages live in `adapters/<system>/` at the repository root.

pub mod emias;
pub mod emias_booking;
pub mod exchange;
pub mod fhir_mis;
pub mod nsi;
pub mod peer;
pub mod remd;
pub mod webhook;
