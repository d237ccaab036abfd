//! Black-box tests: the gateway on a random loopback port over real HTTP, on a fresh
//! database per test. Every test that touches storage runs on PostgreSQL and on SQLite.

mod access;
mod appeals;
mod architecture;
mod booking;
mod chaos;
mod cli;
mod crash;
mod dashboard;
mod documents;
mod federation;
mod fhir_mis;
mod foundation;
mod hostile;
mod hub;
mod jobs;
mod logs;
mod nsi;
mod reconcile;
mod referrals;
mod rerun;
mod schedules;
mod soak;
mod support;
mod tls;
