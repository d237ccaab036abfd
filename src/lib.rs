//! medgate: a federated regional data-exchange gateway for healthcare.
//!
//! The crate is layered; edges depend on the core, never the reverse:
//! [`model`] (identifiers, aggregates) ← [`codec`] (FHIR, SOAP, XML) ← [`store`] (SQL) ←
//! [`exchange`] (transaction log, outbox) ← [`http`] (actix-web edge) and [`app`] (process).

pub mod adapters;
pub mod app;
pub mod auth;
pub mod bench;
pub mod codec;
pub mod config;
pub mod demo;
pub mod exchange;
pub mod http;
pub mod model;
pub mod services;
pub mod sign;
pub mod sim;
pub mod store;
pub mod telemetry;
