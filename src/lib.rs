//! medgate: a federated regional data-exchange gateway for healthcare.
//!
//! The crate is layered; edges depend on the core, never the reverse (a test reads the
//! imports and holds every module to this):
//! [`model`] (identifiers, aggregates, time) ← [`codec`] (FHIR, SOAP, XML, CDA) and
//! [`store`] (SQL) ← [`exchange`] (transaction log, outbox delivery) ← [`services`] (the
//! domain's rules and the ports they need) ← [`adapters`] (ports implemented for external
//! systems), [`jobs`] (background work) and [`http`] (the actix-web edge) ← [`app`] (the
//! composition root).

pub mod adapters;
pub mod app;
pub mod auth;
pub mod bench;
pub mod codec;
pub mod config;
pub mod context;
pub mod demo;
pub mod exchange;
pub mod http;
pub mod jobs;
pub mod model;
pub mod services;
pub mod sign;
pub mod sim;
pub mod store;
pub mod telemetry;
